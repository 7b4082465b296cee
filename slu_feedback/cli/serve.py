"""`slu-serve RUN_DIR [--host 127.0.0.1] [--port 8000]`: the JSON HTTP API and a small web page."""

import click

from . import DEVICE, INTENT_SLOT_CONSTRAINTS, console_output, inference_device


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Loopback by default; 0.0.0.0 exposes the API (no authentication) to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--quantize", is_flag=True, help="Serve a dynamically int8-quantised copy (CPU).")
@INTENT_SLOT_CONSTRAINTS
@DEVICE
@click.option("--max-batch", default=32, show_default=True, type=click.IntRange(1), help="Utterances per forward pass.")
@click.option("--wait-ms", default=5.0, show_default=True, type=click.FloatRange(0),
              help="How long a batch waits for more requests to join.")
@click.option("--max-texts", default=64, show_default=True, type=click.IntRange(1), help="Utterances per request.")
@click.option("--max-chars", default=1000, show_default=True, type=click.IntRange(1), help="Characters per utterance.")
@click.option("--max-body-kb", default=1024, show_default=True, type=click.IntRange(1), help="Request body limit.")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch intra-op threads (default: torch's choice).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def main(run_dir, host, port, quantize, intent_slots, device, max_batch, wait_ms, max_texts, max_chars, max_body_kb, threads, log_level):
    """Serve a trained run: POST /parse, GET /health, GET /model, the OpenAPI page at /docs and a
    web page at /. Concurrent requests are micro-batched."""
    console_output(limit=None)  # a server runs for days: every request's warnings
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise click.ClickException("slu-serve needs FastAPI and uvicorn: pip install 'slu_feedback[serve]'") from None
    import torch

    from ..inference.server import LOOPBACK, ServerSettings, serve
    from ..models import RunError

    device = inference_device(device, quantize)
    if threads:
        torch.set_num_threads(threads)
    if host not in LOOPBACK:
        click.secho(f"warning: binding to {host}: the API has no authentication; anyone who can reach this "
                    "address can use it", fg="yellow", err=True)
    settings = ServerSettings(max_batch=max_batch, wait_ms=wait_ms, max_texts=max_texts, max_chars=max_chars,
                              max_body_bytes=max_body_kb * 1024)
    try:
        serve(run_dir, host, port, quantize=quantize, settings=settings, log_level=log_level,
              device=device, intent_slot_constraints=intent_slots)
    except RunError as error:
        raise click.ClickException(str(error)) from None


if __name__ == "__main__":
    main()
