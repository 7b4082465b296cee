"""Recipes: YAML files of plain values, validated against `DEFAULTS`, with `key=value` overrides.

Unknown keys are errors that suggest the closest valid key, so a typo never silently trains
with a default.
"""

import copy
import difflib
from pathlib import Path

import yaml

from ..models.config import DEFAULT_FEEDBACK, DEFAULT_VMTL

DEFAULTS = {
    "seed": 42,
    "output_dir": None,  # default: runs/<recipe name>-<timestamp> in the working directory
    "data": {
        "path": None,  # a folder or file; relative paths are tried from the cwd, the recipe, $SLU_DATA_DIR
        "format": "auto",  # auto | folder | jsonl | spans
        "repair_bio": True,  # an I- without its B- becomes B- (with a warning) instead of an error
        "train_fraction": 1.0,  # stratified by intent, seeded
        "max_length": 64,  # sub-tokens per utterance, [CLS]/[SEP] included
    },
    "model": {
        "encoder": "minilm-l6",  # short name, HF id or local path; ignored by the bilstm encoder
        "encoder_type": "hf",  # hf | bilstm
        "tokenizer": None,  # default: the encoder's (bilstm: minilm-l6's word pieces)
        "pooling": "mean",
        "head_hidden": 256,
        "dropout": 0.1,
        "slot_decoder": "softmax",  # softmax | crf
        "bio_constraints": True,  # decode only valid IOB2 sequences (no I-x without its B-x)
        "intent_loss_weight": 1.0,
        "slot_loss_weight": 1.0,
        "embedding_dim": 300,
        "lstm_hidden": 256,
        "lstm_layers": 2,
        "feedback": dict(DEFAULT_FEEDBACK),
        "head": "deterministic",  # deterministic | vmtl (Bayesian head, METHODS.md section 2)
        "vmtl": {k: v for k, v in DEFAULT_VMTL.items() if k != "peer_tasks"},  # peer_tasks: set by the trainer
        "label_names": None,  # vmtl: {label: text} overrides of the label texts (a mapping of any labels)
    },
    "optim": {
        "lr": 5e-5,  # encoder learning rate
        "head_lr": 1e-3,  # heads, CRF, feedback amplifiers
        "gate_lr": None,  # the feedback gates' logits (which infusion point); default head_lr
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
        "max_grad_norm": 1.0,
    },
    "train": {
        "epochs": 10,
        "batch_size": 32,
        "eval_batch_size": 64,
        "grad_accum": 1,
        "patience": 3,  # early stopping: epochs without a better validation sentence accuracy
        "select_metric": "sentence_acc",
        "num_workers": 0,
        "group_by_length": True,  # batches of similar length: less padding, faster CPU epochs
        "log_every": 50,
        # joint runs: weight of teaching each dataset's intent head to have no preference on the
        # other datasets' utterances (so the parser's most confident head is the right dataset's)
        "other_datasets_weight": 0.0,
    },
}


class RecipeError(ValueError):
    pass


def _validate(values: dict, defaults: dict, prefix: str = "") -> None:
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(defaults)}"
            raise RecipeError(f"unknown recipe key {name!r}{hint}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise RecipeError(f"recipe key {name!r} must be a mapping, got {value!r}")
            _validate(value, defaults[key], name + ".")


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def parse_override(text: str) -> dict:
    """`optim.lr=3e-5` -> {"optim": {"lr": 3e-05}} (values parsed as YAML)."""
    if "=" not in text:
        raise RecipeError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw else None
    if isinstance(value, str):  # YAML 1.1 reads 3e-5 as a string; numbers should be numbers
        try:
            value = float(value)
        except ValueError:
            pass
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load_recipe(path: str | None = None, overrides: list | tuple = ()) -> dict:
    """Defaults <- YAML file <- overrides, validated. Records where the recipe came from."""
    values = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe not found: {path}")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise RecipeError(f"{path}: invalid YAML: {error}") from None
        if not isinstance(values, dict):
            raise RecipeError(f"{path}: a recipe must be a mapping of keys to values")
        values.pop("recipe_dir", None)
        values.pop("recipe_name", None)
    _validate(values, DEFAULTS)
    recipe = _merge(DEFAULTS, values)
    for text in overrides:
        update = parse_override(text)
        _validate(update, DEFAULTS)
        recipe = _merge(recipe, update)
    if recipe["data"]["path"] is None:
        raise RecipeError("the recipe sets no data.path (add it to the YAML or pass data.path=...)")
    if isinstance(recipe["data"]["path"], (list, tuple)):  # several datasets: a joint model
        if not recipe["data"]["path"]:
            raise RecipeError("data.path is an empty list")
        if len(recipe["data"]["path"]) == 1:
            recipe["data"]["path"] = recipe["data"]["path"][0]
    recipe["recipe_dir"] = str(path.parent.resolve()) if path else str(Path.cwd())
    recipe["recipe_name"] = path.stem if path else "recipe"
    return recipe


def save_recipe(recipe: dict, path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
