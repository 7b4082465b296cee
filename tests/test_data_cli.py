"""Tests of the ``slu-data`` command line (inspect, validate, convert, fetch)."""

import json
import shutil
import urllib.error
from pathlib import Path

import pytest
from click.testing import CliRunner

import slu_feedback.data.fetch as fetch_module
from slu_feedback.cli.data import main
from slu_feedback.data import load_splits

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def sample_copy(tmp_path):
    dst = tmp_path / "sample"
    for split in ("train", "valid", "test"):
        shutil.copytree(SAMPLE / split, dst / split)
    return dst


def test_inspect_sample():
    res = run("inspect", SAMPLE)
    assert res.exit_code == 0, res.output
    assert "train: 200 utterances, 5 intents, 10 slot types, 0 multi-intent" in res.output
    assert "validation: 50 utterances" in res.output and "test: 50 utterances" in res.output
    assert "get_weather" in res.output and "#####" in res.output and "party_size" in res.output


def test_inspect_counts_utterances_without_a_task_label(tmp_path):
    line = '{"tokens": ["play", "jazz"], "slots": %s, "intent": %s}\n'
    (tmp_path / "train.jsonl").write_text(line % ('null', '"play"') + line % ('["O", "B-genre"]', 'null')
                                          + line % ('["O", "B-genre"]', '"play"'))
    for split in ("valid", "test"):
        (tmp_path / f"{split}.jsonl").write_text(line % ('["O", "B-genre"]', '"play"'))
    res = run("inspect", tmp_path)
    assert res.exit_code == 0, res.output
    assert "train: 3 utterances (1 without intent, 1 without slots), 1 intents, 1 slot types" in res.output


def test_inspect_single_span_file():
    res = run("inspect", SAMPLE / "spans_example.json")
    assert res.exit_code == 0, res.output
    assert "spans_example.json: 5 utterances" in res.output


def test_validate_good():
    res = run("validate", SAMPLE, "--strict-bio")
    assert res.exit_code == 0, res.output
    assert "OK: train 200, validation 50, test 50" in res.output


def test_validate_bad_file_reports_file_and_line(sample_copy):
    seq_out = sample_copy / "valid" / "seq.out"
    lines = seq_out.read_text().splitlines()
    lines[2] = lines[2] + " O"  # one tag too many on line 3
    seq_out.write_text("\n".join(lines) + "\n")
    res = run("validate", sample_copy)
    assert res.exit_code == 1
    assert f"Error: {seq_out}:3: " in res.output
    assert "Traceback" not in res.output


def test_validate_bio_repair_vs_strict(sample_copy):
    seq_out = sample_copy / "test" / "seq.out"
    lines = seq_out.read_text().splitlines()
    lines[0] = lines[0].replace("B-", "I-", 1)
    assert lines[0] != seq_out.read_text().splitlines()[0]
    seq_out.write_text("\n".join(lines) + "\n")
    lenient = run("validate", sample_copy)
    assert lenient.exit_code == 0 and "repaired 1 I- tag" in lenient.output and f"{seq_out}:1" in lenient.output
    strict = run("validate", sample_copy, "--strict-bio")
    assert strict.exit_code == 1 and f"{seq_out}:1: " in strict.output


def test_validate_missing_dataset_hints_at_env(tmp_path, monkeypatch):
    monkeypatch.delenv("SLU_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    res = run("validate", "nowhere")
    assert res.exit_code == 1 and "'nowhere' not found" in res.output and "SLU_DATA_DIR is not set" in res.output
    res = run("validate", "atis")  # a benchmark by name: where to get it
    assert res.exit_code == 1 and "export SLU_DATA_DIR=" in res.output and "slu-data fetch atis" in res.output


def test_convert_round_trip(tmp_path):
    for fmt, src in (("jsonl", SAMPLE), ("spans", tmp_path / "jsonl"), ("folder", tmp_path / "spans")):
        res = run("convert", src, tmp_path / fmt, "--to", fmt)
        assert res.exit_code == 0, res.output
    assert (tmp_path / "jsonl" / "valid.jsonl").is_file() and (tmp_path / "spans" / "test.json").is_file()
    assert json.loads((tmp_path / "spans" / "train.json").read_text())[0]["entities"]
    a, b = load_splits(SAMPLE), load_splits(tmp_path / "folder")
    for split in a:
        for col in ("tokens", "slots", "intent"):
            assert a[split][col] == b[split][col]
    for name in ("seq.in", "seq.out", "label"):
        assert (tmp_path / "folder" / "train" / name).read_bytes() == (SAMPLE / "train" / name).read_bytes()


def test_convert_and_split_refuse_to_replace_files_unless_told(tmp_path):
    spans = SAMPLE / "spans_example.json"
    src = tmp_path / "mine"
    src.mkdir()
    for name in ("train", "valid", "test"):
        shutil.copy(spans, src / f"{name}.json")
    before = (src / "train.json").read_bytes()
    res = run("convert", src, src, "--to", "spans")  # into itself: the annotated spans would be rewritten
    assert res.exit_code == 1 and "train.json, " in res.output and "already exist:" in res.output and "--overwrite" in res.output
    assert (src / "train.json").read_bytes() == before
    assert run("convert", src, src, "--to", "spans", "--overwrite").exit_code == 0
    res = run("convert", src, src, "--to", "jsonl", "--overwrite")  # train.jsonl beside train.json: two train splits
    assert res.exit_code == 1 and "holds the same split as train.jsonl" in res.output
    assert not (src / "train.jsonl").exists()
    assert run("split", SAMPLE / "train", tmp_path / "s").exit_code == 0
    res = run("split", SAMPLE / "train", tmp_path / "s", "--seed", "1")
    assert res.exit_code == 1 and "already exist" in res.output
    assert run("split", SAMPLE / "train", tmp_path / "s", "--seed", "1", "--overwrite").exit_code == 0
    # a file where a split folder goes (or the other way round): one line, even with --overwrite
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "train").write_text("not a folder")
    res = run("convert", SAMPLE, tmp_path / "dd", "--to", "folder", "--overwrite")
    assert res.exit_code == 1 and "dd/train: a file where a split folder goes" in res.output
    assert (tmp_path / "dd" / "train").read_text() == "not a folder"
    assert run("inspect", SAMPLE, "--top", "0").exit_code == 2  # 0 rows would read as 'no intents'


def test_split_one_file_into_a_dataset_by_intent(tmp_path):
    from collections import Counter

    res = run("split", SAMPLE / "train", tmp_path / "mine", "--valid", "0.2", "--test", "0.1", "--seed", "3")
    assert res.exit_code == 0, res.output
    parts = load_splits(tmp_path / "mine")
    train = load_splits(SAMPLE)["train"]
    assert sum(len(parts[s]) for s in parts) == len(train)
    assert sorted(x for s in parts for x in parts[s]["tokens"]) == sorted(train["tokens"])  # each utterance once
    assert (len(parts["validation"]), len(parts["test"])) == (round(0.2 * len(train)), round(0.1 * len(train)))
    whole, held = Counter(train["intent"]), Counter(parts["validation"]["intent"])
    assert set(parts["train"]["intent"]) == set(whole)  # every intent is learnt
    assert all(abs(held[i] - 0.2 * n) <= 1.5 for i, n in whole.items()), (held, whole)  # in proportion
    again = tmp_path / "again"
    assert run("split", SAMPLE / "train", again, "--valid", "0.2", "--test", "0.1", "--seed", "3").exit_code == 0
    assert (again / "test.jsonl").read_bytes() == (tmp_path / "mine" / "test.jsonl").read_bytes()  # seeded
    res = run("split", SAMPLE, tmp_path / "x")
    assert res.exit_code == 1 and "holds the splits" in res.output
    res = run("split", SAMPLE / "train", tmp_path / "x", "--valid", "0.5", "--test", "0.5")
    assert res.exit_code == 2 and "nothing to train on" in res.output


def test_split_holds_out_small_intents_in_turn_and_keeps_unlabelled_utterances_in_train(tmp_path):
    rows = [{"tokens": ["go", f"w{k}"], "slots": ["O", "B-x"], "intent": f"intent{k % 30}"} for k in range(120)]
    rows += [{"tokens": ["only", "slots"], "slots": ["O", "O"], "intent": None}] * 2
    src = tmp_path / "all.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    res = run("split", src, tmp_path / "out")  # 30 intents of 4: per-intent rounding would hold out none
    assert res.exit_code == 0, res.output
    parts = {name: [json.loads(x) for x in (tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()]
             for name in ("train", "valid", "test")}
    assert len(parts["valid"]) == len(parts["test"]) == 12
    assert all(r["intent"] is not None for name in ("valid", "test") for r in parts[name])  # they are scored
    assert sum(r["intent"] is None for r in parts["train"]) == 2
    (tmp_path / "few.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]), encoding="utf-8")
    res = run("split", tmp_path / "few.jsonl", tmp_path / "few")
    assert res.exit_code == 1 and "leave nothing for validation and test" in res.output and "label more data" in res.output
    # enough utterances, shares that round to nothing for one split: which shares would do
    res = run("split", SAMPLE / "rasa_example.yml", tmp_path / "rasa", "--valid", "0.4", "--test", "0.4")
    assert res.exit_code == 1 and "2 of them can be held out" in res.output and "at most 2 of the 5" in res.output
    assert run("split", SAMPLE / "rasa_example.yml", tmp_path / "rasa", "--valid", "0.2", "--test", "0.2").exit_code == 0


def test_convert_bad_source_exits_1(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.jsonl").write_text('{"tokens": ["a"], "slots": ["O"], "intent": "x"}\n{"tokens": ["a"]}\n')
    res = run("convert", src, tmp_path / "out", "--to", "folder")
    assert res.exit_code == 1 and f"{src / 'train.jsonl'}:2: missing key(s): slots, intent" in res.output


def test_fetch_offline_exits_1(tmp_path, monkeypatch):
    def no_network(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(fetch_module.urllib.request, "urlopen", no_network)
    res = run("fetch", "snips", "--dest", tmp_path)
    assert res.exit_code == 1 and "SLU_DATA_DIR" in res.output and "Traceback" not in res.output
    monkeypatch.chdir(tmp_path)  # a relative --dest: the export it suggests works from anywhere
    res = run("fetch", "snips", "--dest", "store")
    assert f"export SLU_DATA_DIR={tmp_path.resolve() / 'store'}`" in res.output.replace("\n", "")


def test_warnings_are_one_line_each_and_summarised(tmp_path):
    """A Rasa synonym per example: one `warning:` line for each of the first three, then a count,
    never Python's `file.py:N: UserWarning` form with the source line under it."""
    examples = [{"text": f"wake me at {h}", "intent": "alarm",
                 "entities": [{"start": 11, "end": 13, "entity": "time", "value": "soon"}]} for h in range(10, 20)]
    for split, items in (("train", examples), ("valid", examples[:2]), ("test", examples[:2])):
        (tmp_path / f"{split}.json").write_text(json.dumps(items))
    import datasets
    from transformers.utils import logging as transformers_logging

    bars = datasets.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    res = run("validate", tmp_path)
    assert res.exit_code == 0, res.output
    assert (datasets.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()) == bars, \
        "a command run in-process leaves the libraries' progress bars as it found them"
    lines = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(lines) == 4 and all("'value' is 'soon'" in line for line in lines[:3])
    assert lines[3].startswith("warning: ... and 11 more like the first: ") and "example 0: entity 0 (time)" in lines[3]
    assert "UserWarning" not in res.output


def test_convert_to_a_place_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = run("convert", SAMPLE, tmp_path / "afile" / "sub", "--to", "spans")
    assert result.exit_code == 1 and "afile/sub: Not a directory" in result.output
    assert isinstance(result.exception, SystemExit), "a click error, not an uncaught NotADirectoryError"
