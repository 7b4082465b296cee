"""Command-line entry points. Options shared by several commands live here."""

import warnings
from collections import Counter
from pathlib import Path

import click

PACKAGE = Path(__file__).resolve().parents[1]  # the slu_feedback package: whose warnings are ours

DEVICE = click.option("--device", default="auto", show_default=True,
                      help="cpu, cuda, cuda:N or mps; auto takes a GPU when torch sees one (the CPU with --quantize).")
INTENT_SLOT_CONSTRAINTS = click.option(
    "--intent-slot-constraints/--no-intent-slot-constraints", "intent_slots", default=None,
    help="Decode only slot types seen with the predicted intent in training, or not "
         "(default: the run's model.intent_slot_constraints).")


def inference_device(device: str, quantize: bool) -> str:
    """The device to load a run on: int8 quantisation (--quantize) runs on the CPU only."""
    if quantize and device not in ("auto", "cpu"):
        raise click.ClickException("--quantize makes an int8 copy for the CPU: drop --device or use --device cpu")
    return "cpu" if quantize else device


def console_output(map_bars: bool = False, limit: int | None = 3) -> None:
    """For a command's run: the package's warnings as one line each (`warning: ...`, no source
    line), at most `limit` (None: all) from each place that warns (one kind, e.g. a repaired BIO
    tag per utterance), and how many more of each kind when the command ends; other libraries'
    warnings as Python shows them. No progress bars for loading or saving weights (instant at these
    sizes; downloads keep theirs), nor for `datasets`' map unless `map_bars` (training, where data
    may be large). Everything is as before once the command ends (it may run in-process)."""
    import datasets
    import huggingface_hub.utils as hub
    from transformers.utils import logging as transformers_logging

    before = transformers_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled(), \
        hub.are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # which also turns off the Hub's download bars ...
    if not before[2]:
        hub.enable_progress_bars()  # ... so they go back on
    if not map_bars:
        datasets.disable_progress_bars()
    # Python shows an identical warning once per place (two utterances truncated to the same length):
    # here every one is counted; the filters and showwarning are put back when the command ends
    click.get_current_context().with_resource(warnings.catch_warnings())
    warnings.filterwarnings("always", module=r"slu_feedback\.")
    counts, first, shown = Counter(), {}, warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not Path(filename).resolve().is_relative_to(PACKAGE):
            return shown(message, category, filename, lineno, file, line)
        counts[filename, lineno] += 1
        first.setdefault((filename, lineno), str(message))
        if limit is None or counts[filename, lineno] <= limit:
            click.echo(f"warning: {message}", err=True)

    def summary():  # runs before the context's resources close, so before catch_warnings restores
        if before[0]:
            transformers_logging.enable_progress_bar()
        (hub.disable_progress_bars if before[2] else hub.enable_progress_bars)()
        if before[1]:
            datasets.enable_progress_bars()
        for where, n in counts.items():
            if limit is not None and n > limit:
                click.echo(f"warning: ... and {n - limit} more like the first: {first[where][:200]}", err=True)

    warnings.showwarning = show
    click.get_current_context().call_on_close(summary)
