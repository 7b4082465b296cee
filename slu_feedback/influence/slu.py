"""MTIF for a trained `SLUModel`: the influence scope, cached encoder features, per-example losses.

The encoder below the scope is fixed, so it runs once: `heads` caches the utterance feature u and
the word features H of every utterance; `heads+last` caches the input of the last encoder layer
and re-runs that layer (plus pooling) inside the loss. Everything else is a function of the cache.

Per-example task losses (what a "sample" is), on the model's FINAL feedback iteration (K fixed at
the trained `feedback.iterations`; no adaptive early stop; dropout off; the Gumbel gate hard, so
its logits `beta` get no gradient and leave the scope, as do amplifiers the hard gate does not use):

- intent sample of utterance i: cross-entropy of its intent (0 for an intent unseen in training);
- slot sample: softmax decoder: the cross-entropy summed over its words (tags unseen in training
  skipped) divided by the split's mean number of labelled words per utterance, so that the mean over
  utterances is the per-word mean the trainer minimises (a per-utterance mean of word losses would
  weigh a 2-word utterance's words 10x a 20-word one's); CRF decoder: the utterance's CRF negative
  log-likelihood (`CRF.utterance_nll`, unseen tags marginalised; the trainer's CRF loss is its mean
  over utterances).

The training objective for the Hessian is the mean over utterances of
`intent_loss_weight * intent + slot_loss_weight * slot`; earlier iterations and the convergence
loss of a feedback model are left out (they are training aids; the prediction is the last iteration).
"""

from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.func import functional_call

from ..data.dataset import LabelMaps, load_splits, resolve_data_path, subsample
from ..data.features import featurize, make_loader
from ..models import load_run
from .mtif import Problem

SCOPES = ("heads", "heads+last")
TASKS = ("intent", "slot")
TARGET_SPLITS = ("validation", "heldout", "test")  # whose loss the influence is on (see build_problem)


def run_recipe(run_dir) -> dict:
    path = Path(run_dir) / "recipe.yaml"
    if not path.exists():
        raise ValueError(f"{run_dir} has no recipe.yaml: cannot tell which data the run was trained on")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def run_splits(recipe: dict):
    """The run's train/validation/test splits, with the training subsample the trainer used; a run
    trained on part of its training split also gets `heldout`, the training utterances it did not see."""
    data_cfg = recipe["data"]
    splits = load_splits(resolve_data_path(data_cfg["path"], recipe.get("recipe_dir")), format=data_cfg["format"],
                         repair_bio=data_cfg["repair_bio"])
    fraction = data_cfg.get("train_fraction", 1.0)
    if fraction < 1.0:
        full = splits["train"]
        splits["train"] = subsample(full, fraction, recipe["seed"])
        splits["heldout"] = subsample(full, fraction, recipe["seed"], rest=True)
    return splits


def last_layer(model):
    """The last transformer layer of an HF encoder (BERT-style `encoder.layer` list)."""
    if model.config.encoder_type != "hf":
        raise ValueError("scope heads+last needs a transformer encoder; this run's encoder is a BiLSTM: use --scope heads")
    hf = model.encoder.model
    layers = getattr(getattr(hf, "encoder", None), "layer", None)
    if layers is None:
        raise ValueError(f"scope heads+last: cannot find the layers of {type(hf).__name__} (expected .encoder.layer)")
    return len(layers) - 1, layers[-1]


class TaskLosses(nn.Module):
    """Per-example (intent, slot) losses of a chunk of cached features; called via functional_call."""

    def __init__(self, model, scope: str):
        super().__init__()
        if model.config.head == "vmtl":
            raise ValueError("MTIF scores the deterministic heads; this run has the VMTL head (model.head: vmtl), whose "
                             "class weights are sampled: score a run trained with model.head: deterministic")
        self.model = model
        self.scope = scope
        self.iterations = model.config.feedback["iterations"]
        if scope == "heads+last":
            _, self.layer = last_layer(model)

    def features(self, chunk):
        if self.scope == "heads":
            return chunk["utterance"], chunk["words"]
        return last_layer_features(self.model, self.layer, chunk)

    def forward(self, chunk):
        utterance, words = self.features(chunk)
        word_mask = chunk["word_mask"]
        all_intent, all_slot = self.model.run_heads(utterance, words, word_mask, self.iterations)
        intent_logits, slot_logits = all_intent[-1], all_slot[-1]
        intent = F.cross_entropy(intent_logits, chunk["intent_labels"], ignore_index=-100, reduction="none")
        labels = chunk["slot_labels"]
        crf = self.model.crf
        if crf is not None:
            slot = crf.utterance_nll(slot_logits, labels, word_mask, marginalise=True)
        else:
            ce = F.cross_entropy(slot_logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
            counted = (labels != -100).to(ce.dtype)
            slot = (ce * counted).sum(1) * chunk["slot_scale"]
        return torch.stack([intent, slot], 1)


def last_layer_features(model, layer, chunk):
    """Scope heads+last: the utterance and word features from the last layer re-run on the cached
    hidden states before it (BERT-style layers: hidden states and an additive attention mask)."""
    mask, hidden = chunk["attention_mask"], chunk["hidden"]
    additive = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
    tokens = layer(hidden, attention_mask=additive)
    tokens = tokens[0] if isinstance(tokens, tuple) else tokens
    return pool(model, tokens, mask, chunk["word_index"])


def check_last_layer(model, batch, chunk) -> None:
    """Scope heads+last is only right where re-running the last layer alone gives the features the
    whole encoder gives (not where a layer needs more than hidden states and a mask: relative
    position biases, DeBERTa's disentangled attention): checked on the first batch."""
    expected = model.encode(batch["input_ids"], batch["attention_mask"], batch["word_index"])
    why = None
    try:
        got = last_layer_features(model, last_layer(model)[1], chunk)
        difference = max(float((a - b).abs().max()) for a, b in zip(expected, got))
        if not difference <= 1e-4:
            why = f"features differ by up to {difference:.2g}"
    except Exception as error:  # a layer that takes other arguments
        why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if why:
        raise ValueError(f"scope heads+last re-runs the last encoder layer on its input, which does not reproduce "
                         f"{type(model.encoder.model).__name__}'s features ({why}): use --scope heads")


def pool(model, tokens, attention_mask, word_index):
    """`SLUModel.encode` after the encoder: utterance feature and first-sub-token word features."""
    return model.pool(tokens, attention_mask, word_index)


@torch.no_grad()
def cache_features(model, loader, scope: str, dtype, device, start: int = 0) -> list:
    """One pass of the fixed part of the encoder; returns chunks for `Problem` (batch first)."""
    chunks, offset = [], start
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        size = len(batch["input_ids"])
        chunk = {"word_mask": batch["word_mask"].bool(), "intent_labels": batch["intent_labels"],
                 "slot_labels": batch["slot_labels"], "index": torch.arange(offset, offset + size, device=device)}
        if scope == "heads":
            utterance, words = model.encode(batch["input_ids"], batch["attention_mask"], batch["word_index"])
            chunk.update(utterance=utterance.to(dtype), words=words.to(dtype))
        else:
            out = model.encoder.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      output_hidden_states=True)
            chunk.update(hidden=out.hidden_states[-2], attention_mask=batch["attention_mask"],
                         word_index=batch["word_index"])
            if offset == start:
                check_last_layer(model, batch, chunk)
            chunk["hidden"] = chunk["hidden"].to(dtype)
        chunks.append(chunk)
        offset += size
    return chunks


def split_chunks(model, tokenizer, split, max_length: int, scope: str, batch_size: int, dtype, device) -> list:
    """A dataset split as cached feature chunks (featurize, batch, one pass of the fixed encoder)."""
    labels = LabelMaps(model.config.intent_labels, model.config.slot_labels)
    loader = make_loader(featurize(split, tokenizer, labels, max_length), batch_size, tokenizer, False)
    chunks = cache_features(model, loader, scope, dtype, device)
    # 1 / (labelled words per utterance in the split): the slot samples' weight (see the module docstring)
    words_per_utterance = max(sum(int((c["slot_labels"] != -100).sum()) for c in chunks), 1) / len(split)
    for c in chunks:
        c["slot_scale"] = torch.full(c["index"].shape, 1.0 / words_per_utterance, dtype=dtype, device=device)
    return chunks


def scope_parameters(module: TaskLosses) -> dict:
    """Candidate scope parameters (names as in `module`): everything outside the encoder, plus the
    last encoder layer for `heads+last`."""
    last = None
    if module.scope == "heads+last":
        index, _ = last_layer(module.model)
        last = f"model.encoder.model.encoder.layer.{index}."
    return {name: p.detach() for name, p in module.named_parameters()
            if not name.startswith("model.encoder.") or (last and name.startswith(last))}


def build_problem(run_dir, scope: str = "heads", batch_size: int = 64, dtype=torch.float64, device="cpu",
                  model=None, tokenizer=None, splits=None, target_split: str = "validation") -> tuple:
    """(Problem, splits, model) for a trained run: the encoder features are cached once. The target
    losses V_k are those of `target_split`: validation; heldout, the part of the training split a run
    with data.train_fraction < 1 did not train on; test only as a diagnostic (see score_run)."""
    if model is None:
        model, tokenizer = load_run(run_dir)
    recipe = run_recipe(run_dir)
    splits = splits or run_splits(recipe)
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}")
    model.eval()
    if scope == "heads+last":
        model.encoder.model.set_attn_implementation("eager")  # vmap-friendly attention for per-example grads
    model.to(device)
    max_length = recipe["data"]["max_length"]
    if target_split not in TARGET_SPLITS:
        raise ValueError(f"target split must be one of {', '.join(TARGET_SPLITS)}, not {target_split!r}")
    if target_split == "heldout" and "heldout" not in splits:
        raise ValueError(f"{run_dir} was trained on its whole training split, so it has no held-out part to score "
                         "against: train it with data.train_fraction below 1 (e.g. 0.9) for --target-split heldout")
    train, valid = (split_chunks(model, tokenizer, splits[split], max_length, scope, batch_size, dtype, device)
                    for split in ("train", target_split))
    model.to(dtype)
    module = TaskLosses(model, scope)
    params = scope_parameters(module)
    loss_fn = lambda p, chunk: functional_call(module, p, (chunk,))  # noqa: E731
    c = model.config
    problem = Problem(params, loss_fn, train, valid, TASKS, (c.intent_loss_weight, c.slot_loss_weight))
    # drop parameters the losses do not depend on (the hard gate's logits, unused amplifiers)
    w = problem.flat().requires_grad_(True)
    used = [g.abs().sum() > 0 for g in torch.autograd.grad(problem.objective(w), w)[0].split(problem.numels)]
    kept = {k: v for k, v, u in zip(problem.names, params.values(), used) if u}
    problem = Problem(kept, loss_fn, train, valid, TASKS, (c.intent_loss_weight, c.slot_loss_weight))
    return problem, splits, model


def split_losses(run_dirs, splits=("test",), batch_size: int = 64, dtype=torch.float64) -> list:
    """[{split: (intent, slot) mean loss}] of runs that share one encoder (a run and its refits):
    the per-example task losses MTIF uses, so a refit's change of the test loss can be set beside its
    predicted and actual change of the validation loss. The features are cached once, with the first
    run's encoder; a run whose encoder differs is refused."""
    run_dirs = [Path(r) for r in run_dirs]
    source, tokenizer = load_run(run_dirs[0])
    recipe = run_recipe(run_dirs[0])
    data = run_splits(recipe)
    chunks = {split: split_chunks(source, tokenizer, data[split], recipe["data"]["max_length"], "heads", batch_size,
                                  dtype, "cpu") for split in splits}
    encoder = [p.detach().clone() for p in source.encoder.parameters()]
    losses = []
    for run_dir in run_dirs:
        model = source if run_dir == run_dirs[0] else load_run(run_dir)[0]
        if not all(torch.equal(a, b) for a, b in zip(model.encoder.parameters(), encoder)):
            raise ValueError(f"{run_dir} has another encoder than {run_dirs[0]}: its features are not the cached ones")
        module = TaskLosses(model.to(dtype), "heads")
        with torch.no_grad():
            losses.append({split: (sum(module(c).sum(0) for c in cs) / sum(len(c["index"]) for c in cs)).tolist()
                           for split, cs in chunks.items()})
    return losses
