"""`SLUModel`: encoder -> intent head + slot head, linked by the output-level feedback loop.

Iteration 0 is the plain joint model. With `feedback.iterations = K > 0`, both heads run K more
times on the same encoder features, each receiving the other task's previous output through a
gated amplifier (see `run_heads`). The encoder runs once per batch.

With `head: vmtl` the final classifier of each head is the VMTL Bayesian classifier
(`vmtl.py`); the feedback loop is unchanged and runs on its posterior-mean logits.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .config import SLUConfig
from .crf import CRF, bio_transitions, viterbi_decode
from .encoders import build_encoder, load_word_tokenizer
from .feedback import FeedbackGate, Head, convergence_loss, labelled_cross_entropy, step_sizes
from . import vmtl as vmtl_lib


@dataclass
class SLUOutput(ModelOutput):
    loss: torch.Tensor | None = None
    intent_logits: torch.Tensor | None = None  # (batch, intents), at each example's final iteration
    slot_logits: torch.Tensor | None = None  # (batch, words, slots)
    iterations: torch.Tensor | None = None  # (batch,) feedback iterations used per example
    steps: torch.Tensor | None = None  # (2 tasks, K, batch) JS step sizes between iterations
    all_intent_logits: tuple | None = None  # per iteration, when return_iterations=True
    all_slot_logits: tuple | None = None
    loss_parts: dict | None = None


IGNORED_HF_FLAGS = {"return_dict", "output_attentions", "output_hidden_states", "token_type_ids", "use_cache"}


class SLUModel(PreTrainedModel):
    config_class = SLUConfig
    base_model_prefix = "slu"
    main_input_name = "input_ids"
    accepts_loss_kwargs = False  # transformers' Trainer: forward's **hf_flags takes no num_items_in_batch

    def __init__(self, config: SLUConfig):
        super().__init__(config)
        self.encoder = build_encoder(config)
        width = self.encoder.hidden_size
        n_intents, n_slots = len(config.intent_labels), len(config.slot_labels)
        if config.head == "vmtl":
            self._build_vmtl_heads(width)
        else:
            self.intent_head = Head(width, config.head_hidden, n_intents, config.dropout)
            self.slot_head = Head(width, config.head_hidden, n_slots, config.dropout)
        self.crf = CRF(n_slots) if config.slot_decoder == "crf" else None
        fb = config.feedback
        if fb["iterations"] > 0:
            summary_width = n_slots * (2 if fb["slot_summary"] == "mean+max" else 1)
            self.slot_to_intent = FeedbackGate(summary_width, self.intent_head.widths, fb["gate"])
            self.intent_to_slot = FeedbackGate(n_intents, self.slot_head.widths, fb["gate"])
        self.gate_tau = float(fb["tau"])  # Gumbel temperature, annealed by the trainer
        self._decode_cache = {}  # decoding constraints, built on first use (see decode_slots)
        self.post_init()
        if config.head == "vmtl":
            self.vmtl_tau = float(config.vmtl["tau"])  # prior-mixture Gumbel temperature, annealed by the trainer
            self.kl_weight = 1.0  # KL warm-up factor in [0, 1], set by the trainer per step
            for head in (self.intent_head, self.slot_head):  # stand-ins until embed_label_names
                if head.label_embeddings.device.type != "meta":
                    with torch.no_grad():
                        head.label_embeddings.copy_(vmtl_lib.text_seeded_embeddings(
                            head.label_texts, head.label_embeddings.shape[1]))

    def _build_vmtl_heads(self, width: int):
        c = self.config
        if c.encoder_type == "bilstm":
            embedding_dim = c.embedding_dim
        else:
            embedding_dim = self.encoder.model.get_input_embeddings().weight.shape[1]
        latent = int(c.vmtl["latent_dim"])
        texts = lambda labels: [vmtl_lib.label_text(x, c.label_names) for x in labels]  # noqa: E731
        self.intent_head = vmtl_lib.VariationalHead(width, c.head_hidden, c.intent_labels, c.dropout, latent,
                                                    embedding_dim, texts(c.intent_labels))
        self.slot_head = vmtl_lib.VariationalHead(width, c.head_hidden, c.slot_labels, c.dropout, latent,
                                                  embedding_dim, texts(c.slot_labels))
        self.vmtl_prior = vmtl_lib.PriorMixture(("intent", "slot"), peers=c.vmtl["peer_tasks"])
        # {dataset: SLUModel} of a joint run, attached by JointSLUModel; a plain dict, so the peers'
        # parameters are not registered (or saved) twice. Empty for a model on its own.
        self.vmtl_peers = {}

    def embed_label_names(self, tokenizer) -> None:
        """e_c: each label text embedded with the encoder's input word embeddings (mean of its word
        pieces), stored in the model (and saved with it). Called once, before training."""
        if self.config.encoder_type == "bilstm":
            table = self.encoder.embedding.weight
        else:
            table = self.encoder.model.get_input_embeddings().weight
        with torch.no_grad():
            for head in (self.intent_head, self.slot_head):
                head.label_embeddings.copy_(vmtl_lib.embed_texts(head.label_texts, tokenizer, table))

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, CRF):
            for p in (module.start, module.end, module.transitions):
                nn.init.zeros_(p)
        if isinstance(module, FeedbackGate):
            nn.init.zeros_(module.beta)  # start undecided between infusion points
        if isinstance(module, vmtl_lib.VariationalHead):
            vmtl_lib.init_bilinear(module)  # children are initialised first; this overrides their 0.02 normal
            nn.init.zeros_(module.bias)
            if module.role_offset is not None:
                nn.init.zeros_(module.role_offset)
        if isinstance(module, vmtl_lib.PriorMixture):
            nn.init.zeros_(module.latent_beta)  # start undecided between the other task and N(0, I)
            nn.init.zeros_(module.weight_beta)

    @classmethod
    def from_encoder(cls, config: SLUConfig, encoder_path: str | None = None, tokenizer=None) -> "SLUModel":
        """A new model for training, with pretrained encoder weights loaded from `encoder_path`.
        With the VMTL head, the label names are embedded with `tokenizer` (default: the encoder's)."""
        model = cls(config)
        if config.encoder_type == "hf" and encoder_path is not None:
            model.encoder.load_pretrained(encoder_path)
        if config.head == "vmtl":
            if tokenizer is None and config.encoder_type == "hf" and encoder_path is not None:
                tokenizer = load_word_tokenizer(encoder_path)
            if tokenizer is not None:
                model.embed_label_names(tokenizer)
        return model

    # -- feature extraction -------------------------------------------------------------------
    def encode(self, input_ids, attention_mask, word_index):
        """Utterance feature u (batch x d) and word features H (batch x words x d, first sub-token)."""
        return self.pool(self.encoder(input_ids, attention_mask), attention_mask, word_index)

    def pool(self, tokens, attention_mask, word_index):
        """Sub-token features -> utterance feature (CLS or masked mean) and first-sub-token word features."""
        if self.config.pooling == "cls" and self.config.encoder_type == "hf":
            utterance = tokens[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            utterance = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1)
        words = tokens.gather(1, word_index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return utterance, words

    # -- the feedback loop --------------------------------------------------------------------
    def run_heads(self, utterance, words, word_mask, iterations: int, posteriors: dict | None = None):
        """Iteration 0 without feedback, then `iterations` rounds in which each head receives the
        other task's previous output. Returns per-iteration intent and slot logits. With the VMTL
        head, each call's posterior is appended to `posteriors[task]`.

        What is fed back is each head's softmax; with the CRF decoder that is the per-word softmax
        of the emissions, not the CRF's marginals (a forward-backward pass per round). In training
        every round draws its own dropout masks, so the convergence loss also asks the rounds to
        agree across masks and reaches 0 only in evaluation."""
        fb = self.config.feedback
        tau = self.gate_tau
        intent_logits = self._call_head("intent", utterance, (None, None, None), posteriors)
        slot_logits = self._call_head("slot", words, (None, None, None), posteriors)
        all_intent, all_slot = [intent_logits], [slot_logits]
        if iterations:  # one draw of each gate per forward pass (a training step), shared by every round
            pi_to_intent, pi_to_slot = self.slot_to_intent.weights(tau), self.intent_to_slot.weights(tau)
        for _ in range(iterations):
            intent_probs, slot_probs = intent_logits.softmax(-1), slot_logits.softmax(-1)
            if fb["detach"]:
                intent_probs, slot_probs = intent_probs.detach(), slot_probs.detach()
            slot_summary = self.summarise_slots(slot_probs, word_mask)
            to_intent = self.slot_to_intent(slot_summary, pi_to_intent)  # slot -> intent
            # intent -> slot, broadcast to every word
            to_slot = [None if a is None else a.unsqueeze(1) for a in self.intent_to_slot(intent_probs, pi_to_slot)]
            intent_logits = self._call_head("intent", utterance, to_intent, posteriors)
            slot_logits = self._call_head("slot", words, to_slot, posteriors)
            all_intent.append(intent_logits)
            all_slot.append(slot_logits)
        return all_intent, all_slot

    def _call_head(self, task: str, x, infusions, posteriors):
        head = self.intent_head if task == "intent" else self.slot_head
        if posteriors is None:
            return head(x, infusions)
        logits, posterior = head(x, infusions)
        posteriors[task].append(posterior)
        return logits

    def summarise_slots(self, slot_probs, word_mask):
        """Masked mean over words of the slot distribution (optionally with the max-pool too)."""
        maskf = word_mask.unsqueeze(-1).to(slot_probs.dtype)
        mean = (slot_probs * maskf).sum(1) / maskf.sum(1).clamp(min=1)
        if self.config.feedback["slot_summary"] == "mean+max":
            return torch.cat([mean, (slot_probs * maskf).amax(1)], -1)
        return mean

    def forward(
        self,
        input_ids,
        attention_mask,
        word_index,
        word_mask,
        intent_labels=None,
        slot_labels=None,
        iterations: int | None = None,
        return_iterations: bool = False,
        features: tuple | None = None,
        **hf_flags,
    ) -> SLUOutput:
        """A batch as `data.features.collate` builds it (labels optional: with them, `loss`).
        `features`: (utterance, words) from `encode`, when the caller has them already (a joint
        run's parser encodes once for every dataset's heads). Of other keyword arguments only
        transformers' generic flags are accepted (and ignored): a misspelt label argument, e.g.
        `labels=`, would otherwise return no loss without a word."""
        unknown = set(hf_flags) - IGNORED_HF_FLAGS
        if unknown:
            raise TypeError(f"SLUModel.forward got unexpected argument(s) {', '.join(sorted(unknown))}; it takes "
                            "input_ids, attention_mask, word_index, word_mask, intent_labels, slot_labels, "
                            "iterations, return_iterations, features")
        fb = self.config.feedback
        word_mask = word_mask.bool()
        if iterations is None:
            iterations = fb["iterations"] if self.training else (fb["max_iterations"] or fb["iterations"])
        if iterations > 0 and not fb["iterations"]:
            raise ValueError(f"iterations={iterations}: this model was trained without feedback "
                             "(model.feedback.iterations=0) and has no gates to iterate with")
        utterance, words = features if features is not None else self.encode(input_ids, attention_mask, word_index)
        posteriors = {"intent": [], "slot": []} if self.config.head == "vmtl" else None
        all_intent, all_slot = self.run_heads(utterance, words, word_mask, iterations, posteriors)

        steps = None
        used = torch.full((input_ids.shape[0],), iterations, device=input_ids.device)
        if iterations > 0:
            steps = step_sizes([x.softmax(-1) for x in all_intent], [x.softmax(-1) for x in all_slot], word_mask)
        if posteriors is not None and not self.training and self.config.vmtl["predict"] == "mc":
            # MC prediction: log of the predictive distribution averaged over the draws, per iteration
            samples = int(self.config.vmtl["predict_samples"])
            all_intent = [p.mc_log_probs(samples) for p in posteriors["intent"]]
            all_slot = [p.mc_log_probs(samples) for p in posteriors["slot"]]
        intent_logits, slot_logits = all_intent[-1], all_slot[-1]
        if iterations > 0 and not self.training and fb["eps"] > 0:
            # adaptive inference: each example stops at the first iteration whose steps are all < eps.
            # All rounds still run for the batch: the heads are a small part of the cost next to the
            # encoder, and evaluation reports the step sizes of every round.
            converged = (steps < fb["eps"]).all(0)  # (K, batch)
            first = torch.where(converged.any(0), converged.float().argmax(0) + 1, iterations)
            used = first
            stacked_intent, stacked_slot = torch.stack(all_intent), torch.stack(all_slot)
            batch = torch.arange(input_ids.shape[0], device=input_ids.device)
            intent_logits, slot_logits = stacked_intent[first, batch], stacked_slot[first, batch]

        loss = loss_parts = None
        if intent_labels is not None and slot_labels is not None:
            if posteriors is not None:
                posteriors["peers"] = self.peer_posteriors(utterance, words)
            loss, loss_parts = self.compute_loss(all_intent, all_slot, steps, intent_labels, slot_labels, word_mask,
                                                 posteriors)
        return SLUOutput(
            loss=loss, intent_logits=intent_logits, slot_logits=slot_logits, iterations=used, steps=steps,
            all_intent_logits=tuple(all_intent) if return_iterations else None,
            all_slot_logits=tuple(all_slot) if return_iterations else None, loss_parts=loss_parts,
        )

    # -- losses and decoding ------------------------------------------------------------------
    def iteration_weights(self, iterations: int) -> list:
        w = self.config.feedback["iter_weights"]
        if isinstance(w, (list, tuple)):  # one weight per trained round (iterations + 1 of them)
            # a pass of another number of rounds (max_iterations, an explicit `iterations`): the last
            # round takes the final weight, earlier ones the trained rounds', the last of them repeated
            return [float(w[min(k, len(w) - 2)]) for k in range(iterations)] + [float(w[-1])]
        return [float(w)] * iterations + [1.0]

    def slot_loss(self, slot_logits, slot_labels, word_mask):
        if self.crf is not None:
            return self.crf.neg_log_likelihood(slot_logits, slot_labels, word_mask)
        return labelled_cross_entropy(slot_logits.flatten(0, 1), slot_labels.flatten())

    def compute_loss(self, all_intent, all_slot, steps, intent_labels, slot_labels, word_mask, posteriors=None):
        """sum_k w_k (CE_intent^k + CE_slot^k) + lambda_conv * L_conv.

        With the VMTL head, CE is the Monte Carlo cross-entropy, each iteration adds
        kl_weight * beta_z * KL_z per task, and kl_weight * beta_w * KL_w is added once per task."""
        if posteriors is not None:
            loss, parts = self.vmtl_loss(posteriors, intent_labels, slot_labels, word_mask)
        else:
            loss, parts = self.task_loss(all_intent, all_slot, intent_labels, slot_labels, word_mask)
        if steps is not None:
            conv = convergence_loss(steps)
            loss = loss + self.config.feedback["conv_weight"] * conv
            parts["conv"] = conv.item()
        return loss, parts

    def task_loss(self, all_intent, all_slot, intent_labels, slot_labels, word_mask):
        c = self.config
        weights = self.iteration_weights(len(all_intent) - 1)
        loss = 0.0
        for w, intent_logits, slot_logits in zip(weights, all_intent, all_slot):
            intent_ce = labelled_cross_entropy(intent_logits, intent_labels)
            slot_ce = self.slot_loss(slot_logits, slot_labels, word_mask)
            loss = loss + w * (c.intent_loss_weight * intent_ce + c.slot_loss_weight * slot_ce)
        return loss, {"intent": intent_ce.item(), "slot": slot_ce.item()}

    def peer_heads(self) -> list:
        """The heads of `vmtl.peer_tasks` ("dataset.intent" / "dataset.slot"), None where the peer
        dataset's model is not attached (a dataset's model loaded on its own)."""
        heads = []
        for task in self.config.vmtl["peer_tasks"]:
            dataset, kind = task.rsplit(".", 1)
            peer = self.vmtl_peers.get(dataset)
            heads.append(None if peer is None else getattr(peer, f"{kind}_head"))
        return heads

    @torch.no_grad()
    def peer_posteriors(self, utterance, words) -> list:
        """The peer tasks' posteriors on this input, the cross-dataset components of the VMTL
        priors: their heads at iteration 0, without dropout and without gradient."""
        out = []
        for task, head in zip(self.config.vmtl["peer_tasks"], self.peer_heads()):
            if head is None:
                out.append(None)
                continue
            training = head.training
            out.append(head.eval()(utterance if task.endswith(".intent") else words)[1])
            head.train(training)
        return out

    def vmtl_loss(self, posteriors, intent_labels, slot_labels, word_mask):
        """Monte Carlo cross-entropy + beta_z KL_z per round and task, weighted like the plain loss
        (round and task weights: KL_z regularises the latent of that round's prediction), plus
        beta_w KL_w once per step (the classifier weights are shared by all rounds)."""
        c, v = self.config, self.config.vmtl
        samples, form = int(v["samples"]), v["prior"]
        alpha = self.vmtl_prior.weights(self.vmtl_tau)
        weights = self.iteration_weights(len(posteriors["intent"]) - 1)
        peers = posteriors["peers"]  # set by forward with the labels
        loss, kl_z = 0.0, 0.0
        for w, intent, slot in zip(weights, posteriors["intent"], posteriors["slot"]):
            intent_ce, slot_ce, kl_intent, kl_slot = vmtl_lib.iteration_loss(
                intent, slot, intent_labels, slot_labels, word_mask, alpha, samples, form, peers)
            kl_z = kl_intent + kl_slot
            loss = loss + w * (c.intent_loss_weight * (intent_ce + self.kl_weight * v["beta_z"] * kl_intent)
                               + c.slot_loss_weight * (slot_ce + self.kl_weight * v["beta_z"] * kl_slot))
        peer_heads = self.peer_heads()
        kl_w = (vmtl_lib.weight_kl(self.intent_head, [self.slot_head, *peer_heads], alpha["weight", "intent"],
                                   samples, form)
                + vmtl_lib.weight_kl(self.slot_head, [self.intent_head, *peer_heads], alpha["weight", "slot"],
                                     samples, form))
        loss = loss + self.kl_weight * v["beta_w"] * kl_w
        return loss, {"intent": intent_ce.item(), "slot": slot_ce.item(), "kl_z": float(kl_z.detach()),
                      "kl_w": kl_w.item()}

    def prior_probabilities(self) -> dict:
        """softmax(beta) of the VMTL priors per task: weight on the other task's posterior vs
        N(0, I), for the latent and the classifier weights (empty without the VMTL head)."""
        return self.vmtl_prior.probabilities() if self.config.head == "vmtl" else {}

    def decode_slots(self, slot_logits, word_mask, intent_ids=None) -> torch.Tensor:
        """Best slot id per word under this model's decoder and constraints (see `decode_slots`)."""
        return decode_slots(slot_logits, word_mask, self.config, intent_ids, self.crf, self._decode_cache)

    def gate_probabilities(self) -> dict:
        """Current gate distribution over infusion points per direction (empty without feedback)."""
        if self.config.feedback["iterations"] == 0:
            return {}
        return {
            "slot_to_intent": self.slot_to_intent.probabilities().tolist(),
            "intent_to_slot": self.intent_to_slot.probabilities().tolist(),
        }


def decode_slots(slot_logits, word_mask, config, intent_ids=None, crf=None, cache=None) -> torch.Tensor:
    """Best slot id per word: Viterbi under a CRF, per-word argmax otherwise. With
    `bio_constraints`, the best path that is valid IOB2 (no I-x without its B-x), found by
    Viterbi over the per-word log-probabilities (or the CRF scores) with invalid moves forbidden.
    With `intent_slot_constraints` and the predicted `intent_ids`, only the slot types seen
    with each utterance's intent in training (and O) can be chosen. `cache` (a dict) keeps the
    constraint tensors between calls; without `crf`, log-probabilities in place of `slot_logits`
    decode the same (the ONNX runner's case)."""
    cache = {} if cache is None else cache
    device, word_mask = slot_logits.device, word_mask.bool()
    if intent_ids is not None and config.intent_slot_constraints:
        if ("intent_slots", device) not in cache:
            cache["intent_slots", device] = forbid(intent_slot_allowed(config).to(device))
        slot_logits = slot_logits + cache["intent_slots", device][intent_ids].unsqueeze(1)
    if not config.bio_constraints:
        return crf.decode(slot_logits, word_mask) if crf is not None else slot_logits.argmax(-1)
    if ("bio", device) not in cache:
        cache["bio", device] = tuple(x.to(device) for x in bio_transitions(config.slot_labels))
    allowed, allowed_first = cache["bio", device]
    if crf is not None:
        return crf.decode(slot_logits, word_mask, allowed, allowed_first)
    return viterbi_decode(slot_logits.log_softmax(-1), word_mask, forbid(allowed), forbid(allowed_first), 0.0)


def intent_slot_allowed(config) -> torch.Tensor:
    """(intents x slot tags): True where the tag's type was seen with the intent in training (O
    always); an intent without a record allows every tag. A `#`-joined multi-intent label (rare
    in training) also allows the types of each of its parts."""
    if not config.slot_types_by_intent:
        raise ValueError("intent_slot_constraints: this model has no record of the slot types seen with "
                         "each intent (slot_types_by_intent; runs trained before it was added)")
    allowed = torch.ones(len(config.intent_labels), len(config.slot_labels), dtype=torch.bool)
    for i, intent in enumerate(config.intent_labels):
        if intent in config.slot_types_by_intent:
            seen = {t for part in [intent, *intent.split("#")] for t in config.slot_types_by_intent.get(part, ())}
            allowed[i] = torch.tensor([t == "O" or t[2:] in seen for t in config.slot_labels])
    return allowed


def forbid(allowed: torch.Tensor) -> torch.Tensor:
    """A score penalty from a boolean mask: 0 where allowed, -1e4 where not (added to log-scores)."""
    return torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, -1e4)


AutoConfig.register("slu_feedback", SLUConfig)
AutoModel.register(SLUConfig, SLUModel)
