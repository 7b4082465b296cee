"""Every shipped recipe loads, validates and builds a model config; bad recipes fail clearly."""

import warnings
from pathlib import Path

import pytest

from slu_feedback.models import SLUConfig
from slu_feedback.training.recipe import DEFAULTS, RecipeError, load_recipe, parse_override

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    names = {p.stem for p in RECIPES}
    assert {"atis", "snips", "atis_crf", "snips_crf", "atis_bilstm", "snips_bilstm", "quickstart"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_is_valid(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# slu-train recipes/") and path.name in first, "a recipe starts with its command"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a shipped recipe sets nothing that its other settings switch off
        recipe = load_recipe(path)
    model = recipe["model"]
    # the model section must be accepted by SLUConfig (catches bad decoder/gate values early)
    config = SLUConfig(encoder=model["encoder"], encoder_type=model["encoder_type"], pooling=model["pooling"],
                       slot_decoder=model["slot_decoder"], feedback=model["feedback"],
                       intent_labels=["x"], slot_labels=["O"])
    if config.feedback["iterations"]:
        from slu_feedback.models.feedback import FeedbackGate

        FeedbackGate(2, (4, 4, 4), config.feedback["gate"])
    assert recipe["recipe_name"] == path.stem


def test_unknown_key_suggests_the_closest(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  path: x\noptim:\n  lerning_rate: 1\n")
    with pytest.raises(RecipeError, match="unknown recipe key .optim.lerning_rate.; valid keys: lr"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="did you mean 'train.epochs'"):
        load_recipe(None, ["data.path=x", "train.epoch=3"])


def test_overrides_are_typed_and_nested():
    assert parse_override("optim.lr=3e-5") == {"optim": {"lr": 3e-5}}
    assert parse_override("model.feedback.gate=fixed:1") == {"model": {"feedback": {"gate": "fixed:1"}}}
    recipe = load_recipe(None, ["data.path=x", "train.epochs=3", "model.feedback.iterations=2"])
    assert recipe["train"]["epochs"] == 3 and recipe["model"]["feedback"]["iterations"] == 2
    assert recipe["model"]["feedback"]["tau"] == DEFAULTS["model"]["feedback"]["tau"]


def test_missing_data_path_and_bad_yaml(tmp_path, monkeypatch):
    with pytest.raises(RecipeError, match="data.path"):
        load_recipe(None, [])
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(RecipeError, match="invalid YAML") as error:
        load_recipe(broken)
    assert str(error.value).startswith(f"{broken}:2: invalid YAML") and "\n" not in str(error.value)
    monkeypatch.chdir(tmp_path)  # outside the repository: the error names the shipped recipe
    with pytest.raises(RecipeError, match="recipe not found: recipes/atis.yaml \\(the shipped recipe is .*recipes/atis.yaml\\)"):
        load_recipe("recipes/atis.yaml")
    (tmp_path / "mine.yaml").write_text("seed: 1\n")  # a misspelt name: the closest, the user's own first
    with pytest.raises(RecipeError, match=r"recipe not found: mine.yml; did you mean mine.yaml\?"):
        load_recipe("mine.yml")
    with pytest.raises(RecipeError, match=r"recipe not found: quickstart; did you mean .*recipes/quickstart.yaml\?"):
        load_recipe("quickstart")
    with pytest.raises(RecipeError, match=r"recipe not found: nothing-like-it.yaml$"):
        load_recipe("nothing-like-it.yaml")
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(None, ["data=3"])


@pytest.mark.parametrize("override, message", [
    ("train.epochs=ten", "'train.epochs' must be an integer, got 'ten'"),
    ("optim.lr=fast", "'optim.lr' must be a number"),
    ("data.repair_bio=maybe", "'data.repair_bio' must be true or false"),
    ("train.batch_size=-4", "'train.batch_size' must be positive"),
    ("data.train_fraction=0", r"'data.train_fraction' must be in \(0, 1\]"),
    ("optim.ema_decay=1", r"'optim.ema_decay' must be in \[0, 1\) \(0: off\)"),
    ("model.slot_decoder=crff", "must be one of softmax, crf, got 'crff'; did you mean 'crf'"),
    ("model.feedback.gate=hard", r"gumbel, soft or fixed:0 \(head input\), .*fixed:2 \(logits\); got .hard."),
    ("model.feedback.gate=fixed:3", "fixed:2 \\(logits\\); got 'fixed:3'"),  # was a traceback after loading data
    ("model.feedback.max_iterations=2.5", "must be an integer"),
    ("model.feedback.gate=fixed:x", "got 'fixed:x'"),
    ("train.patience=0", "'train.patience' must be positive"),
    ("optim.lr=nan", "must be a finite number"),
    ("model.feedback.iter_weights=[0.5, x]", r"'model.feedback.iter_weights\[1\]' must be a number"),
    ("model.feedback.iter_weights=-1", "must be >= 0"),
    # were tracebacks from PyYAML, torch's seeding, os.path or the model config
    ("optim.lr=[", r"override 'optim.lr=\[': the value is not valid YAML"),
    ("output_dir=a: b: c", "override 'output_dir=a: b: c': the value is not valid YAML"),
    ("seed=4294967296", "'seed' must be at most 4294967295"),
    ("data.path=[x, 2]", "'data.path' lists datasets as paths .*item 1 is 2"),
    ("data.max_length=2", r"'data.max_length' must be at least 3 \(\[CLS\], one word"),
    ("model.feedback.max_iterations=2", "max_iterations needs model.feedback.iterations > 0"),
])
def test_a_wrong_value_is_named_before_anything_loads(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, ["data.path=x", override])


def test_a_run_s_saved_recipe_finds_its_data_where_the_original_did(tmp_path, monkeypatch):
    from slu_feedback.data.dataset import resolve_data_path
    from slu_feedback.training.recipe import save_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml")
    assert recipe["data"]["path"] == "../data/sample"  # relative to the recipes folder
    save_recipe(recipe, tmp_path / "recipe.yaml")  # as slu-train saves it in the run folder
    monkeypatch.chdir(tmp_path)
    again = load_recipe(tmp_path / "recipe.yaml")
    assert again["recipe_dir"] == recipe["recipe_dir"]
    assert resolve_data_path(again["data"]["path"], again["recipe_dir"]) == \
        resolve_data_path(recipe["data"]["path"], recipe["recipe_dir"])


def test_feedback_round_weights_need_one_per_round():
    with pytest.raises(RecipeError, match=r"one weight >= 0 per round \(iterations \+ 1 = 3\)"):
        load_recipe(None, ["data.path=x", "model.feedback.iterations=2", "model.feedback.iter_weights=[0.5, 1]"])
    recipe = load_recipe(None, ["data.path=x", "model.feedback.iterations=2", "model.feedback.iter_weights=[0, 0.5, 1]"])
    assert recipe["model"]["feedback"]["iter_weights"] == [0.0, 0.5, 1.0]
    assert load_recipe(None, ["data.path=x", "optim.lr=0"])["optim"]["lr"] == 0.0, "lr 0 freezes the encoder"


def test_numbers_written_as_text_become_numbers(tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("data:\n  path: x\noptim:\n  lr: 1e-4\ntrain:\n  epochs: 3.0\n")  # YAML 1.1: "1e-4" is a string
    recipe = load_recipe(recipe_file, ["model.feedback.iter_weights=[0.5, 1]", "optim.gate_lr=1"])
    assert recipe["optim"]["lr"] == 1e-4 and isinstance(recipe["train"]["epochs"], int)
    assert recipe["model"]["feedback"]["iter_weights"] == [0.5, 1] and recipe["optim"]["gate_lr"] == 1.0
    assert recipe["output_dir"] is None and recipe["model"]["tokenizer"] is None


def test_a_combination_the_model_refuses_fails_with_the_recipe():
    with pytest.raises(RecipeError, match="model.head=vmtl does not support model.slot_decoder=crf"):
        load_recipe(None, ["data.path=x", "model.head=vmtl", "model.slot_decoder=crf"])


def test_settings_switched_off_by_others_are_named():
    with pytest.warns(UserWarning) as caught:
        load_recipe(None, ["data.path=x", "model.feedback.gate=soft", "model.feedback.conv_weight=0.5",
                           "model.vmtl.samples=2", "model.lstm_hidden=8"])
    messages = [str(w.message) for w in caught]
    assert messages == ["model.feedback.gate, model.feedback.conv_weight have no effect: model.feedback.iterations "
                        "is 0 (no feedback loop)", "model.vmtl.samples has no effect: model.head is deterministic",
                        "model.lstm_hidden has no effect: model.encoder_type is not bilstm"]
    with pytest.warns(UserWarning, match="train.other_datasets_weight has no effect: data.path is one dataset"):
        load_recipe(None, ["data.path=x", "train.other_datasets_weight=0.5"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same settings where they act: nothing to say
        load_recipe(None, ["data.path=[x, y]", "train.other_datasets_weight=0.5"])
        load_recipe(None, ["data.path=x", "model.feedback.iterations=2", "model.feedback.gate=soft",
                           "model.head=vmtl", "model.vmtl.samples=2", "model.encoder_type=bilstm", "model.lstm_hidden=8"])


def test_a_missing_encoder_folder_is_one_line(tiny_recipe):
    from slu_feedback.models import resolve_encoder
    from slu_feedback.training.trainer import TrainingError, train

    with pytest.raises(FileNotFoundError, match="no such folder"):
        resolve_encoder("/nonexistent/encoder")
    assert resolve_encoder("bert-base-uncased") == "bert-base-uncased"  # a Hub id is left to transformers
    with pytest.raises(TrainingError, match="model.encoder / model.tokenizer could not be loaded: encoder "
                                            "'./no/such/encoder': no such folder"):
        train(tiny_recipe("model.encoder=./no/such/encoder", "model.tokenizer=null"))


def test_print_recipe_shows_every_key_as_it_would_train_and_trains_nothing(tmp_path):
    import yaml
    from click.testing import CliRunner

    from slu_feedback.cli.train import main

    out = tmp_path / "run"
    result = CliRunner().invoke(main, [str(RECIPES[0].parent / "quickstart.yaml"), "--print-recipe",
                                       "model.feedback.iterations=2", f"output_dir={out}"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["model"]["feedback"]["iterations"] == 2 and shown["model"]["feedback"]["gate"] == "gumbel"
    assert set(shown) == set(DEFAULTS) and not out.exists()
