"""`slu-eval RUN_DIR [--split test] [--data PATH]`"""

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", type=click.Choice(["train", "validation", "test"]), show_default=True)
@click.option("--data", default=None, help="Dataset to evaluate on (default: the one in the run's recipe).")
@click.option("--out", "out_dir", default=None, help="Output folder (default: RUN_DIR/eval_<split>).")
@click.option("--iterations", type=int, default=None, help="Feedback iterations at inference (default: the trained K).")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--quantize", is_flag=True, help="Also evaluate a dynamically int8-quantised copy and report the change.")
def main(run_dir, split, data, out_dir, iterations, batch_size, quantize):
    """Intent accuracy, slot F1 (seqeval default and strict IOB2), sentence accuracy, per-label
    reports, a predictions file with every error marked, and an intent confusion-matrix PNG."""
    from ..data.errors import DataError
    from ..evaluation.report import evaluate_run
    from ..models import RunError

    try:
        report = evaluate_run(run_dir, split, data, out_dir, batch_size, iterations, quantize=quantize)
    except (DataError, RunError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    m = report["metrics"]
    click.echo(f"{split}: {m['n']} utterances")
    click.echo(f"  intent accuracy     {100 * m['intent_acc']:6.2f}")
    click.echo(f"  slot F1 (seqeval)   {100 * m['slot_f1']:6.2f}   strict IOB2 {100 * m['slot_f1_strict']:6.2f}")
    click.echo(f"  sentence accuracy   {100 * m['sentence_acc']:6.2f}")
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
    click.echo(f"wrote {report['out_dir']}/metrics.json, predictions.jsonl, confusion.png")


if __name__ == "__main__":
    main()
