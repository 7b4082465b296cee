"""Train tiny models on the sample set through the real loop, then evaluate and parse them."""

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import SAMPLE
from slu_feedback.cli.evaluate import main as eval_main
from slu_feedback.cli.parse import main as parse_main
from slu_feedback.evaluation.report import evaluate_run
from slu_feedback.inference.parser import SLUParser
from slu_feedback.training.trainer import train

pytestmark = pytest.mark.e2e


def weights(run_dir):
    return load_file(str(Path(run_dir) / "model.safetensors"))


@pytest.fixture(scope="module")
def trained_feedback_run(tiny_run_factory):
    return tiny_run_factory("train.epochs=3", "model.feedback.iterations=2", "train.log_every=3")


def test_run_directory_has_everything(trained_feedback_run):
    run = Path(trained_feedback_run)
    for name in ["config.json", "model.safetensors", "tokenizer_config.json", "label_maps.json", "recipe.yaml",
                 "metrics.jsonl", "all_results.json", "training_curves.png", "checkpoint/trainer_state.json"]:
        assert (run / name).exists(), name
    # the weights are as readable as the run's other files (safetensors alone writes them 0600)
    for weights_file in (run / "model.safetensors", next((run / "checkpoint").glob("*.safetensors"))):
        assert weights_file.stat().st_mode & 0o777 == (run / "config.json").stat().st_mode & 0o777, weights_file
    results = json.loads((run / "all_results.json").read_text())
    assert set(results["gate_probabilities"]) == {"slot_to_intent", "intent_to_slot"}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3] and results["epochs_run"] == 3
    scores = [r["validation"]["sentence_acc"] for r in epochs]
    assert results["best_epoch"] == 1 + scores.index(max(scores)), "the first epoch with the best validation score"
    assert results["validation"]["sentence_acc"] == max(scores)
    taus = [r["tau"] for r in rows if r["type"] == "step"]
    assert taus == sorted(taus, reverse=True) and taus[0] > taus[-1], "the Gumbel temperature anneals"
    # what produced it: versions, the checkout's commit, and the data it found (sizes and a hash)
    made = results["provenance"]
    assert made["slu_feedback"] and made["torch"] and made["transformers"] and made["date"]
    assert made["commit"] is None or len(made["commit"].removesuffix("-dirty")) == 40
    data = made["data"]["dataset"]
    assert Path(data["path"]) == SAMPLE and data["train"]["n"] == 200 and len(data["train"]["sha256"]) == 16
    assert data["validation"]["sha256"] != data["train"]["sha256"]


def test_the_loop_learns_the_sample_set(tiny_recipe):
    run = train(tiny_recipe("train.epochs=8"))
    first, *_, last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"validation"' in x]
    assert last["train_loss"] < 0.5 * first["train_loss"]
    assert last["validation"]["intent_acc"] >= 0.4  # 5 balanced intents: chance is 0.2
    assert last["validation"]["slot_f1"] > 0.1


def test_eval_writes_reports_and_feedback_changes(trained_feedback_run):
    report = evaluate_run(trained_feedback_run, "test")
    out = Path(report["out_dir"])
    assert {"intent_acc", "slot_f1", "slot_f1_strict", "sentence_acc"} <= set(report["metrics"])
    assert (out / "confusion.png").stat().st_size > 0 and (out / "feedback_steps.png").exists()
    fb = report["feedback"]
    assert fb["fixed"] + fb["broken"] <= fb["changed"] <= report["n"]
    assert len(fb["mean_step"]["intent"]) == 2
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == report["n"] == 50
    assert sum(r["error"] for r in rows) == round(report["n"] * (1 - report["metrics"]["sentence_acc"]))
    # the counts agree with a separate evaluation that stops at iteration 0 (no feedback)
    before = evaluate_run(trained_feedback_run, "test", iterations=0, out_dir=out.parent / "eval_k0")
    rows_0 = [json.loads(x) for x in (Path(before["out_dir"]) / "predictions.jsonl").read_text().splitlines()]
    assert before["feedback"]["mean_step"] == {} and not (Path(before["out_dir"]) / "feedback_steps.png").exists()
    frame = lambda r: (r["pred_intent"], r["pred_slots"])  # noqa: E731
    assert fb["changed"] == sum(frame(a) != frame(b) for a, b in zip(rows_0, rows))
    assert fb["fixed"] == sum(a["error"] and not b["error"] for a, b in zip(rows_0, rows))
    assert fb["broken"] == sum(b["error"] and not a["error"] for a, b in zip(rows_0, rows))
    # ... and so does each row: its iteration-0 frame and what feedback did to it, for error analysis
    assert [(r["pred_intent_0"], r["pred_slots_0"]) for r in rows] == [frame(r) for r in rows_0]
    for a, b in zip(rows_0, rows):
        expected = None if frame(a) == frame(b) else "fixed" if a["error"] and not b["error"] else \
            "broken" if b["error"] and not a["error"] else "still_wrong"
        assert b["feedback"] == expected
    assert {r["feedback"] for r in rows_0} == {None}, "at K = 0 nothing changes"
    result = CliRunner().invoke(eval_main, [str(trained_feedback_run), "--split", "valid"])  # as the data folders say
    assert result.exit_code == 0, result.output
    assert "validation:" in result.output and "sentence accuracy" in result.output and "fixed" in result.output
    assert re.search(r"intent ECE \(15 bins\) +[0-9.]+ %", result.output), "ECE is printed in percent, so say so"
    result = CliRunner().invoke(eval_main, [str(Path(trained_feedback_run).parent)])  # a folder that is no run
    assert result.exit_code == 1 and "not a trained run, missing config.json" in result.output, result.output


def test_feedback_changes_flag_each_utterance_as_they_are_counted():
    from types import SimpleNamespace

    from slu_feedback.evaluation.report import feedback_changes

    config = SimpleNamespace(intent_labels=["a", "b"], slot_labels=["O", "B-x"])
    raw = [{"intent": "a", "slots": ["O", "B-x"]}] * 5
    pred = {"intent_0": [0, 1, 0, 1, 0], "slots_0": [[0, 1], [0, 1], [0, 1], [0, 0], [0]],  # the last one cut
            "pred_intents": ["a", "a", "b", "b", "a"], "pred_slots": [["O", "B-x"], ["O", "B-x"], ["O", "B-x"],
                                                                   ["O", "B-x"], ["O", "O"]], "iterations": [1] * 5}
    counts, rows = feedback_changes(pred, raw, config)
    assert [r["feedback"] for r in rows] == [None, "fixed", "broken", "still_wrong", None]
    assert (counts["changed"], counts["fixed"], counts["broken"]) == (3, 1, 1)
    assert rows[3] == {"pred_intent_0": "b", "pred_slots_0": ["O", "O"], "feedback": "still_wrong"}
    assert rows[4]["pred_slots_0"] == ["O", "O"], "words the model did not see are O, as in pred_slots"


def test_parser_handles_awkward_input(trained_feedback_run):
    parser = SLUParser.from_pretrained(trained_feedback_run)
    texts = ["Play some JAZZ by Miles Davis, please!", "", "   ", "wetter in Zürich morgen?", "\x00\x07 ok",
             "🙂 alarm at 6:30", "book " * 300]
    with pytest.warns(UserWarning, match="truncated"):
        results = parser(texts, explain=True)
    assert len(results) == len(texts)
    assert [r["intent"] is None for r in results] == [not t.strip() for t in texts]
    assert results[2]["slots"] == []
    for text, r in zip(texts, results):
        for slot in r["slots"]:
            assert text[slot["start"]:slot["end"]] == slot["text"]
        if r["intent"] is not None:
            assert r["intent"] in parser.intents and 0 <= r["intent_score"] <= 1
            assert len(r["explain"]) == 3 and r["iterations"] in (1, 2)
            assert len(r["tags"]) == len(r["words"])
    assert parser("set an alarm")["top_intents"][0]["intent"] == parser("set an alarm")["intent"]
    # wrong arguments are named, not an error from deep inside (len(None), range(step 0), topk(0))
    for bad, error, message in ((None, TypeError, "got NoneType"), (b"play", TypeError, "got bytes \\(decode"),
                                (["play", 3], TypeError, "parses strings, got int")):
        with pytest.raises(error, match=message):
            parser(bad)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        parser(["play"], batch_size=0)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        SLUParser.from_pretrained(trained_feedback_run, top_k=0)
    for option in ("--batch-size", "--top-k"):
        result = CliRunner().invoke(parse_main, [str(trained_feedback_run), "--text", "play", option, "0"])
        assert result.exit_code == 2 and "0 is not in the range x>=1" in result.output, result.output


def test_parse_cli_text_json_and_input_file(trained_feedback_run, tmp_path):
    runner = CliRunner()
    result = runner.invoke(parse_main, [str(trained_feedback_run), "--text", "play music", "--json"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output.strip().splitlines()[-1])
    assert parsed["text"] == "play music" and parsed["intent"]
    lines = ["a much longer utterance about the weather in paris tomorrow", "hi", ""]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    result = runner.invoke(parse_main, [str(trained_feedback_run), "--input", str(tmp_path / "in.txt"), "--json"])
    assert result.exit_code == 0, result.output
    out = [json.loads(x) for x in result.output.strip().splitlines()]
    assert [o["text"] for o in out] == lines, "results come back in input order"
    (tmp_path / "in.txt").write_bytes("\ufeffplay jazz\r\nhi\n".encode())  # a Windows editor's BOM and CRLF
    result = runner.invoke(parse_main, [str(trained_feedback_run), "--input", str(tmp_path / "in.txt"), "--json"])
    assert [json.loads(x)["text"] for x in result.output.strip().splitlines()] == ["play jazz", "hi"]
    (tmp_path / "in.txt").write_bytes(b"play jazz\rhi\r")  # an old Mac file: bare CR line ends
    result = runner.invoke(parse_main, [str(trained_feedback_run), "--input", str(tmp_path / "in.txt"), "--json"])
    assert [json.loads(x)["text"] for x in result.output.strip().splitlines()] == ["play jazz", "hi"]
    (tmp_path / "in.txt").write_bytes(b"play jazz\nplay caf\xe9\n")  # Latin-1, not UTF-8
    result = runner.invoke(parse_main, [str(trained_feedback_run), "--input", str(tmp_path / "in.txt")])
    assert result.exit_code == 1 and "in.txt:2: not UTF-8 text" in result.output and "Traceback" not in result.output
    result = runner.invoke(parse_main, [str(trained_feedback_run)],
                           input=":help\nplay jazz\n:explain\nplay jazz\n:foo\n:quit\n")
    assert result.exit_code == 0 and "k=0" in result.output
    assert len(re.findall(r"intent  \S+  [01]\.\d{3}", result.output)) == 2, "both utterances parsed, not :foo"
    assert "unknown command :foo; :help lists the commands" in result.output
    assert "slu> " not in result.output, "utterances piped in get no prompts between their results"
    assert "no feedback loop" not in result.output
    used = int(re.search(r"feedback iterations used: (\d)", result.output).group(1))
    assert re.search(rf"k={used}: .*<- the answer", result.output) and result.output.count("<- the answer") == 1


def test_explain_on_a_run_without_the_loop_says_so():
    from slu_feedback.cli.parse import render

    result = {"text": "play jazz", "intent": "play", "intent_score": 0.9, "top_intents": [], "slots": [],
              "words": ["play", "jazz"], "iterations": 0,
              "explain": [{"iteration": 0, "intent": "play", "intent_score": 0.9, "tags": ["O", "O"]}]}
    assert "this run has no feedback loop" in render(result, explain=True)
    assert "no feedback loop" not in render(result, explain=False)


def test_parse_cli_names_a_broken_run(tmp_path):
    result = CliRunner().invoke(parse_main, [str(tmp_path)])
    assert result.exit_code == 1 and "not a trained run" in result.output
    for name in ("atis-1", "atis-2"):  # a folder of runs (runs/): the runs in it are named
        (tmp_path / name).mkdir()
        for file in ("config.json", "label_maps.json"):
            (tmp_path / name / file).write_text("{}")
    result = CliRunner().invoke(parse_main, [str(tmp_path)])
    assert result.exit_code == 1 and "it holds the runs atis-1, atis-2: give one of those" in result.output


def test_device_option_resolves_or_says_why(trained_feedback_run):
    from slu_feedback.models import RunError, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else
                                           "mps" if torch.backends.mps.is_available() else "cpu")
    with pytest.raises(RunError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(RunError, match="sees no CUDA GPU"):
            resolve_device("cuda")
    runner = CliRunner()
    result = runner.invoke(parse_main, [str(trained_feedback_run), "--text", "play music", "--json", "--device", "cpu"])
    assert result.exit_code == 0 and json.loads(result.output.strip().splitlines()[-1])["intent"], result.output
    result = runner.invoke(eval_main, [str(trained_feedback_run), "--split", "validation", "--device", "gpu0"])
    assert result.exit_code == 1 and "unknown device 'gpu0'" in result.output
    result = runner.invoke(parse_main, [str(trained_feedback_run), "--quantize", "--device", "cuda", "--text", "hi"])
    assert result.exit_code == 1 and "--quantize" in result.output and "CPU" in result.output


def test_same_seed_same_weights_and_resume_matches(tiny_recipe, tmp_path):
    a = train(tiny_recipe(f"output_dir={tmp_path / 'a'}", "model.slot_decoder=crf", "model.feedback.iterations=1"))
    b = train(tiny_recipe(f"output_dir={tmp_path / 'b'}", "model.slot_decoder=crf", "model.feedback.iterations=1"))
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "same recipe and seed give identical weights"
    # interrupted after epoch 1, then resumed: the same weights and metrics as the uninterrupted run
    c = tmp_path / "c"
    recipe_c = tiny_recipe(f"output_dir={c}", "model.slot_decoder=crf", "model.feedback.iterations=1")
    train(recipe_c, stop_after_epoch=1)
    assert len((c / "metrics.jsonl").read_text().splitlines()) < len((a / "metrics.jsonl").read_text().splitlines())
    train(recipe_c, resume=True)
    wc = weights(c)
    assert all(torch.equal(wa[k], wc[k]) for k in wa), "resume reproduces the uninterrupted run"
    strip = lambda run: [{k: v for k, v in json.loads(x).items() if k != "seconds"}
                         for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert strip(a) == strip(c)


def test_runs_with_neighbouring_seeds_share_no_epoch():
    """Each epoch reseeds shuffling and dropout; with `seed + epoch` seed 2's first epoch replayed
    seed 1's second, so the benchmark's seeds were not independent."""
    from slu_feedback.training.trainer import epoch_seed

    seeds = [epoch_seed(seed, epoch) for seed in range(1, 6) for epoch in range(40)]
    assert len(set(seeds)) == len(seeds)
    assert epoch_seed(1, 1) == epoch_seed(1, 1) and all(0 <= s < 2 ** 32 for s in seeds)


def test_ema_weights_are_validated_saved_and_resumed(tiny_recipe, tmp_path):
    """optim.ema_decay: the run saves the moving average of the weights it trained (one epoch:
    epoch 1 is always the best), and the average survives an interruption."""
    plain = weights(train(tiny_recipe(f"output_dir={tmp_path / 'plain'}", "train.epochs=1")))
    almost_last = weights(train(tiny_recipe(f"output_dir={tmp_path / 'tiny_decay'}", "train.epochs=1",
                                            "optim.ema_decay=1e-9")))
    assert all(torch.allclose(plain[k], almost_last[k], atol=1e-6) for k in plain), "decay ~0: the last weights"
    averaged = weights(train(tiny_recipe(f"output_dir={tmp_path / 'ema'}", "train.epochs=1", "optim.ema_decay=0.5")))
    moved = [k for k in plain if plain[k].is_floating_point() and not torch.allclose(plain[k], averaged[k], atol=1e-6)]
    assert any(k.startswith("encoder.") for k in moved) and any(k.startswith("intent_head") for k in moved), moved

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(tiny_recipe(f"output_dir={whole}", "optim.ema_decay=0.9"))
    recipe_cut = tiny_recipe(f"output_dir={cut}", "optim.ema_decay=0.9")
    train(recipe_cut, stop_after_epoch=1)
    train(recipe_cut, resume=True)
    a, b = weights(whole), weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the average is part of the checkpoint: after the resumed run it equals the uninterrupted one's
    (a_file,), (b_file,) = (sorted((run / "checkpoint").glob("custom_checkpoint_*.pkl")) for run in (whole, cut))
    a, b = torch.load(a_file, weights_only=True), torch.load(b_file, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(a["n_averaged"]) == json.loads((whole / "checkpoint" / "trainer_state.json").read_text())["step"]
    validation = json.loads((whole / "all_results.json").read_text())["validation"]
    assert validation == json.loads((cut / "all_results.json").read_text())["validation"]
    # what training validated is what was saved (a decay of 0.9 used to round the averaged
    # position-id buffer down, so the in-training scores came from a damaged copy)
    # resuming with the average switched off (or on) names the setting to use
    from slu_feedback.training.trainer import TrainingError

    with pytest.raises(TrainingError, match=r"this command changes optim.ema_decay \(0.9 -> 0.0\)"):
        train(tiny_recipe(f"output_dir={cut}"), resume=True)
    with pytest.raises(TrainingError, match=r"this command changes optim.ema_decay \(0.0 -> 0.9\)"):
        train(tiny_recipe(f"output_dir={tmp_path / 'plain'}", "optim.ema_decay=0.9"), resume=True)
    rescored = evaluate_run(whole, "validation", out_dir=tmp_path / "rescored")["metrics"]
    assert {k: round(rescored[k], 6) for k in ("sentence_acc", "slot_f1", "intent_nll")} == \
        {k: round(validation[k], 6) for k in ("sentence_acc", "slot_f1", "intent_nll")}


def test_ema_is_refused_where_parameters_are_sharded(tiny_recipe, monkeypatch, tmp_path):
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from slu_feedback.training.trainer import TrainingError

    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType.FSDP))
    with pytest.raises(TrainingError, match="under FSDP they are sharded"):
        train(tiny_recipe(f"output_dir={tmp_path / 'fsdp'}", "optim.ema_decay=0.99"))
    assert not (tmp_path / "fsdp").exists()


def test_bilstm_trains(tiny_recipe):
    run = train(tiny_recipe("model.encoder_type=bilstm", "model.embedding_dim=16", "model.lstm_hidden=16",
                            "model.lstm_layers=1", "train.epochs=1"))
    assert (run / "model.safetensors").exists()
    assert SLUParser.from_pretrained(run)("play a song")["intent"]


def test_tensorboard_events_are_written_when_installed(tiny_recipe):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install -e .[tensorboard])")
    run = train(tiny_recipe("train.epochs=1"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(tiny_recipe, tmp_path):
    """A real `kill -9` in the middle of an epoch: --resume restarts that epoch from the last
    checkpoint and ends with the same weights and logged metrics as a run never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    extra = ["train.epochs=3", "train.batch_size=4", "train.log_every=1"]
    reference = train(tiny_recipe(f"output_dir={tmp_path / 'reference'}", *extra))
    killed = tmp_path / "killed"
    recipe = tiny_recipe(f"output_dir={killed}", *extra)
    overrides = [f"{k}={v}" for k, v in [("model.encoder", recipe["model"]["encoder"]), ("output_dir", killed),
                                         ("model.head_hidden", 32), ("data.path", recipe["data"]["path"]),
                                         ("optim.lr", 3e-3), ("optim.head_lr", 1e-2)]] + extra
    proc = subprocess.Popen([sys.executable, "-m", "slu_feedback.cli.train", str(REPO / "recipes" / "quickstart.yaml"),
                             *overrides], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics, deadline = killed / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        rows = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.exists() else []
        if any(r["type"] == "step" and r["epoch"] == 2 for r in rows):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "all_results.json").exists()
    assert json.loads((killed / "checkpoint" / "trainer_state.json").read_text())["epoch"] == 1
    train(recipe, resume=True)
    a, b = weights(reference), weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda run: [{k: v for k, v in json.loads(x).items() if k != "seconds"}  # noqa: E731
                         for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert strip(reference) == strip(killed)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_recipe, monkeypatch):
    from slu_feedback.models.modeling import SLUModel
    from slu_feedback.training.trainer import TrainingError

    original, calls = SLUModel.compute_loss, {"n": 0}

    def poisoned(self, *args, **kwargs):
        loss, parts = original(self, *args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] > 16 else loss), parts  # 13 steps an epoch: NaN in epoch 2

    monkeypatch.setattr(SLUModel, "compute_loss", poisoned)
    recipe = tiny_recipe("train.epochs=3")
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 2, step 1[0-9].*last good checkpoint"):
        train(recipe)
    run = Path(recipe["output_dir"])
    assert json.loads((run / "checkpoint" / "trainer_state.json").read_text())["epoch"] == 1
    assert (run / "model.safetensors").exists()


def test_checkpoint_keeps_lstm_weights_that_cudnn_keeps_in_one_buffer(tmp_path):
    """On a GPU, cuDNN makes an LSTM's weights views of one flat buffer; save_state must still
    write every one of them, or a BiLSTM run cannot resume."""
    from slu_feedback.models import SLUConfig, SLUModel
    from slu_feedback.training.trainer import new_accelerator, save_checkpoint

    def bilstm(seed):
        torch.manual_seed(seed)
        return SLUModel(SLUConfig(encoder_type="bilstm", vocab_size=50, embedding_dim=8, lstm_hidden=8, head_hidden=8,
                                  intent_labels=["a", "b"], slot_labels=["O", "B-x", "I-x"]))

    model = bilstm(0)
    lstm = list(model.encoder.lstm.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in lstm])
    offset = 0
    for p in lstm:  # what LSTM.flatten_parameters does on CUDA
        p.data = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    accelerator = new_accelerator(1, joint=False)
    prepared, _ = accelerator.prepare(model, torch.optim.AdamW(model.parameters()))
    save_checkpoint(accelerator, tmp_path / "checkpoint", {"epoch": 1})

    fresh = bilstm(1)
    accelerator = new_accelerator(1, joint=False)
    fresh, _ = accelerator.prepare(fresh, torch.optim.AdamW(fresh.parameters()))
    accelerator.load_state(str(tmp_path / "checkpoint"))
    for (name, a), b in zip(prepared.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


def test_bad_data_leaves_no_empty_run_directory(tiny_recipe, tmp_path):
    from slu_feedback.data.errors import DataError

    recipe = tiny_recipe(f"data.path={tmp_path / 'nowhere'}")
    with pytest.raises(DataError):
        train(recipe)
    assert not Path(recipe["output_dir"]).exists()


def test_intent_slot_constraints_are_learned_from_train_and_hold_in_every_prediction(tiny_run_factory, tmp_path):
    from slu_feedback.data import load_splits, slot_types_by_intent
    from slu_feedback.models import load_run

    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    types = slot_types_by_intent(load_splits(sample)["train"])
    run = tmp_path / "run"  # a copy: its slot head is altered below
    shutil.copytree(tiny_run_factory("model.intent_slot_constraints=true"), run)
    model, tokenizer = load_run(run)
    assert model.config.intent_slot_constraints and model.config.slot_types_by_intent == types
    # make the untrained slot head shout one slot type that most intents never take
    rare = min(sorted({t for seen in types.values() for t in seen}),
               key=lambda t: sum(t in seen for seen in types.values()))
    with torch.no_grad():
        model.slot_head.out.bias[model.config.slot_labels.index(f"B-{rare}")] += 50.0
    model.save_pretrained(run)

    def off_type(intent, tags):
        return any(t != "O" and t[2:] not in types[intent] for t in tags)

    broken = {}
    for flag in ("--intent-slot-constraints", "--no-intent-slot-constraints"):
        result = CliRunner().invoke(eval_main, [str(run), "--split", "validation", "--out", str(tmp_path / flag), flag])
        assert result.exit_code == 0, result.output
        rows = [json.loads(x) for x in (tmp_path / flag / "predictions.jsonl").read_text().splitlines()]
        broken[flag] = sum(off_type(r["pred_intent"], r["pred_slots"]) for r in rows)
    assert broken["--intent-slot-constraints"] == 0 and broken["--no-intent-slot-constraints"] > 0
    texts = (sample / "test" / "seq.in").read_text().splitlines()
    parser = SLUParser.from_pretrained(run)
    assert not any(off_type(p["intent"], p["tags"]) for p in parser(texts))
    next(iter(parser.models.values())).config.intent_slot_constraints = False
    assert any(off_type(p["intent"], p["tags"]) for p in parser(texts))
    # the run's setting overridden at load, as slu-eval does: SLUParser, slu-parse (and slu-serve)
    assert any(off_type(p["intent"], p["tags"]) for p in SLUParser.from_pretrained(run, intent_slot_constraints=False)(texts))
    for flag, off in (("--no-intent-slot-constraints", True), ("--intent-slot-constraints", False)):
        result = CliRunner().invoke(parse_main, [str(run), "--json", flag, *[x for t in texts for x in ("--text", t)]])
        assert result.exit_code == 0, result.output
        assert any(off_type(r["intent"], r["tags"]) for r in map(json.loads, result.output.splitlines())) == off


def test_parser_cuts_where_the_run_was_trained(tiny_run_factory):
    """slu-parse reads as many sub-tokens as training and slu-eval did (the run's data.max_length)."""
    run = tiny_run_factory("data.max_length=12")
    long_text = " ".join(["boston"] * 30)
    parser = SLUParser.from_pretrained(run)
    assert parser.model.config.train_max_length == 12 and parser.max_length == 12
    with pytest.warns(UserWarning, match="max_length=12"):
        result = parser(long_text)
    assert len(result["tags"]) == 30 and set(result["tags"][10:]) == {"O"}  # 10 words + [CLS] + [SEP]
    wider = SLUParser.from_pretrained(run, max_length=64)  # an explicit length still wins
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(wider(long_text)["tags"]) == 30
    parser.model.config.train_max_length = None  # a run trained before the config kept it
    assert SLUParser(parser.model, parser.tokenizer).max_length == 128


def test_a_truncated_result_says_so_in_json_and_in_the_plain_output(tiny_run_factory):
    """The warning reaches neither an HTTP client nor a --json consumer: the result itself says it."""
    run = tiny_run_factory("data.max_length=12")
    parser = SLUParser.from_pretrained(run)
    long_text = " ".join(["boston"] * 30)
    with pytest.warns(UserWarning, match="truncated"):
        result = parser(long_text)
    assert result["truncated"] is True and result["words_seen"] == 10  # 10 words + [CLS] + [SEP]
    for short in parser(["boston to denver", ""]):
        assert short["truncated"] is False and "words_seen" not in short
    parsed, empty = parser(["boston to denver", ""], explain=True)
    assert set(empty) == set(parsed) and empty["explain"] == [] and "dataset" not in parsed
    runner = CliRunner()
    out = runner.invoke(parse_main, [str(run), "--text", long_text, "--json"])
    assert out.exit_code == 0, out.output
    parsed = json.loads(out.stdout.strip().splitlines()[-1])
    assert parsed["truncated"] is True and parsed["words_seen"] == 10
    out = runner.invoke(parse_main, [str(run), "--text", long_text, "--text", "boston to denver"])
    assert out.exit_code == 0, out.output
    assert out.stdout.count("truncated: only the first 10 of 30 words") == 1, "a note for the long one only"
    # identical warnings are each counted (Python's default shows one per place): three, then how many more
    out = runner.invoke(parse_main, [str(run), *["--text", long_text] * 5, "--json"])
    assert out.exit_code == 0, out.output
    warned = [line for line in out.stderr.splitlines() if line.startswith("warning: ")]
    assert warned[:3] == ["warning: utterance of 30 words truncated to the first 10 (max_length=12 sub-tokens); "
                          "later words are tagged O"] * 3
    assert warned[3].startswith("warning: ... and 2 more like the first: utterance of 30 words") and len(warned) == 4


def test_parse_cli_plain_output_shows_vmtl_uncertainty(tiny_run_factory, trained_feedback_run):
    from slu_feedback.cli.parse import render

    run = tiny_run_factory("model.head=vmtl", "model.vmtl.latent_dim=16", "model.feedback.iterations=1")
    text = "play some jazz by miles davis"
    parsed = SLUParser.from_pretrained(run)(text)
    out = CliRunner().invoke(parse_main, [str(run), "--text", text])
    assert out.exit_code == 0, out.output
    assert re.search(rf"intent  \S+  [01]\.\d{{3}} \(uncertainty {parsed['intent_uncertainty']:.3f}\)", out.stdout)
    assert out.stdout.count("(uncertainty ") == 1 + len(parsed["slots"])
    slot = {"label": "artist", "text": "miles davis", "start": 18, "end": 29, "score": 0.9, "uncertainty": 0.25}
    assert "[18:29]  0.900 (uncertainty 0.250)" in render(dict(parsed, slots=[slot]))
    plain = CliRunner().invoke(parse_main, [str(trained_feedback_run), "--text", text])
    assert plain.exit_code == 0 and "uncertainty" not in plain.output, "other heads: output as before"


def test_eval_on_other_data_keeps_the_runs_max_length(tiny_run_factory, monkeypatch, tmp_path):
    import slu_feedback.evaluation.report as report

    run = tiny_run_factory("data.max_length=12")
    seen = []
    real = report.featurize
    monkeypatch.setattr(report, "featurize", lambda *a: seen.append(a[3]) or real(*a))  # (split, tokenizer, labels, max_length, name)
    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    evaluate_run(run, "test", data=str(sample), out_dir=tmp_path / "eval")
    assert seen == [12]
    bare = tmp_path / "bare_run"  # a model folder without the recipe: the length comes from its config
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("recipe.yaml", "checkpoint", "eval_*"))
    evaluate_run(bare, "test", data=str(sample), out_dir=tmp_path / "eval_bare")
    assert seen == [12, 12]
    # one split given by itself (a folder with seq.in, or a JSONL file) is scored whole, named after itself
    out = evaluate_run(run, "test", data=str(sample / "valid"), out_dir=tmp_path / "eval_valid")
    assert out["split"] == "valid" and out["n"] == len((sample / "valid" / "label").read_text().splitlines())
    lines = (sample / "test" / "seq.in").read_text().splitlines()[:3]
    tags = (sample / "test" / "seq.out").read_text().splitlines()[:3]
    intents = (sample / "test" / "label").read_text().splitlines()[:3]
    jsonl = tmp_path / "three.jsonl"
    jsonl.write_text("".join(json.dumps({"tokens": a.split(), "slots": b.split(), "intent": c}) + "\n"
                             for a, b, c in zip(lines, tags, intents)))
    out = evaluate_run(run, "validation", data=str(jsonl))
    assert out["split"] == "three.jsonl" and out["n"] == 3
    assert (Path(run) / "eval_data-three" / "predictions.jsonl").read_text().count("\n") == 3
    # a split's file named after its split is named with its folder; other data of the same name
    # gets a folder of its own instead of replacing those results, the same data the same folder
    for folder, n in (("a", 2), ("b/a", 1), ("a", 2)):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "test.jsonl").write_text("".join(jsonl.read_text().splitlines(keepends=True)[:n]))
        evaluate_run(run, "test", data=str(tmp_path / folder / "test.jsonl"))
    written = {d.name: json.loads((d / "metrics.json").read_text()) for d in Path(run).glob("eval_data-a-test*")}
    assert {name: (r["n"], r["data"]) for name, r in written.items()} == {
        "eval_data-a-test": (2, str(tmp_path / "a" / "test.jsonl")), "eval_data-a-test-2": (1, str(tmp_path / "b" / "a" / "test.jsonl"))}
    (tmp_path / "ds").mkdir()  # a link is named as given; its target is what it records
    (tmp_path / "ds" / "test.jsonl").symlink_to(jsonl)
    out = evaluate_run(run, "test", data=str(tmp_path / "ds" / "test.jsonl"))
    assert Path(out["out_dir"]).name == "eval_data-ds-test" and out["data"] == str(jsonl.resolve())
    monkeypatch.setattr(report, "load_run", lambda *a: pytest.fail("the model loads after the data"))
    with pytest.raises(Exception, match="nowhere"):
        evaluate_run(run, "test", data=str(tmp_path / "nowhere"))


def test_training_never_replaces_a_run_by_accident(tiny_recipe, tmp_path, monkeypatch):
    from slu_feedback.training.trainer import TrainingError

    run_dir = tmp_path / "run"
    train(tiny_recipe(f"output_dir={run_dir}", "train.epochs=1"))
    before = (run_dir / "model.safetensors").read_bytes()
    (run_dir / "eval_test").mkdir()  # outputs of the old model
    with pytest.raises(TrainingError, match="already holds a run: continue it with --resume, start over in it with --overwrite"):
        train(tiny_recipe(f"output_dir={run_dir}", "train.epochs=1", "seed=3"))
    assert (run_dir / "model.safetensors").read_bytes() == before and (run_dir / "eval_test").exists()

    train(tiny_recipe(f"output_dir={run_dir}", "train.epochs=1", "seed=3"), overwrite=True)
    assert (run_dir / "model.safetensors").read_bytes() != before
    assert not (run_dir / "eval_test").exists(), "nothing of the old run stays beside the new model"

    with pytest.raises(TrainingError, match="--resume: .*none does not exist"):
        train(tiny_recipe(f"output_dir={tmp_path / 'none'}"), resume=True)
    assert not (tmp_path / "none").exists()
    with pytest.raises(TrainingError, match="choose one"):
        train(tiny_recipe(f"output_dir={run_dir}"), resume=True, overwrite=True)

    # a folder of other files (data, a project) is not trained into: a run mixed into it would take
    # those files with it on a later --overwrite
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(TrainingError, match="is not empty and holds no slu-train run"):
            train(tiny_recipe(f"output_dir={notes}", "train.epochs=1"), overwrite=overwrite)
    assert [f.name for f in notes.iterdir()] == ["mine.txt"]
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    assert train(tiny_recipe(f"output_dir={tmp_path / 'empty'}", "train.epochs=1")) == tmp_path / "empty"
    # through a link to the run's folder, the old run goes too
    (tmp_path / "link").symlink_to(run_dir)
    (run_dir / "eval_test").mkdir()
    train(tiny_recipe(f"output_dir={tmp_path / 'link'}", "train.epochs=1"), overwrite=True)
    assert not (run_dir / "eval_test").exists() and (run_dir / "model.safetensors").exists()

    # a folder with a config.json but no run (a model folder, a project) is neither trained into nor deleted
    model_folder = tmp_path / "model"
    model_folder.mkdir()
    (model_folder / "config.json").write_text("{}")
    for overwrite in (False, True):
        with pytest.raises(TrainingError, match="holds a config.json but no slu-train run"):
            train(tiny_recipe(f"output_dir={model_folder}", "train.epochs=1"), overwrite=overwrite)
    assert [f.name for f in model_folder.iterdir()] == ["config.json"]
    # --overwrite never deletes the working folder, even where it holds a run
    monkeypatch.chdir(run_dir)
    with pytest.raises(TrainingError, match="would delete ., which holds the working folder"):
        train(tiny_recipe("output_dir=.", "train.epochs=1"), overwrite=True)
    assert (run_dir / "model.safetensors").exists()


def test_resume_goes_on_with_the_run_s_settings(tiny_recipe, tmp_path, monkeypatch):
    import yaml

    from slu_feedback.training.trainer import TrainingError

    run_dir = tmp_path / "run"
    train(tiny_recipe(f"output_dir={run_dir}", "train.epochs=1"))
    # a resumed run that learnt with another seed, rate or data would be neither run: refused, keys named
    with pytest.raises(TrainingError, match=r"this command changes seed \(42 -> 7\), optim.lr \(0.003 -> 0.01\)\. "
                                            r"Only train.epochs, train.patience"):
        train(tiny_recipe(f"output_dir={run_dir}", "train.epochs=2", "optim.lr=1e-2", "seed=7"), resume=True)
    # going on for longer is what --resume is for; recipe.yaml records it
    train(tiny_recipe(f"output_dir={run_dir}", "train.epochs=2"), resume=True)
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["train"]["epochs"] == 2
    assert json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text())["epoch"] == 2
    # a finished run has nothing to resume: said, and its files (the command that made it) left alone
    files = {name: (run_dir / name).read_bytes() for name in ("recipe.yaml", "metrics.jsonl", "all_results.json")}
    with monkeypatch.context() as patch:  # said before the data and the model load
        patch.setattr("slu_feedback.training.trainer.load_data", lambda *a: pytest.fail("loaded the data"))
        with pytest.raises(TrainingError, match=r"--resume: .*run has finished its 2 epochs; to train on, raise "
                                                r"train.epochs \(e.g. train.epochs=4\)"):
            train(tiny_recipe(f"output_dir={run_dir}", "train.epochs=2"), resume=True)
    assert files == {name: (run_dir / name).read_bytes() for name in files}
    state_file = run_dir / "checkpoint" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "bad_epochs": 99}))  # as if early stopping had ended it
    with pytest.raises(TrainingError, match=r"stopped early after 99 epochs without improvement .*raise train.patience"):
        train(tiny_recipe(f"output_dir={run_dir}", "train.epochs=4"), resume=True)
    state_file.write_text(json.dumps(state))
    (run_dir / "all_results.json").unlink()  # killed while finishing, after the last checkpoint: resuming finishes it
    train(tiny_recipe(f"output_dir={run_dir}", "train.epochs=2"), resume=True)
    assert json.loads((run_dir / "all_results.json").read_text())["epochs_run"] == 2


def test_resume_without_output_dir_takes_the_newest_run_of_that_recipe_only(tmp_path, monkeypatch):
    from slu_feedback.training.trainer import latest_run

    monkeypatch.chdir(tmp_path)
    for name in ("my-atis-20261207-101010", "my-atis-20261207-101010-2", "my-atis-lr-20261208-090000", "my-atis-notes"):
        (tmp_path / "runs" / name / "checkpoint").mkdir(parents=True)
    assert latest_run({"recipe_name": "my-atis"}) == Path("runs/my-atis-20261207-101010-2")
    assert latest_run({"recipe_name": "my-atis-lr"}) == Path("runs/my-atis-lr-20261208-090000")
    assert latest_run({"recipe_name": "atis"}) is None


@pytest.mark.parametrize("interrupted_at", [1, 2])
def test_ctrl_c_names_the_run_and_what_it_keeps(tiny_recipe, tmp_path, monkeypatch, interrupted_at):
    from slu_feedback.cli.train import interrupted_message
    from slu_feedback.training import trainer

    validations, validate = [], trainer.evaluate_split

    def interrupt(*args, **kwargs):  # Ctrl-C while epoch `interrupted_at` is validated
        validations.append(1)
        if len(validations) == interrupted_at:
            raise KeyboardInterrupt
        return validate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate_split", interrupt)
    run_dir = tmp_path / "run"
    with pytest.raises(trainer.TrainingInterrupted) as caught:
        train(tiny_recipe(f"output_dir={run_dir}"))
    assert caught.value.run_dir == run_dir and caught.value.epochs_kept == interrupted_at - 1
    message = interrupted_message(caught.value, "recipes/quickstart.yaml", ["train.epochs=2", "output_dir=x"])
    command = f"slu-train recipes/quickstart.yaml train.epochs=2 output_dir={run_dir}"  # this run, not the newest
    assert message == (f"interrupted; {run_dir} keeps epoch 1's checkpoint: continue with {command} --resume"
                       if interrupted_at == 2 else
                       f"interrupted before the first epoch ended: {run_dir} has nothing to continue; "
                       f"start it again with {command} --overwrite")
    assert interrupted_message(KeyboardInterrupt(), "r.yaml", []) == "interrupted before training started; no run was written"


def test_eval_compares_two_runs_on_the_same_utterances(trained_feedback_run, tiny_run_factory, tmp_path):
    baseline = tiny_run_factory("data.max_length=12")  # another model of the same data
    result = CliRunner().invoke(eval_main, [str(trained_feedback_run), "--split", "validation", "--compare", str(baseline)])
    assert result.exit_code == 0, result.output
    assert re.search(r"sentence accuracy .* McNemar p = [01]\.\d{3}", result.output)
    assert re.search(r"slot F1 \(seqeval\) .* 95 % interval \[[-+]\d+\.\d\d, [-+]\d+\.\d\d\], p = ", result.output)
    out = Path(trained_feedback_run) / "eval_validation"
    compared = json.loads((out / f"compare-{Path(baseline).name}" / "compare.json").read_text())
    own = json.loads((out / "metrics.json").read_text())["metrics"]
    other = json.loads((out / f"compare-{Path(baseline).name}" / "metrics.json").read_text())["metrics"]
    assert compared["n"] == own["n"] and compared["split"] == "validation"
    for key in ("intent_acc", "slot_f1", "sentence_acc"):  # each run's value as it scores alone
        assert compared[key]["run"] == pytest.approx(own[key]) and compared[key]["baseline"] == pytest.approx(other[key])
    # which utterances only one of them gets right, by their id in both predictions files
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    base_rows = [json.loads(x) for x in (out / f"compare-{Path(baseline).name}" / "predictions.jsonl").read_text().splitlines()]
    for key, right in (("intent_acc", lambda r: not r["intent_error"]), ("sentence_acc", lambda r: not r["error"]),
                       ("slot_f1", lambda r: not r["slot_errors"])):
        m = compared[key]
        assert m["only_run_ids"] == [r["id"] for r, b in zip(rows, base_rows) if right(r) and not right(b)]
        assert m["only_baseline_ids"] == [r["id"] for r, b in zip(rows, base_rows) if right(b) and not right(r)]
        assert (m["only_run"], m["only_baseline"]) == (len(m["only_run_ids"]), len(m["only_baseline_ids"]))
    m = compared["sentence_acc"]
    assert f"right only in run {m['only_run']}, only in baseline {m['only_baseline']}" in result.output
    # another baseline of the same folder name (runs/a/atis, runs/b/atis) gets its own results folder
    twin = tmp_path / "elsewhere" / Path(baseline).name
    shutil.copytree(baseline, twin, ignore=shutil.ignore_patterns("eval_*", "checkpoint"))
    result = CliRunner().invoke(eval_main, [str(trained_feedback_run), "--split", "validation", "--compare", str(twin)])
    assert result.exit_code == 0 and f"compare-{twin.name}-2/compare.json" in result.output, result.output
    assert json.loads((out / f"compare-{Path(baseline).name}" / "compare.json").read_text())["baseline"] == str(baseline)
    result = CliRunner().invoke(eval_main, [str(trained_feedback_run), "--split", "validation", "--compare", str(baseline)])
    assert f"compare-{Path(baseline).name}/compare.json" in result.output, "the same baseline reuses its folder"


def test_eval_reads_only_the_split_it_scores_as_a_split_to_be_scored(tiny_run_factory, tmp_path):
    from slu_feedback.data.errors import DataError

    run = tiny_run_factory("data.max_length=12")
    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    only_test = tmp_path / "only-test"  # another team's test set, without train or valid
    shutil.copytree(sample / "test", only_test / "test")
    assert evaluate_run(run, "test", data=str(only_test), out_dir=tmp_path / "e")["n"] == 50
    # a dataset folder's splits each get their own results folder (one read split is still a dataset's)
    for split in ("test", "validation"):
        assert Path(evaluate_run(run, split, data=str(only_test if split == "test" else sample))["out_dir"]).name \
            == f"eval_data-{'only-test' if split == 'test' else 'sample'}-{split}"
    partial = tmp_path / "test.jsonl"  # a null label cannot be scored: the reader names its line
    partial.write_text('{"tokens": ["hi"], "slots": ["O"], "intent": "greet"}\n'
                       '{"tokens": ["hi"], "slots": ["O"], "intent": null}\n')
    with pytest.raises(DataError, match="intent") as error:
        evaluate_run(run, "test", data=str(partial), out_dir=tmp_path / "p")
    assert error.value.line == 2
    assert CliRunner().invoke(eval_main, [str(run), "--iterations", "-1"]).exit_code == 2


def test_eval_keeps_each_setting_in_its_own_folder(trained_feedback_run, tmp_path):
    """An ablation (--iterations 0, ...) never overwrites the default eval_<split>/, and every
    metrics.json says what its predictions were made with."""
    run, runner = Path(trained_feedback_run), CliRunner()
    result = runner.invoke(eval_main, [str(run), "--split", "validation", "--iterations", "2"])  # the trained K
    assert result.exit_code == 0, result.output
    default = run / "eval_validation"
    own = json.loads((default / "metrics.json").read_text())["settings"]
    assert own == {"iterations": 2, "intent_slot_constraints": False, "quantize": False}
    written = {name: (default / name).read_bytes() for name in ("metrics.json", "predictions.jsonl")}
    result = runner.invoke(eval_main, [str(run), "--split", "validation", "--iterations", "0", "--no-intent-slot-constraints"])
    assert result.exit_code == 0 and "eval_validation-k0/metrics.json" in result.output, result.output
    assert {name: (default / name).read_bytes() for name in written} == written, "the default results stay"
    ablation = json.loads((run / "eval_validation-k0" / "metrics.json").read_text())
    assert ablation["settings"] == {**own, "iterations": 0} and ablation["feedback"]["changed"] == 0
    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    report = evaluate_run(run, "test", data=str(sample / "valid"), iterations=1, quantize=True)
    assert Path(report["out_dir"]).name == "eval_data-sample-valid-k1-int8"
    # a folder reused (--out) for other settings: comparisons against its old predictions go, as does the old plot
    out = tmp_path / "eval"
    for options, kept in (([], True), ([], True), (["--iterations", "0"], False)):
        (out / "compare-other").mkdir(parents=True, exist_ok=True)
        result = runner.invoke(eval_main, [str(run), "--split", "validation", "--out", str(out), *options])
        assert result.exit_code == 0, result.output
        assert (out / "compare-other").exists() == kept and (out / "feedback_steps.png").exists() == kept


def test_a_run_that_learnt_nothing_says_what_to_change(tiny_recipe):
    from slu_feedback.training.trainer import untrained_hint

    split = {"intent": ["a", "a", "a", "b"], "slots": [["O", "B-x"], ["O"], ["B-y"], ["O"]]}
    recipe = {"train": {"epochs": 8}, "model": {"encoder_type": "bilstm"}}
    hint = untrained_hint({"slot_f1": 0.0, "intent_acc": 0.75}, split, recipe, 8)
    assert "no slot span" in hint and "always saying a" in hint and "BiLSTM" in hint and "train.epochs" in hint
    recipe["model"]["encoder_type"] = "hf"
    assert "BiLSTM" not in untrained_hint({"slot_f1": 0.0, "intent_acc": 1.0}, split, recipe, 8)
    assert untrained_hint({"slot_f1": 0.4, "intent_acc": 0.76}, split, recipe, 8) is None
    # no gold span to find, or a single intent: nothing to say
    assert untrained_hint({"slot_f1": 0.0, "intent_acc": 1.0}, {"intent": ["a"], "slots": [["O"]]}, recipe, 8) is None
    # the trainer says it at the end of a run: one epoch of a tiny random encoder learns nothing
    with pytest.warns(UserWarning, match="on the validation split: train longer"):
        train(tiny_recipe("train.epochs=1", "optim.lr=1e-7", "optim.head_lr=1e-7"))


@pytest.mark.e2e
def test_slu_eval_reads_only_the_split_it_scores(tiny_run_factory, tmp_path):
    """Its warnings are that split's, and a broken or slow-to-read training split costs nothing."""
    import yaml

    from slu_feedback.data import DataError

    run = tmp_path / "run"
    shutil.copytree(tiny_run_factory(), run, ignore=shutil.ignore_patterns("checkpoint*", "eval_*"))
    data = tmp_path / "data"
    for split in ("train", "valid", "test"):
        shutil.copytree(SAMPLE / split, data / split)
    (data / "train" / "seq.out").write_text("B-x\n")  # one tag for many lines and words
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["data"]["path"] = str(data)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    report = evaluate_run(run, "test")
    assert report["metrics"]["n"] == len((SAMPLE / "test" / "label").read_text().splitlines())
    assert evaluate_run(run, "valid")["split"] == "validation"
    with pytest.raises(DataError, match="train"):
        evaluate_run(run, "train")
