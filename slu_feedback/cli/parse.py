"""`slu-parse RUN_DIR`: an interactive prompt, or `--text` / `--input FILE` for scripts."""

import json
import re
import sys

import click

from . import DEVICE, INTENT_SLOT_CONSTRAINTS, console_output, inference_device

HELP = """Type an utterance and press Enter to parse it.
  :help      this text
  :explain   toggle showing the prediction at every feedback iteration
  :json      toggle JSON output
  :quit      leave (Ctrl-D works too)"""

COLOURS = ["cyan", "magenta", "yellow", "green", "blue", "red"]


def uncertainty(item: dict, key: str = "uncertainty") -> str:
    """A VMTL run's estimate as ` (uncertainty 0.123)`; nothing for other heads, which have none."""
    return f" (uncertainty {item[key]:.3f})" if item.get(key) is not None else ""


def render(result: dict, explain: bool = False) -> str:
    """Readable, coloured rendering: the utterance with slots highlighted, then intent and slots
    (with a VMTL run's uncertainties), and a note where the utterance was cut at max_length."""
    if result["intent"] is None:
        return click.style("(nothing to parse)", dim=True)
    text, pieces, last = result["text"], [], 0
    colour = {}
    for slot in result["slots"]:
        colour.setdefault(slot["label"], COLOURS[len(colour) % len(COLOURS)])
        pieces.append(text[last:slot["start"]])
        pieces.append(click.style(f"[{slot['text']}]", fg=colour[slot["label"]], bold=True))
        last = slot["end"]
    pieces.append(text[last:])
    lines = ["".join(pieces),
             (f"  dataset {result['dataset']}\n" if result.get("dataset") else "")
             + f"  intent  {click.style(result['intent'], bold=True)}  {result['intent_score']:.3f}"
             + uncertainty(result, "intent_uncertainty")
             + "".join(f"   {t['intent']} {t['score']:.3f}" for t in result["top_intents"][1:])]
    for slot in result["slots"]:
        lines.append(f"  {click.style(slot['label'], fg=colour[slot['label']])} = {slot['text']!r}"
                     f"  [{slot['start']}:{slot['end']}]  {slot['score']:.3f}{uncertainty(slot)}")
    if result.get("truncated"):  # stderr warns of the first few only (--input): say it by each result
        lines.append(click.style(f"  truncated: only the first {result['words_seen']} of {len(result['words'])} "
                                 "words were read (max_length); the rest are tagged O", fg="yellow"))
    if result["iterations"]:
        lines.append(click.style(f"  feedback iterations used: {result['iterations']}", dim=True))
    if explain and len(result.get("explain", [])) == 1:  # k=0 only
        lines.append(click.style("  (this run has no feedback loop: k=0 is its only prediction)", dim=True))
    for step in result.get("explain", []) if explain else []:  # every iteration, also those after the answer's
        tags = " ".join(f"{w}/{t}" for w, t in zip(result["words"], step["tags"]) if t != "O")
        answer = "   <- the answer" if step["iteration"] == result["iterations"] else ""
        lines.append(click.style(f"  k={step['iteration']}: {step['intent']} {step['intent_score']:.3f}  {tags}{answer}",
                                 dim=not answer))
    return "\n".join(lines)


def emit(results, as_json: bool, explain: bool) -> None:
    for result in results:
        click.echo(json.dumps(result, ensure_ascii=False) if as_json else render(result, explain))


def read_lines(file) -> list:
    """The utterances of an --input file: UTF-8 (a leading byte-order mark dropped), one a line,
    lines ending in \\n, \\r\\n or a bare \\r (old Mac files); text that is not UTF-8 is refused
    with the file and line."""
    data = file.read()
    lines = re.split(rb"\r\n|\r|\n", data[3:] if data.startswith(b"\xef\xbb\xbf") else data)
    if lines[-1] == b"":  # the last line's end, not an empty utterance
        lines.pop()
    for number, line in enumerate(lines, start=1):
        try:
            lines[number - 1] = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise click.ClickException(f"{file.name}:{number}: not UTF-8 text ({error.reason} at byte "
                                       f"{error.start + 1} of the line)") from None
    return lines


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--text", "texts", multiple=True, help="Parse this utterance and exit (repeatable).")
@click.option("--input", "input_file", type=click.File("rb"), help="One utterance a line, UTF-8 ('-' = stdin).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per utterance.")
@click.option("--explain", is_flag=True, help="Show the prediction at every feedback iteration.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1), help="Intents listed per utterance.")
@click.option("--quantize", is_flag=True, help="Dynamic int8 quantisation of the Linear layers (CPU; faster, slightly less accurate).")
@click.option("--dataset", default=None, help="Joint runs: answer with this dataset's heads (default: the most confident).")
@INTENT_SLOT_CONSTRAINTS
@DEVICE
def main(run_dir, texts, input_file, as_json, explain, batch_size, top_k, quantize, dataset, intent_slots, device):
    """Parse utterances with a trained run: intent, its probability, top-k intents and slot spans."""
    from ..inference.parser import SLUParser
    from ..models import RunError

    console_output(limit=3 if texts or input_file else None)  # at the prompt, every utterance's warnings
    device = inference_device(device, quantize)
    try:
        parser = SLUParser.from_pretrained(run_dir, device=device, top_k=top_k, quantize=quantize, dataset=dataset,
                                           intent_slot_constraints=intent_slots)
    except RunError as error:
        raise click.ClickException(str(error)) from None
    if texts or input_file:
        lines = list(texts) + (read_lines(input_file) if input_file else [])
        # sort by length so batches pad little; report in the input order
        order = sorted(range(len(lines)), key=lambda i: len(lines[i]))
        parsed = parser([lines[i] for i in order], explain=explain, batch_size=batch_size)
        results = [None] * len(lines)
        for i, result in zip(order, parsed):
            results[i] = result
        emit(results, as_json, explain)
        return
    interactive(parser, as_json, explain)


def interactive(parser, as_json: bool, explain: bool) -> None:
    """A prompt with history (readline where available)."""
    try:
        import readline  # noqa: F401  (arrow-key history)
    except ImportError:
        pass
    click.echo("slu-parse: " + ", ".join(f"{name + ': ' if name else ''}{len(m.config.intent_labels)} intents, "
                                         f"{len(m.config.slot_labels)} slot tags" for name, m in parser.models.items())
               + ". :help for help.")
    prompt = "slu> " if sys.stdin.isatty() else ""  # utterances piped in: their results, no prompts between
    while True:
        try:
            line = input(prompt)
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return
        command = line.strip()
        if command in (":quit", ":q", ":exit"):
            return
        if command == ":help":
            click.echo(HELP)
        elif command == ":explain":
            explain = not explain
            click.echo(f"explain {'on' if explain else 'off'}")
        elif command == ":json":
            as_json = not as_json
            click.echo(f"json {'on' if as_json else 'off'}")
        elif re.fullmatch(r":[A-Za-z]+", command):  # a mistyped command, not an utterance
            click.echo(f"unknown command {command}; :help lists the commands")
        else:
            emit([parser(line, explain=explain)], as_json, explain)


if __name__ == "__main__":
    sys.exit(main())
