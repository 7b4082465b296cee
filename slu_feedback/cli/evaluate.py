"""`slu-eval RUN_DIR [--split test] [--data PATH]`"""

import click

from . import DEVICE, console_output, inference_device


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", type=click.Choice(["train", "validation", "valid", "dev", "test"]), show_default=True,
              help="valid and dev name the validation split, as the data folders do.")
@click.option("--data", default=None, help="Dataset folder (scored on --split) or one split's file or folder "
                   "(scored whole) to evaluate on (default: the run's recipe's data).")
@click.option("--out", "out_dir", default=None,
              help="Output folder (default: RUN_DIR/eval_<split>; with --data, RUN_DIR/eval_data-<name>[-<split>]).")
@click.option("--iterations", type=int, default=None, help="Feedback iterations at inference (default: the trained K).")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--quantize", is_flag=True, help="Also evaluate a dynamically int8-quantised copy and report the change.")
@click.option("--predict", "predict_mode", type=click.Choice(["mean", "mc"]), default=None,
              help="VMTL head only: posterior means or the Monte Carlo average (default: the run's vmtl.predict).")
@click.option("--intent-slot-constraints/--no-intent-slot-constraints", "intent_slots", default=None,
              help="Decode only slot types seen with the predicted intent in training, or not "
                   "(default: the run's model.intent_slot_constraints).")
@DEVICE
def main(run_dir, split, data, out_dir, iterations, batch_size, quantize, predict_mode, intent_slots, device):
    """Intent accuracy, slot F1 (seqeval default and strict IOB2), sentence accuracy, intent
    calibration (ECE, NLL), per-label reports, a predictions file with every error marked, and
    intent confusion-matrix and reliability-diagram PNGs. A joint run is scored per dataset."""
    from ..models.joint import joint_datasets

    console_output()
    names = joint_datasets(run_dir)
    if names:  # a joint run: score each dataset with its own heads
        if data or out_dir:
            raise click.ClickException("--data and --out apply to one dataset: pass RUN_DIR/<dataset> of a joint run")
        for name in names:
            click.echo(f"== {name} ==")
            evaluate_one(f"{run_dir}/{name}", split, None, None, iterations, batch_size, quantize, predict_mode,
                         intent_slots, device)
        return
    evaluate_one(run_dir, split, data, out_dir, iterations, batch_size, quantize, predict_mode, intent_slots, device)


def evaluate_one(run_dir, split, data, out_dir, iterations, batch_size, quantize, predict_mode, intent_slots, device):
    from ..data.errors import DataError
    from ..evaluation.report import evaluate_run
    from ..models import RunError, load_run

    device = inference_device(device, quantize)
    try:
        model = tokenizer = None
        if predict_mode is not None or intent_slots is not None:
            model, tokenizer = load_run(run_dir, device)
        if predict_mode is not None:
            if model.config.head != "vmtl":
                raise click.ClickException("--predict applies to runs with model.head=vmtl only")
            model.config.vmtl["predict"] = predict_mode
        if intent_slots is not None:
            model.config.intent_slot_constraints = intent_slots
        report = evaluate_run(run_dir, split, data, out_dir, batch_size, iterations, model=model, tokenizer=tokenizer,
                              quantize=quantize, device=device)
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
                   f"({fb['fixed']} fixed, {fb['broken']} broken); mean iterations {fb['mean_iterations']:.2f}")
    if "int8" in report:
        q, change = report["int8"]["metrics"], report["int8"]["change"]
        click.echo("  int8 (dynamic quantisation)      fp32     int8   change")
        for key, name in [("intent_acc", "intent accuracy"), ("slot_f1", "slot F1 (seqeval)"),
                          ("sentence_acc", "sentence accuracy")]:
            click.echo(f"    {name:<28} {100 * m[key]:6.2f}  {100 * q[key]:6.2f}  {100 * change[key]:+6.2f}")
    click.echo(f"wrote {report['out_dir']}/metrics.json, predictions.jsonl, confusion.png, reliability.png")


if __name__ == "__main__":
    main()
