"""Multi-dataset (joint) training: one encoder, one head pair per dataset.

The sample set is split by domain into two datasets with disjoint intents ("travel": flights and
restaurants; "home": weather, music, alarms), so that which head answers is checkable."""

import json

import pytest
import torch

from conftest import SAMPLE
from slu_feedback.data.dataset import load_splits
from slu_feedback.data.readers import write_examples
from slu_feedback.inference.parser import SLUParser
from slu_feedback.models import RunError, load_run
from slu_feedback.training.trainer import train

pytestmark = pytest.mark.e2e

DOMAINS = {"travel": {"find_flight", "book_restaurant"}, "home": {"get_weather", "play_music", "set_alarm"}}


@pytest.fixture(scope="module")
def domain_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("domains")
    splits = load_splits(SAMPLE)
    for name, intents in DOMAINS.items():
        for split, folder in (("train", "train"), ("validation", "valid"), ("test", "test")):
            write_examples([ex for ex in splits[split] if ex["intent"] in intents], root / name / folder, "folder")
    return root


@pytest.fixture(scope="module")
def joint_run(tiny_encoder, domain_data, tmp_path_factory):
    from conftest import REPO, tiny_overrides
    from slu_feedback.training.recipe import load_recipe

    out = tmp_path_factory.mktemp("joint") / "run"
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", tiny_overrides(tiny_encoder, out) + [
        f"data.path=[{domain_data / 'travel'}, {domain_data / 'home'}]", "train.epochs=3",
        "model.feedback.iterations=1"])
    return train(recipe)


def test_a_joint_run_is_pruned_dataset_by_dataset(joint_run):
    from slu_feedback.influence.report import prune_run

    with pytest.raises(ValueError, match="is a joint run: prune one of its datasets, .*travel, .*home"):
        prune_run(joint_run, 0.1)


def test_joint_run_layout_and_shared_encoder(joint_run):
    assert json.loads((joint_run / "joint.json").read_text()) == {"datasets": ["travel", "home"]}
    results = json.loads((joint_run / "all_results.json").read_text())
    assert set(results["validation"]["datasets"]) == {"travel", "home"}
    per = results["validation"]["datasets"]
    assert results["validation"]["sentence_acc"] == pytest.approx((per["travel"]["sentence_acc"] + per["home"]["sentence_acc"]) / 2)
    assert set(results["gate_probabilities"]) == {"travel", "home"}
    travel, _ = load_run(joint_run / "travel")
    home, _ = load_run(joint_run / "home")
    assert set(travel.config.intent_labels) == DOMAINS["travel"] and set(home.config.intent_labels) == DOMAINS["home"]
    # both saved copies are the trained shared encoder: equal, and moved away from the initial weights
    from transformers import AutoModel

    initial = AutoModel.from_pretrained(travel.config.encoder).state_dict()
    moved = 0
    for (name, a), b in zip(travel.encoder.state_dict().items(), home.encoder.state_dict().values()):
        assert torch.equal(a, b), name
        key = name.removeprefix("model.")
        moved += key in initial and not torch.equal(a, initial[key])
    assert moved > 10
    with pytest.raises(RunError, match="joint"):
        load_run(joint_run)


def test_joint_epoch_sees_every_batch_of_both_datasets(joint_run):
    rows = [json.loads(line) for line in (joint_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["type"] == "epoch"]
    # quickstart batch 16: travel 80 train utterances -> 5 batches, home 120 -> 8; 13 updates per epoch
    assert steps == [13, 26, 39]


def test_joint_parser_names_the_answering_dataset(joint_run):
    parser = SLUParser.from_pretrained(joint_run)
    assert set(parser.models) == {"travel", "home"}
    result = parser("wake me up at 7 am tomorrow")
    assert result["dataset"] in ("travel", "home")
    intents = DOMAINS[result["dataset"]]
    assert result["intent"] in intents and all(t["intent"] in intents for t in result["top_intents"])
    # the choice is the dataset whose top intent is most confident
    alone = {name: SLUParser.from_pretrained(joint_run, dataset=name)("wake me up at 7 am tomorrow") for name in DOMAINS}
    assert result["dataset"] == max(alone, key=lambda n: alone[n]["intent_score"])
    assert result == alone[result["dataset"]]
    with pytest.raises(RunError, match="no dataset 'news'"):
        SLUParser.from_pretrained(joint_run, dataset="news")
    # one dataset's folder, with its own name given again: that dataset, not an error
    travel = SLUParser.from_pretrained(joint_run / "travel", dataset="travel")("wake me up at 7 am tomorrow")
    assert travel == {k: v for k, v in alone["travel"].items() if k != "dataset"}  # (a folder names no dataset)
    with pytest.raises(RunError, match="no dataset 'home'"):
        SLUParser.from_pretrained(joint_run / "travel", dataset="home")


def test_joint_eval_scores_each_dataset(joint_run, tmp_path):
    from click.testing import CliRunner

    from slu_feedback.cli.evaluate import main

    result = CliRunner().invoke(main, [str(joint_run), "--split", "validation"])
    assert result.exit_code == 0, result.output
    assert "travel" in result.output and "home" in result.output
    validation = json.loads((joint_run / "all_results.json").read_text())["validation"]["datasets"]
    for name in DOMAINS:
        metrics = json.loads((joint_run / name / "eval_validation" / "metrics.json").read_text())["metrics"]
        # the saved model is the best epoch's: re-scoring validation gives the logged numbers
        assert metrics["sentence_acc"] == pytest.approx(validation[name]["sentence_acc"])
    # a joint run as --compare's baseline: refused before the run is scored, naming the folders to give
    (joint_run / "travel" / "eval_test").mkdir(exist_ok=True)
    before = sorted(p.name for p in (joint_run / "travel").iterdir())
    result = CliRunner().invoke(main, [str(joint_run / "travel"), "--compare", str(joint_run)])
    assert result.exit_code == 1 and f"give one dataset's folder, {joint_run / 'travel'} or {joint_run / 'home'}" in result.output
    assert sorted(p.name for p in (joint_run / "travel").iterdir()) == before
    assert not list((joint_run / "travel" / "eval_test").iterdir()), "RUN_DIR was not scored first"


def test_joint_recipe_rejects_duplicate_names(tiny_recipe, domain_data):
    from slu_feedback.training.trainer import TrainingError

    recipe = tiny_recipe(f"data.path=[{domain_data / 'home'}, {domain_data / 'home'}]")
    with pytest.raises(TrainingError, match="same name"):
        train(recipe)


def test_joint_resume_matches_uninterrupted(tiny_encoder, domain_data, tmp_path, joint_run):
    """Interrupted after epoch 1 and resumed: the same final weights as the uninterrupted run."""
    from conftest import REPO, tiny_overrides
    from slu_feedback.training.recipe import load_recipe

    overrides = tiny_overrides(tiny_encoder, tmp_path / "run") + [
        f"data.path=[{domain_data / 'travel'}, {domain_data / 'home'}]", "train.epochs=3", "model.feedback.iterations=1"]
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", overrides)
    train(recipe, stop_after_epoch=1)
    run = train(recipe, resume=True)
    a, b = load_run(run / "home")[0].state_dict(), load_run(joint_run / "home")[0].state_dict()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_slu_parse_and_server_model_info_for_a_joint_run(joint_run):
    from click.testing import CliRunner

    from slu_feedback.cli.parse import main
    from slu_feedback.inference.server import ServerSettings, model_info

    result = CliRunner().invoke(main, [str(joint_run), "--text", "play some jazz", "--json", "--dataset", "home"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output)
    assert parsed["dataset"] == "home" and parsed["intent"] in DOMAINS["home"]
    info = model_info(SLUParser.from_pretrained(joint_run), joint_run, ServerSettings(), False)
    assert {name: set(d["intents"]) for name, d in info["datasets"].items()} == DOMAINS


def test_influence_scores_each_dataset_of_a_joint_run(joint_run):
    import csv

    from click.testing import CliRunner

    from slu_feedback.cli.influence import main

    result = CliRunner().invoke(main, ["score", str(joint_run), "--solver", "explicit", "--scope", "heads"])
    assert result.exit_code == 0, result.output
    for name, n_train in (("travel", 80), ("home", 120)):
        with (joint_run / name / "influence" / "influence.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == n_train and {r["intent"] for r in rows} == DOMAINS[name]


def test_joint_model_shares_one_encoder_and_registers_each_parameter_once():
    from slu_feedback.models import SLUConfig, SLUModel
    from slu_feedback.models.joint import JointSLUModel, sub_state_dict
    from transformers import BertConfig

    encoder = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32).to_dict()
    torch.manual_seed(0)
    models = {name: SLUModel(SLUConfig(encoder="tiny", encoder_config=encoder, intent_labels=intents,
                                       slot_labels=["O", "B-x", "I-x"], head_hidden=8, feedback={"iterations": 1}))
              for name, intents in (("a", ["i", "j"]), ("b", ["k", "l", "m"]))}
    joint = JointSLUModel(models)
    assert joint.models["a"].encoder is joint.models["b"].encoder is joint.encoder
    names = [n for n, _ in joint.named_parameters()]
    assert len(names) == len({id(p) for p in joint.parameters()})  # each parameter once
    expected = sum(p.numel() for p in joint.encoder.parameters()) + sum(
        p.numel() for m in models.values() for n, p in m.named_parameters() if not n.startswith("encoder."))
    assert sum(p.numel() for p in joint.parameters()) == expected
    state = joint.state_dict()
    # the encoder is saved once, under encoder.; the heads hold no copy of it
    assert not any(k.split(".")[2] == "encoder" for k in state if k.startswith("heads."))
    assert set(sub_state_dict(state, "b")) == set(models["b"].state_dict())

    batch = {"input_ids": torch.randint(1, 50, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long),
             "word_index": torch.tensor([[1, 2, 3], [1, 2, 4]]), "word_mask": torch.ones(2, 3, dtype=torch.bool)}
    joint.eval()
    before = joint(dataset="a", **batch).intent_logits.clone()
    # a step on dataset b's batch moves the encoder that dataset a's heads read, not a's heads
    joint.train()
    heads_a = [p.clone() for p in joint.heads["a"].parameters()]
    optimizer = torch.optim.SGD(joint.parameters(), lr=1.0)
    joint(dataset="b", **batch, intent_labels=torch.tensor([0, 2]), slot_labels=torch.tensor([[0, 1, 2], [0, 0, 1]])).loss.backward()
    optimizer.step()
    assert all(torch.equal(p, q) for p, q in zip(heads_a, joint.heads["a"].parameters()))
    joint.eval()
    assert not models["a"].training and not torch.allclose(joint(dataset="a", **batch).intent_logits, before)


def test_other_datasets_weight_teaches_the_other_heads_to_be_unsure():
    """With train.other_datasets_weight, a batch of dataset a also trains b's intent head towards
    no preference (KL(uniform || p)); without it b's heads get no gradient from a's batch."""
    from slu_feedback.models import SLUConfig, SLUModel
    from slu_feedback.models.joint import JointSLUModel, uniform_kl
    from transformers import BertConfig

    encoder = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32).to_dict()
    batch = {"input_ids": torch.randint(1, 50, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long),
             "word_index": torch.tensor([[1, 2, 3], [1, 2, 4]]), "word_mask": torch.ones(2, 3, dtype=torch.bool),
             "intent_labels": torch.tensor([0, 1]), "slot_labels": torch.tensor([[0, 1, 2], [0, 0, 1]])}
    assert uniform_kl(torch.zeros(2, 5)).item() == pytest.approx(0.0, abs=1e-7)
    assert uniform_kl(torch.tensor([[9.0, 0.0, 0.0]])).item() > 1.0
    grads = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        models = {name: SLUModel(SLUConfig(encoder="tiny", encoder_config=encoder, intent_labels=intents,
                                           slot_labels=["O", "B-x", "I-x"], head_hidden=8))
                  for name, intents in (("a", ["i", "j"]), ("b", ["k", "l", "m"]))}
        joint = JointSLUModel(models, other_datasets_weight=weight).train()
        out = joint(dataset="a", **batch)
        out.loss.backward()
        grads[weight] = [p.grad for n, p in joint.heads["b"].named_parameters() if n.startswith("intent_head")]
        if weight:
            assert out.loss_parts["other_datasets"] > 0
    assert all(g is None for g in grads[0.0])
    assert grads[1.0] and all(g is not None and torch.count_nonzero(g) for g in grads[1.0])


def test_benchmark_measures_how_the_joint_parser_routes_each_dataset(joint_run):
    import sys

    from conftest import REPO
    from slu_feedback.evaluation.report import evaluate_run

    sys.path.insert(0, str(REPO / "benchmarks"))
    import run as bench_run

    rows = {name: {"test": {}} for name in DOMAINS}
    for name in DOMAINS:
        evaluate_run(joint_run / name, "test")
    bench_run.add_routing(joint_run, rows)
    parser = SLUParser.from_pretrained(joint_run)
    for name in DOMAINS:
        texts = load_splits(SAMPLE)["test"].filter(lambda ex: ex["intent"] in DOMAINS[name])["text"]
        expected = 100 * sum(r["dataset"] == name for r in parser(texts)) / len(texts)
        assert rows[name]["test"]["routing_acc"] == pytest.approx(expected)


def test_joint_accumulation_restarts_each_epoch_and_ends_it_with_an_update(tiny_encoder, domain_data, tmp_path):
    """13 batches an epoch with grad_accum 4: four updates an epoch (the last of one batch), as the
    learning-rate schedule assumes, and no gradient carried into validation or the next epoch."""
    from conftest import REPO, tiny_overrides
    from slu_feedback.training.recipe import load_recipe

    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", tiny_overrides(tiny_encoder, tmp_path / "run") + [
        f"data.path=[{domain_data / 'travel'}, {domain_data / 'home'}]", "train.epochs=2", "train.grad_accum=4"])
    run = train(recipe)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["type"] == "epoch"] == [4, 8]


def test_joint_training_with_other_datasets_weight_logs_its_loss(tiny_encoder, domain_data, tmp_path):
    from conftest import REPO, tiny_overrides
    from slu_feedback.training.recipe import load_recipe

    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", tiny_overrides(tiny_encoder, tmp_path / "run") + [
        f"data.path=[{domain_data / 'travel'}, {domain_data / 'home'}]", "train.epochs=1",
        "train.other_datasets_weight=0.5"])
    run = train(recipe)
    steps = [json.loads(line) for line in (run / "metrics.jsonl").open() if '"step"' in line]
    logged = [r["loss_other_datasets"] for r in steps if r.get("type") == "step"]
    assert logged and all(v >= 0 for v in logged)
    parser = SLUParser.from_pretrained(run)
    parsed, empty = parser(["play some jazz", " "], explain=True)
    assert parsed["dataset"] in DOMAINS and empty["dataset"] is None
    assert set(empty) == set(parsed) and empty["explain"] == []  # an empty text's result has the same keys
    assert parser("", dataset="home")["dataset"] == "home"


def test_dataset_names_must_be_usable_as_run_folders(tiny_recipe, domain_data, tmp_path):
    import shutil

    from slu_feedback.training.recipe import load_recipe
    from slu_feedback.training.trainer import TrainingError, dataset_paths

    dotted = tmp_path / "home.v1.2"  # stem "home.v1": a dot
    shutil.copytree(domain_data / "home", dotted)
    with pytest.raises(TrainingError, match="cannot name a sub-directory"):
        dataset_paths(tiny_recipe(f"data.path=[{domain_data / 'travel'}, {dotted}]"))
    assert load_recipe(None, [f"data.path=[{domain_data / 'home'}]"])["data"]["path"] == str(domain_data / "home")


def test_server_parses_a_joint_run_and_takes_a_dataset(joint_run):
    from fastapi.testclient import TestClient

    from slu_feedback.inference.server import create_app

    parser = SLUParser.from_pretrained(joint_run)
    texts = ["wake me up at 7 am", "book a table for two", "play some jazz"]
    with TestClient(create_app(parser, joint_run)) as client:
        free = client.post("/parse", json={"texts": texts}).json()
        assert [r["dataset"] for r in free] == [parser(t)["dataset"] for t in texts]
        for name in DOMAINS:
            fixed = client.post("/parse", json={"texts": texts, "dataset": name}).json()
            assert [r["dataset"] for r in fixed] == [name] * 3
            assert all(r["intent"] in DOMAINS[name] for r in fixed)
            assert fixed == parser(texts, dataset=name)
        bad = client.post("/parse", json={"text": "hi", "dataset": "news"})
        assert bad.status_code == 422 and "unknown dataset 'news'" in bad.json()["error"]
        assert set(client.get("/model").json()["datasets"]) == set(DOMAINS)


def test_pipeline_loads_a_joint_run_as_the_parser_does(joint_run):
    """`pipeline("slu", model=RUN)` fails inside transformers (no config.json at a joint run's top,
    read before any code of ours); SLUPipeline.from_pretrained loads it as SLUParser does."""
    from slu_feedback.inference.pipeline import SLUPipeline

    texts = ["wake me up at 7 am", "book a table for two", "play some jazz"]
    slu, parser = SLUPipeline.from_pretrained(joint_run), SLUParser.from_pretrained(joint_run)
    assert slu(texts) == parser(texts) and slu(texts[1]) == parser(texts[1])
    home = SLUPipeline.from_pretrained(joint_run, dataset="home", top_k=2)
    assert home(texts) == SLUParser.from_pretrained(joint_run, dataset="home", top_k=2)(texts)
    assert [r["dataset"] for r in home(texts)] == ["home"] * 3
    assert home(texts[0])["dataset"] == "home"  # one string: through the pipeline's own steps, same heads
    with pytest.raises(RunError, match="no dataset 'news' in this run \\(it has travel, home\\)"):
        SLUPipeline.from_pretrained(joint_run, dataset="news")
    # the dataset named when calling answers (it was dropped: the most confident head answered)
    assert slu(texts[2], dataset="home") == parser(texts[2], dataset="home")
    assert [r["dataset"] for r in slu(texts, dataset="home")] == ["home"] * 3
    with pytest.raises(TypeError, match="not top_k .*set when it is built"):
        slu(texts[0], top_k=1)  # was ignored without a word


def test_a_joint_run_splits_each_dataset_s_text_its_own_way(joint_run):
    """A dataset trained on whitespace-split words (ATIS style) is given its text split that way,
    whichever dataset the run lists first; text without a dataset named, the first dataset's way."""
    loaded = SLUParser.from_pretrained(joint_run)
    loaded.models["home"].config.word_split = "whitespace"
    with pytest.warns(UserWarning, match="split text into words differently \\(travel: rule, home: whitespace\\)"):
        parser = SLUParser(None, loaded.tokenizer, models=loaded.models)
    text = "play st. louis blues, now"
    assert parser(text, dataset="home")["words"] == ["play", "st.", "louis", "blues,", "now"]
    assert parser(text, dataset="travel")["words"] == ["play", "st", ".", "louis", "blues", ",", "now"]
    assert parser([text, text], dataset=["home", None])[0]["words"] == ["play", "st.", "louis", "blues,", "now"]
    with pytest.raises(ValueError, match="one dataset per text; got 1 for 2 texts"):
        parser([text, text], dataset=["home"])
    with pytest.raises(TypeError, match="one text takes one dataset name"):
        parser(text, dataset=["home"])
    # the server's check for a text with nothing to parse splits it the same way (a zero-width space
    # is no token by the rule, but a word where text was split at whitespace)
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from slu_feedback.inference.server import create_app

    with TestClient(create_app(parser)) as client:
        assert client.post("/parse", json={"text": "\u200b", "dataset": "travel"}).status_code == 422
        answer = client.post("/parse", json={"text": "\u200b", "dataset": "home"})
        assert answer.status_code == 200 and answer.json()["words"] == ["\u200b"]
    # a parser loaded for one dataset names it in an empty text's result too
    assert SLUParser.from_pretrained(joint_run, dataset="home")("")["dataset"] == "home"


def test_joint_vmtl_priors_span_both_datasets(tiny_encoder, domain_data, tmp_path):
    from conftest import REPO, tiny_overrides
    from slu_feedback.training.recipe import load_recipe

    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", tiny_overrides(tiny_encoder, tmp_path / "run") + [
        f"data.path=[{domain_data / 'travel'}, {domain_data / 'home'}]", "train.epochs=1",
        "model.head=vmtl", "model.vmtl.latent_dim=8"])
    run = train(recipe)
    results = json.loads((run / "all_results.json").read_text())
    components = {"other", "standard_normal"}
    assert set(results["prior_weights"]["travel"]["intent.latent"]) == components | {"home.intent", "home.slot"}
    assert set(results["prior_weights"]["home"]["slot.weight"]) == components | {"travel.intent", "travel.slot"}
    home, _ = load_run(run / "home")  # a dataset folder reloads on its own, peers named in its config
    assert home.config.vmtl["peer_tasks"] == ["travel.intent", "travel.slot"] and home.vmtl_peers == {}
    assert SLUParser.from_pretrained(run)("set an alarm for 6 am")["dataset"] in DOMAINS
    # across_datasets: false keeps each dataset's priors to its own two tasks
    off = load_recipe(REPO / "recipes" / "quickstart.yaml", tiny_overrides(tiny_encoder, tmp_path / "off") + [
        f"data.path=[{domain_data / 'travel'}, {domain_data / 'home'}]", "train.epochs=1",
        "model.head=vmtl", "model.vmtl.latent_dim=8", "model.vmtl.across_datasets=false"])
    results = json.loads((train(off) / "all_results.json").read_text())
    assert set(results["prior_weights"]["travel"]["intent.latent"]) == components


def test_joint_vmtl_feedback_run_saves_its_weight_average(tiny_encoder, domain_data, tmp_path):
    """optim.ema_decay on a joint run (VMTL head, feedback on): each dataset's folder holds its
    view of the moving average that the checkpoint keeps (one epoch: epoch 1 is the best)."""
    from safetensors.torch import load_file

    from conftest import REPO, tiny_overrides
    from slu_feedback.models.joint import sub_state_dict
    from slu_feedback.training.recipe import load_recipe

    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", tiny_overrides(tiny_encoder, tmp_path / "run") + [
        f"data.path=[{domain_data / 'travel'}, {domain_data / 'home'}]", "train.epochs=1", "optim.ema_decay=0.8",
        "model.head=vmtl", "model.feedback.iterations=1"])
    run = train(recipe)
    (average_file,) = (run / "checkpoint").glob("custom_checkpoint_*.pkl")
    average = {k.removeprefix("module."): v for k, v in torch.load(average_file, weights_only=True).items()}
    trained = load_file(str(run / "checkpoint" / "model.safetensors"))  # the last step's weights
    for name in DOMAINS:
        saved = load_file(str(run / name / "model.safetensors"))
        expected = sub_state_dict(average, name)
        assert saved.keys() <= expected.keys() and all(torch.equal(saved[k], expected[k]) for k in saved)
        assert not torch.equal(saved["encoder.model.embeddings.word_embeddings.weight"],
                               trained["encoder.model.embeddings.word_embeddings.weight"])
    assert SLUParser.from_pretrained(run)("play some jazz")["dataset"] in DOMAINS
