"""Loading a dataset's three splits as a ``datasets.DatasetDict``, label maps and subsampling."""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from .errors import DataError
from .readers import FOLDER_FILES, FORMATS, read_folder_split, read_jsonl, read_span_json, read_text

SPLITS = ("train", "validation", "test")
# folder / file stems accepted for each split, in the order they are tried
SPLIT_NAMES = {"train": ("train",), "validation": ("valid", "dev", "validation"), "test": ("test",)}
SPLIT_FILE_EXTENSIONS = (".jsonl", ".json", ".yml", ".yaml")  # a split file; a folder-format split is a folder
UNKNOWN_ID = -100  # id of labels unseen in training; also the ignore index of torch's cross-entropy

FEATURES = datasets.Features({
    "tokens": datasets.List(datasets.Value("string")),
    "slots": datasets.List(datasets.Value("string")),
    "intent": datasets.Value("string"),
    "text": datasets.Value("string"),
    "offsets": datasets.List(datasets.List(datasets.Value("int32"))),
})


def resolve_data_path(name_or_path: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> Path:
    """Find a dataset given as a path or a bare name such as ``atis``.

    Tried in order: as given (relative to the working directory), relative to ``base_dir`` (the
    folder of the recipe that names it), then ``$SLU_DATA_DIR/<name>``. Recipes can thus say
    ``data.path: atis`` and work on any machine where SLU_DATA_DIR points at the benchmark folder.
    """
    given = Path(name_or_path).expanduser()
    tried = [given]
    if base_dir is not None and not given.is_absolute():
        tried.append(Path(base_dir) / given)
    env = os.environ.get("SLU_DATA_DIR")
    if env and not given.is_absolute():
        tried.append(Path(env).expanduser() / given)
    for cand in tried:
        if cand.exists():
            return cand
    looked = ", ".join(str(p) for p in tried)
    hint = "" if env else " (SLU_DATA_DIR is not set)"
    if given.name in ("atis", "snips") and len(given.parts) == 1:  # a benchmark by name: where to get it
        raise DataError(f"dataset {str(name_or_path)!r} not found; looked in: {looked}{hint}. "
                        "Point to the folder holding it with `export SLU_DATA_DIR=/path/to/data`, "
                        f"or download it with `slu-data fetch {given.name}`.")
    raise DataError(f"dataset {str(name_or_path)!r} not found; looked in: {looked}{hint}")


def _sniff_file(path: Path) -> str:
    """'jsonl' (word-level) or 'spans' (character-level) from the first example in a file."""
    if path.suffix in (".yml", ".yaml"):
        return "spans"  # Rasa YAML
    text = read_text(path)  # a DataError with the line for bytes that are not UTF-8
    head = text[:4096]
    body = head.lstrip()
    if not body:
        raise DataError("file is empty", path)
    if body.startswith("[") or '"rasa_nlu_data"' in head:
        return "spans"
    first = text.lstrip().split("\n", 1)[0]
    try:
        obj = json.loads(first)
    except (ValueError, RecursionError):  # a broken first line, or one object over several lines
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            # not JSON as a whole either: let the reader its extension suggests name the bad line
            if path.suffix not in (".jsonl", ".json"):  # a README, a CSV: no data file of ours
                raise DataError("cannot tell the format: not JSON, and not named .jsonl, .json, .yml or .yaml; "
                                "expected a dataset folder or a split file (see data/FORMATS.md)", path) from None
            return "jsonl" if path.suffix == ".jsonl" else "spans"
        if isinstance(obj, dict) and "text" in obj:
            return "spans"  # the span reader takes a single object; word-level JSONL is one a line
    if isinstance(obj, dict) and "tokens" in obj:
        return "jsonl"
    if isinstance(obj, dict) and "text" in obj:
        return "spans"
    raise DataError("cannot tell the format: expected word-level JSONL (with 'tokens') or character-span "
                    "JSON (with 'text'); pass --format explicitly", path)


def _split_file(folder: Path, split: str) -> Path | None:
    """The file holding a split in a directory of single-file splits, e.g. ``dev.jsonl``."""
    return _only_one(folder, split, [folder / (stem + ext) for stem in SPLIT_NAMES[split]
                                     for ext in SPLIT_FILE_EXTENSIONS
                                     if (folder / (stem + ext)).is_file()])


def _split_folder(folder: Path, split: str) -> Path | None:
    return _only_one(folder, split, [folder / stem for stem in SPLIT_NAMES[split] if (folder / stem).is_dir()])


def _only_one(folder: Path, split: str, found: list) -> Path | None:
    """The one candidate for a split; two (valid/ and dev/, test.json and test.jsonl) are an error,
    not a silent choice."""
    if len(found) > 1:
        raise DataError(f"{' and '.join(p.name for p in found)} could each be the {split} split; keep one", folder)
    return found[0] if found else None


def detect_format(path: str | os.PathLike) -> str:
    """Guess ``folder``, ``jsonl`` or ``spans`` for a dataset directory, a split folder or a file."""
    path = Path(path)
    if path.is_file() and path.name in FOLDER_FILES:
        raise DataError(f"{path.name} is one file of a folder-format split: give its folder "
                        f"({path.parent}) or the dataset folder above it", path)
    if path.is_file():
        return _sniff_file(path)
    if not path.is_dir():
        raise DataError("not a regular file or folder" if path.exists() else "no such file or directory", path)
    if (path / "seq.in").is_file() or any(
            (sub / "seq.in").is_file() for s in SPLITS if (sub := _split_folder(path, s)) is not None):
        return "folder"
    for split in SPLITS:
        if (f := _split_file(path, split)) is not None:
            return _sniff_file(f)
    raise DataError("cannot tell the format: expected train/valid/test folders with seq.in, seq.out and "
                    "label, or train/valid/test .jsonl/.json files", path)


def read_split(path: str | os.PathLike, format: str, repair_bio: bool = True, partial: bool = True) -> list[dict]:
    """Read one split: a folder with seq.in/seq.out/label, or one JSONL / span-JSON file
    (`partial`: whether a JSONL line may leave the intent or the slots null)."""
    path = Path(path)
    if format == "folder":
        return read_folder_split(path.parent, path.name, repair_bio)
    if format == "jsonl":
        return read_jsonl(path, repair_bio, partial)
    if format == "spans":
        return read_span_json(path)  # char spans cannot hold a dangling I- tag
    raise DataError(f"unknown format {format!r}; expected one of: auto, {', '.join(FORMATS)}")


def to_dataset(examples: list[dict]) -> datasets.Dataset:
    """A Dataset with the standard columns from reader dicts."""
    cols = {name: [ex[name] for ex in examples] for name in FEATURES}
    return datasets.Dataset.from_dict(cols, features=FEATURES)


def load_splits(path: str | os.PathLike, format: str = "auto", repair_bio: bool = True,
                splits: tuple = SPLITS) -> datasets.DatasetDict:
    """Load train/validation/test (or only `splits` of them) from a dataset directory.

    ``folder``: ``path/{train,valid|dev|validation,test}/{seq.in,seq.out,label}``;
    ``jsonl``/``spans``: ``path/{train,valid|dev|validation,test}.jsonl`` (or ``.json``).
    Columns: tokens, slots, intent, text, offsets. A missing split is an error, not an empty split,
    so a typo in a folder name is not silently trained on.
    """
    path = resolve_data_path(path)
    sniff = format == "auto"
    if format == "auto":
        format = detect_format(path)
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r}; expected one of: auto, {', '.join(FORMATS)}")
    if not path.is_dir():
        raise DataError(f"expected a directory holding train, valid and test {format} data, got a file", path)
    out = {}
    for split in splits:
        where = _split_folder(path, split) if format == "folder" else _split_file(path, split)
        if where is None:
            names = " or ".join(n + ("/" if format == "folder" else ".jsonl" if format == "jsonl" else ".json(l)")
                                for n in SPLIT_NAMES[split])
            other_kind = [p.name for n in SPLIT_NAMES[split] for p in path.glob(n + "*")
                          if p.stem == n and p.is_dir() != (format == "folder")]
            hint = f" ({', '.join(other_kind)} is a {'file' if format == 'folder' else 'folder'})" if other_kind else ""
            raise DataError(f"missing {split!r} split: expected {names}{hint}", path)
        # guessed formats are guessed per file: word-level train.jsonl beside span-level valid.json
        split_format = format
        if sniff and format != "folder":
            try:
                split_format = _sniff_file(where)
            except DataError:  # a file broken from its first line: its reader, the dataset's, names the line
                pass
        out[split] = to_dataset(read_split(where, split_format, repair_bio, partial=split == "train"))
        if split == "train":
            for column, what in (("intent", "an intent label"), ("slots", "slot tags")):
                if all(value is None for value in out[split][column]):
                    raise DataError(f"no training utterance has {what} (all null): a task needs some labelled "
                                    "examples" + (" (an intent-only dataset tags its words 'O')"
                                                  if column == "slots" else ""), where)
    return datasets.DatasetDict(out)


def load_data(path: str | os.PathLike, format: str = "auto", repair_bio: bool = True,
              splits: tuple = SPLITS, partial: bool = True) -> dict[str, datasets.Dataset]:
    """All splits (or `splits`) of a dataset directory, or one split folder / file as a single split
    named after it (``{"test.jsonl": ...}``): what `slu-data` and `slu-eval --data` accept. Such a
    split may leave labels null (JSONL) as a training split may, unless `partial` is False (a split
    to be scored: the reader names the line)."""
    path = resolve_data_path(path)
    guessed = detect_format(path) if format == "auto" else format
    if is_one_split(path, guessed):
        return {path.name: to_dataset(read_split(path, guessed, repair_bio, partial))}
    return dict(load_splits(path, format, repair_bio, splits))


def is_one_split(path: Path, format: str) -> bool:
    """Whether `path` is one split (a file, or a folder of seq.in/seq.out/label), not a dataset."""
    return path.is_file() or (format == "folder" and (path / "seq.in").is_file())


def split_name(split: str) -> str:
    """The canonical name of a split: "valid" and "dev" are "validation"."""
    return next((name for name, aliases in SPLIT_NAMES.items() if split in aliases), split)


def pick_split(splits: dict, split: str) -> tuple[str, datasets.Dataset]:
    """(name, split) from `load_data`'s result: the one split of a split file / folder, whatever
    `split` says, else the split named `split` of a dataset."""
    if len(splits) == 1:
        return next(iter(splits.items()))
    name = split_name(split)
    return name, splits[name]


@dataclass
class LabelMaps:
    """Intent and slot-tag vocabularies; ids are list positions. Saved with a model as ``to_dict()``."""

    intents: list[str]
    slots: list[str]
    _intent_ids: dict = field(init=False, repr=False, compare=False)
    _slot_ids: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self.intents, self.slots = list(self.intents), list(self.slots)
        self._intent_ids = {lab: i for i, lab in enumerate(self.intents)}
        self._slot_ids = {tag: i for i, tag in enumerate(self.slots)}

    def intent_id(self, label: str) -> int:
        """Id of an intent; UNKNOWN_ID for one unseen in training (ATIS test has such)."""
        return self._intent_ids.get(label, UNKNOWN_ID)

    def slot_id(self, tag: str) -> int:
        """Id of a slot tag; UNKNOWN_ID for one unseen in training."""
        return self._slot_ids.get(tag, UNKNOWN_ID)

    def to_dict(self) -> dict:
        return {"intents": list(self.intents), "slots": list(self.slots)}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelMaps":
        return cls(intents=list(d["intents"]), slots=list(d["slots"]))


def build_label_maps(train_split) -> LabelMaps:
    """Vocabularies from the training split only (intents sorted; slot tags sorted, "O" first).

    Using train only keeps ids identical however valid/test change, and lets unseen test labels
    be counted as errors rather than silently learned.
    """
    intents = sorted(set(train_split["intent"]) - {None})  # None: an utterance without an intent label
    tags = {t for seq in train_split["slots"] if seq is not None for t in seq}
    tags.discard("O")
    return LabelMaps(intents=intents, slots=["O"] + sorted(tags))


def slot_types_by_intent(train_split) -> dict[str, list[str]]:
    """{intent: sorted slot types (B-/I- stripped) seen with it}, over the fully labelled utterances:
    what `model.intent_slot_constraints` allows each predicted intent to decode."""
    types = {}
    for intent, tags in zip(train_split["intent"], train_split["slots"]):
        if intent is not None and tags is not None:
            types.setdefault(intent, set()).update(t[2:] for t in tags if t != "O")
    return {intent: sorted(found) for intent, found in sorted(types.items())}


def subsample(split: datasets.Dataset, fraction: float, seed: int, rest: bool = False) -> datasets.Dataset:
    """A ``fraction`` of a split, stratified by intent, same result for the same seed.

    Every intent keeps at least one example, so low-resource runs still see each label.
    ``rest=True`` returns the other examples instead: the part a run with ``data.train_fraction``
    did not train on (MTIF's held-out target, ``slu-influence score --target-split heldout``).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return split.select([]) if rest else split
    by_intent = defaultdict(list)
    for i, intent in enumerate(split["intent"]):
        by_intent[intent].append(i)
    rng = random.Random(seed)
    keep = []
    for intent in sorted(by_intent, key=str):  # str: None (no intent label) sorts as "None"
        idx = by_intent[intent]
        keep.extend(rng.sample(idx, max(1, round(fraction * len(idx)))))
    if rest:
        keep = set(range(len(split))) - set(keep)
    return split.select(sorted(keep))
