"""``slu-data``: inspect, validate, convert, split and fetch datasets.

Data problems are shown as ``Error: path:line: message`` with exit code 1, never a traceback.
"""

from __future__ import annotations

import functools
import os
import random
import sys
import warnings
from collections import Counter
from pathlib import Path

import click

from slu_feedback.data import DataError, bio_to_spans, load_data, write_examples
from slu_feedback.data.dataset import SPLIT_FILE_EXTENSIONS, SPLIT_NAMES
from slu_feedback.data.fetch import fetch as fetch_dataset

from . import console_output

FORMAT_CHOICE = click.Choice(["auto", "folder", "jsonl", "spans"])
# where each split goes when writing a dataset directory
OUT_NAMES = {"train": "train", "validation": "valid", "test": "test"}
OUT_EXT = {"jsonl": ".jsonl", "spans": ".json"}


def _data_errors_to_click(fn):
    """Turn DataError, and an OSError of a path (unwritable output, a name too long), into a one-line
    click error (exit code 1)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DataError as e:
            raise click.ClickException(str(e)) from None
        except BrokenPipeError:  # `slu-data inspect ... | head`: the reader has gone; end quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except OSError as e:  # DST with a file on its path, a full disk, a path name too long to look up
            raise click.ClickException(f"{e.filename or 'a path'}: {e.strerror or e}") from None
    return wrapper


OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace split files that DST holds already.")


def _outputs(dst: str, names, to_fmt: str, overwrite: bool) -> dict:
    """{split: output path} in DST. Refuses to replace split files DST holds already unless
    `overwrite` (the source itself, when DST is where it lies: an annotation tool's character spans
    would be lost), and always refuses to write one beside another file for the same split
    (train.jsonl beside train.json, valid/ beside dev/), which would make DST ambiguous."""
    outs = {name: Path(dst) / (OUT_NAMES.get(name, Path(name).stem) + OUT_EXT.get(to_fmt, "")) for name in names}
    for out in outs.values():
        stems = next((stems for stems in SPLIT_NAMES.values() if out.stem in stems), (out.stem,))
        clash = [str(other) for stem in stems for ext in ("", *SPLIT_FILE_EXTENSIONS)
                 if (other := out.parent / (stem + ext)) != out and other.exists()]
        if clash:
            raise click.ClickException(f"{', '.join(clash)} holds the same split as {out.name} would: choose another "
                                       "destination (two files for one split make the dataset ambiguous)")
    wrong_kind = [str(out) for out in outs.values() if out.exists() and out.is_dir() != (to_fmt == "folder")]
    if wrong_kind:  # a file where a split folder goes, or a folder where a split file goes
        what = "a file where a split folder goes" if to_fmt == "folder" else f"a folder where a {to_fmt} split file goes"
        raise click.ClickException(f"{', '.join(wrong_kind)}: {what}; choose another destination")
    existing = [str(out) for out in outs.values() if out.exists()]
    if existing and not overwrite:
        raise click.ClickException(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: choose "
                                   "another destination, or pass --overwrite to replace")
    return outs


def _load(path: str, fmt: str, repair_bio: bool = True) -> dict:
    """All splits of a dataset directory, or a single split folder / file as one split.

    BIO repairs are summarised in one line instead of one warning per utterance.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_data(path, fmt, repair_bio)
    repaired = [w for w in caught if "does not follow" in str(w.message)]
    if repaired:
        click.echo(f"warning: repaired {len(repaired)} I- tag(s) not preceded by B-/I- of the same type "
                   f"(first: {repaired[0].message}); use --strict-bio to make this an error", err=True)
    adjusted = [w for w in caught if "entity span adjusted" in str(w.message)]
    if adjusted:
        click.echo(f"warning: adjusted {len(adjusted)} entity span(s) to word boundaries "
                   f"(first: {adjusted[0].message})", err=True)
    for w in caught:
        if w not in repaired and w not in adjusted:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return splits


def _bars(counter: Counter, top: int, width: int = 40) -> list[str]:
    items = counter.most_common(top)
    if not items:
        return ["  (none)"]
    peak = items[0][1]
    name_w = max(len(k) for k, _ in items)
    lines = [f"  {k:<{name_w}} {'#' * max(1, round(width * v / peak)):<{width}} {v}" for k, v in items]
    if len(counter) > top:
        lines.append(f"  ... {len(counter) - top} more")
    return lines


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Inspect, validate, convert, split and fetch intent/slot datasets."""
    console_output()


@main.command()
@click.argument("path")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="auto", show_default=True)
@click.option("--top", default=15, show_default=True, type=click.IntRange(1), help="Rows in each histogram.")
@_data_errors_to_click
def inspect(path, fmt, top):
    """Counts, label histograms and lengths of each split in PATH."""
    splits = _load(path, fmt)
    first = next(iter(splits))
    train_intents = set(splits[first]["intent"])
    for name, ds in splits.items():
        intents, lengths = [i for i in ds["intent"] if i is not None], [len(t) for t in ds["tokens"]]
        slot_types = Counter(label for tags in ds["slots"] if tags is not None for label, _, _ in bio_to_spans(tags))
        unlabelled = [f"{n} without {task}" for task, n in (("intent", len(ds) - len(intents)),
                                                            ("slots", ds["slots"].count(None))) if n]
        click.echo(f"{name}: {len(ds)} utterances{' (' + ', '.join(unlabelled) + ')' if unlabelled else ''}, "
                   f"{len(set(intents))} intents, {len(slot_types)} slot types, "
                   f"{sum('#' in i for i in intents)} multi-intent, length min/mean/max "
                   f"{min(lengths)}/{sum(lengths) / len(lengths):.1f}/{max(lengths)}")
        if name != first:
            unseen = [i for i in intents if i not in train_intents]
            if unseen:
                click.echo(f"  {len(unseen)} utterance(s) with {len(set(unseen))} intent(s) unseen in {first}")
    ds = splits[first]
    click.echo(f"\nintents ({first}):")
    click.echo("\n".join(_bars(Counter(i for i in ds["intent"] if i is not None), top)))
    click.echo(f"\nslot types ({first}, entity counts):")
    click.echo("\n".join(_bars(Counter(l for tags in ds["slots"] if tags is not None for l, _, _ in bio_to_spans(tags)),
                                top)))


@main.command()
@click.argument("path")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="auto", show_default=True)
@click.option("--strict-bio", is_flag=True, help="Treat an I- tag without a preceding B- as an error.")
@_data_errors_to_click
def validate(path, fmt, strict_bio):
    """Check every file in PATH; exit code 1 on the first problem."""
    splits = _load(path, fmt, repair_bio=not strict_bio)
    click.echo("OK: " + ", ".join(f"{name} {len(ds)}" for name, ds in splits.items()))


@main.command()
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--to", "to_fmt", type=click.Choice(["folder", "jsonl", "spans"]), required=True)
@click.option("--from", "from_fmt", type=FORMAT_CHOICE, default="auto", show_default=True)
@OVERWRITE
@_data_errors_to_click
def convert(src, dst, to_fmt, from_fmt, overwrite):
    """Convert all splits of SRC into directory DST (train/valid/test in the target format)."""
    splits = _load(src, from_fmt)
    outs = _outputs(dst, splits, to_fmt, overwrite)
    for name, ds in splits.items():
        out = outs[name]
        write_examples(ds, out, to_fmt)
        click.echo(f"{name}: {len(ds)} -> {out}")


def stratified_split(examples, valid: float, test: float, seed: int) -> dict:
    """Indices of train/validation/test: round(share * n) utterances held out in all, spread over
    the intents in proportion to their size (each intent's utterances shuffled and given evenly
    spaced keys, the smallest keys held out), so that even intents of a few utterances take their
    turn; an intent's first utterance and every utterance without both labels stay in train."""
    rng, by_intent, train, keyed = random.Random(seed), {}, [], []
    for i, (intent, slots) in enumerate(zip(examples["intent"], examples["slots"])):
        if intent is None or slots is None:
            train.append(i)  # only fully labelled utterances can be scored
        else:
            by_intent.setdefault(intent, []).append(i)
    for intent in sorted(by_intent):
        idx = by_intent[intent]
        rng.shuffle(idx)
        train.append(idx[0])
        keyed += [((r + rng.random()) / len(idx), i) for r, i in enumerate(idx[1:])]
    keyed = [i for _, i in sorted(keyed)]
    n = len(examples["intent"])
    n_test = min(round(test * n), len(keyed))
    n_valid = min(round(valid * n), len(keyed) - n_test)
    return {"train": sorted(train + keyed[n_test + n_valid:]), "validation": sorted(keyed[n_test:n_test + n_valid]),
            "test": sorted(keyed[:n_test])}


@main.command()
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--valid", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of all utterances held out for validation (spread over the intents).")
@click.option("--test", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of all utterances held out for test (spread over the intents).")
@click.option("--seed", default=0, show_default=True)
@click.option("--to", "to_fmt", type=click.Choice(["folder", "jsonl", "spans"]), default="jsonl", show_default=True)
@click.option("--from", "from_fmt", type=FORMAT_CHOICE, default="auto", show_default=True)
@OVERWRITE
@_data_errors_to_click
def split(src, dst, valid, test, seed, to_fmt, from_fmt, overwrite):
    """Split one file or split folder SRC (all your labelled data) into DST's train/valid/test,
    stratified by intent, so that slu-train can take it."""
    if valid + test >= 1:
        raise click.BadParameter(f"--valid {valid} and --test {test} leave nothing to train on")
    splits = _load(src, from_fmt)
    if len(splits) != 1:
        raise click.ClickException(f"{src} holds the splits {', '.join(splits)} already; split takes one file or "
                                   "split folder (slu-data convert copies a whole dataset)")
    data = next(iter(splits.values()))
    outs = _outputs(dst, ("train", "validation", "test"), to_fmt, overwrite)
    parts = stratified_split(data, valid, test, seed)
    empty = [name for name in ("validation", "test") if not parts[name]]
    if empty:
        labelled = [i for i, s in zip(data["intent"], data["slots"]) if i is not None and s is not None]
        spare = len(labelled) - len(set(labelled))  # every intent's first utterance stays in train
        fix = (f"label more data: at least {2 - spare} more utterance{'s' if spare == 0 else ''} of intents "
               "already there" if spare < 2 else
               f"choose --valid and --test so that each holds out at least 1 and both together at most {spare} "
               f"of the {len(data)}")
        raise click.ClickException(f"{len(data)} utterances leave nothing for {' and '.join(empty)}: {spare} of them "
                                   f"can be held out (every intent's first utterance stays in train); {fix}")
    for name, idx in parts.items():
        out = outs[name]
        write_examples(data.select(idx), out, to_fmt)
        click.echo(f"{name}: {len(idx)} -> {out}")


@main.command()
@click.argument("name", type=click.Choice(["atis", "snips"]))
@click.option("--dest", type=click.Path(file_okay=False), default=None,
              help="Target folder [default: $SLU_DATA_DIR or ./data_cache].")
@_data_errors_to_click
def fetch(name, dest):
    """Download ATIS or SNIPS (folder format) and verify checksums."""
    dest = dest or os.environ.get("SLU_DATA_DIR") or "data_cache"
    target = fetch_dataset(name, dest)
    click.echo(f"{name} ready in {target}")
    if Path(dest).resolve() != Path(os.environ.get("SLU_DATA_DIR", "/nonexistent")).resolve():
        click.echo(f"use it by name with: export SLU_DATA_DIR={Path(dest).resolve()}")


if __name__ == "__main__":
    main()
