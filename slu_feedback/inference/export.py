"""ONNX export of a trained run: encoder + heads with the feedback loop unrolled, and a check that
ONNX Runtime gives the same predictions as PyTorch.

    from slu_feedback.inference.export import export_onnx, check_onnx
    path = export_onnx("runs/atis-...", "runs/atis-.../model.onnx")
    report = check_onnx("runs/atis-...", path, split="validation")

The exported graph takes `input_ids`, `attention_mask`, `word_index`, `word_mask` (int64; batch
and sequence/word axes dynamic, exactly what `slu_feedback.data.features.collate` produces) and
returns `intent_probs` (batch x intents) and `slot_probs` (batch x words x slot tags).

What is frozen at export time:
- the feedback loop runs the iterations `SLUParser` runs (`feedback.max_iterations`, else the
  trained K), all of them for the whole batch, and each utterance's output is taken from its first
  round whose step sizes are all under `feedback.eps`, as in the PyTorch model (tensor ops, no
  Python branch);
- each feedback gate's evaluation-time choice (a hard argmax over infusion points for the
  Gumbel gate) is baked in as a constant, so the graph has no Python branches on weights.
For a CRF slot decoder the graph returns the per-word slot distribution (softmax of the
emissions); the Viterbi decode over the CRF transitions is not part of the graph.
"""

import contextlib
import copy
import logging
import re
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from ..data.features import collate, encode_words, parse_length
from ..data.readers import WORD_SPLITS, tokenize
from ..models import load_run
from ..models.modeling import decode_slots
from ..models.feedback import FeedbackGate
from .parser import warn_truncated

INPUT_NAMES = ["input_ids", "attention_mask", "word_index", "word_mask"]
OUTPUT_NAMES = ["intent_probs", "slot_probs"]


class FrozenGate(nn.Module):
    """A `FeedbackGate` with its evaluation-time weights over infusion points fixed as constants
    (same arithmetic as the gate in eval mode, without the data-dependent `pi[m] == 0` branch)."""

    def __init__(self, gate: FeedbackGate, tau: float):
        super().__init__()
        was_training = gate.training
        gate.eval()
        with torch.no_grad():
            pi = gate.weights(tau).detach().clone()
        gate.train(was_training)
        self.register_buffer("pi", pi, persistent=False)
        self.points = [m for m, amp in enumerate(gate.amplifiers)
                       if not isinstance(amp, nn.Identity) and float(pi[m]) != 0.0]
        self.n_points = len(gate.amplifiers)
        self.amplifiers = gate.amplifiers

    def weights(self, tau=None) -> torch.Tensor:
        return self.pi

    def forward(self, signal: torch.Tensor, pi=None) -> list:
        additions = [None] * self.n_points
        for m in self.points:
            additions[m] = self.pi[m] * self.amplifiers[m](signal)
        return additions


class SLUExportModule(nn.Module):
    """(input_ids, attention_mask, word_index, word_mask) -> (intent_probs, slot_probs), with the
    feedback loop unrolled to the iterations the model runs at evaluation."""

    def __init__(self, model):
        super().__init__()
        model = copy.deepcopy(model).eval()
        feedback = model.config.feedback
        self.iterations = int(feedback["max_iterations"] or feedback["iterations"])
        for name in ("slot_to_intent", "intent_to_slot"):
            if isinstance(getattr(model, name, None), FeedbackGate):
                setattr(model, name, FrozenGate(getattr(model, name), model.gate_tau))
        self.model = model

    def forward(self, input_ids, attention_mask, word_index, word_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, word_index=word_index,
                         word_mask=word_mask, iterations=self.iterations)
        return out.intent_logits.softmax(-1), out.slot_logits.softmax(-1)


def example_inputs(tokenizer, texts=("show me flights from boston to denver tomorrow", "play jazz"), max_length=64):
    """A padded batch in the model's input format (used for tracing and as a smoke input)."""
    words = [[w for w, _, _ in tokenize(t)] for t in texts]
    encoded = encode_words(tokenizer, words, max_length)
    rows = [{k: encoded[k][j] for k in encoded} for j in range(len(words))]
    batch = collate(rows, tokenizer.pad_token_id or 0)
    return {name: batch[name].long() for name in INPUT_NAMES}


def export_onnx(run_dir, out_file=None, exporter: str = "auto", opset: int | None = None, model=None, tokenizer=None) -> Path:
    """Export `run_dir` to ONNX (default: RUN_DIR/model.onnx). `exporter`: 'dynamo' (torch.export),
    'legacy' (TorchScript tracer) or 'auto' (dynamo, falling back to legacy if it fails)."""
    if model is None:
        model, tokenizer = load_run(run_dir)
    if model.config.head == "vmtl":  # its Monte Carlo prediction draws from a seeded generator
        raise ValueError("ONNX export does not support model.head=vmtl runs (the Monte Carlo prediction "
                         "is not traceable); serve them with slu-serve or SLUParser")
    out_file = Path(out_file) if out_file else Path(run_dir) / "model.onnx"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    module = SLUExportModule(model).eval()
    inputs = example_inputs(tokenizer)
    args = tuple(inputs[name] for name in INPUT_NAMES)
    # written beside the target and renamed when complete: a failed or interrupted export leaves an
    # existing model.onnx as it was
    partial = out_file.with_name(out_file.name + ".partial")
    try:
        errors = _export_first_that_works(["dynamo", "legacy"] if exporter == "auto" else [exporter],
                                          module, args, partial, opset)
        partial.replace(out_file)
    finally:
        partial.unlink(missing_ok=True)
    if errors:
        warnings.warn(f"the torch.export-based exporter failed ({errors[0]}); used the TorchScript exporter")
    return out_file


def _export_first_that_works(kinds: list, module, args, out_file: Path, opset) -> list:
    """Export with the first of `kinds` that succeeds; returns why the ones before it failed (a
    RuntimeError naming every failure where none succeeds)."""
    errors = []
    for kind in kinds:
        try:
            with torch.no_grad(), warnings.catch_warnings(), _quiet_loggers("torch", "onnxscript"):
                warnings.simplefilter("ignore")
                if kind == "dynamo":
                    _export_dynamo(module, args, out_file, opset)
                elif kind == "legacy":
                    _export_legacy(module, args, out_file, opset)
                else:
                    raise ValueError(f"exporter must be 'auto', 'dynamo' or 'legacy', not {kind!r}")
            return errors
        except ValueError:
            raise
        except Exception as error:  # try the next exporter, keep the reason
            message = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
            errors.append(f"{kind}: {type(error).__name__}: {message.splitlines()[0] if message else ''}")
    raise RuntimeError("ONNX export failed:\n  " + "\n  ".join(errors))


@contextlib.contextmanager
def _quiet_loggers(*names):
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export_dynamo(module, args, out_file: Path, opset):
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("sequence", min=2, max=4096)
    words = torch.export.Dim("words", min=1, max=4096)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq},
              "word_index": {0: batch, 1: words}, "word_mask": {0: batch, 1: words}}
    program = torch.onnx.export(module, args, dynamo=True, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                                dynamic_shapes=shapes, opset_version=opset or 18, external_data=False,
                                verbose=False)
    program.save(str(out_file), external_data=False)


def _export_legacy(module, args, out_file: Path, opset):
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "word_index": {0: "batch", 1: "words"}, "word_mask": {0: "batch", 1: "words"},
            "intent_probs": {0: "batch"}, "slot_probs": {0: "batch", 1: "words"}}
    torch.onnx.export(module, args, str(out_file), dynamo=False, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                      dynamic_axes=axes, opset_version=opset or 17, do_constant_folding=True)


class OnnxSLU:
    """Run an exported graph with ONNX Runtime on raw text: `probabilities(texts)` returns
    (intent_probs, slot_probs, word_mask) as numpy arrays; `predict(texts)` the labels, decoded
    from the probabilities under the run's IOB2 and intent-slot constraints as `SLUModel.decode_slots`
    does. The graph holds no CRF transitions: a CRF run's tags are decoded per word (with the IOB2
    constraint), which can differ from the PyTorch model's Viterbi path."""

    def __init__(self, onnx_file, tokenizer, config, max_length: int | None = None, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer, self.config, self.max_length = tokenizer, config, parse_length(config, max_length)
        self._decode_cache = {}

    def run_batch(self, batch: dict):
        feeds = {name: batch[name].long().numpy() for name in INPUT_NAMES if name in self.input_names}
        return self.session.run(OUTPUT_NAMES, feeds)

    def words(self, texts: list) -> list:
        """Each text split into words the way the run's training words were split."""
        split = WORD_SPLITS[getattr(self.config, "word_split", "rule")]
        return [[w for w, _, _ in split(t)] for t in texts]

    def probabilities(self, texts: list, words: list | None = None):
        """`words`: `self.words(texts)` where the caller already has them."""
        words = [w or ["."] for w in (self.words(texts) if words is None else words)]
        encoded = encode_words(self.tokenizer, words, self.max_length)
        rows = [{k: encoded[k][j] for k in encoded} for j in range(len(words))]
        batch = collate(rows, self.tokenizer.pad_token_id or 0)
        intent_probs, slot_probs = self.run_batch(batch)
        return intent_probs, slot_probs, batch["word_mask"].numpy()

    def predict(self, texts: list) -> list:
        """{"intent", "tags", "truncated" (and "words_seen" when it is)} per text, as from SLUParser: one tag per word, the words
        after the run's max_length sub-tokens tagged O (with a warning); text with no words gets
        intent None and no tags (the graph is given a "." in its place, as it needs one word)."""
        words = self.words(texts)
        intent_probs, slot_probs, word_mask = self.probabilities(texts, words)
        intent_ids = torch.from_numpy(intent_probs.argmax(-1))
        slot_ids = decode_slots(torch.from_numpy(slot_probs).clamp_min(1e-30).log(), torch.from_numpy(word_mask),
                                self.config, intent_ids, cache=self._decode_cache)
        results = []
        for i, text_words in enumerate(words):
            if not text_words:
                results.append({"intent": None, "tags": [], "truncated": False})
                continue
            seen = int(word_mask[i].sum())  # every word has a sub-token: fewer seen only where the cut fell
            if seen < len(text_words):
                warn_truncated(len(text_words), seen, self.max_length)
            results.append({"intent": self.config.intent_labels[int(intent_ids[i])],
                            "tags": [self.config.slot_labels[int(s)] for s in slot_ids[i, :seen]]
                            + ["O"] * (len(text_words) - seen), "truncated": seen < len(text_words),
                            **({"words_seen": seen} if seen < len(text_words) else {})})
        return results


def check_onnx(run_dir, onnx_file, split: str = "validation", batch_size: int = 32, atol: float = 1e-4,
               data=None, model=None, tokenizer=None, limit: int | None = None) -> dict:
    """Compare ONNX Runtime with PyTorch (the same unrolled module) on a data split of the run.

    Returns max absolute differences of the probabilities, argmax agreement of intents and slot
    tags (real words only), and `ok` (same argmax everywhere and max diff <= atol)."""
    import numpy as np

    from ..data.dataset import LabelMaps, load_data, pick_split, resolve_data_path
    from ..data.features import featurize, make_loader
    from ..evaluation.report import run_data_path, run_max_length

    if model is None:
        model, tokenizer = load_run(run_dir)
    path, base_dir, fmt, max_length = ((data, None, "auto", run_max_length(Path(run_dir), model.config)) if data
                                       else run_data_path(Path(run_dir)))
    _, raw = pick_split(load_data(resolve_data_path(path, base_dir), format=fmt), split)
    if limit:
        raw = raw.select(range(min(limit, len(raw))))
    config = model.config
    labels = LabelMaps(config.intent_labels, config.slot_labels)
    loader = make_loader(featurize(raw, tokenizer, labels, max_length), batch_size, tokenizer, shuffle=False)
    # the reference is the PyTorch model as `SLUParser` runs it (its iterations and early exit)
    reference = copy.deepcopy(model).eval()
    runner = OnnxSLU(onnx_file, tokenizer, config)
    intent_diff = slot_diff = 0.0
    intent_agree = slot_agree = n_utts = n_words = 0
    for batch in loader:
        with torch.no_grad():
            out = reference(**{name: batch[name] for name in INPUT_NAMES})
            torch_intent, torch_slot = out.intent_logits.softmax(-1).numpy(), out.slot_logits.softmax(-1).numpy()
        ort_intent, ort_slot = runner.run_batch(batch)
        mask = batch["word_mask"].bool().numpy()
        # np.maximum, not max: max(0.0, nan) is 0.0, and a NaN output must show in the report
        intent_diff = float(np.maximum(intent_diff, np.abs(torch_intent - ort_intent).max()))
        slot_diff = float(np.maximum(slot_diff, np.abs(torch_slot - ort_slot)[mask].max() if mask.any() else 0.0))
        intent_agree += int((torch_intent.argmax(-1) == ort_intent.argmax(-1)).sum())
        slot_agree += int((torch_slot.argmax(-1) == ort_slot.argmax(-1))[mask].sum())
        n_utts += len(torch_intent)
        n_words += int(mask.sum())
    report = {"split": split, "n": n_utts, "words": n_words, "max_abs_diff_intent": intent_diff,
              "max_abs_diff_slot": slot_diff, "max_abs_diff": float(np.maximum(intent_diff, slot_diff)),
              "intent_agreement": intent_agree / max(1, n_utts), "slot_agreement": slot_agree / max(1, n_words),
              "atol": atol, "onnx_file": str(onnx_file)}
    report["ok"] = (intent_agree == n_utts and slot_agree == n_words and report["max_abs_diff"] <= atol
                    and not math.isnan(report["max_abs_diff"]))
    return report
