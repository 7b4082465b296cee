"""Tests of the data layer: readers, errors, splits, label maps, subsampling, fetch."""

import json
import os
import shutil
import urllib.error
import warnings
from pathlib import Path

import pytest

from slu_feedback.data import (UNKNOWN_ID, DataError, LabelMaps, bio_to_spans, build_label_maps,
                               detect_format, load_splits, read_folder_split, read_jsonl, read_span_json,
                               resolve_data_path, subsample, tokenize, write_examples)
from slu_feedback.data.readers import read_rasa_yaml
import slu_feedback.data.fetch as fetch_module

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SHARED = Path(os.environ["SLU_DATA_DIR"]) if os.environ.get("SLU_DATA_DIR") \
    else Path(__file__).resolve().parents[2] / "shared" / "data"


def write_split(root, split, seq_in, seq_out, label):
    d = Path(root) / split
    d.mkdir(parents=True, exist_ok=True)
    for name, text in (("seq.in", seq_in), ("seq.out", seq_out), ("label", label)):
        (d / name).write_text(text, encoding="utf-8")
    return d


GOOD = ("wake me at 6:30\nplay jazz\n", "O O O B-time\nO B-genre\n", "set_alarm\nplay_music\n")


# --- tokenize / bio_to_spans / DataError ------------------------------------------------------

def words(text):
    return [w for w, _, _ in tokenize(text)]


def test_tokenize_rule():
    assert words("wake me at 6:30, o'clock") == ["wake", "me", "at", "6:30", ",", "o'clock"]
    assert words("st. louis r&b 24/7 rock-n-roll it’s") == [
        "st", ".", "louis", "r&b", "24/7", "rock-n-roll", "it’s"]
    assert words("a--b 'quoted'") == ["a", "-", "-", "b", "'", "quoted", "'"]
    assert tokenize("") == [] and tokenize("   ") == []


def test_tokenize_unicode_and_offsets():
    text = "Play “Für Elise” in Zürich 東京!"
    toks = tokenize(text)
    assert [w for w, _, _ in toks] == ["Play", "“", "Für", "Elise", "”", "in", "Zürich", "東", "京", "!"]
    assert all(text[s:e] == w for w, s, e in toks)


def test_scripts_without_spaces_are_split_into_characters():
    # Chinese, Japanese (kana, length mark), Thai: every grapheme cluster is a token, so an entity
    # may start and end anywhere; Latin, Hangul and digits beside them stay words
    assert words("明天北京天气？") == ["明", "天", "北", "京", "天", "气", "？"]
    assert words("Tokyo東京 ＮＹＣの天気 トーキョー") == ["Tokyo", "東", "京", "ＮＹＣ", "の", "天", "気", "ト", "ー", "キ", "ョ", "ー"]
    assert words("สวัสดี 3月 한국어") == ["ส", "วั", "ส", "ดี", "3", "月", "한국어"]  # Thai vowel signs stay on their consonant
    assert words("๑๒๓ บาท abcｰ") == ["๑๒๓", "บ", "า", "ท", "abc", "ｰ"]  # their digits stay one number


def test_myanmar_is_split_into_syllables():
    # Unicode's grapheme clusters cut a syllable before a killed consonant (မြ | န်) and before
    # ာ and း; a Myanmar syllable breaker joins them, and so does tokenize
    assert words("မြန်မာ") == ["မြန်", "မာ"]
    assert words("ကျွန်တော် နေကောင်းပါတယ်။") == ["ကျွန်", "တော်", "နေ", "ကောင်း", "ပါ", "တယ်", "။"]
    assert words("ရန်ကုန်မြို့ ၁၂၃ ကျပ်") == ["ရန်", "ကုန်", "မြို့", "၁၂၃", "ကျပ်"]  # digits stay one number
    assert words("မင်္ဂလာပါ") == ["မင်္ဂ", "လာ", "ပါ"]  # kinzi: the stacked consonant keeps its syllable
    assert words("ok မြန်မာ東京") == ["ok", "မြန်", "မာ", "東", "京"]


def test_a_myanmar_entity_keeps_its_syllables(tmp_path):
    path = tmp_path / "my.json"
    text = "ရန်ကုန်မြို့ ရာသီဥတု"  # "Yangon city weather"
    path.write_text(json.dumps({"text": text, "intent": "weather", "entities": [
        {"start": 0, "end": text.index("မြို့"), "entity": "city"}]}, ensure_ascii=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the span ends at a syllable: not widened
        (example,) = read_span_json(path)
    assert example["tokens"][:3] == ["ရန်", "ကုန်", "မြို့"] and example["slots"][:3] == ["B-city", "I-city", "O"]


def test_two_entities_in_an_unspaced_clause_keep_their_spans(tmp_path):
    path = tmp_path / "zh.json"
    path.write_text(json.dumps({"text": "明天北京天气怎么样？", "intent": "weather", "entities": [
        {"start": 0, "end": 2, "entity": "date"}, {"start": 2, "end": 4, "entity": "city"}]}, ensure_ascii=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no span is widened
        (example,) = read_span_json(path)
    assert example["slots"][:5] == ["B-date", "I-date", "B-city", "I-city", "O"]
    assert bio_to_spans(example["slots"]) == [("date", 0, 2), ("city", 2, 4)]


def test_combining_marks_stay_with_their_word():
    # Devanagari vowel signs and viramas, a decomposed accent, an emoji's variation selector
    assert words("मुंबई जाना है") == ["मुंबई", "जाना", "है"]
    assert words("cafe\u0301 au lait") == ["cafe\u0301", "au", "lait"]
    assert words("ok 🙂\ufe0f!") == ["ok", "🙂\ufe0f", "!"]
    assert words("a\x1cb\u3000c") == ["a", "b", "c"], "whitespace is what str.isspace says"
    # word characters are Python's \w (every number, not only digits); no joiners or connectors
    assert words("km² 3½ H₂O a\u200db") == ["km²", "3½", "H₂O", "a", "b"]
    # a grapheme cluster is one token (an emoji family joined by ZWJ, a flag); invisible format
    # characters (zero-width space, BOM) separate tokens as whitespace does and are none themselves
    assert words("👨\u200d👩\u200d👧 at hi\u200bthere \ufeff🇫🇷!") == ["👨\u200d👩\u200d👧", "at", "hi", "there", "🇫🇷", "!"]
    assert words("\u200b") == [] and words("\ufffd\ufffd x") == ["\ufffd", "\ufffd", "x"]


def test_bio_to_spans_is_lenient():
    assert bio_to_spans(["B-a", "I-a", "O", "I-b", "I-b", "B-b", "I-c"]) == [
        ("a", 0, 2), ("b", 3, 5), ("b", 5, 6), ("c", 6, 7)]
    assert bio_to_spans(["O", "O"]) == []


def test_data_error_format():
    e = DataError("bad tag", path="x/seq.out", line=3)
    assert str(e) == "x/seq.out:3: bad tag" and e.path == "x/seq.out" and e.line == 3
    assert str(DataError("bad", path="f")) == "f: bad"
    assert str(DataError("bad")) == "bad"
    assert isinstance(e, ValueError)


# --- folder format ------------------------------------------------------------------------

def test_read_folder_split(tmp_path):
    write_split(tmp_path, "train", "play jazz \n", "O B-genre \n", "play_music \n")  # SNIPS trailing spaces
    [ex] = read_folder_split(tmp_path, "train")
    assert ex == {"tokens": ["play", "jazz"], "slots": ["O", "B-genre"], "intent": "play_music",
                  "text": "play jazz", "offsets": [[0, 4], [5, 9]]}


def test_folder_missing_file(tmp_path):
    d = write_split(tmp_path, "train", *GOOD)
    (d / "label").unlink()
    with pytest.raises(DataError) as err:
        read_folder_split(tmp_path, "train")
    assert err.value.path == str(d / "label") and "not found" in str(err.value)


def test_folder_empty_file(tmp_path):
    d = write_split(tmp_path, "train", "", "", "")
    with pytest.raises(DataError, match="empty") as err:
        read_folder_split(tmp_path, "train")
    assert err.value.path == str(d / "seq.in")


def test_folder_line_count_mismatch(tmp_path):
    d = write_split(tmp_path, "train", GOOD[0], GOOD[1], "set_alarm\n")
    with pytest.raises(DataError, match="seq.in has 2 lines but label has 1") as err:
        read_folder_split(tmp_path, "train")
    assert (err.value.path, err.value.line) == (str(d / "seq.in"), 2)  # the first line without a label


def test_folder_count_mismatch_names_the_longer_file_and_blank_lines_at_the_end_are_none(tmp_path):
    d = write_split(tmp_path, "train", GOOD[0] + "\n\n", GOOD[1], GOOD[2] + " \n")  # an editor's extra blank lines
    assert [ex["intent"] for ex in read_folder_split(tmp_path, "train")] == ["set_alarm", "play_music"]
    d = write_split(tmp_path, "valid", GOOD[0] + "one more\n", GOOD[1], GOOD[2])
    with pytest.raises(DataError, match="seq.in has 3 lines but seq.out has 2") as err:
        read_folder_split(tmp_path, "valid")
    assert (err.value.path, err.value.line) == (str(d / "seq.in"), 3)  # the line without tags, in seq.in


def test_a_json_value_over_several_lines_is_reported_where_it_breaks(tmp_path):
    rasa = tmp_path / "rasa.json"
    rasa.write_text('{\n "rasa_nlu_data": {\n  "common_examples": [\n   {"text": "hi",\n    "intent": weather}]}}\n')
    with pytest.raises(DataError, match="Expecting value") as err:
        read_span_json(rasa)
    assert err.value.line == 5  # the line of `weather`, not line 1
    assert "look at the end of line" not in str(err.value)  # mid-line: the fault is where the parser stopped
    pretty = tmp_path / "pretty.json"  # objects one after another, each over several lines (jq '.[]')
    pretty.write_text('{\n "text": "hi",\n "intent": "a"\n}\n{\n "text": "yo",\n "intent": "b"\n}\n')
    with pytest.raises(DataError, match="one object per line") as err:
        read_span_json(pretty)
    assert err.value.line == 5
    # objects separated by commas (a list without its [ ]): the comma is named, in both readers
    commas = tmp_path / "commas.jsonl"
    commas.write_text('{"tokens": ["hi"], "slots": ["O"], "intent": "a"},\n{"tokens": ["yo"], "slots": ["O"], "intent": "b"},\n')
    with pytest.raises(DataError, match="a comma after a JSON object") as err:
        read_jsonl(commas)
    assert err.value.line == 1
    spans = tmp_path / "commas.json"
    spans.write_text('{"text": "hi", "intent": "a", "entities": []},\n{"text": "yo", "intent": "b", "entities": []}\n')
    with pytest.raises(DataError, match="a comma after a JSON object") as err:
        read_span_json(spans)
    assert err.value.line == 1
    one = tmp_path / "one.jsonl"
    one.write_text('{\n "tokens": ["hi"],\n "slots": ["O"],\n "intent": "a"\n}\n')
    with pytest.raises(DataError, match="one object per line"):
        read_jsonl(one)
    # an object without its closing brace: the parser stops at the start of the next line, and the
    # message points at the end of the line before too
    unclosed = tmp_path / "unclosed.json"
    unclosed.write_text('{"rasa_nlu_data": {"common_examples": [\n  {"text": "hi", "intent": "greet", "entities": []\n\n'
                        '  {"text": "bye", "intent": "bye", "entities": []}\n]}}\n')
    with pytest.raises(DataError, match="look at the end of line 2: a missing ','") as err:
        read_span_json(unclosed)
    assert err.value.line == 4
    trailing = tmp_path / "trailing.json"  # a ',' too many before the closing brace
    trailing.write_text('[\n {"text": "hi", "intent": "greet", "entities": [],\n }\n]\n')
    with pytest.raises(DataError, match="end of line 2") as err:
        read_span_json(trailing)
    assert err.value.line == 3
    # a ',' too many before the list's closing bracket: json.loads rejects it, and so do we
    listed = tmp_path / "listed.json"
    listed.write_text('[\n {"text": "hi", "intent": "greet", "entities": []},\n\n]\n')
    with pytest.raises(DataError, match="trailing comma before '\\]'") as err:
        read_span_json(listed)
    assert err.value.line == 2
    listed.write_text('[\n {"text": "hi", "intent": "greet", "entities": []},\n {"text": "yo", "intent": "greet", '
                      '"entities": []}\n]\n')
    assert [ex["tokens"] for ex in read_span_json(listed)] == [["hi"], ["yo"]]
    # JSON Lines with a broken first line: that line, not where the document parser gives up
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"tokens": ["hi"], "slots": ["O"], "intent": "a"\n{"tokens": ["hi"], "slots": ["O"], "intent": "a"}\n')
    with pytest.raises(DataError, match="column 49") as err:
        read_jsonl(broken)
    assert err.value.line == 1


def test_broken_rasa_markup_is_an_error_not_a_silently_wrong_entity(tmp_path):
    path = tmp_path / "nlu.yml"
    path.write_text('version: "3.1"\nnlu:\n- intent: hotel\n  examples: |\n    - ein Hotel in [Köln](city)\n'
                    '    - ein Hotel in [Köln(city) für [drei Nächte](duration)\n', encoding="utf-8")
    with pytest.raises(DataError, match="markup is broken near '\\[Köln\\(city\\)'") as err:
        read_rasa_yaml(path)
    assert err.value.line == 6
    path.write_text('version: "3.1"\nnlu:\n- intent: bug\n  examples: |\n    - fix bug [#12 (crash) for [bob](person)\n'
                    '    - set volume [max] (loud)\n', encoding="utf-8")  # literal brackets and parentheses are text
    first, second = read_rasa_yaml(path)
    assert first["text"] == "fix bug [#12 (crash) for bob" and second["text"] == "set volume [max] (loud)"
    assert bio_to_spans(first["slots"]) == [("person", len(first["tokens"]) - 1, len(first["tokens"]))]


def test_folder_token_tag_mismatch(tmp_path):
    d = write_split(tmp_path, "train", GOOD[0], "O O O B-time\nO\n", GOOD[2])
    with pytest.raises(DataError, match="1 tags") as err:
        read_folder_split(tmp_path, "train")
    assert (err.value.path, err.value.line) == (str(d / "seq.out"), 2)
    assert str(err.value).startswith(f"{d / 'seq.out'}:2: ")


def test_folder_mismatch_names_unusual_spaces(tmp_path):
    write_split(tmp_path, "train", "fly to new\u00a0york\n", "O O B-city\n", "flight\n")
    with pytest.raises(DataError, match=r"3 tags but seq.in line has 4 words \(it contains U\+00A0"):
        read_folder_split(tmp_path, "train")


def test_folder_intent_with_spaces_names_the_label_file(tmp_path):
    write_split(tmp_path, "train", "a b\nc\n", "O O\nO\n", "flight\nflight info\n")
    with pytest.raises(DataError, match="without spaces") as err:
        read_folder_split(tmp_path, "train")
    assert err.value.path.endswith("label") and err.value.line == 2


def test_folder_invalid_tag(tmp_path):
    d = write_split(tmp_path, "train", GOOD[0], "O O O B-time\nO X-genre\n", GOOD[2])
    with pytest.raises(DataError, match="X-genre") as err:
        read_folder_split(tmp_path, "train")
    assert (err.value.path, err.value.line) == (str(d / "seq.out"), 2)


def test_bio_repair_warns_and_strict_raises(tmp_path):
    d = write_split(tmp_path, "train", "a b c\n", "O I-x I-x\n", "i\n")
    with pytest.warns(UserWarning, match=f"{d / 'seq.out'}:1: I-x"):
        [ex] = read_folder_split(tmp_path, "train")
    assert ex["slots"] == ["O", "B-x", "I-x"]
    with pytest.raises(DataError) as err:
        read_folder_split(tmp_path, "train", repair_bio=False)
    assert (err.value.path, err.value.line) == (str(d / "seq.out"), 1)


def test_bio_type_change_is_repaired(tmp_path):
    write_split(tmp_path, "train", "a b\n", "B-x I-y\n", "i\n")
    with pytest.warns(UserWarning):
        [ex] = read_folder_split(tmp_path, "train")
    assert ex["slots"] == ["B-x", "B-y"]


# --- JSONL --------------------------------------------------------------------------------

def test_read_jsonl(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"tokens": ["play", "jazz"], "slots": ["O", "B-genre"], "intent": "play_music"}\n\n'
                 '{"tokens": ["hi"], "tags": ["O"], "intent": "greet"}\n', encoding="utf-8")
    exs = read_jsonl(p)
    assert [e["intent"] for e in exs] == ["play_music", "greet"]
    assert exs[1]["slots"] == ["O"] and exs[0]["text"] == "play jazz"


@pytest.mark.parametrize("bad_line, match", [
    ('{"tokens": ["a"], "slots": ["O"], "intent": "x"', "invalid JSON"),
    ('{"tokens": ["a"], "intent": "x"}', "slots"),
    ('{"tokens": ["a", "b"], "slots": ["O"], "intent": "x"}', "2 tokens but 1"),
    ('{"tokens": ["a b"], "slots": ["O"], "intent": "x"}', "whitespace"),
])
def test_jsonl_errors_name_line(tmp_path, bad_line, match):
    p = tmp_path / "train.jsonl"
    p.write_text('{"tokens": ["a"], "slots": ["O"], "intent": "x"}\n\n' + bad_line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=match) as err:
        read_jsonl(p)
    assert (err.value.path, err.value.line) == (str(p), 3)


def test_jsonl_null_marks_a_task_without_labels(tmp_path):
    """Partial annotation: a null intent or null slots trains the other head only (the loss ignores
    the missing task); what `slu-influence prune --unit sample` writes."""
    from slu_feedback.data.features import make_features

    lines = ['{"tokens": ["play", "jazz"], "slots": null, "intent": "play_music"}',
             '{"tokens": ["wake", "me"], "slots": ["O", "B-who"], "intent": null}',
             '{"tokens": ["hi"], "tags": ["O"], "intent": "greet"}']
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines if split == "train" else lines[2:]) + "\n")
    ds = load_splits(tmp_path)
    assert ds["train"]["slots"] == [None, ["O", "B-who"], ["O"]] and ds["train"]["intent"] == ["play_music", None, "greet"]
    assert ds["train"][0]["text"] == "play jazz" and ds["train"][1]["offsets"] == [[0, 4], [5, 7]]
    maps = build_label_maps(ds["train"])
    assert maps.intents == ["greet", "play_music"] and maps.slots == ["O", "B-who"]

    class WordPerToken:  # each word one sub-token, after [CLS]
        def __call__(self, batch, **kw):
            return type("E", (), {"word_ids": lambda _, i: [None, *range(len(batch[i])), None],
                                  "__getitem__": lambda _, k: [[0] * (len(b) + 2) for b in batch]})()
    features = make_features(ds["train"][:], WordPerToken(), maps, 64)
    assert features["intent_labels"] == [1, UNKNOWN_ID, 0]
    assert features["slot_labels"] == [[UNKNOWN_ID, UNKNOWN_ID], [0, 1], [0]]
    assert subsample(ds["train"], 0.5, 0)["intent"] == ["play_music", None, "greet"]  # None: a stratum like any intent

    write_examples(ds["train"].to_list(), tmp_path / "again.jsonl", "jsonl")
    assert [e["slots"] for e in read_jsonl(tmp_path / "again.jsonl")] == [None, ["O", "B-who"], ["O"]]
    with pytest.raises(DataError, match="only the jsonl format"):
        write_examples(ds["train"].to_list(), tmp_path / "folder" / "train", "folder")


def test_a_word_without_sub_tokens_is_encoded_as_unknown():
    from transformers import AutoTokenizer

    from slu_feedback.data.features import encode_words
    from slu_feedback.models.encoders import resolve_encoder

    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("minilm-l6"))
    # the word-piece tokenizer drops these characters; SNIPS train line 8427 has a word of U+FFFD
    words = [["play", "\u200b", "jazz", "\ufffd\ufffd", "\x00"], ["play", "jazz"]]
    encoded = encode_words(tokenizer, words, 64)
    index, ids = encoded["word_index"][0], encoded["input_ids"][0]
    assert index == [1, 2, 3, 4, 5] and [ids[i] for i in index[1::2]] == [tokenizer.unk_token_id] * 2
    assert tokenizer.convert_ids_to_tokens(ids[3]) == "jazz" and encoded["word_index"][1] == [1, 2]
    assert encode_words(tokenizer, words, 4)["word_index"][0] == [1, 2]  # truncation still cuts the rest


def test_featurize_says_how_many_utterances_max_length_cuts():
    from datasets import Dataset
    from transformers import AutoTokenizer

    from slu_feedback.data.features import featurize
    from slu_feedback.models.encoders import resolve_encoder

    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("minilm-l6"))
    split = Dataset.from_dict({"tokens": [["play"] * 20, ["play", "jazz"]], "slots": [["O"] * 20, ["O", "O"]],
                               "intent": ["music", "music"]})
    maps = LabelMaps(["music"], ["O"])
    with pytest.warns(UserWarning, match="train: 1 of 2 utterances are longer than max_length=8 sub-tokens"):
        assert len(featurize(split, tokenizer, maps, 8, "train")[0]["word_index"]) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing cut: nothing said
        featurize(split, tokenizer, maps, 64, "train")


def test_jsonl_null_errors_name_file_and_line(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"tokens": ["a"], "slots": ["O"], "intent": "x"}\n{"tokens": ["a"], "slots": null, "intent": null}\n')
    with pytest.raises(DataError, match="both 'intent' and 'slots' are null") as err:
        read_jsonl(p)
    assert (err.value.path, err.value.line) == (str(p), 2)
    p.write_text('{"tokens": ["a"], "slots": ["O"], "intent": "x"}\n')
    (tmp_path / "test.jsonl").write_text('{"tokens": ["a"], "slots": ["O"], "intent": "x"}\n')
    (tmp_path / "valid.jsonl").write_text('{"tokens": ["a"], "slots": ["O"], "intent": "x"}\n'
                                          '{"tokens": ["b"], "slots": ["O"], "intent": null}\n')
    with pytest.raises(DataError, match="training split only") as err:
        load_splits(tmp_path)
    assert (err.value.path, err.value.line) == (str(tmp_path / "valid.jsonl"), 2)
    # the file's line, not the example's number: blank lines come before it
    (tmp_path / "valid.jsonl").write_text('\n\n{"tokens": ["a"], "slots": ["O"], "intent": "x"}\n\n'
                                          '{"tokens": ["b"], "slots": ["O"], "intent": null}\n')
    with pytest.raises(DataError, match="training split only") as err:
        load_splits(tmp_path)
    assert err.value.line == 5


def test_a_span_file_of_one_object_names_the_line_it_starts_on(tmp_path):
    p = tmp_path / "train.json"
    p.write_text("\n\n" + json.dumps({"text": "play jazz", "intent": "play", "entities": [{"start": 5, "end": 12,
                                                                                         "entity": "genre"}]}))
    with pytest.raises(DataError) as err:
        read_span_json(p)
    assert err.value.line == 3


# --- character spans ----------------------------------------------------------------------

SPAN_EX = {"text": "Book a table in Zürich, São Paulo at 8pm!", "intent": "book",
           "entities": [{"start": 16, "end": 22, "entity": "city"},
                        {"start": 24, "end": 33, "entity": "city", "value": "São Paulo"},
                        {"start": 37, "end": 40, "entity": "time"}]}


def test_span_json_list_punctuation_and_unicode(tmp_path):
    p = tmp_path / "train.json"
    p.write_text(json.dumps([SPAN_EX], ensure_ascii=False), encoding="utf-8")
    [ex] = read_span_json(p)
    assert ex["tokens"] == ["Book", "a", "table", "in", "Zürich", ",", "São", "Paulo", "at", "8pm", "!"]
    assert ex["slots"] == ["O", "O", "O", "O", "B-city", "O", "B-city", "I-city", "O", "B-time", "O"]
    assert ex["text"] == SPAN_EX["text"] and ex["offsets"][4] == [16, 22]


def test_span_partial_overlap_tags_whole_word(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"text": "fly to new york.", "intent": "f",
                             "entities": [{"start": 8, "end": 14, "entity": "to"}]}) + "\n")
    with pytest.warns(UserWarning, match=r"t.jsonl:1: example 0: entity span adjusted: .*'ew yor' widened to "
                                         r"'new york' \(word-level tags cover whole words; cut: 'new', 'york'\)"):
        [ex] = read_span_json(p)
    assert ex["slots"] == ["O", "O", "B-to", "I-to", "O"]
    # a span cut at its end only: the message names the whole span it became, not just the cut word
    p.write_text(json.dumps({"text": "turn on kitchen lights", "intent": "f",
                             "entities": [{"start": 8, "end": 18, "entity": "room"}]}) + "\n")
    with pytest.warns(UserWarning, match=r"'kitchen li' widened to 'kitchen lights' \(.*cut: 'lights'\)"):
        [ex] = read_span_json(p)
    assert ex["slots"] == ["O", "O", "B-room", "I-room"]
    p.write_text(json.dumps({"text": "fly to new york.", "intent": "f",
                             "entities": [{"start": 7, "end": 16, "entity": "to"}]}) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a span on word boundaries (the full stop is a word) is kept silently
        [ex] = read_span_json(p)
    assert ex["slots"] == ["O", "O", "B-to", "I-to", "I-to"]


def test_span_rasa_and_jsonl_agree(tmp_path):
    rasa = tmp_path / "rasa.json"
    rasa.write_text(json.dumps({"rasa_nlu_data": {"common_examples": [SPAN_EX]}}), encoding="utf-8")
    jl = tmp_path / "ex.jsonl"
    jl.write_text(json.dumps(SPAN_EX) + "\n", encoding="utf-8")
    assert read_span_json(rasa) == read_span_json(jl)


def test_rasa_yaml_reads_like_the_same_spans_and_names_bad_lines(tmp_path):
    nlu = tmp_path / "nlu.yml"
    nlu.write_text("""version: "3.1"
nlu:
- intent: book
  examples: |
    - Book a table in [Zürich](city), [São Paulo]{"entity": "city", "value": "Sao Paulo"} at [8pm](time:20:00)!
- synonym: Sao Paulo
  examples: |
    - SP
- intent: greet
  examples: |
    - hello there
""", encoding="utf-8")
    book, greet = read_span_json(nlu)
    assert book == read_span_json_one(tmp_path, SPAN_EX)  # the same words, tags and offsets as character spans
    assert greet["intent"] == "greet" and greet["slots"] == ["O", "O"]
    nlu.write_text("nlu:\n- intent: a\n  examples: |\n    - fine\n    no dash here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"nlu.yml:5: intent 'a': an example line must start with '- '"):
        read_span_json(nlu)
    nlu.write_text("nlu:\n- intent: a\n  examples: |\n    - fly to [rome]{\"role\": \"x\"}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"nlu.yml:4: entity annotation .* has no \"entity\""):
        read_span_json(nlu)
    nlu.write_text("rules: []\n", encoding="utf-8")
    with pytest.raises(DataError, match="a mapping with an 'nlu' list"):
        read_span_json(nlu)
    # a folder of train/valid/test .yml files is a dataset like any other
    folder = tmp_path / "rasa"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"{split}.yml").write_text("nlu:\n- intent: a\n  examples: |\n    - go to [rome](city)\n",
                                             encoding="utf-8")
    assert load_splits(folder)["test"]["slots"] == [["O", "O", "B-city"]]


def read_span_json_one(tmp_path, obj):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({k: v for k, v in obj.items()}) + "\n", encoding="utf-8")
    [ex] = read_span_json(path)
    return ex


def test_sample_span_files_load():
    assert len(read_span_json(SAMPLE / "spans_example.json")) >= 3
    assert len(read_span_json(SAMPLE / "rasa_example.json")) >= 3
    yml = read_span_json(SAMPLE / "rasa_example.yml")
    assert len(yml) == 5 and yml[0]["slots"] == ["O"] * 6 + ["B-city", "B-date"]


@pytest.mark.parametrize("entities, match", [
    ([{"start": 0, "end": 99, "entity": "a"}], "outside the text"),
    ([{"start": 3, "end": 3, "entity": "a"}], "start >= end"),
    ([{"start": 0, "end": 5, "entity": "a"}, {"start": 4, "end": 9, "entity": "b"}], "overlap"),
    ([{"start": 0, "entity": "a"}], "needs 'start', 'end' and 'entity'"),
])
def test_span_errors_in_json_list(tmp_path, entities, match):
    good = {"text": "hello world there", "intent": "x", "entities": []}
    bad = dict(good, entities=entities)
    p = tmp_path / "train.json"
    p.write_text("[\n  " + json.dumps(good) + ",\n  " + json.dumps(bad) + "\n]\n", encoding="utf-8")
    with pytest.raises(DataError, match=match) as err:
        read_span_json(p)
    assert err.value.path == str(p) and err.value.line == 3 and "example 1" in str(err.value)


def test_span_errors_in_jsonl_and_rasa(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"text": "hi", "intent": "x"}\n{"intent": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="text") as err:
        read_span_json(p)
    assert err.value.line == 2
    r = tmp_path / "rasa.json"
    rasa = {"rasa_nlu_data": {"common_examples": [
        {"text": "hi", "intent": "x"},
        {"text": "hi", "intent": "x", "entities": [{"start": 5, "end": 6, "entity": "a"}]}]}}
    for indent, line in ((None, 1), (1, 8)):  # the line where the Rasa example starts
        r.write_text(json.dumps(rasa, indent=indent))
        with pytest.raises(DataError, match=r"common_examples\[1\].*outside") as err:
            read_span_json(r)
        assert err.value.line == line


def test_a_json_list_with_anything_after_it_is_an_error(tmp_path):
    p = tmp_path / "train.json"
    p.write_text('[{"text": "hi", "intent": "x"}]\n\n garbage {\n', encoding="utf-8")
    with pytest.raises(DataError, match="extra data after the list") as err:
        read_span_json(p)
    assert err.value.line == 3


# --- writing and round trip ---------------------------------------------------------------

def key(exs):
    return [(e["tokens"], e["slots"], e["intent"]) for e in exs]


def test_round_trip_folder_jsonl_spans_folder(tmp_path):
    original = read_folder_split(SAMPLE, "valid")
    write_examples(original, tmp_path / "a.jsonl", "jsonl")
    via_jsonl = read_jsonl(tmp_path / "a.jsonl")
    write_examples(via_jsonl, tmp_path / "b.json", "spans")
    via_spans = read_span_json(tmp_path / "b.json")
    write_examples(via_spans, tmp_path / "out" / "valid", "folder")
    back = read_folder_split(tmp_path / "out", "valid")
    assert key(original) == key(via_jsonl) == key(via_spans) == key(back)
    for name in ("seq.in", "seq.out", "label"):
        assert (tmp_path / "out" / "valid" / name).read_bytes() == (SAMPLE / "valid" / name).read_bytes()


def test_write_spans_keeps_original_text(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(SPAN_EX, ensure_ascii=False) + "\n", encoding="utf-8")
    write_examples(read_span_json(src), tmp_path / "out.json", "spans")
    [rec] = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert rec["text"] == SPAN_EX["text"]
    assert [(e["start"], e["end"], e["entity"]) for e in rec["entities"]] == \
        [(e["start"], e["end"], e["entity"]) for e in SPAN_EX["entities"]]
    assert rec["entities"][1]["value"] == "São Paulo"


# --- splits, paths, formats ---------------------------------------------------------------

def test_load_splits_sample():
    ds = load_splits(SAMPLE)
    assert {k: len(v) for k, v in ds.items()} == {"train": 200, "validation": 50, "test": 50}
    assert set(ds["train"].column_names) == {"tokens", "slots", "intent", "text", "offsets"}
    row = ds["train"][0]
    assert row["text"] == " ".join(row["tokens"]) and len(row["offsets"]) == len(row["tokens"])
    assert all(isinstance(v, int) for pair in row["offsets"] for v in pair)
    assert len(set(ds["train"]["intent"])) == 5


def test_load_splits_dev_alias_and_missing_split(tmp_path):
    for split in ("train", "dev", "test"):
        write_split(tmp_path, split, *GOOD)
    assert len(load_splits(tmp_path)["validation"]) == 2
    write_split(tmp_path, "valid", *GOOD)  # two candidates for one split: an error, not a silent choice
    with pytest.raises(DataError, match="valid and dev could each be the validation split; keep one"):
        load_splits(tmp_path)
    shutil.rmtree(tmp_path / "valid")
    shutil.rmtree(tmp_path / "test")
    with pytest.raises(DataError, match="'test'") as err:
        load_splits(tmp_path, format="folder")
    assert err.value.path == str(tmp_path)


def test_load_splits_jsonl_and_spans_dirs(tmp_path):
    exs = read_folder_split(SAMPLE, "test")
    for fmt, ext in (("jsonl", ".jsonl"), ("spans", ".json")):
        d = tmp_path / fmt
        for stem in ("train", "validation", "test"):
            write_examples(exs, d / (stem + ext), fmt)
        assert detect_format(d) == fmt
        ds = load_splits(d)
        assert key(ds["validation"].to_list()) == key(exs)


def test_detect_format(tmp_path):
    assert detect_format(SAMPLE) == "folder"
    assert detect_format(SAMPLE / "spans_example.json") == "spans"
    assert detect_format(SAMPLE / "rasa_example.json") == "spans"
    (tmp_path / "x.jsonl").write_text('{"tokens": ["a"], "slots": ["O"], "intent": "i"}\n')
    assert detect_format(tmp_path / "x.jsonl") == "jsonl"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell"):
        detect_format(tmp_path / "empty")
    # a broken first line is reported by the reader the extension names, with its line
    (tmp_path / "bad.jsonl").write_text('{"tokens": ["a"], "slots": ["O"] "intent": "i"}\n')
    assert detect_format(tmp_path / "bad.jsonl") == "jsonl"
    with pytest.raises(DataError, match="invalid JSON") as err:
        read_jsonl(tmp_path / "bad.jsonl")
    assert err.value.line == 1
    # one span example written over several lines
    (tmp_path / "one.json").write_text(json.dumps({"text": "fly to boston", "intent": "f"}, indent=2))
    assert detect_format(tmp_path / "one.json") == "spans"
    assert read_span_json(tmp_path / "one.json")[0]["tokens"] == ["fly", "to", "boston"]
    long_line = json.dumps({"tokens": ["a"] * 2500, "slots": ["O"] * 2500, "intent": "i"})  # > 4096 characters
    (tmp_path / "long.json").write_text(long_line + "\n")
    assert detect_format(tmp_path / "long.json") == "jsonl"
    (tmp_path / "blank.jsonl").write_text("  \n\n")
    with pytest.raises(DataError, match="file is empty"):
        detect_format(tmp_path / "blank.jsonl")
    (tmp_path / "notes.md").write_text("# my notes\n")  # no data file: said so, not "invalid JSON" at line 1
    with pytest.raises(DataError, match="notes.md: cannot tell the format: not JSON, and not named .jsonl"):
        detect_format(tmp_path / "notes.md")


def test_resolve_data_path(tmp_path, monkeypatch):
    (tmp_path / "recipes" / "mydata").mkdir(parents=True)
    (tmp_path / "store" / "atis").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLU_DATA_DIR", str(tmp_path / "store"))
    assert resolve_data_path("recipes") == Path("recipes")
    assert resolve_data_path("mydata", base_dir=tmp_path / "recipes") == tmp_path / "recipes" / "mydata"
    assert resolve_data_path("atis") == tmp_path / "store" / "atis"
    with pytest.raises(DataError) as err:
        resolve_data_path("snips", base_dir=tmp_path / "recipes")
    msg = str(err.value)
    assert "SLU_DATA_DIR" in msg and "slu-data fetch snips" in msg and str(tmp_path / "store" / "snips") in msg
    with pytest.raises(DataError) as err:  # a user's own data: no benchmark download offered
        resolve_data_path("my_intents")
    assert "my_intents" in str(err.value) and "fetch" not in str(err.value)
    for bad, problem in (("/dev/null", "not a regular file or folder"), ("nosuch", "no such file or directory")):
        with pytest.raises(DataError, match=problem):
            detect_format(bad)


# --- label maps and subsampling -----------------------------------------------------------

def test_label_maps():
    train = {"intent": ["b", "a", "b"], "slots": [["O", "B-y"], ["B-x", "I-x"], ["O"]]}
    lm = build_label_maps(train)
    assert lm.intents == ["a", "b"] and lm.slots == ["O", "B-x", "B-y", "I-x"]
    assert lm.intent_id("b") == 1 and lm.intent_id("never_seen") == UNKNOWN_ID == -100
    assert lm.slot_id("I-x") == 3 and lm.slot_id("B-z") == -100
    again = LabelMaps.from_dict(json.loads(json.dumps(lm.to_dict())))
    assert again == lm and again.intent_id("a") == 0


def test_subsample_stratified_and_deterministic():
    train = load_splits(SAMPLE)["train"]
    a, b, c = subsample(train, 0.1, seed=1), subsample(train, 0.1, seed=1), subsample(train, 0.1, seed=2)
    assert a["text"] == b["text"] and a["text"] != c["text"]
    assert len(a) == 20
    counts = {i: a["intent"].count(i) for i in set(train["intent"])}
    assert counts == {i: 4 for i in counts}
    tiny = subsample(train, 0.001, seed=0)
    assert sorted(tiny["intent"]) == sorted(set(train["intent"]))  # one per intent
    assert len(subsample(train, 1.0, seed=0)) == len(train)
    with pytest.raises(ValueError):
        subsample(train, 0, seed=0)
    # rest=True: the other examples (MTIF's held-out target), together with the subsample exactly the split
    rest = subsample(train, 0.1, seed=1, rest=True)
    assert len(rest) == len(train) - 20 and not set(rest["text"]) & set(a["text"])
    assert sorted(list(rest["text"]) + list(a["text"])) == sorted(train["text"])
    assert len(subsample(train, 1.0, seed=0, rest=True)) == 0


# --- benchmarks and fetch -----------------------------------------------------------------

@pytest.mark.skipif(not (SHARED / "atis").is_dir(), reason=f"ATIS not found at {SHARED / 'atis'}")
def test_atis_counts_and_unseen_intent():
    ds = load_splits(SHARED / "atis")
    assert [len(ds[s]) for s in ("train", "validation", "test")] == [4478, 500, 893]
    lm = build_label_maps(ds["train"])
    assert len(lm.intents) == 21 and len(lm.slots) == 120 and lm.slots[0] == "O"
    assert "atis_day_name" in ds["test"]["intent"] and lm.intent_id("atis_day_name") == UNKNOWN_ID
    assert ds["test"]["intent"].count("atis_flight#atis_airfare") == 12
    assert sum("#" in i for i in ds["test"]["intent"]) == 15  # multi-intent labels of all kinds


def test_fetch_fails_fast_offline(tmp_path, monkeypatch):
    seen = {}

    def no_network(url, timeout):
        seen["timeout"] = timeout
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(fetch_module.urllib.request, "urlopen", no_network)
    with pytest.raises(DataError) as err:
        fetch_module.fetch("atis", tmp_path)
    msg = str(err.value)
    assert "SLU_DATA_DIR" in msg and str(tmp_path / "atis") in msg and seen["timeout"] <= 10
    with pytest.raises(DataError, match="unknown dataset"):
        fetch_module.fetch("nope", tmp_path)


def test_fetch_writes_and_checks_md5(tmp_path, monkeypatch):
    class Resp:
        def __init__(self, data):
            self.data = data

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return self.data

    def fake(url, timeout):
        return Resp({"seq.in": b"a b\n", "seq.out": b"O O\n", "label": b"x\n"}[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(fetch_module.urllib.request, "urlopen", fake)
    with pytest.raises(DataError, match="md5") as err:
        fetch_module.fetch("snips", tmp_path)
    assert err.value.path == str(tmp_path / "snips" / "train" / "seq.in")
    assert (tmp_path / "snips" / "train" / "label").read_text() == "x\n"


@pytest.mark.skipif(not (SHARED / "atis").is_dir(), reason=f"ATIS not found at {SHARED / 'atis'}")
def test_fetch_keeps_complete_copy_without_network(monkeypatch):
    def no_network(url, timeout):
        raise AssertionError("should not download")

    monkeypatch.setattr(fetch_module.urllib.request, "urlopen", no_network)
    assert fetch_module.fetch("atis", SHARED) == SHARED / "atis"


def test_the_word_split_follows_the_training_words():
    """ATIS writes "st." and SNIPS "ball:" as one word; the rule tokenizer splits them. A model is
    given its words at parse time the way its training words were split."""
    from slu_feedback.data.readers import split_whitespace, word_split_of

    assert split_whitespace(" fly to  st. louis\u3000now ") == [("fly", 1, 4), ("to", 5, 7), ("st.", 9, 12),
                                                               ("louis", 13, 18), ("now", 19, 22)]
    assert word_split_of([["play", "jazz"], ["wake", "me", "at", "6:30", ","]]) == "rule"
    assert word_split_of([["play", "jazz"], ["fly", "to", "st.", "louis"]]) == "whitespace"


def test_slu_train_says_when_the_parser_will_split_at_whitespace_only():
    from types import SimpleNamespace

    from datasets import Dataset

    from slu_feedback.data.readers import off_rule
    from slu_feedback.training.trainer import choose_word_splits

    words = [["play", "jazz"], ["fly", "to", "st.", "louis", "mouse:"], ["l'", "hôtel"]]
    assert off_rule(words) == [(1, "st.", ["st", "."]), (2, "l'", ["l", "'"])]  # each utterance's first such word
    said = []
    accelerator = SimpleNamespace(print=said.append)
    assert choose_word_splits({"": ({"train": Dataset.from_dict({"tokens": words})}, None)}, accelerator) == {"": "whitespace"}
    assert said == ["slu-parse will split text into words at whitespace only: 2 of 3 training utterances have words "
                    "that the tokenisation rule would split (utterance 2: 'st.' -> 'st' '.'); see data/FORMATS.md"]
    said.clear()
    parts = {"": ({"train": Dataset.from_dict({"tokens": words[:1]})}, None)}
    assert choose_word_splits(parts, accelerator) == {"": "rule"} and said == []


def test_a_span_whose_value_differs_from_its_text_warns(tmp_path):
    """JavaScript annotation tools count UTF-16 units: after an emoji every offset is one too far."""
    p = tmp_path / "train.json"
    text = "🎵 play jazz now"
    p.write_text(json.dumps([{"text": text, "intent": "play", "entities": [{"start": 8, "end": 12, "entity": "genre",
                                                                           "value": "jazz"}]}]), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"train.json:1: example 0: entity 0 \(genre\): the text at \[8, 12\) is 'azz '"):
        read_span_json(p)
    p.write_text(json.dumps([{"text": text, "intent": "play", "entities": [{"start": 7, "end": 11, "entity": "genre",
                                                                           "value": "jazz"}]}]), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_span_json(p)[0]["slots"] == ["O", "O", "B-genre", "O"]


# --- hostile files found by a fuzzing review (2026-12-07) ----------------------------------------

def test_text_in_utf16_or_utf32_without_its_mark_is_refused_at_its_first_nul(tmp_path):
    d = write_split(tmp_path, "train", *GOOD)
    (d / "label").write_bytes("set_alarm\nplay_music\n".encode("utf-16-be"))  # was read as "\x00s\x00e..." labels
    with pytest.raises(DataError, match="a NUL byte: this is no UTF-8 text") as err:
        read_folder_split(tmp_path, "train")
    assert (err.value.path, err.value.line) == (str(d / "label"), 1)
    (d / "label").write_bytes("set_alarm\nplay_music\n".encode("utf-32"))  # its mark starts like UTF-16-LE's
    with pytest.raises(DataError, match="the file is UTF-32"):
        read_folder_split(tmp_path, "train")


def test_a_byte_order_mark_inside_a_file_is_no_part_of_a_label_or_word(tmp_path):
    d = write_split(tmp_path, "train", GOOD[0], GOOD[1], "set_alarm\n\ufeffplay_music\n")  # two files joined
    with pytest.raises(DataError, match=r"byte-order mark \(U\+FEFF\) inside the text") as err:
        read_folder_split(tmp_path, "train")
    assert (err.value.path, err.value.line) == (str(d / "label"), 2)
    jsonl = tmp_path / "train.jsonl"
    line = json.dumps({"tokens": ["hi"], "slots": ["O"], "intent": "greet"})
    jsonl.write_text(line + "\n\ufeff" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.jsonl:2: a byte-order mark \(U\+FEFF\) starts this line"):
        read_jsonl(jsonl)


def test_a_token_of_invisible_characters_only_is_refused(tmp_path):
    # convert would write it as a span covering no word, which the span reader rejects
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"tokens": ["fly", "\u200b", "boston"], "slots": ["O", "B-x", "B-city"],
                                "intent": "flight"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.jsonl:1: token '\\u200b' is only invisible format characters \(U\+200B\)"):
        read_jsonl(path)


def test_folder_errors_point_at_a_blank_or_split_line_not_at_the_end(tmp_path):
    lines = [f"word{i} x" for i in range(1, 31)]
    tags = "\n".join("O O" for _ in lines) + "\n"
    seq_in = "\n".join(lines[:9] + [""] + lines[9:]) + "\n"  # a blank line 10 in seq.in only
    d = write_split(tmp_path, "train", seq_in, tags, "a\n" * 30)
    with pytest.raises(DataError, match="empty utterance") as err:
        read_folder_split(tmp_path, "train")
    assert (err.value.path, err.value.line) == (str(d / "seq.in"), 10)
    (d / "seq.in").write_text("\n".join(lines[:9] + ["word10\rx"] + lines[10:]) + "\n")  # a stray carriage return
    with pytest.raises(DataError, match=r"2 tags but seq.in line has 1 words; note: seq.in line 10 \(counting \\n "
                                        r"line ends\) holds a bare carriage return") as err:
        read_folder_split(tmp_path, "train")
    assert err.value.line == 10


def test_a_training_split_without_any_intent_or_slot_label_is_refused(tmp_path):
    for split in ("train", "valid", "test"):
        rows = [{"tokens": ["play", "jazz"], "slots": ["O", "B-genre"], "intent": None if split == "train" else "play"}]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match="train.jsonl: no training utterance has an intent label"):
        load_splits(tmp_path)
    (tmp_path / "train.jsonl").write_text(json.dumps({"tokens": ["hi"], "slots": None, "intent": "greet"}) + "\n")
    with pytest.raises(DataError, match="no training utterance has slot tags .*tags its words 'O'"):
        load_splits(tmp_path)


def test_a_folder_format_file_given_for_its_folder_is_named(tmp_path):
    d = write_split(tmp_path, "train", *GOOD)
    with pytest.raises(DataError, match=r"seq.in is one file of a folder-format split: give its folder"):
        detect_format(d / "seq.in")
    (tmp_path / "valid").write_text("x")  # a file where the split folder goes
    with pytest.raises(DataError, match=r"missing 'validation' split: expected valid/ or dev/ or validation/ \(valid is a file\)"):
        load_splits(tmp_path)
    (d / "seq.out").unlink()
    (d / "seq.out").mkdir()
    with pytest.raises(DataError, match="seq.out: not a regular file"):
        read_folder_split(tmp_path, "train")


def test_folder_blank_label_line_is_named_where_it_is_and_a_late_cr_is_not_blamed(tmp_path):
    d = write_split(tmp_path, "train", "a\nb\nc\nd\n", "O\nO\nO\nO\n", "x\n\nx\nx\nx\n")
    with pytest.raises(DataError, match="empty intent label") as err:
        read_folder_split(tmp_path, "train")
    assert (err.value.path, err.value.line) == (str(d / "label"), 2)
    d = write_split(tmp_path, "valid", "a b\nc\ne f\ng h\r", "O O\nO O\nO O\nO O\n", "x\nx\nx\nx\n")
    with pytest.raises(DataError, match="2 tags but seq.in line has 1 words") as err:  # line 2; the CR ends the file
        read_folder_split(tmp_path, "valid")
    assert err.value.line == 2 and "carriage return" not in str(err.value)


def test_a_typo_tag_or_an_empty_multi_intent_part_is_refused(tmp_path):
    write_split(tmp_path, "train", "play jazz\n", "O B--\n", "play\n")
    with pytest.raises(DataError, match="invalid tag 'B--'"):
        read_folder_split(tmp_path, "train")
    for label in ("#", "play#", "#play"):
        write_split(tmp_path, "valid", "play jazz\n", "O B-genre\n", label + "\n")
        with pytest.raises(DataError, match="nor an empty part between '#'"):
            read_folder_split(tmp_path, "valid")
        path = tmp_path / "spans.jsonl"
        path.write_text(json.dumps({"text": "play jazz", "intent": label}) + "\n")
        with pytest.raises(DataError, match="nor an empty part between '#'"):
            read_span_json(path)
    write_split(tmp_path, "test", "play jazz\n", "O B-genre\n", "play#music\n")  # a multi-intent label is fine
    assert read_folder_split(tmp_path, "test")[0]["intent"] == "play#music"


def test_a_guessed_format_is_guessed_for_each_split_file(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"tokens": ["fly", "to", "rome"], "slots": ["O", "O", "B-city"],
                                                      "intent": "f"}) + "\n")
    (tmp_path / "test.jsonl").write_text((tmp_path / "train.jsonl").read_text())
    (tmp_path / "valid.json").write_text(json.dumps([{"text": "fly to rome", "intent": "f",  # span-level
                                                      "entities": [{"start": 7, "end": 11, "entity": "city"}]}]))
    splits = load_splits(tmp_path)  # was: valid.json:1: expected a JSON object (read as word-level JSONL)
    assert splits["validation"]["slots"] == splits["train"]["slots"] == [["O", "O", "B-city"]]
    with pytest.raises(DataError, match="valid.json:1: expected a JSON object"):  # a format given is not guessed
        load_splits(tmp_path, format="jsonl")
    (tmp_path / "valid.json").unlink()  # a file that tells nothing from its first line: its reader names the line
    (tmp_path / "valid.jsonl").write_text(json.dumps({"tokns": ["hi"], "slots": ["O"], "intent": "f"}) + "\n")
    with pytest.raises(DataError, match=r"valid.jsonl:1: missing key\(s\): tokens"):
        load_splits(tmp_path)


def test_jsonl_with_both_slots_and_tags_or_entities_not_a_list_is_refused(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"tokens": ["hi"], "slots": ["O"], "tags": ["O"], "intent": "greet"}) + "\n")
    with pytest.raises(DataError, match="train.jsonl:1: both 'slots' and 'tags'"):
        read_jsonl(path)
    for entities in (0, "", False):  # were read as no entities
        path = tmp_path / "spans.jsonl"
        path.write_text(json.dumps({"text": "hi", "intent": "greet", "entities": entities}) + "\n")
        with pytest.raises(DataError, match="'entities' must be a list"):
            read_span_json(path)


@pytest.mark.parametrize("text, match, line", [
    ("nlu:\n- ? [a]\n  : b\n  intent: a\n  examples: |\n    - hello\n", None, None),  # a list as a key: ignored
    ("nlu: " + "[" * 500 + "]" * 500 + "\n", "invalid YAML: nested too deeply", None),
    ("nlu:\n- intent: a\n  examples: |\n    - hel\x07lo\n", r"invalid YAML: character '\\x07' is not allowed", 4),
    ("nlu:\n- intent: [a, b]\n  examples: |\n    - hello\n", "'intent' must be a name", 2),
    ("nlu:\n- intent: a\n  examples: >\n    - hello\n    - bye\n", r"must be a block \('examples: \|'\)", 3),
    ("nlu:\n- intent: a\n  examples: 5\n", r"an example line must start with '- ', got '5'", 3),
    ("nlu:\n- intent: a\n  examples: |-\n    - hello\n", None, None),
    ("nlu:\n- intent: a\n  examples: |+\n    - hello\n\n", None, None),
    ("nlu:\n- intent: a\n  examples: \"- hello\"\n", None, None),  # a quoted block, as Rasa accepts
])
def test_rasa_yaml_oddities_are_one_located_error(tmp_path, text, match, line):
    nlu = tmp_path / "nlu.yml"
    nlu.write_text(text, encoding="utf-8")
    if match is None:
        assert [ex["text"] for ex in read_rasa_yaml(nlu)] == ["hello"]
        return
    with pytest.raises(DataError, match=match) as err:
        read_rasa_yaml(nlu)
    assert err.value.line == line
