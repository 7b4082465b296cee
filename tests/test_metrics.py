import pytest

from slu_feedback.evaluation.metrics import compute_metrics, intent_report, slot_report


def test_metrics_on_a_hand_checked_example():
    gold_i = ["flight", "fare", "atis_day_name"]  # the last is unseen in training: always an error
    pred_i = ["flight", "flight", "flight"]
    gold_s = [["O", "B-from", "I-from", "O", "B-to"], ["B-from", "O"], ["O"]]
    pred_s = [["O", "B-from", "I-from", "O", "B-to"], ["B-from", "O"], ["B-to"]]
    m = compute_metrics(gold_i, pred_i, gold_s, pred_s)
    assert m["intent_acc"] == 1 / 3
    assert m["sentence_acc"] == 1 / 3
    # spans: gold 3, predicted 4, correct 3 -> P 3/4, R 1, F1 6/7
    assert abs(m["slot_f1"] - 6 / 7) < 1e-9


def test_strict_mode_rejects_spans_that_start_with_I():
    gold = [["B-x", "I-x", "O"]]
    pred = [["I-x", "I-x", "O"]]  # lenient (conlleval) accepts it, strict IOB2 does not
    m = compute_metrics(["a"], ["a"], gold, pred)
    assert m["slot_f1"] == 1.0 and m["slot_f1_strict"] == 0.0
    assert m["sentence_acc"] == 0.0  # the frame is not exact


def test_reports():
    r = intent_report(["a", "a", "b"], ["a", "b", "b"])
    assert r["a"]["precision"] == 1.0 and r["a"]["recall"] == 0.5 and r["b"]["support"] == 1
    s = slot_report([["B-x", "O"], ["B-y", "O"]], [["B-x", "O"], ["O", "O"]])
    assert s["x"]["f1"] == 1.0 and s["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1.0}
    assert set(s["x"]) == set(r["a"])  # both per-label tables use the same keys
    assert s["micro avg"]["f1"] == 2 / 3


def test_compare_predictions_is_paired_and_matches_seqeval():
    from seqeval.metrics import f1_score

    from slu_feedback.evaluation.compare import compare_predictions, mcnemar_p

    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(0, 6) == pytest.approx(2 / 64) and mcnemar_p(1, 9) == pytest.approx(2 * 11 / 1024)
    gold = [["B-a", "I-a", "O"], ["O", "B-b"], ["B-a", "O", "B-b"]] * 20
    preds_a = [["B-a", "O", "O"], ["O", "B-b"], ["B-a", "O", "O"]] * 20  # misses a span in 2 of 3
    preds_b = [["B-a", "I-a", "O"], ["O", "B-b"], ["B-a", "O", "B-b"]] * 19 + [["O", "O", "O"], ["O", "B-b"], ["B-a", "O", "B-b"]]

    def rows(preds):
        return [{"text": str(i), "gold_intent": "x", "pred_intent": "x", "gold_slots": g, "pred_slots": p, "error": g != p}
                for i, (g, p) in enumerate(zip(gold, preds))]

    result = compare_predictions(rows(preds_a), rows(preds_b), resamples=2000)  # baseline a, run b
    assert result["slot_f1"]["baseline"] == pytest.approx(f1_score(gold, preds_a))
    assert result["slot_f1"]["run"] == pytest.approx(f1_score(gold, preds_b))
    s = result["sentence_acc"]
    assert (s["only_baseline"], s["only_run"]) == (0, 39) and s["p"] < 1e-9 and s["diff"] == pytest.approx(39 / 60)
    assert s["only_run_ids"] == [i for i in range(57) if i % 3 != 1] + [59] and s["only_baseline_ids"] == []
    assert result["intent_acc"]["p"] == 1.0 and result["intent_acc"]["diff"] == 0
    low, high = result["slot_f1"]["ci95"]
    assert 0 < low < result["slot_f1"]["diff"] < high and result["slot_f1"]["p"] < 0.01
    same = compare_predictions(rows(preds_a), rows(preds_a), resamples=200)
    assert same["slot_f1"]["ci95"] == [0.0, 0.0] and same["sentence_acc"]["p"] == 1.0
    with pytest.raises(ValueError, match="same utterances"):
        compare_predictions(rows(preds_a), rows(preds_b)[:-1])
