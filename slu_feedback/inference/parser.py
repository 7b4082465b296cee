"""`SLUParser`: raw text in, intent and slot spans (with character offsets) out.

    parser = SLUParser.from_pretrained("runs/atis-...")
    parser("show me flights from boston to denver")
    # {'intent': 'atis_flight', 'intent_score': 0.99, 'top_intents': [...],
    #  'slots': [{'label': 'fromloc.city_name', 'text': 'boston', 'start': 21, 'end': 27, 'score': 0.99}, ...],
    #  'iterations': 1, ...}

With the VMTL Bayesian head (`model.head: vmtl`), results also carry `intent_uncertainty` and a
slot `uncertainty`: the predictive entropy (nats) of the intent distribution, and the mean over a
span's words of the per-word slot entropy (MC-averaged distributions when `vmtl.predict: mc`).
"""

import warnings

import torch

from ..data.features import collate, encode_words
from ..data.readers import bio_to_spans, tokenize
from ..models import load_run


class SLUParser:
    def __init__(self, model, tokenizer, max_length: int = 128, top_k: int = 3):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.top_k = top_k
        self.intents = model.config.intent_labels
        self.slot_labels = model.config.slot_labels
        self.bayesian = getattr(model.config, "head", "deterministic") == "vmtl"

    @classmethod
    def from_pretrained(cls, run_dir, device: str = "cpu", quantize: bool = False, **kwargs) -> "SLUParser":
        """Load a run; `quantize=True` applies dynamic int8 quantisation to its Linear layers (CPU)."""
        model, tokenizer = load_run(run_dir, device)
        if quantize:
            from .quantize import quantize_model

            model = quantize_model(model, inplace=True)
        return cls(model, tokenizer, **kwargs)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def __call__(self, text, explain: bool = False, batch_size: int = 32):
        """Parse one string (returns a dict) or a list of strings (returns a list of dicts)."""
        if isinstance(text, str):
            return self.parse_batch([text], explain=explain)[0]
        results = []
        for start in range(0, len(text), batch_size):
            results.extend(self.parse_batch(list(text[start:start + batch_size]), explain=explain))
        return results

    @torch.no_grad()
    def parse_batch(self, texts: list, explain: bool = False) -> list:
        words = [tokenize(t if isinstance(t, str) else str(t)) for t in texts]
        live = [i for i, w in enumerate(words) if w]  # empty or whitespace-only input has nothing to parse
        results = [self._empty(t) for t in texts]
        if self.bayesian:
            for r in results:
                r["intent_uncertainty"] = None
        if not live:
            return results
        encoded = encode_words(self.tokenizer, [[w for w, _, _ in words[i]] for i in live], self.max_length)
        rows = [{k: encoded[k][j] for k in encoded} for j in range(len(live))]
        batch = {k: v.to(self.device) for k, v in collate(rows, self.tokenizer.pad_token_id or 0).items()}
        out = self.model(**batch, return_iterations=explain)
        intent_probs = out.intent_logits.softmax(-1)
        slot_probs = out.slot_logits.softmax(-1)
        slot_ids = self.model.decode_slots(out.slot_logits, batch["word_mask"])
        for j, i in enumerate(live):
            seen = len(encoded["word_index"][j])
            # trailing words with no sub-tokens (zero-width or combining characters alone) are not
            # "seen" either, but only a full-length encoding means the tokenizer cut the utterance
            if seen < len(words[i]) and len(encoded["input_ids"][j]) >= self.max_length:
                warnings.warn(f"utterance of {len(words[i])} words truncated to the first {seen} "
                              f"(max_length={self.max_length} sub-tokens); later words are tagged O")
            tags = [self.slot_labels[s] for s in slot_ids[j, :seen].tolist()] + ["O"] * (len(words[i]) - seen)
            scores = slot_probs[j, torch.arange(seen), slot_ids[j, :seen]].tolist() + [0.0] * (len(words[i]) - seen)
            result = self._result(texts[i], words[i], intent_probs[j], tags, scores, int(out.iterations[j]))
            if self.bayesian:
                self._add_uncertainty(result, intent_probs[j], slot_probs[j, :seen], len(words[i]))
            if explain:
                result["explain"] = self._explain(out, j, seen, batch["word_mask"][j : j + 1], words[i])
            results[i] = result
        return results

    def _result(self, text, words, intent_probs, tags, scores, iterations) -> dict:
        top = intent_probs.topk(min(self.top_k, len(self.intents)))
        slots = []
        for label, start, end in bio_to_spans(tags):
            char_start, char_end = words[start][1], words[end - 1][2]
            slots.append({"label": label, "text": text[char_start:char_end], "start": char_start, "end": char_end,
                          "score": round(sum(scores[start:end]) / (end - start), 4)})
        return {
            "text": text,
            "intent": self.intents[int(top.indices[0])],
            "intent_score": round(float(top.values[0]), 4),
            "top_intents": [{"intent": self.intents[int(i)], "score": round(float(p), 4)}
                            for p, i in zip(top.values, top.indices)],
            "slots": slots,
            "words": [w for w, _, _ in words],
            "tags": tags,
            "iterations": iterations,
        }

    @staticmethod
    def _add_uncertainty(result, intent_probs, slot_probs, n_words) -> None:
        from ..models.vmtl import predictive_entropy

        result["intent_uncertainty"] = round(float(predictive_entropy(intent_probs)), 4)
        entropy = predictive_entropy(slot_probs).tolist()
        entropy += [0.0] * (n_words - len(entropy))  # words cut by truncation: tagged O, no estimate
        for slot, (_, start, end) in zip(result["slots"], bio_to_spans(result["tags"])):
            slot["uncertainty"] = round(sum(entropy[start:end]) / (end - start), 4)

    def _explain(self, out, j, seen, word_mask, words) -> list:
        """The prediction at every feedback iteration (iteration 0 = no feedback)."""
        steps = []
        for k, (intent_logits, slot_logits) in enumerate(zip(out.all_intent_logits, out.all_slot_logits)):
            probs = intent_logits[j].softmax(-1)
            ids = self.model.decode_slots(slot_logits[j : j + 1], word_mask)[0, :seen].tolist()
            steps.append({"iteration": k, "intent": self.intents[int(probs.argmax())],
                          "intent_score": round(float(probs.max()), 4),
                          "tags": [self.slot_labels[s] for s in ids] + ["O"] * (len(words) - seen)})
        return steps

    @staticmethod
    def _empty(text) -> dict:
        return {"text": text, "intent": None, "intent_score": 0.0, "top_intents": [], "slots": [],
                "words": [], "tags": [], "iterations": 0}
