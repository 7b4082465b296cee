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
    s = slot_report([["B-x", "O"]], [["B-x", "O"]])
    assert s["x"]["f1-score"] == 1.0
