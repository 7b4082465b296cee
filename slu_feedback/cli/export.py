"""`slu-export RUN_DIR --format onnx [--out FILE] [--check [--split validation]]`"""

import json
import sys
import warnings

import click

from . import console_output


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", default="onnx", type=click.Choice(["onnx"]), show_default=True)
@click.option("--out", "out_file", default=None, help="Output file (default: RUN_DIR/model.onnx).")
@click.option("--exporter", default="auto", type=click.Choice(["auto", "dynamo", "legacy"]), show_default=True,
              help="torch.onnx exporter: torch.export-based (dynamo), TorchScript tracer (legacy), or dynamo with legacy as fallback.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: 18 for dynamo, 17 for legacy).")
@click.option("--check", is_flag=True, help="Run ONNX Runtime and PyTorch on a split and compare their outputs.")
@click.option("--split", default="validation", type=click.Choice(["train", "validation", "valid", "dev", "test"]),
              show_default=True, help="valid and dev name the validation split, as in slu-eval.")
@click.option("--data", default=None, help="Dataset for --check (default: the one in the run's recipe).")
@click.option("--atol", default=1e-4, show_default=True, help="Largest allowed probability difference for --check.")
@click.option("--json", "as_json", is_flag=True, help="Print the check report as JSON.")
def main(run_dir, fmt, out_file, exporter, opset, check, split, data, atol, as_json):
    """Export a trained run (encoder + heads, feedback loop unrolled to the iterations the parser
    runs: feedback.max_iterations where set, else the trained K) to ONNX: inputs input_ids, attention_mask, word_index, word_mask; outputs
    intent_probs, slot_probs. Exit status 1 when --check finds a mismatch."""
    from ..data.errors import DataError
    from ..models import RunError, load_run

    console_output()
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise click.ClickException("ONNX export needs the onnx package: pip install 'slu_feedback[export]'") from None
    from ..inference.export import check_onnx, export_onnx

    try:
        model, tokenizer = load_run(run_dir)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = export_onnx(run_dir, out_file, exporter=exporter, opset=opset, model=model, tokenizer=tokenizer)
        for warning in caught:
            if "exporter" in str(warning.message):
                click.secho(f"note: {warning.message}", fg="yellow", err=True)
    except (RunError, RuntimeError, ValueError) as error:  # ValueError: a run ONNX cannot express (VMTL)
        raise click.ClickException(str(error)) from None
    k = model.config.feedback["max_iterations"] or model.config.feedback["iterations"]  # what SLUParser runs
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; feedback iterations unrolled: {k})", err=as_json)
    if not check:
        return
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise click.ClickException("--check needs onnxruntime: pip install 'slu_feedback[export]'") from None
    try:
        report = check_onnx(run_dir, path, split=split, atol=atol, data=data, model=model, tokenizer=tokenizer)
    except (DataError, ValueError, KeyError) as error:
        raise click.ClickException(f"check failed to run: {error}") from None
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(f"check on {split} ({report['n']} utterances, {report['words']} words): "
                   f"max abs diff {report['max_abs_diff']:.2e} (intent {report['max_abs_diff_intent']:.2e}, "
                   f"slot {report['max_abs_diff_slot']:.2e}); argmax agreement intent "
                   f"{100 * report['intent_agreement']:.2f}%, slot {100 * report['slot_agreement']:.2f}%  "
                   + ("OK" if report["ok"] else f"MISMATCH (atol {atol:g})"))
    if not report["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
