"""`slu-eval RUN_DIR [--split test] [--data PATH]`"""

import json
from pathlib import Path

import click

from . import DEVICE, INTENT_SLOT_CONSTRAINTS, console_output, inference_device


MEASURES = (("intent_acc", "intent accuracy"), ("slot_f1", "slot F1 (seqeval)"), ("sentence_acc", "sentence accuracy"))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", type=click.Choice(["train", "validation", "valid", "dev", "test"]), show_default=True,
              help="valid and dev name the validation split, as the data folders do.")
@click.option("--data", default=None, help="Dataset folder (scored on --split) or one split's file or folder "
                   "(scored whole) to evaluate on (default: the run's recipe's data).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder (default: RUN_DIR/eval_<split>; with --data, RUN_DIR/eval_data-<name>[-<split>]; "
                   "options other than the run's own add -k<K>, -predict-<mode>, -[no-]constraints, -int8).")
@click.option("--iterations", type=click.IntRange(0), default=None,
              help="Feedback iterations at inference (default: the run's feedback.max_iterations, else the trained K).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--quantize", is_flag=True, help="Also evaluate a dynamically int8-quantised copy and report the change.")
@click.option("--predict", "predict_mode", type=click.Choice(["mean", "mc"]), default=None,
              help="VMTL head only: posterior means or the Monte Carlo average (default: the run's vmtl.predict).")
@INTENT_SLOT_CONSTRAINTS
@click.option("--compare", "baseline", default=None, type=click.Path(exists=True, file_okay=False),
              help="Another run, scored on the same utterances: is RUN_DIR better than it? (paired tests)")
@DEVICE
def main(run_dir, split, data, out_dir, iterations, batch_size, quantize, predict_mode, intent_slots, baseline, device):
    """Intent accuracy, slot F1 (seqeval default and strict IOB2), sentence accuracy, intent
    calibration (ECE, NLL), per-label reports, a predictions file with every error marked, and
    intent confusion-matrix and reliability-diagram PNGs. A joint run is scored per dataset."""
    from ..models.joint import joint_datasets

    console_output()
    names = joint_datasets(run_dir)
    if names:  # a joint run: score each dataset with its own heads
        if data or out_dir or baseline:
            raise click.ClickException("--data, --out and --compare apply to one dataset: pass RUN_DIR/<dataset> of a joint run")
        for name in names:
            click.echo(f"== {name} ==")
            evaluate_one(f"{run_dir}/{name}", split, None, None, iterations, batch_size, quantize, predict_mode,
                         intent_slots, device)
        return
    if baseline:  # before RUN_DIR is scored: a baseline that cannot be one fails now, not after
        from ..models import RunError
        from ..models.run import check_run_files

        try:
            check_run_files(Path(baseline))
        except RunError as error:
            raise click.ClickException(f"--compare {baseline}: {error}") from None
    report = evaluate_one(run_dir, split, data, out_dir, iterations, batch_size, quantize, predict_mode, intent_slots, device)
    if baseline:
        compare_runs(run_dir, baseline, report, split, data, batch_size, device)


def compare_runs(run_dir, baseline, report, split, data, batch_size, device) -> None:
    """Score `baseline` on the utterances `report` scored RUN_DIR on, then test RUN_DIR against it."""
    from ..data.dataset import resolve_data_path
    from ..data.errors import DataError
    from ..evaluation.compare import compare_predictions
    from ..evaluation.plots import read_jsonl
    from ..evaluation.report import evaluate_run, run_data_path
    from ..models import RunError

    out_dir = compare_dir(Path(report["out_dir"]), Path(baseline))
    try:
        data = data or resolve_data_path(*run_data_path(Path(run_dir))[:2])  # RUN_DIR's data, whatever the baseline's
        evaluate_run(baseline, split, data, out_dir, batch_size, device=inference_device(device, False))
        result = compare_predictions(read_jsonl(out_dir / "predictions.jsonl"),
                                     read_jsonl(Path(report["out_dir"]) / "predictions.jsonl"))
    except (DataError, RunError, ValueError) as error:
        raise click.ClickException(f"--compare {baseline}: {error}") from None
    result.update(run=str(run_dir), baseline=str(baseline), baseline_path=str(Path(baseline).resolve()),
                  split=report["split"])
    (out_dir / "compare.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    click.echo(f"{run_dir} against {baseline} on the same {result['n']} utterances:")
    click.echo(f"  {'':<20} {'baseline':>8} {'run':>8} {'change':>8}")
    for key, name in MEASURES:
        m = result[key]
        if "ci95" not in m:
            test = f"McNemar p = {m['p']:.3f} (right only in run {m['only_run']}, only in baseline {m['only_baseline']})"
        else:
            test = f"95 % interval [{100 * m['ci95'][0]:+.2f}, {100 * m['ci95'][1]:+.2f}], p = {m['p']:.3f} (paired bootstrap)"
        click.echo(f"  {name:<20} {100 * m['baseline']:8.2f} {100 * m['run']:8.2f} {100 * m['diff']:+8.2f}   {test}")
    click.echo(f"wrote {out_dir}/compare.json")


def compare_dir(eval_dir: Path, baseline: Path) -> Path:
    """compare-<baseline's folder name>, numbered where another baseline of that name was compared
    (runs/a/atis and runs/b/atis): each baseline keeps its own results."""
    from ..evaluation.report import numbered_dir

    path = str(baseline.resolve())
    return numbered_dir(eval_dir / f"compare-{baseline.resolve().name}", "compare.json",
                        lambda done: done.get("baseline_path", str(Path(done.get("baseline", "")).resolve())) == path)


def evaluate_one(run_dir, split, data, out_dir, iterations, batch_size, quantize, predict_mode, intent_slots, device) -> dict:
    from ..data.errors import DataError
    from ..evaluation.report import evaluate_run
    from ..models import RunError

    device = inference_device(device, quantize)
    try:
        report = evaluate_run(run_dir, split, data, out_dir, batch_size, iterations, quantize=quantize, device=device,
                              predict=predict_mode, intent_slot_constraints=intent_slots)
    except (DataError, RunError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    m = report["metrics"]
    click.echo(f"{report['split']}: {m['n']} utterances")
    click.echo(f"  intent accuracy     {100 * m['intent_acc']:6.2f}")
    click.echo(f"  slot F1 (seqeval)   {100 * m['slot_f1']:6.2f}   strict IOB2 {100 * m['slot_f1_strict']:6.2f}")
    click.echo(f"  sentence accuracy   {100 * m['sentence_acc']:6.2f}")
    nll = "n/a" if m["intent_nll"] is None else f"{m['intent_nll']:.4f}"
    click.echo(f"  intent ECE (15 bins) {100 * m['intent_ece']:5.2f} %   NLL {nll} (over {m['intent_nll_n']} with a known intent)")
    if "feedback" in report:
        fb = report["feedback"]
        click.echo(f"  feedback: {fb['changed']} utterances change between iteration 0 and the last "
                   f"({fb['fixed']} fixed, {fb['broken']} broken; `feedback` in predictions.jsonl); "
                   f"mean iterations {fb['mean_iterations']:.2f}")
    if "int8" in report:
        q, change, paired = report["int8"]["metrics"], report["int8"]["change"], report["int8"]["compare"]
        click.echo("  int8 (dynamic quantisation)      fp32     int8   change   p (paired, same utterances)")
        for key, name in MEASURES:
            click.echo(f"    {name:<28} {100 * m[key]:6.2f}  {100 * q[key]:6.2f}  {100 * change[key]:+6.2f}"
                       f"   {paired[key]['p']:.3f}")
    steps = ", feedback_steps.png" if (Path(report["out_dir"]) / "feedback_steps.png").exists() else ""
    click.echo(f"wrote {report['out_dir']}/metrics.json, predictions.jsonl, confusion.png, reliability.png{steps}")
    return report


if __name__ == "__main__":
    main()
