"""The `transformers.pipeline("slu")` task, int8 dynamic quantisation (parser, slu-parse, slu-eval)
and ONNX export with its ONNX Runtime check, on tiny trained runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from slu_feedback.inference.parser import SLUParser

pytestmark = pytest.mark.e2e
TEXTS = ["play some jazz by miles davis", "what is the weather in paris tomorrow", "", "wake me up at 6:30",
         "Zürich wetter 🙂", "set an alarm"]


@pytest.fixture(scope="module")
def feedback_run(tiny_run_factory):
    return tiny_run_factory("model.feedback.iterations=2")


@pytest.fixture(scope="module")
def crf_run(tiny_run_factory):
    return tiny_run_factory("model.slot_decoder=crf", "model.feedback.iterations=1", "model.feedback.gate=soft")


@pytest.fixture(scope="module")
def bilstm_run(tiny_run_factory):
    return tiny_run_factory("model.encoder_type=bilstm", "model.embedding_dim=16", "model.lstm_hidden=16",
                            "model.lstm_layers=1", "model.feedback.iterations=1")


def test_only_a_hard_gate_reports_infusion_points(feedback_run, crf_run):
    gumbel, soft = (json.loads((Path(run) / "all_results.json").read_text()) for run in (feedback_run, crf_run))
    assert set(gumbel["infusion_points"]) == {"slot_to_intent", "intent_to_slot"}
    assert soft["infusion_points"] == {}, "a soft gate infuses at every point, weighted by gate_probabilities"
    assert set(soft["gate_probabilities"]) == {"slot_to_intent", "intent_to_slot"}


# -- transformers.pipeline ------------------------------------------------------------------------
def test_pipeline_task_returns_what_the_parser_returns(feedback_run):
    from transformers import pipeline

    from slu_feedback.inference.pipeline import SLUPipeline  # registers the "slu" task

    slu = pipeline("slu", model=str(feedback_run), device="cpu")
    assert isinstance(slu, SLUPipeline)
    parser = SLUParser.from_pretrained(feedback_run)
    assert slu(TEXTS[0]) == parser(TEXTS[0])
    assert slu(TEXTS) == parser(TEXTS)
    assert slu(TEXTS, batch_size=2) == parser(TEXTS, batch_size=2)
    assert slu(TEXTS[1], explain=True) == parser(TEXTS[1], explain=True)
    assert slu("")["intent"] is None
    with pytest.raises(TypeError, match="string"):
        slu(42)


def test_transformers_trainer_trains_and_predicts_with_its_defaults(feedback_run, tmp_path):
    """The Trainer keeps only forward's arguments (the label columns are named as forward's) and
    gathers per-example outputs only (the loss's parts and step sizes are left out)."""
    from transformers import Trainer, TrainingArguments

    from slu_feedback.data import LabelMaps, load_splits
    from slu_feedback.data.features import collate, featurize
    from slu_feedback.models import load_run

    model, tokenizer = load_run(feedback_run)
    labels = LabelMaps(model.config.intent_labels, model.config.slot_labels)
    valid = featurize(load_splits(Path(__file__).resolve().parents[1] / "data" / "sample")["validation"], tokenizer,
                      labels, 64)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8,
                             per_device_eval_batch_size=16, report_to=[], use_cpu=True, save_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=valid, eval_dataset=valid, data_collator=collate)
    trainer.train()
    prediction = trainer.predict(valid)
    intent_logits, slot_logits, iterations = prediction.predictions
    assert intent_logits.shape == (len(valid), len(labels.intents)) and slot_logits.shape[0] == len(valid)
    assert iterations.shape == (len(valid),) and prediction.metrics["test_loss"] > 0


def test_pipeline_class_from_a_loaded_model(feedback_run):
    from slu_feedback.inference.pipeline import SLUPipeline
    from slu_feedback.models import load_run

    model, tokenizer = load_run(feedback_run)
    slu = SLUPipeline(model=model, tokenizer=tokenizer, device="cpu", top_k=2)
    result = slu(TEXTS[3])
    assert len(result["top_intents"]) == 2
    assert result == SLUParser(model, tokenizer, top_k=2)(TEXTS[3])


# -- int8 dynamic quantisation --------------------------------------------------------------------
def test_quantized_parser_gives_valid_output(feedback_run):
    from slu_feedback.inference.quantize import count_quantized

    parser = SLUParser.from_pretrained(feedback_run, quantize=True)
    fp32 = SLUParser.from_pretrained(feedback_run)
    assert count_quantized(parser.model) > 0 and count_quantized(fp32.model) == 0
    results = parser(TEXTS)
    for text, r, ref in zip(TEXTS, results, fp32(TEXTS)):
        if not text:
            assert r["intent"] is None
            continue
        assert r["intent"] in parser.intents and 0 <= r["intent_score"] <= 1
        assert len(r["tags"]) == len(r["words"]) == len(ref["words"])
        assert all(tag in parser.slot_labels for tag in r["tags"])
        assert abs(sum(t["score"] for t in r["top_intents"]) - sum(t["score"] for t in ref["top_intents"])) < 0.2


def test_parse_and_eval_cli_quantize(feedback_run, tmp_path):
    from slu_feedback.cli.evaluate import main as eval_main
    from slu_feedback.cli.parse import main as parse_main

    result = CliRunner().invoke(parse_main, [str(feedback_run), "--quantize", "--text", "play jazz", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["intent"]
    result = CliRunner().invoke(eval_main, [str(feedback_run), "--split", "validation", "--quantize",
                                            "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "int8" in result.output and "change" in result.output
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "p (paired, same utterances)" in result.output
    for key in ("intent_acc", "slot_f1", "sentence_acc"):
        assert report["int8"]["change"][key] == pytest.approx(report["int8"]["metrics"][key] - report["metrics"][key])
        # the paired test compares the same two sets of predictions: its difference is the change
        paired = report["int8"]["compare"][key]
        assert paired["diff"] == pytest.approx(report["int8"]["change"][key]) and 0 <= paired["p"] <= 1


# -- ONNX export ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_deps():
    pytest.importorskip("onnx", reason="needs the export extra: pip install 'slu_feedback[export]'")
    pytest.importorskip("onnxruntime", reason="needs the export extra: pip install 'slu_feedback[export]'")
    pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript")


@pytest.mark.parametrize("run_name", ["feedback_run", "crf_run", "bilstm_run"])
def test_onnx_export_matches_pytorch(onnx_deps, run_name, request, tmp_path):
    from slu_feedback.cli.export import main as export_main

    run = request.getfixturevalue(run_name)
    out = tmp_path / "model.onnx"
    # the feedback run is checked on data given with --data (the same sample set), the others on their recipe's
    data = ["--data", str(Path(__file__).resolve().parents[1] / "data" / "sample")] if run_name == "feedback_run" else []
    result = CliRunner().invoke(export_main, [str(run), "--format", "onnx", "--out", str(out), "--check",
                                              "--split", "validation", "--json", *data])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])  # progress bars go to stderr
    assert report["ok"] and report["n"] == 50 and report["max_abs_diff"] <= 1e-4
    assert report["intent_agreement"] == 1.0 and report["slot_agreement"] == 1.0
    assert out.exists()
    if run_name == "bilstm_run":  # packed sequences: torch.export fails, the TorchScript exporter takes over
        assert "TorchScript exporter" in result.stderr


def test_onnx_graph_has_dynamic_axes_and_unrolled_feedback(onnx_deps, feedback_run, tmp_path):
    import onnx

    from slu_feedback.inference.export import OnnxSLU, export_onnx
    from slu_feedback.models import load_run

    model, tokenizer = load_run(feedback_run)
    path = export_onnx(feedback_run, tmp_path / "m.onnx", model=model, tokenizer=tokenizer)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "word_index", "word_mask"]
    assert [o.name for o in graph.output] == ["intent_probs", "slot_probs"]
    for tensor in graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert all(d.dim_param and not d.dim_value for d in dims), f"{tensor.name} has fixed axes"
    # batches of other sizes and lengths than the traced example, and the same predictions as the model
    runner = OnnxSLU(path, tokenizer, model.config)
    texts = list(TEXTS) + ["book a table for two at an italian place near the station tonight at eight"] * 3
    intent_probs, slot_probs, word_mask = runner.probabilities(texts)
    assert intent_probs.shape == (len(texts), len(model.config.intent_labels))
    parser = SLUParser(model, tokenizer)  # early exit at the run's eps included
    long = "book " * 300  # cut at max_length: later words tagged O, said in the result, as by the parser
    with pytest.warns(UserWarning, match="truncated"):
        predictions = runner.predict(texts + [long])
    for text, predicted in zip(texts + [long], predictions):
        expected = parser(text)
        assert predicted["intent"] == expected["intent"] and predicted["tags"] == expected["tags"]
        assert predicted["truncated"] == expected["truncated"] == (text == long)
        assert predicted.get("words_seen") == expected.get("words_seen")
    # tags are decoded as the model decodes them: here every word's argmax is an I- tag, which
    # cannot start a span, so the IOB2 constraint must change the first word at least
    tags = model.config.slot_labels
    inside = next(j for j, t in enumerate(tags) if t.startswith("I-"))
    torch.manual_seed(0)
    logits = torch.randn(2, 5, len(tags))
    logits[:, :, inside] += 8.0
    intent_probs = torch.eye(len(model.config.intent_labels))[[0, 1]].numpy()
    runner.probabilities = lambda texts, words=None: (intent_probs, logits.softmax(-1).numpy(), torch.ones(2, 5).numpy())
    mask = torch.ones(2, 5, dtype=torch.bool)
    expected = model.decode_slots(logits, mask, torch.tensor([0, 1]))
    predicted = runner.predict(["a", "b"])
    assert [p["tags"] for p in predicted] == [[tags[k] for k in row] for row in expected.tolist()]
    assert predicted[0]["tags"][0] != tags[inside]
    # and under the intent-slot constraint (the runner reads the same config): only the types seen
    # with the predicted intent, which here changes the path
    model.config.intent_slot_constraints = True
    constrained = model.decode_slots(logits, mask, torch.tensor([0, 1]))
    assert not torch.equal(constrained, expected)
    assert [p["tags"] for p in runner.predict(["a", "b"])] == [[tags[k] for k in row] for row in constrained.tolist()]


def test_onnx_graph_keeps_the_early_exit_and_the_iteration_cap(onnx_deps, feedback_run, tmp_path):
    """The graph computes what SLUParser computes: each utterance's first round with every step
    under feedback.eps, within feedback.max_iterations."""
    from slu_feedback.inference.export import OnnxSLU, example_inputs, export_onnx
    from slu_feedback.models import load_run

    model, tokenizer = load_run(feedback_run)
    batch = example_inputs(tokenizer, [t for t in TEXTS if t])
    outputs = {}
    for name, feedback in {"exit": {"eps": 1e9}, "full": {"eps": 0.0}, "cap": {"eps": 0.0, "max_iterations": 1}}.items():
        model.config.feedback = {**model.config.feedback, **feedback}
        path = export_onnx(feedback_run, tmp_path / f"{name}.onnx", model=model, tokenizer=tokenizer)
        intent, slot = OnnxSLU(path, tokenizer, model.config).run_batch(batch)
        with torch.no_grad():
            out = model.eval()(**batch)
        assert np.allclose(intent, out.intent_logits.softmax(-1).numpy(), atol=1e-5), name
        assert np.allclose(slot, out.slot_logits.softmax(-1).numpy(), atol=1e-5), name
        outputs[name] = intent
    assert np.allclose(outputs["exit"], outputs["cap"], atol=1e-6), "eps huge: every utterance stops after round 1"
    assert not np.allclose(outputs["exit"], outputs["full"], atol=1e-6)


def test_onnx_check_reports_a_nan_output(onnx_deps, feedback_run, tmp_path, monkeypatch):
    """A NaN from the ONNX graph shows as a NaN difference and fails the check (max(0.0, nan) is 0.0,
    which once reported such a graph as differing by nothing)."""
    from slu_feedback.inference import export

    path = export.export_onnx(feedback_run, tmp_path / "m.onnx")
    run_batch = export.OnnxSLU.run_batch

    def one_nan_word(self, batch):
        intent, slot = run_batch(self, batch)
        slot = slot.copy()
        slot[0, 0, :] = np.nan  # the first utterance's first word
        return intent, slot

    monkeypatch.setattr(export.OnnxSLU, "run_batch", one_nan_word)
    data = Path(__file__).resolve().parents[1] / "data" / "sample"
    report = export.check_onnx(feedback_run, path, data=str(data), limit=40)
    assert np.isnan(report["max_abs_diff_slot"]) and np.isnan(report["max_abs_diff"]) and not report["ok"]
    assert report["max_abs_diff_intent"] <= 1e-4


def test_a_vmtl_run_is_refused_with_a_reason_by_the_api_and_the_cli(onnx_deps, tiny_run_factory, tmp_path):
    """Its Monte Carlo prediction is not traceable: one clear message, not the exporters' internal errors."""
    from slu_feedback.cli.export import main as export_main
    from slu_feedback.inference.export import export_onnx

    run = tiny_run_factory("model.head=vmtl", "model.vmtl.latent_dim=16", "model.feedback.iterations=1")
    with pytest.raises(ValueError, match="does not support model.head=vmtl"):
        export_onnx(run, tmp_path / "m.onnx")
    result = CliRunner().invoke(export_main, [str(run), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and "does not support model.head=vmtl" in result.output
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("failure", [RuntimeError("exporter broke"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_export_leaves_the_existing_file(feedback_run, tmp_path, monkeypatch, failure):
    from slu_feedback.inference import export

    def half_written(module, args, out_file, opset):
        out_file.write_bytes(b"half a graph")
        raise failure

    monkeypatch.setattr(export, "_export_dynamo", half_written)
    monkeypatch.setattr(export, "_export_legacy", half_written)
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the graph that works")
    with pytest.raises(type(failure)):
        export.export_onnx(feedback_run, target)
    assert target.read_bytes() == b"the graph that works" and [f.name for f in tmp_path.iterdir()] == ["model.onnx"]


def test_export_cli_on_a_broken_run(onnx_deps, tmp_path):
    from slu_feedback.cli.export import main as export_main

    result = CliRunner().invoke(export_main, [str(tmp_path)])
    assert result.exit_code == 1 and "not a trained run" in result.output


def test_frozen_gate_equals_the_eval_gate():
    from slu_feedback.inference.export import FrozenGate
    from slu_feedback.models.feedback import FeedbackGate

    torch.manual_seed(0)
    signal = torch.randn(3, 5)
    for mode in ("gumbel", "soft", "fixed:1"):
        gate = FeedbackGate(5, (8, 6, 4), mode).eval()
        with torch.no_grad():
            gate.beta.copy_(torch.tensor([0.1, 0.7, -0.2]))
            frozen = FrozenGate(gate, tau=0.5)
            for a, b in zip(gate(signal, gate.weights(0.5)), frozen(signal)):
                assert (a is None and b is None) or torch.equal(a, b), mode
