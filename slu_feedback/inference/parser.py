"""`SLUParser`: raw text in, intent and slot spans (with character offsets) out.

    parser = SLUParser.from_pretrained("runs/atis-...")
    parser("show me flights from boston to denver")
    # {'intent': 'atis_flight', 'intent_score': 0.99, 'top_intents': [...],
    #  'slots': [{'label': 'fromloc.city_name', 'text': 'boston', 'start': 21, 'end': 27, 'score': 0.99}, ...],
    #  'iterations': 1, 'truncated': False, ...}

An utterance longer than the run's `max_length` sub-tokens is cut where training cut it: its later
words are tagged O, the result says `"truncated": true` and `"words_seen"` (how many words the model
read; only in a truncated result), and a warning is issued.

A joint run (`slu-train recipes/atis_snips_joint.yaml`) holds one head pair per dataset on one
encoder: the parser runs the encoder once and every dataset's heads, answers with the dataset whose
intent is most confident and says which (`"dataset"`), or uses the one it is given
(`SLUParser.from_pretrained(run, dataset="atis")`). The heads' top probabilities are compared as
they are: each head has seen only its own dataset and can be confidently wrong on another's
utterances (on the ATIS test set a joint ATIS+SNIPS run routed 69 of 893 utterances to the SNIPS
heads, README "Several datasets in one model"); pass the dataset where it is known.

With the VMTL Bayesian head (`model.head: vmtl`), results also carry `intent_uncertainty` and a
slot `uncertainty`: the predictive entropy (nats) of the intent distribution, and the mean over a
span's words of the per-word slot entropy (MC-averaged distributions when `vmtl.predict: mc`).
"""

import re
import warnings
from pathlib import Path

import torch

from ..data.features import collate, encode_words, parse_length
from ..data.readers import WORD_SPLITS, bio_to_spans
from ..models import RunError, load_run
from ..models.joint import joint_datasets

_SURROGATE = re.compile("[\ud800-\udfff]")


def warn_truncated(n_words: int, seen: int, max_length: int) -> None:
    """The one warning for an utterance cut at max_length (the parser's and the ONNX runner's)."""
    warnings.warn(f"utterance of {n_words} words truncated to the first {seen} "
                  f"(max_length={max_length} sub-tokens); later words are tagged O")


class SLUParser:
    def __init__(self, model, tokenizer, max_length: int | None = None, top_k: int = 3, models: dict | None = None):
        """`model`: an `SLUModel`; or `models`, {dataset: SLUModel} sharing one encoder (a joint run).
        `max_length`: sub-tokens per utterance (default: the run's training `data.max_length`)."""
        self.models = {name: m.eval() for name, m in (models or {"": model}).items()}
        self.model = next(iter(self.models.values()))
        self.tokenizer = tokenizer
        self.max_length = parse_length(self.model.config, max_length)
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        self.top_k = top_k
        self.intents = self.model.config.intent_labels
        self.slot_labels = self.model.config.slot_labels
        self.bayesian = getattr(self.model.config, "head", "deterministic") == "vmtl"
        # raw text becomes words the way the training words were split: a text given a dataset (joint
        # runs) that dataset's way, any other text the first dataset's way
        self.word_splits = {name: getattr(m.config, "word_split", "rule") for name, m in self.models.items()}
        self.split_words = WORD_SPLITS[next(iter(self.word_splits.values()))]
        if len(set(self.word_splits.values())) > 1:
            warnings.warn("this run's datasets split text into words differently ("
                          + ", ".join(f"{name}: {split}" for name, split in self.word_splits.items())
                          + f"); a text without a dataset named is split {next(iter(self.word_splits))}'s way, "
                          "so name the dataset where it is known")

    @classmethod
    def from_pretrained(cls, run_dir, device: str = "cpu", quantize: bool = False, dataset: str | None = None,
                        intent_slot_constraints: bool | None = None, **kwargs) -> "SLUParser":
        """Load a run; `quantize=True` applies dynamic int8 quantisation to its Linear layers (CPU).
        For a joint run, `dataset` picks one dataset's heads (default: all of them).
        `intent_slot_constraints` overrides the run's model.intent_slot_constraints (None: keep it)."""
        names = joint_datasets(run_dir)
        folder = Path(run_dir).resolve()
        if dataset is not None and not names and dataset == folder.name and dataset in joint_datasets(folder.parent):
            dataset = None  # one dataset's folder of a joint run, named again: it is that dataset already
        if dataset is not None and dataset not in names:
            raise RunError(f"{run_dir}: no dataset {dataset!r} in this run" + (
                f" (it has {', '.join(names)})" if names else " (not a joint run)"))
        loaded = {name: load_run(Path(run_dir) / name, device) for name in ([dataset] if dataset else names or [""])}
        models = {name: model for name, (model, _) in loaded.items()}
        first, tokenizer = next(iter(loaded.values()))
        for model in models.values():  # saved from one shared encoder: keep one copy in memory
            model.encoder = first.encoder
            if intent_slot_constraints is not None:
                if intent_slot_constraints and not model.config.slot_types_by_intent:
                    raise RunError(f"{run_dir}: --intent-slot-constraints needs the slot types seen with each "
                                   "intent, which runs trained before they were recorded lack")
                model.config.intent_slot_constraints = intent_slot_constraints
        if quantize:
            from .quantize import quantize_model

            models = {name: quantize_model(model, inplace=True) for name, model in models.items()}
        return cls(None, tokenizer, models=models, **kwargs)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def __call__(self, text, explain: bool = False, batch_size: int = 32, dataset=None):
        """Parse one string (returns a dict) or a list of strings (returns a list of dicts).
        `dataset` (joint runs): the dataset whose heads answer, for all texts or one per text
        (None: the most confident)."""
        if isinstance(text, str):
            if not (dataset is None or isinstance(dataset, str)):
                raise TypeError(f"one text takes one dataset name (or None), not {dataset!r}")
            return self.parse_batch([text], explain=explain, datasets=[dataset])[0]
        if text is None or isinstance(text, (bytes, bytearray)):  # parse_batch checks a list's items
            raise TypeError(f"SLUParser takes a string or a list of strings, got {type(text).__name__}"
                            + (" (decode it first)" if text is not None else ""))
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        text = list(text)
        datasets = list(dataset) if isinstance(dataset, (list, tuple)) else [dataset] * len(text)
        if len(datasets) != len(text):
            raise ValueError(f"dataset: a list gives one dataset per text; got {len(datasets)} for {len(text)} texts")
        results = []
        for start in range(0, len(text), batch_size):
            results.extend(self.parse_batch(list(text[start:start + batch_size]), explain=explain,
                                            datasets=datasets[start:start + batch_size]))
        return results

    def words_of(self, text: str, dataset: str | None = None) -> list:
        """(word, start, end) of `text` as the heads answering it were trained: a joint run's named
        dataset's way, else the first dataset's."""
        return WORD_SPLITS[self.word_splits[dataset]](text) if dataset else self.split_words(text)

    @torch.no_grad()
    def parse_batch(self, texts: list, explain: bool = False, datasets: list | None = None) -> list:
        for name in set(datasets or []) - {None}:
            if name not in self.models:
                raise ValueError(f"unknown dataset {name!r}: this model answers for "
                                 + (", ".join(self.models) if len(self.models) > 1 or "" not in self.models
                                    else "one dataset only (not a joint run)"))
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"SLUParser parses strings, got {type(t).__name__}: {t!r}")
        # lone surrogates (bad bytes in a command-line argument, "\ud800" in JSON) cannot be encoded:
        # each becomes U+FFFD, one character for one, so that offsets into the text stay right
        texts = [_SURROGATE.sub("\ufffd", t) for t in texts]
        words = [self.words_of(t, d) for t, d in zip(texts, datasets or [None] * len(texts))]
        live = [i for i, w in enumerate(words) if w]  # empty or whitespace-only input has nothing to parse
        results = [self._empty(t) for t in texts]
        joint = len(self.models) > 1 or "" not in self.models
        for i, r in enumerate(results):  # an empty result has every key a parsed one has
            if self.bayesian:
                r["intent_uncertainty"] = None
            if explain:
                r["explain"] = []
            if joint:  # the dataset named, or the one dataset a parser loaded for one answers with
                r["dataset"] = (datasets[i] if datasets else None) or (next(iter(self.models)) if len(self.models) == 1 else None)
        if not live:
            return results
        encoded = encode_words(self.tokenizer, [[w for w, _, _ in words[i]] for i in live], self.max_length)
        rows = [{k: encoded[k][j] for k in encoded} for j in range(len(live))]
        batch = {k: v.to(self.device) for k, v in collate(rows, self.tokenizer.pad_token_id or 0).items()}
        features = self.model.encode(batch["input_ids"], batch["attention_mask"], batch["word_index"])
        outs = {name: model(**batch, features=features, return_iterations=explain) for name, model in self.models.items()}
        # a joint run answers each utterance with the dataset whose top intent is most confident
        confidence = torch.stack([out.intent_logits.softmax(-1).amax(-1) for out in outs.values()])
        chosen = [list(outs)[k] for k in confidence.argmax(0).tolist()]
        if datasets:  # the caller's choice where given
            chosen = [datasets[i] or name for i, name in zip(live, chosen)]
        decoded = {}  # per answering dataset, for the whole batch at once: probabilities and slot ids
        for name in set(chosen):
            out = outs[name]
            decoded[name] = (out.intent_logits.softmax(-1), out.slot_logits.softmax(-1),
                             self.models[name].decode_slots(out.slot_logits, batch["word_mask"],
                                                            out.intent_logits.argmax(-1)))
        for j, i in enumerate(live):
            name = chosen[j]
            intent_probs, slot_probs, slot_ids = (x[j] for x in decoded[name])
            results[i] = self._parse_one(texts[i], words[i], self.models[name], intent_probs, slot_probs, slot_ids,
                                         int(outs[name].iterations[j]), len(encoded["word_index"][j]),
                                         len(encoded["input_ids"][j]))
            if explain:
                results[i]["explain"] = self._explain(self.models[name], outs[name], j, len(encoded["word_index"][j]),
                                                      batch["word_mask"][j : j + 1], words[i])
            if joint:
                results[i]["dataset"] = name
        return results

    def _parse_one(self, text, words, model, intent_probs, slot_probs, slot_ids, iterations, seen, n_subtokens) -> dict:
        """One utterance's result from its row of the batch output of `model`."""
        intents, slot_labels = model.config.intent_labels, model.config.slot_labels
        # every word has a sub-token (one the tokenizer drops is encoded as its unknown token), so
        # words go unseen only when the tokenizer cut a full-length encoding
        truncated = seen < len(words) and n_subtokens >= self.max_length
        if truncated:
            warn_truncated(len(words), seen, self.max_length)
        tags = [slot_labels[s] for s in slot_ids[:seen].tolist()] + ["O"] * (len(words) - seen)
        scores = slot_probs[torch.arange(seen), slot_ids[:seen]].tolist() + [0.0] * (len(words) - seen)
        result = self._result(text, words, intent_probs, intents, tags, scores, iterations)
        # in the result too: a warning never reaches an HTTP client or a --json consumer
        result["truncated"] = truncated
        if truncated:
            result["words_seen"] = seen
        if self.bayesian:
            self._add_uncertainty(result, intent_probs, slot_probs[:seen], len(words))
        return result

    def _result(self, text, words, intent_probs, intents, tags, scores, iterations) -> dict:
        top = intent_probs.topk(min(self.top_k, len(intents)))
        slots = []
        for label, start, end in bio_to_spans(tags):
            char_start, char_end = words[start][1], words[end - 1][2]
            slots.append({"label": label, "text": text[char_start:char_end], "start": char_start, "end": char_end,
                          "score": round(sum(scores[start:end]) / (end - start), 4)})
        return {
            "text": text,
            "intent": intents[int(top.indices[0])],
            "intent_score": round(float(top.values[0]), 4),
            "top_intents": [{"intent": intents[int(i)], "score": round(float(p), 4)}
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

    def _explain(self, model, out, j, seen, word_mask, words) -> list:
        """The prediction at every feedback iteration (iteration 0 = no feedback)."""
        steps = []
        for k, (intent_logits, slot_logits) in enumerate(zip(out.all_intent_logits, out.all_slot_logits)):
            probs = intent_logits[j].softmax(-1)
            ids = model.decode_slots(slot_logits[j : j + 1], word_mask, probs.argmax().view(1))[0, :seen].tolist()
            steps.append({"iteration": k, "intent": model.config.intent_labels[int(probs.argmax())],
                          "intent_score": round(float(probs.max()), 4),
                          "tags": [model.config.slot_labels[s] for s in ids] + ["O"] * (len(words) - seen)})
        return steps

    @staticmethod
    def _empty(text) -> dict:
        return {"text": text, "intent": None, "intent_score": 0.0, "top_intents": [], "slots": [],
                "words": [], "tags": [], "iterations": 0, "truncated": False}
