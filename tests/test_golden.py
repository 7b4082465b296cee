"""Training-log regression: tiny models of each kind (plain, feedback, VMTL, CRF with a soft gate)
trained on the sample set must log the losses, gate probabilities and validation figures stored in
tests/golden/training_logs.json, so that a change to the training arithmetic cannot pass unseen.
After a deliberate change, regenerate the file and say why in the commit:

    SLU_UPDATE_GOLDEN=1 python -m pytest -q tests/test_golden.py
"""

import json
import math
import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "training_logs.json"
RUNS = {  # name -> overrides (sets other tests train too, so the session's runs are shared)
    "plain": (),
    "feedback": ("model.feedback.iterations=2",),
    "vmtl": ("model.head=vmtl", "model.vmtl.latent_dim=16", "model.feedback.iterations=1"),
    "crf_soft_gate": ("model.slot_decoder=crf", "model.feedback.iterations=1", "model.feedback.gate=soft"),
}
ACCURACIES = ("intent_acc", "slot_f1", "slot_f1_strict", "sentence_acc")


def flatten(value, prefix=""):
    """{"gate": {"a": [x, y]}} -> {"gate.a.0": x, "gate.a.1": y}: every number in a log row."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value} if isinstance(value, (int, float)) and not isinstance(value, bool) else {}


def logged(run_dir: Path) -> list:
    """The numbers of metrics.jsonl that the arithmetic decides (not wall-clock seconds)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in flatten(row).items() if k != "seconds"} for row in rows]


def mismatches(expected: list, actual: list) -> list:
    if len(expected) != len(actual):
        return [f"{len(actual)} log rows, expected {len(expected)}"]
    problems = []
    for i, (want, got) in enumerate(zip(expected, actual)):
        if set(want) != set(got):
            problems.append(f"row {i}: keys {sorted(set(want) ^ set(got))} differ")
            continue
        n = want.get("validation.n", 1)
        for key, value in want.items():
            # accuracies may differ by one utterance (an argmax tie on another CPU); everything else is a float
            tolerance = {"abs_tol": 1 / n + 1e-9} if key.split(".")[-1] in ACCURACIES else {"rel_tol": 1e-3, "abs_tol": 1e-6}
            if not math.isclose(got[key], value, **tolerance):
                problems.append(f"row {i} {key}: {got[key]!r}, expected {value!r}")
    return problems


def test_mismatches_sees_a_changed_loss_and_tolerates_rounding():
    rows = [{"loss": 2.0, "validation.n": 50, "validation.intent_acc": 0.5}]
    assert mismatches(rows, [{"loss": 2.0000001, "validation.n": 50, "validation.intent_acc": 0.52}]) == []
    assert mismatches(rows, [{"loss": 2.01, "validation.n": 50, "validation.intent_acc": 0.5}]) == [
        "row 0 loss: 2.01, expected 2.0"]
    assert mismatches(rows, [{"loss": 2.0, "validation.n": 50, "validation.intent_acc": 0.56}])
    assert mismatches(rows, rows + rows)


@pytest.mark.e2e
def test_tiny_training_logs_match_the_stored_ones(tiny_run_factory):
    actual = {name: logged(Path(tiny_run_factory(*overrides))) for name, overrides in RUNS.items()}
    if os.environ.get("SLU_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(actual, indent=1) + "\n")
    expected = json.loads(GOLDEN.read_text())
    assert sorted(expected) == sorted(RUNS)
    for name in RUNS:
        assert not mismatches(expected[name], actual[name]), (name, mismatches(expected[name], actual[name])[:5])
