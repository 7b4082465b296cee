"""SLU metrics: intent accuracy, slot span F1 (seqeval, lenient default and strict IOB2) and
sentence (exact-frame) accuracy, plus per-label reports, and the intent's calibration (expected
calibration error, negative log-likelihood). Values are fractions in [0, 1] (NLL in nats)."""

import math
from collections import Counter

from seqeval.metrics import classification_report, f1_score
from seqeval.scheme import IOB2


def sentence_correct(gold_intent, pred_intent, gold_slots, pred_slots) -> bool:
    return gold_intent == pred_intent and list(gold_slots) == list(pred_slots)


def compute_metrics(gold_intents: list, pred_intents: list, gold_slots: list, pred_slots: list) -> dict:
    """Intent labels are strings (an unseen gold label can never match); slots are tag lists."""
    n = len(gold_intents)
    if n == 0:
        return {"intent_acc": 0.0, "slot_f1": 0.0, "slot_f1_strict": 0.0, "sentence_acc": 0.0, "n": 0}
    intent_hits = sum(g == p for g, p in zip(gold_intents, pred_intents))
    sentence_hits = sum(map(sentence_correct, gold_intents, pred_intents, gold_slots, pred_slots))
    return {
        "intent_acc": intent_hits / n,
        "slot_f1": f1_score(gold_slots, pred_slots, zero_division=0),
        "slot_f1_strict": f1_score(gold_slots, pred_slots, mode="strict", scheme=IOB2, zero_division=0),
        "sentence_acc": sentence_hits / n,
        "n": n,
    }


def intent_report(gold_intents: list, pred_intents: list) -> dict:
    """Per-intent precision, recall, F1 and support (gold count)."""
    labels = sorted(set(gold_intents) | set(pred_intents))
    tp = Counter(g for g, p in zip(gold_intents, pred_intents) if g == p)
    gold, pred = Counter(gold_intents), Counter(pred_intents)
    report = {}
    for label in labels:
        precision = tp[label] / pred[label] if pred[label] else 0.0
        recall = tp[label] / gold[label] if gold[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report[label] = {"precision": precision, "recall": recall, "f1": f1, "support": gold[label]}
    return report


def slot_report(gold_slots: list, pred_slots: list) -> dict:
    """Per-slot-type span precision, recall, F1 and support (seqeval default mode), plus seqeval's
    micro/macro/weighted averages; keyed as `intent_report` (seqeval's "f1-score" is "f1")."""
    report = classification_report(gold_slots, pred_slots, output_dict=True, zero_division=0)
    return {k: {("f1" if m == "f1-score" else m): float(v) for m, v in d.items()} for k, d in report.items()}


def reliability_bins(confidences: list, correct: list, n_bins: int = 15) -> list:
    """Equal-width confidence bins (lo, hi]: per bin its range, count, mean confidence, accuracy."""
    bins = [{"lo": b / n_bins, "hi": (b + 1) / n_bins, "count": 0, "confidence": 0.0, "accuracy": 0.0}
            for b in range(n_bins)]
    for conf, ok in zip(confidences, correct):
        b = min(n_bins - 1, max(0, math.ceil(conf * n_bins) - 1))
        bins[b]["count"] += 1
        bins[b]["confidence"] += conf
        bins[b]["accuracy"] += float(ok)
    for b in bins:
        if b["count"]:
            b["confidence"] /= b["count"]
            b["accuracy"] /= b["count"]
    return bins


def expected_calibration_error(confidences: list, correct: list, n_bins: int = 15) -> float:
    """ECE = sum_b (n_b / n) |accuracy_b - confidence_b| over equal-width top-1 confidence bins."""
    n = len(confidences)
    if n == 0:
        return 0.0
    return sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability_bins(confidences, correct, n_bins))


def intent_calibration(intent_probs: list, gold_intents: list, labels: list, n_bins: int = 15) -> dict:
    """Calibration of the intent distribution: `intent_ece` (top-1 confidence, 15 bins; an intent
    unknown to the model counts as wrong) and `intent_nll` (mean -log p(gold) over the examples
    whose gold intent the model knows; `intent_nll_n` of them)."""
    index = {label: i for i, label in enumerate(labels)}
    confidences, correct, nll = [], [], []
    for probs, gold in zip(intent_probs, gold_intents):
        top = max(range(len(probs)), key=probs.__getitem__)
        confidences.append(float(probs[top]))
        correct.append(gold in index and index[gold] == top)
        if gold in index:
            nll.append(-math.log(max(float(probs[index[gold]]), 1e-12)))
    return {"intent_ece": expected_calibration_error(confidences, correct, n_bins),
            "intent_nll": sum(nll) / len(nll) if nll else None, "intent_nll_n": len(nll)}
