"""Command-line entry points. Options shared by several commands live here."""

import warnings
from collections import Counter

import click

DEVICE = click.option("--device", default="auto", show_default=True,
                      help="cpu, cuda, cuda:N or mps; auto takes a GPU when torch sees one (the CPU with --quantize).")


def inference_device(device: str, quantize: bool) -> str:
    """The device to load a run on: int8 quantisation (--quantize) runs on the CPU only."""
    if quantize and device not in ("auto", "cpu"):
        raise click.ClickException("--quantize makes an int8 copy for the CPU: drop --device or use --device cpu")
    return "cpu" if quantize else device


def console_output(map_bars: bool = False, limit: int = 3) -> None:
    """For a command's run: the package's warnings as one line each (`warning: ...`, no source
    line), at most `limit` from each place that warns (one kind, e.g. a repaired BIO tag per
    utterance), and how many more of each kind when the command ends; other libraries' warnings
    as Python shows them. No progress bars for loading or saving weights (instant at these sizes),
    nor for `datasets`' map unless `map_bars` (training, where data may be large)."""
    import datasets
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    if not map_bars:
        datasets.disable_progress_bars()
    counts, shown = Counter(), warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if "slu_feedback" not in str(filename):
            return shown(message, category, filename, lineno, file, line)
        counts[filename, lineno] += 1
        if counts[filename, lineno] <= limit:
            click.echo(f"warning: {message}", err=True)

    def summary():
        warnings.showwarning = shown
        for n in counts.values():
            if n > limit:
                click.echo(f"warning: ... and {n - limit} more of the same kind", err=True)

    warnings.showwarning = show
    click.get_current_context().call_on_close(summary)
