"""Command-line entry points. Options shared by several commands live here."""

import click

DEVICE = click.option("--device", default="auto", show_default=True,
                      help="cpu, cuda, cuda:N or mps; auto takes a GPU when torch sees one (the CPU with --quantize).")


def inference_device(device: str, quantize: bool) -> str:
    """The device to load a run on: int8 quantisation (--quantize) runs on the CPU only."""
    if quantize and device not in ("auto", "cpu"):
        raise click.ClickException("--quantize makes an int8 copy for the CPU: drop --device or use --device cpu")
    return "cpu" if quantize else device
