"""Recipes: YAML files of plain values, validated against `DEFAULTS`, with `key=value` overrides.

Unknown keys are errors that suggest the closest valid key, so a typo never silently trains
with a default; a value of the wrong type or outside its choices is an error naming the key,
raised before any data or model is loaded.
"""

import copy
import difflib
import math
import os
import re
import warnings
from pathlib import Path

import yaml

from ..data.readers import FORMATS
from ..models.config import DEFAULT_FEEDBACK, DEFAULT_VMTL, HEADS
from ..models.feedback import INFUSION_POINTS

# the recipes/ folder of a source checkout (editable install); absent in an installed wheel
SHIPPED_RECIPES = Path(__file__).resolve().parents[2] / "recipes"

BILSTM_KEYS = ("embedding_dim", "lstm_hidden", "lstm_layers")  # model keys only the bilstm encoder reads

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
        "intent_slot_constraints": False,  # decode only slot types seen with the predicted intent in training
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
        "ema_decay": 0.0,  # > 0: validate and save an exponential moving average of the weights (e.g. 0.998)
    },
    "train": {
        "epochs": 10,
        "batch_size": 32,
        "eval_batch_size": 64,
        "grad_accum": 1,
        "patience": 3,  # early stopping: epochs without a better validation select_metric
        "select_metric": "sentence_acc",  # checkpoint selection on validation: sentence_acc | intent_acc | slot_f1 | slot_f1_strict
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


# Keys whose values are one of a few words (the rest of the checking is by the default's type).
CHOICES = {
    "data.format": ("auto", *FORMATS),
    "model.encoder_type": ("hf", "bilstm"),
    "model.pooling": ("mean", "cls"),
    "model.slot_decoder": ("softmax", "crf"),
    "model.head": HEADS,
    "model.feedback.slot_summary": ("mean", "mean+max"),
    "model.vmtl.prior": ("single", "mixture"),
    "model.vmtl.predict": ("mc", "mean"),
    "train.select_metric": ("sentence_acc", "intent_acc", "slot_f1", "slot_f1_strict"),
}
# Keys whose default is None (or a number that may also be a list) and what they accept instead.
OPTIONAL = {
    "output_dir": (str,), "data.path": (str, list), "model.tokenizer": (str,), "optim.gate_lr": (float,),
    "model.feedback.max_iterations": (int,), "model.label_names": (dict,),
    "model.feedback.iter_weights": (float, list),
}
POSITIVE = ("data.max_length", "model.head_hidden", "model.embedding_dim", "model.lstm_hidden",
            "model.lstm_layers", "model.vmtl.latent_dim", "model.vmtl.samples", "model.vmtl.predict_samples",
            "train.epochs", "train.batch_size", "train.patience",
            "train.eval_batch_size", "train.grad_accum", "train.log_every", "model.feedback.tau",
            "model.feedback.tau_min", "model.vmtl.tau", "model.vmtl.tau_min")
NON_NEGATIVE = ("seed", "optim.lr", "optim.head_lr", "optim.gate_lr", "model.feedback.max_iterations",  # lr 0: frozen
                "model.feedback.iterations", "model.feedback.iter_weights", "model.feedback.conv_weight", "optim.weight_decay",
                "optim.max_grad_norm", "train.num_workers", "train.other_datasets_weight",
                "model.vmtl.beta_z", "model.vmtl.beta_w", "model.intent_loss_weight", "model.slot_loss_weight",
                "model.feedback.eps")
UNIT_INTERVAL = ("data.train_fraction", "model.dropout", "optim.warmup_ratio", "model.vmtl.kl_warmup",
                 "optim.ema_decay")
# Bounds beyond the sign: (bound, why)
MINIMUM = {"data.max_length": (3, "[CLS], one word's first sub-token and [SEP]")}
MAXIMUM = {"seed": (2**32 - 1, "the largest seed torch and numpy take")}
# Keys of UNIT_INTERVAL without one end: (the value left out, how the range reads in an error)
OPEN_END = {"data.train_fraction": (0, "(0, 1]"), "optim.ema_decay": (1, "[0, 1) (0: off)")}


def _typed(name: str, value, kind):
    """`value` as `kind` (bool, int, float, str, list or dict), or a RecipeError naming the key.
    Numbers written as text ("1e-4", which YAML 1.1 reads as a string) become numbers."""
    if kind is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is float and isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"recipe key {name!r} must be a finite number, got {value!r}")
    if isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool)):
        return value
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping"}
    raise RecipeError(f"recipe key {name!r} must be {words[kind]}, got {value!r}")


def _check_values(recipe: dict, defaults: dict = DEFAULTS, prefix: str = "") -> None:
    """Type, choice and range of every value (in place: numeric text becomes a number)."""
    for key, default in defaults.items():
        name, value = f"{prefix}{key}", recipe[key]
        if isinstance(default, dict):
            _check_values(value, default, name + ".")
            continue
        if value is None and (default is None or name in OPTIONAL):
            continue
        kinds = OPTIONAL.get(name, (type(default),))
        for kind in kinds:
            try:
                value = _typed(name, value, kind)
                break
            except RecipeError:
                if kind is kinds[-1]:
                    if len(kinds) == 1:
                        raise
                    raise RecipeError(f"recipe key {name!r} must be one of: "
                                      f"{', '.join(k.__name__ for k in kinds)}, got {value!r}") from None
        if name == "model.feedback.gate" and value not in ("gumbel", "soft") and not (
                re.fullmatch(r"fixed:\d+", value) and int(value[6:]) < len(INFUSION_POINTS)):
            points = ", ".join(f"fixed:{m} ({where})" for m, where in enumerate(INFUSION_POINTS))
            raise RecipeError(f"recipe key {name!r} must be gumbel, soft or {points}; got {value!r}")
        if name == "model.feedback.iter_weights" and isinstance(value, list):
            value = [_typed(f"{name}[{i}]", w, float) for i, w in enumerate(value)]
            rounds = recipe["iterations"] + 1  # (this loop sees model.feedback as `recipe`)
            if any(w < 0 for w in value) or (recipe["iterations"] and len(value) != rounds):
                raise RecipeError(f"recipe key {name!r} must be one weight >= 0 per round "
                                  f"(iterations + 1 = {rounds}), got {value!r}")
        if name in CHOICES and value not in CHOICES[name]:
            close = difflib.get_close_matches(str(value), CHOICES[name], n=1)
            raise RecipeError(f"recipe key {name!r} must be one of {', '.join(CHOICES[name])}, got {value!r}"
                              + (f"; did you mean {close[0]!r}?" if close else ""))
        if name == "data.path" and isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, str) or not item:
                    raise RecipeError(f"recipe key 'data.path' lists datasets as paths (non-empty strings); "
                                      f"item {i} is {item!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if name in MINIMUM and value < MINIMUM[name][0]:
                raise RecipeError(f"recipe key {name!r} must be at least {MINIMUM[name][0]} ({MINIMUM[name][1]}), got {value!r}")
            if name in MAXIMUM and value > MAXIMUM[name][0]:
                raise RecipeError(f"recipe key {name!r} must be at most {MAXIMUM[name][0]} ({MAXIMUM[name][1]}), got {value!r}")
            if name in POSITIVE and value <= 0 or name in NON_NEGATIVE and value < 0:
                raise RecipeError(f"recipe key {name!r} must be {'positive' if name in POSITIVE else '>= 0'}, "
                                  f"got {value!r}")
            if name in UNIT_INTERVAL and not 0 <= value <= 1 or name in OPEN_END and value == OPEN_END[name][0]:
                interval = OPEN_END[name][1] if name in OPEN_END else "[0, 1]"
                raise RecipeError(f"recipe key {name!r} must be in {interval}, got {value!r}")
        recipe[key] = value


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
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError as error:
        what = " ".join(str(x) for x in (getattr(error, "context", None), getattr(error, "problem", None)) if x)
        raise RecipeError(f"override {text!r}: the value is not valid YAML ({what or error}); "
                          f"quote it as text, e.g. {key}='\"{raw}\"'") from None
    if isinstance(value, str):  # YAML 1.1 reads 3e-5 as a string; numbers should be numbers
        try:
            value = float(value)
        except ValueError:
            pass
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def recipe_hint(path: Path) -> str:
    """For a recipe path that is no file: the shipped recipe of that name, or the closest recipe
    names beside it or shipped ("quickstart", "recipes/quickstart.yml")."""
    shipped = SHIPPED_RECIPES / path.name
    if not path.is_absolute() and shipped.is_file():
        return f" (the shipped recipe is {shipped})"
    folders = [SHIPPED_RECIPES] + ([path.parent] if path.parent.is_dir() else [])  # the user's own win a tie
    names = {p.name: p for folder in folders for p in sorted(folder.glob("*.y*ml"))}
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6) or \
        difflib.get_close_matches(path.stem, [Path(n).stem for n in names], n=3, cutoff=0.6)
    found = [names.get(n) or names.get(n + ".yaml") or names.get(n + ".yml") for n in close]
    shown = [os.path.relpath(p) if not os.path.relpath(p).startswith("..") else str(p) for p in found]
    return f"; did you mean {' or '.join(shown)}?" if found else ""


def load_recipe(path: str | None = None, overrides: list | tuple = ()) -> dict:
    """Defaults <- YAML file <- overrides, validated. Records where the recipe came from."""
    values, stored_dir = {}, None
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe not found: {path}{recipe_hint(path)}")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:  # one line: file:line: what PyYAML says, without its excerpt
            mark = getattr(error, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            what = " ".join(str(x) for x in (getattr(error, "context", None), getattr(error, "problem", None)) if x)
            raise RecipeError(f"{where}: invalid YAML: {what or error}") from None
        if not isinstance(values, dict):
            raise RecipeError(f"{path}: a recipe must be a mapping of keys to values")
        # a run's saved recipe.yaml records the folder of the recipe it was trained from: its relative
        # data.path is resolved from there (not from the run folder), so the file can be trained again
        stored_dir = values.pop("recipe_dir", None)
        values.pop("recipe_name", None)
    _validate(values, DEFAULTS)
    recipe = _merge(DEFAULTS, values)
    for text in overrides:
        update = parse_override(text)
        _validate(update, DEFAULTS)
        recipe = _merge(recipe, update)
    _check_values(recipe)
    if recipe["model"]["head"] == "vmtl" and recipe["model"]["slot_decoder"] == "crf":  # before any loading
        raise RecipeError("model.head=vmtl does not support model.slot_decoder=crf (the Monte Carlo loss needs "
                          "per-word softmax outputs); use model.slot_decoder=softmax")
    feedback = recipe["model"]["feedback"]
    if feedback["max_iterations"] and not feedback["iterations"]:
        raise RecipeError("model.feedback.max_iterations needs model.feedback.iterations > 0: a model trained "
                          "without feedback has no loop to iterate")
    for message in unused_settings(recipe["model"]):
        warnings.warn(message)
    if recipe["data"]["path"] is None:
        raise RecipeError("the recipe sets no data.path (add it to the YAML or pass data.path=...)")
    if isinstance(recipe["data"]["path"], (list, tuple)):  # several datasets: a joint model
        if not recipe["data"]["path"]:
            raise RecipeError("data.path is an empty list")
        if len(recipe["data"]["path"]) == 1:
            recipe["data"]["path"] = recipe["data"]["path"][0]
    if not isinstance(recipe["data"]["path"], (list, tuple)) and recipe["train"]["other_datasets_weight"]:
        warnings.warn("train.other_datasets_weight has no effect: data.path is one dataset (it weighs a joint "
                      "run's other datasets' utterances)")
    if path is not None and isinstance(stored_dir, str) and Path(stored_dir).is_dir():
        recipe["recipe_dir"] = stored_dir
    else:
        recipe["recipe_dir"] = str(path.parent.resolve()) if path else str(Path.cwd())
    recipe["recipe_name"] = path.stem if path else "recipe"
    return recipe


def unused_settings(model: dict) -> list:
    """Messages for settings that the model's other settings switch off (an ablation from the
    command line, e.g. model.feedback.gate=soft while feedback.iterations is 0, would otherwise
    train the plain model without a word)."""
    groups = [("feedback", model["feedback"]["iterations"] == 0, DEFAULTS["model"]["feedback"],
               "model.feedback.iterations is 0 (no feedback loop)"),
              ("vmtl", model["head"] != "vmtl", DEFAULTS["model"]["vmtl"], f"model.head is {model['head']}"),
              ("", model["encoder_type"] != "bilstm", {k: DEFAULTS["model"][k] for k in BILSTM_KEYS},
               "model.encoder_type is not bilstm")]
    messages = []
    for group, off, defaults, why in groups:
        values = model[group] if group else model
        changed = [f"model.{group + '.' if group else ''}{k}" for k, v in defaults.items()
                   if k != "iterations" and values[k] != v]
        if off and changed:
            messages.append(f"{', '.join(changed)} {'has' if len(changed) == 1 else 'have'} no effect: {why}")
    return messages


def save_recipe(recipe: dict, path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
