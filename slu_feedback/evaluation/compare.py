"""Is one run better than another on the same utterances? Paired tests on two predictions files.

Two runs scored on one split make errors on mostly the same utterances, so their difference is
judged utterance by utterance: McNemar's exact test for intent and sentence accuracy (only the
utterances one run gets right and the other wrong count), and a paired bootstrap over utterances
for slot F1 (a span F1 is not a mean over utterances, so it has no closed-form test).
"""

import math

import numpy as np
from seqeval.metrics.sequence_labeling import get_entities


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: how likely a split of the discordant utterances at least this
    uneven is when both runs are equally good (each discordant utterance a fair coin)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def span_counts(gold: list, pred: list) -> tuple:
    """(correct, predicted, gold) slot spans of one utterance, as seqeval's default mode counts them."""
    gold_spans, pred_spans = set(get_entities(gold)), set(get_entities(pred))
    return len(gold_spans & pred_spans), len(pred_spans), len(gold_spans)


def f1(counts: np.ndarray) -> np.ndarray:
    """Micro span F1 from summed (correct, predicted, gold) counts (last axis)."""
    correct, predicted, gold = counts[..., 0], counts[..., 1], counts[..., 2]
    return np.divide(2 * correct, predicted + gold, out=np.zeros_like(correct, dtype=float), where=predicted + gold > 0)


def compare_predictions(baseline_rows: list, run_rows: list, resamples: int = 10000, seed: int = 0) -> dict:
    """The run against the baseline on the same utterances: each metric's value for both (fractions),
    run - baseline, McNemar's p (intent, sentence) or the paired bootstrap's 95 % interval and p (slot
    F1), and which utterances (indices into the predictions files, their `id`) only one run gets right
    (for slot F1: all slot tags right), so that the discordant ones can be read."""
    if len(baseline_rows) != len(run_rows) or any(
            a["text"] != b["text"] or a["gold_intent"] != b["gold_intent"] or a["gold_slots"] != b["gold_slots"]
            for a, b in zip(baseline_rows, run_rows)):
        raise ValueError("the two predictions files do not hold the same utterances with the same labels")
    result = {"n": len(baseline_rows)}
    measures = (("intent_acc", lambda r: r["gold_intent"] == r["pred_intent"]), ("sentence_acc", lambda r: not r["error"]),
                ("slot_f1", lambda r: r["gold_slots"] == r["pred_slots"]))
    for key, right in measures:
        base, run = np.array([right(r) for r in baseline_rows]), np.array([right(r) for r in run_rows])
        only_baseline, only_run = np.flatnonzero(base & ~run).tolist(), np.flatnonzero(run & ~base).tolist()
        result[key] = {"baseline": float(base.mean()), "run": float(run.mean()), "diff": float(run.mean() - base.mean()),
                       "only_baseline": len(only_baseline), "only_run": len(only_run)}
        if key != "slot_f1":
            result[key].update(p=mcnemar_p(len(only_baseline), len(only_run)), test="McNemar (exact)")
        result[key].update(only_baseline_ids=only_baseline, only_run_ids=only_run)
    counts = np.array([[span_counts(ra["gold_slots"], ra["pred_slots"]), span_counts(rb["gold_slots"], rb["pred_slots"])]
                       for ra, rb in zip(baseline_rows, run_rows)])  # utterance x (baseline, run) x (correct, predicted, gold)
    rng, n, flat = np.random.default_rng(seed), len(counts), counts.reshape(len(counts), -1)
    diffs = []
    for start in range(0, resamples, 1000):  # each resample: how often it draws each utterance, times its counts
        times = rng.multinomial(n, np.full(n, 1 / n), size=min(1000, resamples - start))
        resampled = (times @ flat).reshape(-1, 2, 3)  # resample x (baseline, run) x (correct, predicted, gold)
        diffs.append(f1(resampled[:, 1]) - f1(resampled[:, 0]))
    diffs = np.concatenate(diffs)
    base, run = f1(counts[:, 0].sum(axis=0)), f1(counts[:, 1].sum(axis=0))
    result["slot_f1"].update(  # span F1 is no mean over utterances: its value and test come from the spans
        baseline=float(base), run=float(run), diff=float(run - base),
        ci95=[float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))],
        p=float(min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean()))),
        test=f"paired bootstrap over utterances ({resamples} resamples)")
    return result
