"""Damaged run directories and checkpoints fail with a message naming what is wrong, not a traceback."""

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO, SAMPLE
from slu_feedback.cli.parse import main as parse_main
from slu_feedback.cli.train import main as train_main
from slu_feedback.models import RunError, load_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def overrides(tiny_encoder):
    return [f"model.encoder={tiny_encoder}", "train.epochs=2", "model.head_hidden=32", f"data.path={SAMPLE}",
            "optim.lr=3e-3", "optim.head_lr=1e-2"]


@pytest.fixture(scope="module")
def trained_run(overrides, tmp_path_factory):
    """One epoch of a tiny model: a complete run directory with a checkpoint, copied by each test."""
    out = tmp_path_factory.mktemp("damaged") / "run"
    result = CliRunner().invoke(train_main, [str(REPO / "recipes" / "quickstart.yaml"), *overrides,
                                             f"output_dir={out}", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    assert (out / "checkpoint" / "trainer_state.json").exists()
    return out


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def damage(path: Path, how: str) -> None:
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00\xffnot a safetensors file" * 20)
    elif how == "empty":
        path.write_bytes(b"")


def test_the_undamaged_copy_loads(run_copy):
    model, tokenizer = load_run(run_copy)
    assert model.config.intent_labels and tokenizer is not None


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_damaged_weights_name_the_run(run_copy, how):
    damage(run_copy / "model.safetensors", how)
    with pytest.raises(RunError) as info:
        load_run(run_copy)
    message = str(info.value)
    assert message.startswith(f"{run_copy}: cannot load the model")
    assert "model.safetensors is damaged or incomplete" in message, message
    assert isinstance(info.value.__cause__, Exception)


def test_missing_config_is_named(run_copy):
    (run_copy / "config.json").unlink()
    with pytest.raises(RunError, match="not a trained run, missing config.json") as info:
        load_run(run_copy)
    assert str(info.value).startswith(str(run_copy))
    assert "stopped before its first validation" in str(info.value), "recipe.yaml present: a hint is given"


def test_a_missing_tokenizer_vocabulary_is_named(run_copy):
    # transformers would build a tokenizer of a few special tokens from tokenizer_config.json alone:
    # every word [UNK], confidently wrong answers
    (run_copy / "tokenizer.json").unlink()
    for extra in run_copy.glob("vocab*"):
        extra.unlink()
    with pytest.raises(RunError, match=r"the tokenizer has \d+ tokens but the model was trained with 30522"):
        load_run(run_copy)


def test_unreadable_config_is_named(run_copy):
    (run_copy / "config.json").write_text('{"model_type": ', encoding="utf-8")
    with pytest.raises(RunError, match="cannot load the model") as info:
        load_run(run_copy)
    assert str(run_copy) in str(info.value) and "config.json" in str(info.value)


def test_parse_cli_reports_a_damaged_run_without_traceback(run_copy):
    damage(run_copy / "model.safetensors", "truncated")
    result = CliRunner().invoke(parse_main, [str(run_copy), "--text", "play jazz"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "cannot load the model" in result.output and str(run_copy) in result.output
    assert "Traceback" not in result.output


def resume(run_dir: Path, overrides):
    return CliRunner().invoke(train_main, [str(REPO / "recipes" / "quickstart.yaml"), *overrides,
                                           f"output_dir={run_dir}", "--resume"])


def test_resume_without_trainer_state_is_a_clear_error(run_copy, overrides):
    (run_copy / "checkpoint" / "trainer_state.json").unlink()
    result = resume(run_copy, overrides)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"--resume: {run_copy / 'checkpoint'} holds no complete checkpoint" in result.output
    assert "Traceback" not in result.output


def test_resume_without_any_checkpoint_is_a_clear_error(run_copy, overrides):
    shutil.rmtree(run_copy / "checkpoint")
    result = resume(run_copy, overrides)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "holds no complete checkpoint" in result.output


@pytest.mark.parametrize("name", ["trainer_state.json", "model.safetensors"])
def test_resume_from_a_damaged_checkpoint_is_a_clear_error(run_copy, overrides, name):
    damage(run_copy / "checkpoint" / name, "truncated")
    result = resume(run_copy, overrides)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "--resume: cannot load the checkpoint" in result.output and str(run_copy / "checkpoint") in result.output


def test_resume_recovers_a_save_killed_between_its_renames(run_copy, overrides):
    """save_checkpoint swaps checkpoint -> checkpoint.old, checkpoint.tmp -> checkpoint; a kill in
    between leaves only checkpoint.old, which --resume takes back."""
    (run_copy / "checkpoint").rename(run_copy / "checkpoint.old")
    result = resume(run_copy, overrides)
    assert result.exit_code == 0, result.output
    assert (run_copy / "checkpoint" / "trainer_state.json").exists() and not (run_copy / "checkpoint.old").exists()


def test_a_save_replaces_the_checkpoint_even_beside_a_leftover_old_copy(tmp_path):
    """A save killed after its swap leaves checkpoint.old behind; the next save must still work
    (os.replace cannot rename onto a non-empty folder)."""
    from slu_feedback.training.trainer import _replace_dir

    target, tmp = tmp_path / "checkpoint", tmp_path / "checkpoint.tmp"
    for folder, text in ((target, "current"), (tmp_path / "checkpoint.old", "stale"), (tmp, "new")):
        folder.mkdir()
        (folder / "state.txt").write_text(text)
    _replace_dir(tmp, target)
    assert (target / "state.txt").read_text() == "new"
    assert not tmp.exists() and not (tmp_path / "checkpoint.old").exists()


def test_an_interrupted_joint_save_leaves_every_dataset_at_the_previous_best(tmp_path):
    """The models of a joint run are all written before any is moved into place."""
    from slu_feedback.training.trainer import save_models

    class Model:
        def __init__(self, text):
            self.text = text

        def save_pretrained(self, folder, state_dict=None):
            if self.text is None:
                raise KeyboardInterrupt
            folder.mkdir(parents=True)
            (folder / "model.txt").write_text(self.text)

    class Tokenizer:
        def save_pretrained(self, folder):
            (folder / "tokenizer.txt").write_text("tok")

    class Labels:
        def to_dict(self):
            return {}

    atis, snips = tmp_path / "atis", tmp_path / "snips"
    save_models([(Model("epoch 1"), Labels(), atis, None), (Model("epoch 1"), Labels(), snips, None)], Tokenizer())
    with pytest.raises(KeyboardInterrupt):
        save_models([(Model("epoch 2"), Labels(), atis, None), (Model(None), Labels(), snips, None)], Tokenizer())
    assert (atis / "model.txt").read_text() == (snips / "model.txt").read_text() == "epoch 1"
    save_models([(Model("epoch 3"), Labels(), atis, None), (Model("epoch 3"), Labels(), snips, None)], Tokenizer())
    assert {p.name for p in atis.iterdir()} == {"model.txt", "tokenizer.txt", "label_maps.json"}
    assert (snips / "model.txt").read_text() == "epoch 3"
