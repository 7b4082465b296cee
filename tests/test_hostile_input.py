"""Property-based tests: arbitrary bytes, text and JSON never crash the readers (they load, or raise
DataError naming the file and, where there is one, the line), and the tokenizer, the parser and
`slu-parse --text` accept any Unicode string."""

import json
import unicodedata
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from slu_feedback.data.dataset import detect_format, to_dataset
from slu_feedback.data.errors import DataError
from slu_feedback.data.readers import read_folder_split, read_jsonl, read_span_json, tokenize

READER_SETTINGS = settings(max_examples=150, deadline=None, database=None,
                           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PARSER_SETTINGS = settings(max_examples=50, deadline=None, database=None,
                           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---------------------------------------------------------------------------------------------
# strategies

KEYS = ["tokens", "slots", "tags", "intent", "text", "entities", "start", "end", "entity", "value",
        "rasa_nlu_data", "common_examples"]
TAGS = ["O", "B-city", "I-city", "I-time", "B-", "b-city", "B-a b", "O ", ""]
nasty_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\t", "play", "play jazz", "o'clock", "\x00", "\u200b", "\ufeff", "\u2028", "\x85",
                     "\x1c", "e\u0301", "🙂", "\u202e", "\\ud800", "NaN", "city", "B-city"]),
)
leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                   st.floats(allow_nan=True, allow_infinity=True), nasty_text)
json_values = st.recursive(
    leaves, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner,
                                                    max_size=5)),
    max_leaves=20)


WORDS = ["play", "jazz", "6:30", "o'clock", "St.", "Zürich", "🙂", "e\u0301", "\x00", "ﬁ", "\u200b", "a_b"]
word = st.one_of(st.sampled_from(WORDS), st.text(st.characters(codec="utf-8", exclude_categories=["Zs", "Zl", "Zp", "Cc"]),
                                                 min_size=1, max_size=6))


def mutate(draw, obj: dict, hostile: dict) -> dict:
    """Keep a valid object, or break one key (replace it with a hostile value, or drop it)."""
    key = draw(st.sampled_from([None, None, *obj]))
    if key is not None:
        if draw(st.booleans()):
            obj[key] = draw(hostile.get(key, json_values))
        else:
            del obj[key]
    return obj


@st.composite
def word_example(draw):
    """Word-level objects, valid or broken in one key, so that both loading and every check are reached."""
    tokens = draw(st.lists(word, min_size=1, max_size=4))
    slots = draw(st.lists(st.sampled_from(["O", "B-city", "I-city", "I-time"]), min_size=len(tokens),
                          max_size=len(tokens)))
    obj = {"tokens": tokens, draw(st.sampled_from(["slots", "tags"])): slots,
           "intent": draw(st.sampled_from(["play_music", "get_weather", "x"]))}
    hostile = {"tokens": st.one_of(st.lists(nasty_text, max_size=4), json_values),
               "slots": st.one_of(st.lists(st.sampled_from(TAGS), max_size=5), json_values),
               "tags": st.one_of(st.lists(st.sampled_from(TAGS), max_size=5), json_values),
               "intent": st.one_of(nasty_text, json_values)}
    return mutate(draw, obj, hostile)


@st.composite
def span_example(draw):
    text = draw(st.one_of(st.lists(word, min_size=1, max_size=5).map(" ".join), nasty_text))
    words = tokenize(text)
    entities = []
    if words and draw(st.booleans()):
        i = draw(st.integers(0, len(words) - 1))
        j = draw(st.integers(i, len(words) - 1))
        entities.append({"start": words[i][1], "end": words[j][2], "entity": draw(st.sampled_from(["city", "time"]))})
    obj = {"text": text, "intent": draw(st.sampled_from(["play_music", "x"])), "entities": entities}
    entity = st.fixed_dictionaries({
        "start": st.one_of(st.integers(-2, len(text) + 2), json_values),
        "end": st.one_of(st.integers(-2, len(text) + 2), json_values),
        "entity": st.one_of(st.sampled_from(["city", "time", "", "a b"]), json_values)})
    hostile = {"text": st.one_of(nasty_text, json_values), "intent": st.one_of(nasty_text, json_values),
               "entities": st.one_of(st.lists(entity, max_size=3), json_values)}
    return mutate(draw, obj, hostile)


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=True)


@st.composite
def json_file(draw, example_strategy):
    """The bytes of a JSON-ish file: JSONL, a JSON list, one object, a Rasa wrapper, or raw junk."""
    items = draw(st.lists(st.one_of(example_strategy, example_strategy, json_values), min_size=1, max_size=4))
    layout = draw(st.sampled_from(["jsonl", "jsonl", "list", "list", "object", "rasa", "junk-text", "junk-bytes"]))
    if layout == "jsonl":
        text = "\n".join(dumps(x) for x in items)
    elif layout == "list":
        text = "[\n" + ",\n".join(dumps(x) for x in items) + "\n]"
    elif layout == "object":
        text = dumps(items[0] if items else {})
    elif layout == "rasa":
        text = dumps({"rasa_nlu_data": draw(st.one_of(st.fixed_dictionaries({"common_examples": st.just(items)}),
                                                      json_values))})
    elif layout == "junk-text":
        text = draw(st.text(max_size=200))
    else:
        return draw(st.binary(max_size=200))
    data = text.encode("utf-8", "surrogatepass")  # json.dumps keeps lone surrogates from nasty strings
    if draw(st.integers(0, 3)) == 0:  # damage: cut, or splice in bytes that are often not UTF-8
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.sampled_from([b"", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\r", b"\x00", b"]"]))
    if draw(st.integers(0, 3)) == 0:
        data = b"\xef\xbb\xbf" + data
    return data


# ---------------------------------------------------------------------------------------------
# the readers


def check_loaded(examples: list, spans: bool) -> None:
    assert examples and all(isinstance(ex, dict) for ex in examples)
    for ex in examples:
        assert len(ex["tokens"]) == len(ex["slots"]) == len(ex["offsets"]) > 0
        for tok, (s, e) in zip(ex["tokens"], ex["offsets"]):
            assert ex["text"][s:e] == tok
        assert all(t == "O" or t[:2] in ("B-", "I-") for t in ex["slots"])
    to_dataset(examples)  # what load_splits does next: Arrow must be able to hold every string


def load_or_data_error(read, path: Path, files: list[Path], spans: bool = False, check=check_loaded):
    """Run a reader; it must return well-formed examples or raise DataError naming one of `files`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BIO repairs warn; that is not under test here
            examples = read()
    except DataError as error:
        assert error.path in {str(f) for f in files}, (error.path, files)
        assert error.message and str(error).startswith(error.path)
        assert error.line is None or error.line >= 1
        return error
    check(examples, spans)
    return examples


@READER_SETTINGS
@given(data=json_file(word_example()))
@example(data=b"[" * 50_000)  # RecursionError inside json
@example(data=b'{"tokens": ["a"], "slots": ["O"], "intent": ' + b"1" * 5000 + b"}")  # int digit limit
@example(data=b'{"tokens": ["\\ud800"], "slots": ["O"], "intent": "x"}')  # a lone surrogate: Arrow cannot store it
def test_read_jsonl_loads_or_raises_data_error(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("jsonl") / "train.jsonl"
    path.write_bytes(data)
    load_or_data_error(lambda: read_jsonl(path), path, [path])
    load_or_data_error(lambda: detect_format(path), path, [path],
                       check=lambda fmt, _: fmt in ("jsonl", "spans"))


@READER_SETTINGS
@given(data=json_file(span_example()))
@example(data=b"[" * 50_000)
@example(data=b'{"text": ' + b"[" * 50_000)
@example(data=b'[{"text": "a b", "intent": "x", "entities": [{"start": ' + b"9" * 5000 + b', "end": 1, "entity": "e"}]}]')
@example(data=b'{"text": "a \\udfff", "intent": "x"}')
@example(data=b'{"text": "caf\xc3", "intent": "x"}')
def test_read_span_json_loads_or_raises_data_error(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("spans") / "train.json"
    path.write_bytes(data)
    load_or_data_error(lambda: read_span_json(path), path, [path], spans=True)


folder_text = st.one_of(
    st.text(max_size=120),
    st.lists(st.lists(st.sampled_from(["play", "jazz", "o'clock", "B-x", "I-x", "O", "B-", " ", "\t", "\x00",
                                       "\x1c", "\x85", "\u2028", "\r", "\ufeff", "é"]), max_size=5).map("".join),
             max_size=4).map("\n".join),
)


@READER_SETTINGS
@given(files=st.tuples(*[st.one_of(folder_text.map(lambda s: s.encode("utf-8")), st.binary(max_size=80),
                                   st.none()) for _ in range(3)]))
@example(files=(b"play jazz\n", b"O B-genre\n", b"play_music\n"))
@example(files=(b"play jazz\nplay \xffjazz\n", b"O B-genre\nO B-genre\n", b"play\nplay\n"))
def test_read_folder_split_loads_or_raises_data_error(files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("folder")
    (folder / "train").mkdir()
    paths = [folder / "train" / name for name in ("seq.in", "seq.out", "label")]
    for path, data in zip(paths, files):
        if data is not None:  # None: the file is missing
            path.write_bytes(data)
    result = load_or_data_error(lambda: read_folder_split(folder, "train"), folder, paths)
    if files == (b"play jazz\nplay \xffjazz\n", b"O B-genre\nO B-genre\n", b"play\nplay\n"):
        assert isinstance(result, DataError) and (result.path, result.line) == (str(paths[0]), 2)


@READER_SETTINGS
@given(lines=st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20), min_size=1, max_size=6),
       bad=st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]),
       newline=st.sampled_from(["\n", "\r\n", "\r"]), data=st.data())
def test_undecodable_bytes_name_the_file_and_line(lines, bad, newline, data, tmp_path_factory):
    """A UnicodeDecodeError becomes a DataError with the 1-based line of the bad byte, whatever the newlines."""
    k = data.draw(st.integers(0, len(lines) - 1))
    encoded = [ln.encode("utf-8") for ln in lines]
    cut = data.draw(st.integers(0, len(encoded[k])))
    encoded[k] = encoded[k][:cut] + bad + encoded[k][cut:]
    body = newline.encode().join(encoded) + newline.encode()
    folder = tmp_path_factory.mktemp("utf8")
    for name, read in [("a.jsonl", read_jsonl), ("a.json", read_span_json), ("seq.in", None)]:
        path = folder / name
        path.write_bytes(body)
        if read is None:  # folder format: the bad file is seq.in, the other two are fine
            for other in ("seq.out", "label"):
                (folder / other).write_text("O\n" * len(lines))
            read = lambda _: read_folder_split(folder.parent, folder.name)  # noqa: E731
        with pytest.raises(DataError, match="not valid UTF-8") as info:
            read(path)
        assert (info.value.path, info.value.line) == (str(path), k + 1)


def test_a_utf16_file_is_named_as_such(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"tokens": ["hi"], "slots": ["O"], "intent": "a"}\n', encoding="utf-16")  # with its BOM
    with pytest.raises(DataError, match="is UTF-16.*re-save it as UTF-8") as info:
        read_jsonl(path)
    assert info.value.path == str(path)


def test_a_byte_order_mark_is_not_part_of_the_first_word(tmp_path):
    (tmp_path / "train").mkdir()
    for name, text in [("seq.in", "play jazz\n"), ("seq.out", "O B-genre\n"), ("label", "play_music\n")]:
        (tmp_path / "train" / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    [ex] = read_folder_split(tmp_path, "train")
    assert ex["tokens"] == ["play", "jazz"] and ex["intent"] == "play_music"
    (tmp_path / "a.json").write_bytes(b'\xef\xbb\xbf[{"text": "play jazz", "intent": "play_music"}]')
    assert read_span_json(tmp_path / "a.json")[0]["tokens"] == ["play", "jazz"]


# ---------------------------------------------------------------------------------------------
# the tokenizer and the parser: any Unicode string

any_unicode = st.one_of(
    st.text(max_size=80),  # hypothesis excludes surrogates (category Cs) by default
    st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me", "Co"]), max_size=20),
    st.text(alphabet=" \t\n\r\x0b\x0c\x1c\x1d\x85\xa0\u1680\u2000\u2028\u2029\u3000\ufeff", max_size=20),
    st.lists(st.sampled_from(["play", "jazz", "6:30", "o'clock", "St.", "Zürich", "🙂", "e\u0301", "\u200d",
                              "\x00", "\u202e", "ｆｕｌｌ", "İ", "ß", "ﬁ", "😀🇫🇷", "--", "\\n"]), max_size=12).map(" ".join),
)
NASTY = ["", " ", "\t\n\r ", "\x00\x07\x1b[31m", "\u200b\u200d\ufeff", "e\u0301\u0301\u0301", "\u202eolleh",
         "🙂" * 40, "ﷺ 𒐫 ﬁ", "İstanbul ẞ", "a" * 10_000, "play jazz " * 1000, "\\x00 %s {0} <b>", "-x", "--json",
         "line one\nline two"]


@given(text=any_unicode)
@example(text="x" * 10_000)
@settings(max_examples=200, deadline=None, database=None)
def test_tokenize_covers_every_non_space_character(text):
    words = tokenize(text)
    covered = set()
    last_end = 0
    for word, start, end in words:
        assert text[start:end] == word and start >= last_end and end > start
        assert not any(c.isspace() for c in word)
        covered.update(range(start, end))
        last_end = end
    # what no token covers is whitespace or an invisible format character (zero-width space, BOM, ...)
    assert all(text[i].isspace() or unicodedata.category(text[i]) == "Cf" for i in range(len(text)) if i not in covered)


@pytest.fixture(scope="module")
def tiny_parser(tiny_run_factory):
    from slu_feedback.inference.parser import SLUParser

    run = tiny_run_factory("model.feedback.iterations=1")
    return run, SLUParser.from_pretrained(run)


def check_result(parser, text: str, result: dict) -> None:
    assert isinstance(result, dict) and result["text"] == text
    json.dumps(result, ensure_ascii=False)
    words = tokenize(text)
    assert result["words"] == [w for w, _, _ in words]
    assert len(result["tags"]) == len(words)
    if not words:
        assert result["intent"] is None and result["slots"] == []
        return
    assert result["intent"] in parser.intents and 0.0 <= result["intent_score"] <= 1.0
    for slot in result["slots"]:
        assert 0 <= slot["start"] < slot["end"] <= len(text)
        assert slot["text"] == text[slot["start"]:slot["end"]]
        assert slot["label"] and 0.0 <= slot["score"] <= 1.0


@pytest.mark.e2e
@given(text=any_unicode)
@example(text="")
@example(text="   \t\n")
@example(text="book " * 2_000)  # 10,000 characters
@example(text="\x00\x01\x02 play \x7f jazz \x1b")
@PARSER_SETTINGS
def test_parser_accepts_any_unicode(tiny_parser, text):
    _, parser = tiny_parser
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # long input warns that it is truncated
        check_result(parser, text, parser(text))
        check_result(parser, text, parser(text, explain=True))


@pytest.mark.e2e
def test_parser_batch_keeps_order_with_nasty_input(tiny_parser):
    _, parser = tiny_parser
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = parser(NASTY, batch_size=4)
    assert [r["text"] for r in results] == NASTY
    for text, result in zip(NASTY, results):
        check_result(parser, text, result)


@pytest.mark.e2e
def test_lone_surrogates_are_replaced_and_non_strings_refused(tiny_parser):
    """Bad bytes in a command-line argument reach Python as lone surrogates ("\\udcff"), which no
    tokenizer can encode; they become U+FFFD, one for one, so offsets stay right."""
    _, parser = tiny_parser
    result = parser("play \ud800 jazz \udcff")
    assert result["text"] == "play \ufffd jazz \ufffd"
    check_result(parser, result["text"], result)
    assert [r["text"] for r in parser(["fine", "bad \udcff"])] == ["fine", "bad \ufffd"]
    with pytest.raises(TypeError, match="parses strings"):
        parser([None])


@pytest.mark.e2e
def test_the_parser_splits_words_as_the_training_data_did(tiny_parser):
    import copy

    from slu_feedback.inference.parser import SLUParser

    run, parser = tiny_parser
    assert json.loads((run / "config.json").read_text())["word_split"] == "rule"  # the sample data follows the rule
    assert parser("fly to st. louis")["words"] == ["fly", "to", "st", ".", "louis"]
    model = copy.deepcopy(parser.model)
    model.config.word_split = "whitespace"  # as slu-train records for ATIS or SNIPS
    result = SLUParser(model, parser.tokenizer)("fly to  st. louis")
    assert result["words"] == ["fly", "to", "st.", "louis"] and len(result["tags"]) == 4
    assert all(result["text"][s["start"]:s["end"]] == s["text"] for s in result["slots"])


@pytest.mark.e2e
def test_only_real_truncation_warns(tiny_parser):
    _, parser = tiny_parser
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # words with no sub-tokens at the end are not a truncation
        results = parser(["play jazz \u0301", "\u200b\u200d\ufeff", "play \x00"])
    assert [len(r["tags"]) for r in results] == [3, 0, 2]
    assert results[1]["intent"] is None  # only invisible format characters: nothing to parse, as whitespace
    with pytest.warns(UserWarning, match="truncated"):
        parser("book " * 2_000)


@pytest.mark.e2e
@pytest.mark.parametrize("text", NASTY, ids=range(len(NASTY)))
def test_parse_cli_text_survives_nasty_strings(tiny_parser, text):
    from slu_feedback.cli.parse import main as parse_main

    run, _ = tiny_parser
    runner = CliRunner()
    result = runner.invoke(parse_main, [str(run), f"--text={text}", "--json"])
    assert result.exit_code == 0, result.output
    [line] = result.stdout.strip("\n").splitlines()[-1:]
    parsed = json.loads(line)
    assert parsed["text"] == text
    for slot in parsed["slots"]:
        assert text[slot["start"]:slot["end"]] == slot["text"]
    result = runner.invoke(parse_main, [str(run), "--text", text])  # the coloured rendering too
    assert result.exit_code == 0 and result.exception is None, result.output
