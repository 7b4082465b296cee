"""Readers and writers for the three on-disk formats (see data/FORMATS.md).

Every reader returns a list of plain dicts::

    {"tokens": [...], "slots": [...], "intent": str, "text": str, "offsets": [[start, end], ...]}

``slots`` are word-level IOB2 tags, ``offsets`` the character span of each token in ``text``.
In word-level JSONL a training utterance may say ``"intent": null`` or ``"slots": null``: it is not
labelled for that task and trains the other head only (partial annotation; what sample-level MTIF
pruning writes). Such an example carries ``None`` in that field.
Problems are raised as DataError naming the file and the 1-based line, so a user can fix the file.
"""

from __future__ import annotations

import codecs
import itertools
import json
import os
import re
import unicodedata
import warnings
from pathlib import Path
from typing import Iterable

import regex

from .errors import DataError

FOLDER_FILES = ("seq.in", "seq.out", "label")
FORMATS = ("folder", "jsonl", "spans")

# A word is a run of word characters and combining marks, possibly joined by one of ' ’ . : - / &
# followed by more ("o'clock", "6:30", "u.s", "rock-n-roll", "24/7", "r&b"); anything else that is
# not whitespace is a token on its own, with the marks that follow it ("st." -> "st" "."). Marks
# belong to their letter ("मुंबई", "cafe\u0301" are one word each), which needs the `regex`
# package's \p{M} (already installed with transformers); "whitespace" is exactly str.isspace.
_SPACE = "".join(sorted({chr(i) for i in range(0x3001) if chr(i).isspace()}))  # none above U+3000
_NOT_SPACE = "[^" + regex.escape(_SPACE, special_only=False) + "]"
# Scripts written without spaces between words (Chinese, Japanese, Thai, Lao, Khmer, Myanmar): each
# grapheme cluster is a token (in Myanmar each syllable, below), so an entity can start and end anywhere ("明天|北京|天气" are six
# tokens), as BERT's basic tokenizer does for ideographs; "ー" is the kana length mark
# (their digits, "๑๒๓", stay one number as "123" does; "ｰ" is the half-width length mark, "〆" a kanji-like mark)
_UNSPACED = r"(?:(?!\p{N})[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}ーｰ〆])"
# Python's \w (letters, all numbers, "_": not regex's \w) plus marks, outside those scripts
_WORD = r"(?:(?!" + _UNSPACED + r")[\p{L}\p{N}_\p{M}])"
# Myanmar: a token is a syllable, not a grapheme cluster. Unicode's clusters cut its syllables
# ("မြန်" is the clusters မြ | န်: a consonant killed by asat U+103A ends the syllable before it), so
# a cluster joins the one before when it starts with a mark (ာ U+102C and း U+1038 start clusters of
# their own), follows a virama (U+1039, a stacked consonant) or is a consonant killed by asat or
# stacked by virama: "မြန်မာ" -> မြန် | မာ, as Myanmar syllable breakers (sylbreak) split it
_MYANMAR_SYLLABLE = (r"(?=\p{Myanmar})(?!\p{N})\X"
                     r"(?:(?=\p{Myanmar})(?:(?=\p{M})|(?<=\u1039)|(?=\p{L}[\u1036\u1037]*[\u103A\u1039]))\X)*")
# any other character starts a token of one grapheme cluster (\X: an emoji ZWJ sequence, a flag or
# a symbol with its marks stays whole); invisible format characters (\p{Cf}: zero-width space,
# a stray joiner, BOM) are no token, like whitespace
_TOKEN_RE = regex.compile(_WORD + r"+(?:['’.:\-/&]" + _WORD + r"+)*|" + _MYANMAR_SYLLABLE
                          + r"|(?=" + _UNSPACED + r")\X"
                          r"|(?![\p{L}\p{N}_\p{M}\p{Cf}])(?=" + _NOT_SPACE + r")\X")
_TAG_RE = re.compile(r"O|[BI]-[^\s-]\S*")  # (a type starting with "-", as in "B--", is a typo)


def _is_intent(intent) -> bool:
    """A label: a string without spaces; a `#`-joined multi-intent label has no empty part ("a#", "#")."""
    return isinstance(intent, str) and bool(intent.strip()) and not any(c.isspace() for c in intent.strip()) \
        and all(intent.strip().split("#"))


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """Split raw text into ``(word, start, end)`` triples with character offsets.

    This is the single tokenisation rule of the project: it turns character-span annotations
    into words, and the parser applies it to raw user input, so training and inference agree.
    Rule: a word is a run of ``\\w`` characters (any Unicode letter, digit or ``_``) and combining
    marks (so "मुंबई" and a decomposed "café" are one word each), optionally
    joined by an internal ``'``, ``’``, ``.``, ``:``, ``-``, ``/`` or ``&`` that is followed by
    more word characters; every other non-space character is a token by itself, with the rest of
    its grapheme cluster (an emoji ZWJ sequence is one token), except invisible format characters
    (zero-width space, a stray joiner), which separate tokens as whitespace does. In scripts written
    without spaces (Chinese, Japanese kana, Thai, Lao, Khmer) every grapheme cluster is a
    token: ``"明天北京天气"`` -> 明 | 天 | 北 | 京 | 天 | 气; in Myanmar every syllable:
    ``"မြန်မာ"`` -> မြန် | မာ.
    Examples: ``"wake me at 6:30, o'clock"`` -> wake | me | at | 6:30 | , | o'clock;
    ``"st. louis"`` -> st | . | louis; ``""`` -> [].
    Text is not lowercased or normalised here.
    """
    return [(m.group(), m.start(), m.end()) for m in _TOKEN_RE.finditer(text)]


def split_whitespace(text: str) -> list[tuple[str, int, int]]:
    """``(word, start, end)`` triples of the whitespace-separated words: how pre-tokenised data
    (folder, JSONL) whose words do not follow `tokenize` were split ("st." and "ball:" are words in
    ATIS and SNIPS), so that a model trained on them is given its words the same way."""
    return [(m.group(), m.start(), m.end()) for m in regex.finditer(_NOT_SPACE + "+", text)]


WORD_SPLITS = {"rule": tokenize, "whitespace": split_whitespace}


def word_split_of(token_lists) -> str:
    """"rule" if every utterance's words are what `tokenize` makes of them joined by spaces (span
    data, or pre-tokenised data that follows the rule), else "whitespace": the parser splits raw text
    the way the training words were split."""
    return "whitespace" if off_rule(token_lists) else "rule"


def off_rule(token_lists) -> list[tuple[int, str, list]]:
    """(index, word, what `tokenize` makes of it) for each utterance with a word that the rule
    would split otherwise ("st." -> "st" "."), one entry per utterance (its first such word)."""
    out = []
    for i, tokens in enumerate(token_lists):
        for word in tokens:
            pieces = [w for w, _, _ in tokenize(word)]
            if pieces != [word]:
                out.append((i, word, pieces))
                break
    return out


def join_tokens(tokens: list[str]) -> tuple[str, list[list[int]]]:
    """Text and offsets for pre-tokenised data: tokens joined by single spaces."""
    offsets, pos = [], 0
    for tok in tokens:
        offsets.append([pos, pos + len(tok)])
        pos += len(tok) + 1
    return " ".join(tokens), offsets


def bio_to_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entity spans ``(label, start_word, end_word_exclusive)`` from IOB2 tags.

    Lenient like seqeval: an ``I-x`` that does not continue an ``x`` span starts a new one.
    """
    spans: list[tuple[str, int, int]] = []
    label, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, name = tag.partition("-")
        continues = prefix == "I" and name == label
        if label is not None and not continues:
            spans.append((label, start, i))
            label = None
        if prefix in ("B", "I") and not continues:
            label, start = name, i
    return spans


def _check_example(tokens, slots, intent, path, line, repair_bio, unlabelled=(), intent_path=None) -> dict:
    """Validate one word-level example; shared by the folder and JSONL readers. `unlabelled`
    names the tasks ("intent", "slots") the example has no label for: they come back as None.
    `intent_path`: the file an intent error names, where it is not `path` (the folder's label file)."""
    if unlabelled:
        if not isinstance(tokens, list):
            raise DataError("'tokens' must be a list of strings", path, line)
        example = _check_example(tokens, ["O"] * len(tokens) if "slots" in unlabelled else slots,
                                 "unlabelled" if "intent" in unlabelled else intent, path, line, repair_bio)
        return {**example, **{task: None for task in unlabelled}}
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise DataError("'tokens' must be a list of strings", path, line)
    if not isinstance(slots, list) or not all(isinstance(t, str) for t in slots):
        raise DataError("'slots' must be a list of strings", path, line)
    if not _is_intent(intent):
        raise DataError(f"intent must be a non-empty string without spaces (nor an empty part between '#'), "
                        f"got {intent!r}", intent_path or path, line)
    if not tokens:
        raise DataError("empty utterance", path, line)
    _check_unicode([intent], intent_path or path, line)
    _check_unicode([*tokens, *slots], path, line)
    for tok in tokens:
        if not tok or any(c.isspace() for c in tok):
            raise DataError(f"token {tok!r} is empty or contains whitespace", path, line)
        if all(unicodedata.category(c) == "Cf" for c in tok):  # no word to any reader (see `tokenize`)
            raise DataError(f"token {tok!r} is only invisible format characters "
                            f"({', '.join(f'U+{ord(c):04X}' for c in tok)})", path, line)
    if len(tokens) != len(slots):
        raise DataError(f"{len(tokens)} tokens but {len(slots)} slot tags", path, line)
    slots = list(slots)
    for i, tag in enumerate(slots):
        if not _TAG_RE.fullmatch(tag):
            raise DataError(f"invalid tag {tag!r} (word {i + 1}); expected O, B-<type> or I-<type>", path, line)
        if tag.startswith("I-"):
            prev = slots[i - 1] if i else "O"
            if prev[2:] != tag[2:]:
                if not repair_bio:
                    raise DataError(f"{tag} at word {i + 1} does not follow B-{tag[2:]} or {tag}", path, line)
                warnings.warn(f"{path}:{line}: {tag} at word {i + 1} does not follow B-{tag[2:]}; "
                              f"read as B-{tag[2:]}", stacklevel=3)
                slots[i] = "B-" + tag[2:]
    text, offsets = join_tokens(tokens)
    return {"tokens": list(tokens), "slots": slots, "intent": intent.strip(), "text": text, "offsets": offsets}


def _check_unicode(strings, path, line, where: str = "") -> None:
    """JSON can spell lone surrogates (``"\\ud800"``), which are not text: nothing can encode them.
    A byte-order mark inside the text (files joined together) would make a new label or word."""
    for s in strings:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise DataError(f"{where}invalid Unicode: {s[e.start]!r} (a lone surrogate escape) in {s[:60]!r}",
                            path, line) from None
        if "\ufeff" in s:
            raise DataError(f"{where}a byte-order mark (U+FEFF) inside the text, in {s[:60]!r} (files joined "
                            "together?); remove it", path, line)


def read_text(path: str | os.PathLike) -> str:
    """The text of a UTF-8 file, as ``open()`` reads it (universal newlines), minus a leading byte-order mark.

    Undecodable bytes are a DataError naming the file and the line they are on.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("not a regular file" if path.exists() else "file not found", path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read the file ({e.strerror or e})", path) from None
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # (UTF-32-LE's mark starts like UTF-16-LE's)
        raise DataError("the file is UTF-32 (it starts with a UTF-32 byte-order mark); re-save it as UTF-8", path)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # what Windows tools call "Unicode"
        raise DataError("the file is UTF-16 (it starts with a UTF-16 byte-order mark); re-save it as UTF-8", path)
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[bom:bom + e.start].decode("utf-8")
        line = before.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1
        raise DataError(f"not valid UTF-8: byte 0x{data[bom + e.start]:02x} ({e.reason}) at byte {bom + e.start} "
                        "of the file; re-save it as UTF-8", path, line) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:  # valid UTF-8, but no text: UTF-16 or UTF-32 without a byte-order mark, or binary
        raise DataError("a NUL byte: this is no UTF-8 text (UTF-16 or UTF-32 saved without a byte-order mark, "
                        "or a binary file); re-save it as UTF-8", path, text.count("\n", 0, text.index("\x00")) + 1)
    return text


def _extra_data(error: Exception, after: str | None = None) -> bool:
    """Whether json stopped at more data after a complete value (starting with `after`, if given)."""
    return (isinstance(error, json.JSONDecodeError) and error.msg == "Extra data"
            and (after is None or error.doc[error.pos] == after))


def _json_error(error: Exception, path: Path, line: int | None) -> DataError:
    """DataError for whatever the json module raises on hostile input."""
    if _extra_data(error, ","):  # objects separated by commas: a JSON list without its [ ], or JSON Lines written as one
        return DataError("a comma after a JSON object: JSON Lines has one object per line and nothing between "
                         "them (remove the commas, or wrap the file in [ ] to make it one JSON list)", path, line)
    if isinstance(error, json.JSONDecodeError) and error.msg.startswith("Unexpected UTF-8 BOM"):
        return DataError("a byte-order mark (U+FEFF) starts this line (files joined together?); remove it", path, line)
    if isinstance(error, json.JSONDecodeError):
        start = error.doc.rfind("\n", 0, error.pos) + 1
        before = error.doc[:start].rstrip()
        if before and not error.doc[start:error.pos].strip():  # the parser stopped at a line's first character
            # ... so what is wrong may well end the line before: a missing ',' or '}', or a trailing ','
            offset = 0 if line is None else line - error.lineno  # error.doc may start below the file's line 1
            return DataError(f"invalid JSON: {error.msg} (column {error.colno}; if this line looks right, look at "
                             f"the end of line {before.count(chr(10)) + 1 + offset}: a missing "
                             "',' or closing bracket, or a ',' too many)", path, line)
        return DataError(f"invalid JSON: {error.msg} (column {error.colno})", path, line)
    if isinstance(error, RecursionError):
        return DataError("invalid JSON: nested too deeply", path, line)
    return DataError(f"invalid JSON: {error}", path, line)  # e.g. an integer of more than 4300 digits


def _loads(text: str, path: Path, line: int | None):
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise _json_error(e, path, line) from None


def _document_error(error: Exception, path: Path) -> DataError:
    """`error` from parsing a whole file that is not JSON Lines: where the document breaks (its line
    and column, not line 1)."""
    if _extra_data(error) and not _extra_data(error, ","):  # (a comma there is _json_error's case)
        return DataError("a second JSON value starts here (pretty-printed objects one after another): write "
                         "one object per line (JSON Lines) or one JSON list of objects", path, error.lineno)
    return _json_error(error, path, getattr(error, "lineno", None))


def _json_lines_like(text: str) -> bool:
    """Whether one of the first two non-blank lines is JSON on its own: JSON Lines (maybe with a bad
    line), not one value pretty-printed over several lines (whose error is the document's)."""
    for line in itertools.islice((line for line in text.split("\n") if line.strip()), 2):
        try:
            json.loads(line)
            return True
        except (ValueError, RecursionError):
            pass
    return False


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file with trailing whitespace stripped (SNIPS lines end in a space)."""
    lines = [ln.rstrip() for ln in read_text(path).split("\n")]
    while lines and not lines[-1]:
        lines.pop()  # blank lines at the end (the final newline, an editor's extra one) are no utterances
    if not lines:
        raise DataError("file is empty", path)
    return lines


def read_folder_split(folder: str | os.PathLike, split: str, repair_bio: bool = True) -> list[dict]:
    """Read ``folder/split/{seq.in,seq.out,label}`` (the ATIS/SNIPS layout): one utterance a line."""
    base = Path(folder) / split
    paths = [base / name for name in FOLDER_FILES]
    words, tags, labels = (_read_lines(p) for p in paths)
    # line by line first: a blank or split line (a stray carriage return) is named where it is,
    # not where the line counts part at the end
    for i, (w, t) in enumerate(zip(words, tags), start=1):
        if not w:
            raise DataError("empty utterance" + _bare_cr_hint(i, paths[0]), paths[0], i)
        if len(w.split()) != len(t.split()):
            odd = sorted({c for c in w if c.isspace() and c not in " \t"})
            hint = f" (it contains {', '.join(f'U+{ord(c):04X}' for c in odd)}, which separate words too)" if odd else ""
            raise DataError(f"{len(t.split())} tags but {paths[0].name} line has {len(w.split())} words{hint}"
                            + _bare_cr_hint(i, *paths[:2]), paths[1], i)
    for i, lab in enumerate(labels[:len(words)], start=1):
        if not lab:
            raise DataError("empty intent label" + _bare_cr_hint(i, paths[2]), paths[2], i)
    n = len(words)
    for p, lines in zip(paths[1:], (tags, labels)):
        if len(lines) != n:  # named at the first line that has no counterpart, in the longer file
            line = min(len(lines), n) + 1
            raise DataError(f"{paths[0].name} has {n} lines but {p.name} has {len(lines)}" + _bare_cr_hint(line, paths[0], p),
                            paths[0] if n > len(lines) else p, line)
    examples = []
    for i, (w, t, lab) in enumerate(zip(words, tags, labels), start=1):
        examples.append(_check_example(w.split(), t.split(), lab, paths[1], i, repair_bio, intent_path=paths[2]))
    return examples


def _bare_cr_hint(line: int, *paths: Path) -> str:
    """Where a file that ends its lines in \\n also holds a bare carriage return (not its last byte)
    at or before the `line` an error names: `read_text` reads it as a line end (old Mac files), which
    shifts every line after it. Said in that error."""
    for path in paths:
        data = path.read_bytes().rstrip(b"\r\n")
        bare = re.search(rb"\r(?!\n)", data)
        at = bare and data.count(b"\n", 0, bare.start()) + 1
        if bare and b"\n" in data and at <= line:
            return f"; note: {path.name} line {at} (counting \\n line ends) holds a bare carriage return, which ends a line"
    return ""


def read_jsonl(path: str | os.PathLike, repair_bio: bool = True, partial: bool = True) -> list[dict]:
    """Read word-level JSONL: one ``{"tokens", "slots" (or "tags"), "intent"}`` object a line;
    ``null`` for the intent or the slots marks a task the utterance is not labelled for (refused
    at its line with `partial=False`: a split that is scored needs both)."""
    path = Path(path)
    examples = []
    lines = _read_lines(path)
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not examples and not _json_lines_like(text := "\n".join(lines)):  # one value over several lines
            try:
                json.loads(text)
            except (ValueError, RecursionError) as error:
                raise _document_error(error, path) from None
            raise DataError("one JSON value over several lines: JSON Lines needs one object per line", path, i)
        obj = _loads(line, path, i)
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object", path, i)
        if "slots" in obj and "tags" in obj:
            raise DataError("both 'slots' and 'tags': give the word tags under one of them", path, i)
        slot_key = "slots" if "slots" in obj or "tags" not in obj else "tags"
        missing = [k for k in ("tokens", slot_key, "intent") if k not in obj or (k == "tokens" and obj[k] is None)]
        if missing:
            raise DataError(f"missing key(s): {', '.join(missing)}", path, i)
        unlabelled = tuple(task for task, key in (("intent", "intent"), ("slots", slot_key)) if obj[key] is None)
        if len(unlabelled) == 2:
            raise DataError("both 'intent' and 'slots' are null: the utterance teaches nothing", path, i)
        if unlabelled and not partial:
            raise DataError("a null intent or slots is allowed in the training split only (this split is "
                            "scored on both tasks)", path, i)
        examples.append(_check_example(obj["tokens"], obj[slot_key], obj["intent"], path, i, repair_bio, unlabelled))
    if not examples:
        raise DataError("no examples in file", path)
    return examples


def _json_list_with_lines(text: str, start: int, path: Path, whole_file: bool = True) -> list[tuple[object, int]]:
    """Decode the JSON list starting at `start` item by item, remembering the line each item starts
    on; with `whole_file`, nothing but whitespace may follow the list."""
    decoder = json.JSONDecoder()
    items, pos = [], start + 1  # just after "["
    ws = re.compile(r"\s*")
    line, counted = text.count("\n", 0, pos) + 1, pos  # newlines counted as we go: linear in the file
    comma_line = None  # the line of the comma just read, if the last thing read was one
    while True:
        pos = ws.match(text, pos).end()
        line, counted = line + text.count("\n", counted, pos), pos
        if text.startswith("]", pos):
            if comma_line is not None:
                raise DataError("invalid JSON: trailing comma before ']'", path, comma_line)
            rest = ws.match(text, pos + 1).end()
            if whole_file and rest < len(text):
                raise DataError("invalid JSON: extra data after the list", path, line + text.count("\n", pos, rest))
            return items
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as e:
            raise _json_error(e, path, e.lineno if isinstance(e, json.JSONDecodeError) else line) from None
        items.append((obj, line))
        pos = ws.match(text, pos).end()
        comma_line = None
        if text.startswith(",", pos):
            comma_line = line + text.count("\n", counted, pos)
            pos += 1
        elif not text.startswith("]", pos):
            raise DataError("invalid JSON: expected ',' or ']'", path, text.count("\n", 0, pos) + 1)


def _span_example(obj, path: Path, line: int | None, where: str) -> dict:
    """Convert one ``{"text", "intent", "entities"}`` object to word-level BIO."""
    def fail(msg):
        raise DataError(f"{where}: {msg}", path, line)

    if not isinstance(obj, dict):
        fail("expected a JSON object")
    missing = [k for k in ("text", "intent") if k not in obj]
    if missing:
        fail(f"missing key(s): {', '.join(missing)}")
    text, intent = obj["text"], obj["intent"]
    entities = [] if obj.get("entities") is None else obj["entities"]  # (0, "" or false are no list)
    if not isinstance(text, str) or not _is_intent(intent):
        fail("'text' must be a string and 'intent' a non-empty string without spaces (nor an empty part "
             "between '#')")
    if not isinstance(entities, list):
        fail("'entities' must be a list")
    _check_unicode([text, intent], path, line, f"{where}: ")
    words = tokenize(text)
    if not words:
        fail("text has no words")
    spans = []
    for k, ent in enumerate(entities):
        if not isinstance(ent, dict) or any(key not in ent for key in ("start", "end", "entity")):
            fail(f"entity {k} needs 'start', 'end' and 'entity'")
        s, e, label = ent["start"], ent["end"], ent["entity"]
        if not isinstance(s, int) or not isinstance(e, int) or isinstance(s, bool) or isinstance(e, bool):
            fail(f"entity {k}: start and end must be integers")
        if not (0 <= s < e <= len(text)):
            fail(f"entity {k} ({label}) has offsets [{s}, {e}) outside the text (length {len(text)}) "
                 "or start >= end")
        if not isinstance(label, str) or not label or any(c.isspace() for c in label):
            fail(f"entity {k}: 'entity' must be a non-empty string without spaces")
        _check_unicode([label], path, line, f"{where}: entity {k}: ")
        value = ent.get("value")
        if isinstance(value, str) and value != text[s:e]:  # Rasa's "value" may be a synonym: warn, do not refuse
            warnings.warn(f"{path}:{line if line is not None else '-'}: {where}: entity {k} ({label}): the text at "
                          f"[{s}, {e}) is {text[s:e]!r}, its 'value' is {value!r} (offsets counted in UTF-16 units "
                          "or bytes, not characters? a synonym is fine)", stacklevel=3)
        spans.append((s, e, label, k))
    spans.sort()
    for (s1, e1, l1, k1), (s2, e2, l2, k2) in zip(spans, spans[1:]):
        if s2 < e1:
            fail(f"entities {k1} ({l1}) and {k2} ({l2}) overlap")
    slots = ["O"] * len(words)
    for s, e, label, k in spans:
        hit = [i for i, (_, ws, we) in enumerate(words) if ws < e and we > s]
        if not hit:
            fail(f"entity {k} ({label}) covers no word")
        cut = [words[i][0] for i in hit if words[i][1] < s or words[i][2] > e]
        if cut:  # a span ending inside a word: word-level tags can only take the whole word
            widened = text[words[hit[0]][1]:words[hit[-1]][2]]
            warnings.warn(f"{path}:{line if line is not None else '-'}: {where}: entity span adjusted: entity {k} "
                          f"({label}) {text[s:e]!r} widened to {widened!r} (word-level tags cover whole words; "
                          f"cut: {', '.join(map(repr, cut))})", stacklevel=3)
        for i in hit:
            if slots[i] != "O":
                fail(f"word {words[i][0]!r} is part of two entities; word-level tags cannot represent that")
            slots[i] = ("B-" if i == hit[0] else "I-") + label
    return {"tokens": [w for w, _, _ in words], "slots": slots, "intent": intent.strip(),
            "text": text, "offsets": [[s, e] for _, s, e in words]}


RASA_ENTITY = re.compile(r"\[(?P<text>[^\[\]]+)\](?:\((?P<short>[^)]+)\)|(?P<json>\{[^}]*\}))")
# what is left of broken markup once the entities are taken out: "[köln(city)" (no "]"), "köln](city)" (no "[")
# ("[draft (v2)" and "[#12 (crash)" are text: a label follows its "]" without a space)
BROKEN_MARKUP = re.compile(r"\[[^\[\]]*\S(?:\([^()\s]+\)|\{[^{}]*\})|\]\(|\]\{")


def _rasa_annotated(line: str, path: Path, line_no: int | None) -> dict:
    """`book a flight to [paris](city)` (also `[paris](city:Paris)` and `[paris]{"entity": "city", ...}`)
    -> {"text", "entities"} with character offsets into the text without the markup (synonym values,
    roles and groups are not kept)."""
    text, entities, last = "", [], 0
    for m in RASA_ENTITY.finditer(line):
        text += line[last:m.start()]
        if m["json"]:
            try:
                spec = json.loads(m["json"])
            except ValueError:
                raise DataError(f"entity annotation {m['json']} is not valid JSON", path, line_no) from None
            if not isinstance(spec, dict) or "entity" not in spec:
                raise DataError(f"entity annotation {m['json']} has no \"entity\"", path, line_no)
            label = spec["entity"]
        else:
            label = m["short"].partition(":")[0]  # (entity:value): Rasa 1's synonym shorthand
        # a synonym's value is what the entity means, not a word to tag: the tags need only the span
        entities.append({"start": len(text), "end": len(text) + len(m["text"]), "entity": label})
        text, last = text + m["text"], m.end()
    text += line[last:]
    broken = BROKEN_MARKUP.search(text)
    if broken:
        raise DataError(f"entity markup is broken near {broken.group()!r}: an entity is written [text](label)", path, line_no)
    return {"text": text, "entities": entities}


def read_rasa_yaml(path: str | os.PathLike) -> list[dict]:
    """Rasa 2/3 training data (`nlu.yml`): each `- intent: NAME` item's `examples` block, one
    `- utterance` a line with entities annotated in place; synonym, regex and lookup items are
    skipped. Errors name the example's line."""
    import yaml

    path = Path(path)
    text = read_text(path)
    try:
        root = yaml.compose(text)
    except yaml.reader.ReaderError as error:  # a character YAML does not allow: where it is, in one line
        raise DataError(f"invalid YAML: character {chr(error.character)!r} is not allowed", path,
                        text.count("\n", 0, error.position) + 1) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise DataError(f"invalid YAML: {getattr(error, 'problem', None) or error}", path,
                        mark.line + 1 if mark else None) from None
    except RecursionError:
        raise DataError("invalid YAML: nested too deeply", path) from None

    def fields(node) -> dict:  # a mapping's scalar keys (a list as a key is no field of Rasa's)
        return {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)} \
            if isinstance(node, yaml.MappingNode) else {}

    nlu = fields(root).get("nlu")
    if not isinstance(nlu, yaml.SequenceNode):
        raise DataError("expected Rasa training data: a mapping with an 'nlu' list", path)
    examples = []
    for item in nlu.value:
        if "intent" not in fields(item):
            continue  # synonym, regex, lookup: no utterances
        intent, block = fields(item)["intent"], fields(item).get("examples")
        if not isinstance(intent, yaml.ScalarNode) or not intent.value:
            raise DataError("'intent' must be a name", path, intent.start_mark.line + 1)
        intent = intent.value
        if not isinstance(block, yaml.ScalarNode) or block.style == ">":  # '>' would fold the lines into one
            raise DataError(f"intent {intent!r}: 'examples' must be a block ('examples: |') of '- utterance' "
                            "lines", path, (block or item).start_mark.line + 1)
        first = block.start_mark.line + 1  # a block starts on the next line
        for offset, raw in enumerate(block.value.split("\n")):
            line = raw.strip()
            if not line:
                continue
            # a quoted string ("- a\n- b") has no line of its own per example: its first line is named
            line_no = first + offset + 1 if block.style == "|" else block.start_mark.line + 1
            if not line.startswith("- "):
                raise DataError(f"intent {intent!r}: an example line must start with '- ', got {line!r}", path, line_no)
            example = {**_rasa_annotated(line[2:].strip(), path, line_no), "intent": intent}
            examples.append(_span_example(example, path, line_no, f"intent {intent}"))
    if not examples:
        raise DataError("no intent examples in file", path)
    return examples


def read_span_json(path: str | os.PathLike) -> list[dict]:
    """Read character-span data: a JSON list, JSONL, a Rasa NLU ``{"rasa_nlu_data": ...}`` file,
    or Rasa 2/3 YAML (``.yml``/``.yaml``, see `read_rasa_yaml`).

    Entity spans are mapped to words from :func:`tokenize`: every word overlapping a span gets
    its tag (B- on the first such word, I- on the rest).
    """
    path = Path(path)
    if path.suffix in (".yml", ".yaml"):
        return read_rasa_yaml(path)
    text = read_text(path)
    body = text.lstrip()
    if not body:
        raise DataError("file is empty", path)
    if body.startswith("["):
        items = _json_list_with_lines(text, len(text) - len(body), path)
        examples = [_span_example(obj, path, line, f"example {n}") for n, (obj, line) in enumerate(items)]
    else:
        try:
            whole = json.loads(text)
        except (ValueError, RecursionError) as error:
            if not _json_lines_like(text):  # not JSON Lines either: report where the document breaks
                raise _document_error(error, path) from None
            whole = None  # JSON Lines, which reports the bad line
        if isinstance(whole, dict) and "rasa_nlu_data" in whole:
            common = whole["rasa_nlu_data"].get("common_examples") if isinstance(whole["rasa_nlu_data"], dict) else None
            if not isinstance(common, list):
                raise DataError("rasa_nlu_data.common_examples must be a list", path)
            starts = list(re.finditer(r'"common_examples"\s*:\s*\[', text))
            lines = [line for _, line in _json_list_with_lines(text, starts[0].end() - 1, path, False)] \
                if len(starts) == 1 else []  # the line each example starts on, where the key is unambiguous
            if len(lines) != len(common):
                lines = [None] * len(common)
            examples = [_span_example(obj, path, line, f"common_examples[{n}]")
                        for n, (obj, line) in enumerate(zip(common, lines))]
        elif isinstance(whole, dict):  # one object, on the line where it starts
            examples = [_span_example(whole, path, text[:len(text) - len(text.lstrip())].count("\n") + 1, "example 0")]
        else:
            examples = []
            for i, line in enumerate(text.split("\n"), start=1):
                if not line.strip():
                    continue
                obj = _loads(line, path, i)
                examples.append(_span_example(obj, path, i, f"example {len(examples)}"))
    if not examples:
        raise DataError("no examples in file", path)
    return examples


def _spans_record(ex: dict) -> dict:
    """A span-format object from a word-level example, using its offsets when it has them."""
    if ex.get("offsets") and ex.get("text") is not None:
        text, offsets = ex["text"], ex["offsets"]
    else:
        text, offsets = join_tokens(list(ex["tokens"]))
    entities = []
    for label, s, e in bio_to_spans(ex["slots"]):
        start, end = offsets[s][0], offsets[e - 1][1]
        entities.append({"start": start, "end": end, "entity": label, "value": text[start:end]})
    return {"text": text, "intent": ex["intent"], "entities": entities}


def first_partial(examples) -> int | None:
    """Index of the first example without an intent or without slot labels (None), else None."""
    return next((i for i, ex in enumerate(examples) if ex["intent"] is None or ex["slots"] is None), None)


def write_examples(examples: Iterable[dict], path: str | os.PathLike, format: str) -> None:
    """Write examples as ``folder`` (path = a split folder), ``jsonl`` or ``spans`` (a JSON list)."""
    path = Path(path)
    examples = list(examples)
    partial = first_partial(examples)
    if partial is not None and format != "jsonl":
        raise DataError(f"example {partial + 1} is not labelled for every task (null intent or slots); only the "
                        f"jsonl format can hold that, not {format}", path)
    if format == "folder":
        path.mkdir(parents=True, exist_ok=True)
        columns = {"seq.in": [" ".join(ex["tokens"]) for ex in examples],
                   "seq.out": [" ".join(ex["slots"]) for ex in examples],
                   "label": [ex["intent"] for ex in examples]}
        for name, lines in columns.items():
            (path / name).write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "jsonl":
        lines = [json.dumps({"tokens": list(ex["tokens"]), "slots": None if ex["slots"] is None else list(ex["slots"]),
                             "intent": ex["intent"]},
                            ensure_ascii=False) for ex in examples]
        path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    elif format == "spans":
        # one example per line inside the list keeps files diffable and error lines meaningful
        body = ",\n".join("  " + json.dumps(_spans_record(ex), ensure_ascii=False) for ex in examples)
        path.write_text("[\n" + body + "\n]\n", encoding="utf-8")
    else:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
