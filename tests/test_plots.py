"""The PNG plots of a run directory, from hand-written metrics rows (no training)."""

import json
import warnings

import pytest

from slu_feedback.evaluation.plots import plot_steps, plot_training_curves

METRICS = {"intent_acc": 0.9, "slot_f1": 0.8, "sentence_acc": 0.7, "n": 10}


def write_metrics(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def step_rows(n, **extra):
    return [{"type": "step", "epoch": 1, "step": s, "loss": 1.0 / s, **extra} for s in range(1, n + 1)]


def epoch_row(epoch, validation):
    return {"type": "epoch", "epoch": epoch, "step": 10 * epoch, "train_loss": 0.5, "validation": validation}


def visible_ticks(axis):
    lo, hi = sorted(axis.get_view_interval())
    return [t for t in axis.get_ticklocs() if lo <= t <= hi]


def test_validation_panel_has_whole_epoch_ticks(tmp_path):
    rows = step_rows(5) + [epoch_row(1, METRICS), epoch_row(2, METRICS)]
    fig = plot_training_curves(write_metrics(tmp_path / "metrics.jsonl", rows), tmp_path / "curves.png")
    ticks = visible_ticks(fig.axes[1].xaxis)
    assert ticks and all(t == int(t) for t in ticks), ticks
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_joint_run_plots_each_datasets_validation(tmp_path):
    travel = {"intent_acc": 0.95, "slot_f1": 0.85, "sentence_acc": 0.75, "n": 4}
    home = {"intent_acc": 0.85, "slot_f1": 0.75, "sentence_acc": 0.65, "n": 6}
    validation = {**METRICS, "datasets": {"travel": travel, "home": home}}  # what trainer.mean_metrics logs
    rows = step_rows(5) + [epoch_row(1, validation), epoch_row(2, validation)]
    fig = plot_training_curves(write_metrics(tmp_path / "metrics.jsonl", rows), tmp_path / "curves.png")
    lines = {line.get_label(): line for line in fig.axes[1].get_lines()}
    assert list(lines["home: sentence_acc"].get_ydata()) == pytest.approx([65, 65])
    assert list(lines["travel: intent_acc"].get_ydata()) == pytest.approx([95, 95])
    assert list(lines["sentence_acc (mean)"].get_ydata()) == pytest.approx([70, 70])
    assert len(lines) == 9
    assert {t.get_text() for t in fig.axes[1].get_legend().get_texts()} == set(lines)


def test_single_dataset_validation_lines_are_unchanged(tmp_path):
    rows = step_rows(5) + [epoch_row(1, METRICS)]
    fig = plot_training_curves(write_metrics(tmp_path / "metrics.jsonl", rows), tmp_path / "curves.png")
    assert [line.get_label() for line in fig.axes[1].get_lines()] == ["intent_acc", "slot_f1", "sentence_acc"]


def test_coinciding_vmtl_priors_stay_distinguishable(tmp_path):
    # every prior at the same weight: with one style each, only the last drawn line would be seen
    same = {"other": 0.5, "standard": 0.5}
    prior = {f"{task}.{kind}": same for task in ("intent", "slot") for kind in ("latent", "weight")}
    rows = step_rows(20, prior=prior) + [epoch_row(1, METRICS)]
    fig = plot_training_curves(write_metrics(tmp_path / "metrics.jsonl", rows), tmp_path / "curves.png")
    lines = fig.axes[-1].get_lines()[:-1]  # the last is the 0.5 reference line
    assert len(lines) == 4
    styles = {(line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(styles) == 4 and all(marker not in (None, "None", "") for _, marker in styles)
    assert all(line.get_alpha() is not None and line.get_alpha() < 1 for line in lines)
    assert {t.get_text() for t in fig.axes[-1].get_legend().get_texts()} == {f"{p}: other task" for p in prior}


def test_feedback_steps_show_a_zero_step(tmp_path):
    fig = plot_steps({"intent": [0.3, 0.01, 0.0], "slot": [0.2, 0.001, 1e-5]}, tmp_path / "steps.png")
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert lo <= 0 < hi  # a log axis cannot reach 0
    x, y = ax.transData.transform((3, 0.0))
    box = ax.get_window_extent()
    assert box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1
    ticks = visible_ticks(ax.xaxis)
    assert ticks and all(t == int(t) for t in ticks), ticks
    assert (tmp_path / "steps.png").stat().st_size > 1000


def test_feedback_steps_all_zero_plot_without_warnings(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_steps({"intent": [0.0, 0.0], "slot": [0.0, 0.0]}, tmp_path / "steps.png")
    lo, hi = fig.axes[0].get_ylim()
    assert lo <= 0 <= hi
    assert (tmp_path / "steps.png").stat().st_size > 1000


def test_the_kl_warm_up_is_marked_on_the_loss_panel(tmp_path):
    prior = {"intent.weight": {"other": 0.5, "standard": 0.5}}
    rows = [{**r, "kl_weight": min(1.0, r["step"] / 10)} for r in step_rows(20, prior=prior)] + [epoch_row(1, METRICS)]
    fig = plot_training_curves(write_metrics(tmp_path / "metrics.jsonl", rows), tmp_path / "curves.png")
    (span,) = fig.axes[0].patches
    assert span.get_x() == 0 and span.get_width() == 9  # steps 1-9 have a KL weight under 1
    assert "KL warm-up" in fig.axes[0].get_legend().get_texts()[0].get_text()
    no_warm_up = [{**r, "kl_weight": 1.0} for r in step_rows(20, prior=prior)] + [epoch_row(1, METRICS)]
    fig = plot_training_curves(write_metrics(tmp_path / "metrics.jsonl", no_warm_up), tmp_path / "curves.png")
    assert not fig.axes[0].patches
