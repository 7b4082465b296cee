"""The training loop: one Accelerate loop for CPU, one GPU, or many (torchrun / accelerate launch).

    slu-train recipes/atis.yaml optim.lr=1e-4           # CPU or one GPU
    accelerate launch -m slu_feedback.cli.train recipes/atis.yaml   # many GPUs / FSDP / DeepSpeed
    slu-train recipes/atis_snips_joint.yaml             # data.path is a list: one encoder, heads per dataset

Checkpoints are chosen on the validation split only; the run directory holds the best model
(`save_pretrained`), its tokenizer, the resolved recipe, per-epoch metrics and the last
`save_state` checkpoint for `--resume`.
"""

import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, GradientAccumulationPlugin, broadcast_object_list, set_seed
from tqdm.auto import tqdm
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from transformers import get_linear_schedule_with_warmup

from ..data.dataset import build_label_maps, load_splits, resolve_data_path, slot_types_by_intent, subsample
from ..data.features import featurize, make_loader
from ..data.readers import off_rule
from ..evaluation.plots import plot_training_curves, read_jsonl
from ..evaluation.predict import evaluate_split
from ..provenance import commit_at_start, run_provenance
from ..models import SLUConfig, SLUModel, encoder_config_dict, resolve_encoder
from ..models.encoders import load_word_tokenizer
from ..models.joint import JOINT_FILE, JointSLUModel, sub_state_dict
from ..models.run import readable_weights
from .recipe import save_recipe

class TrainingError(RuntimeError):
    pass


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, with the run it stopped: `run_dir`, and `epochs_kept`, the epochs its
    checkpoint holds (0: none finished; `started`: whether the folder holds a run at all)."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir, self.started = run_dir, holds_run(run_dir)
        self.epochs_kept = 0
        for folder in ("checkpoint", "checkpoint.old"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                self.epochs_kept = int(json.loads((run_dir / folder / "trainer_state.json").read_text())["epoch"])
                break


RUN_FILES = ("recipe.yaml", "metrics.jsonl", "checkpoint")  # what slu-train writes first: the folder holds a run
# what a resumed run may change: how long it goes on and how it is watched, not what it learns
RESUME_MAY_CHANGE = ("train.epochs", "train.patience", "train.log_every", "train.num_workers", "train.eval_batch_size")


def default_output_dir(recipe: dict) -> Path:
    """runs/<recipe>-<start time>, with a suffix when a run of the same second has it."""
    path = base = Path("runs") / f"{recipe['recipe_name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def holds_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in RUN_FILES)


def run_dir_problem(run_dir: Path, resume: bool, overwrite: bool) -> str | None:
    """Never train over a run by accident: a folder that holds one needs --resume (continue it) or
    --overwrite (start over); --resume needs the folder. None when training may go ahead."""
    if resume and overwrite:
        return "--resume continues a run and --overwrite deletes it: choose one"
    if resume and not run_dir.is_dir():
        return f"--resume: {run_dir} does not exist (run without --resume to start it)"
    if resume:
        return None
    if holds_run(run_dir):
        if not overwrite:
            return (f"{run_dir} already holds a run: continue it with --resume, start over in it with --overwrite, "
                    "or choose another output_dir")
        if Path.cwd().resolve().is_relative_to(run_dir.resolve()):
            return f"--overwrite would delete {run_dir}, which holds the working folder: choose another output_dir"
    elif (run_dir / "config.json").exists():  # a model folder: training would replace its weights
        return f"{run_dir} holds a config.json but no slu-train run (a model folder?): choose another output_dir"
    elif run_dir.is_dir() and any(run_dir.iterdir()):  # a data or project folder: the run would mix into it,
        # and a later --overwrite of that run would delete what was there
        return f"{run_dir} is not empty and holds no slu-train run: choose a new or empty output_dir"
    return None


def resume_problem(recipe: dict, run_dir: Path) -> str | None:
    """--resume continues a run as it was set up: the settings of this command that differ from the
    run's recipe.yaml, except RESUME_MAY_CHANGE (None when there are none)."""
    saved = run_dir / "recipe.yaml"
    if not saved.is_file():
        return None
    old, new = _flatten(yaml.safe_load(saved.read_text(encoding="utf-8")) or {}), _flatten(recipe)
    changed = [key for key in new if key in old and old[key] != new[key] and key not in RESUME_MAY_CHANGE
               and key not in ("output_dir", "recipe_dir", "recipe_name")]
    if not changed:
        return None
    return ("--resume continues the run with the settings it was trained with; this command changes "
            + ", ".join(f"{key} ({old[key]!r} -> {new[key]!r})" for key in changed)
            + f". Only {', '.join(RESUME_MAY_CHANGE)} may change; start a new run for the others")


def _flatten(values: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 1e-4}} -> {"optim.lr": 1e-4}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and key != "label_names":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def latest_run(recipe: dict) -> Path | None:
    """The newest run of this recipe under runs/ that has a checkpoint (for --resume)."""
    # <recipe>-<date>-<time>[-n] only: runs of a recipe named my-atis-lr are not runs of my-atis
    stamp = re.compile(re.escape(recipe["recipe_name"]) + r"-\d{8}-\d{6}(-\d+)?")
    runs = sorted(run for run in Path("runs").glob(f"{recipe['recipe_name']}-*/checkpoint")
                  if stamp.fullmatch(run.parent.name))
    return runs[-1].parent if runs else None


def dataset_paths(recipe: dict) -> dict:
    """{name: path}: {"": path} for one dataset; for a joint recipe (`data.path` a list) one entry
    per dataset, named after its folder or file (the run's sub-directory for that dataset)."""
    path = recipe["data"]["path"]
    if not isinstance(path, (list, tuple)):  # (load_recipe turns a one-item list into its path)
        return {"": path}
    names = [Path(str(p)).stem for p in path]
    if len(set(names)) < len(names):
        raise TrainingError(f"data.path lists datasets with the same name ({', '.join(names)}); each needs its own")
    for name in names:  # a name is a folder of the run directory and a module name
        if not name or "." in name or name in RESERVED_NAMES or name.startswith("eval_"):
            raise TrainingError(f"data.path: dataset name {name!r} (from its folder or file name) cannot name a "
                                f"sub-directory of the run; rename the folder (no dots, not {', '.join(RESERVED_NAMES)})")
    return dict(zip(names, path))


RESERVED_NAMES = ("checkpoint", "tensorboard", "influence", "pruned", "model")


def load_data(recipe: dict, path=None):
    """Load, subsample and label the recipe's data (or `path`, one of a joint recipe's datasets);
    returns (DatasetDict, LabelMaps)."""
    data_cfg = recipe["data"]
    path = resolve_data_path(data_cfg["path"] if path is None else path, recipe.get("recipe_dir"))
    data = load_splits(path, format=data_cfg["format"], repair_bio=data_cfg["repair_bio"])
    if data_cfg["train_fraction"] < 1.0:
        data["train"] = subsample(data["train"], data_cfg["train_fraction"], recipe["seed"])
    return data, build_label_maps(data["train"])


def load_tokenizer(model_cfg: dict):
    name = model_cfg["tokenizer"] or (model_cfg["encoder"] if model_cfg["encoder_type"] == "hf" else "minilm-l6")
    return load_word_tokenizer(resolve_encoder(name))


def peer_tasks(model_cfg: dict, names: list, name: str) -> list:
    """The other datasets' tasks whose posteriors join dataset `name`'s VMTL priors."""
    if model_cfg["head"] != "vmtl" or not model_cfg["vmtl"]["across_datasets"]:
        return []
    return [f"{other}.{task}" for other in names if other != name for task in ("intent", "slot")]


def build_model_config(model_cfg: dict, label_maps, tokenizer, peers: list = (), slot_types=None,
                       word_split: str = "rule", max_length: int | None = None) -> SLUConfig:
    """`slot_types`: {intent: slot types seen with it in training} (see `slot_types_by_intent`);
    `word_split`: how the training words were split (see `choose_word_splits`); `max_length`: the
    recipe's `data.max_length`, where the parser cuts utterances as training and `slu-eval` do."""
    keys = ["encoder", "encoder_type", "pooling", "head_hidden", "dropout", "slot_decoder", "bio_constraints",
            "intent_slot_constraints", "intent_loss_weight", "slot_loss_weight", "embedding_dim", "lstm_hidden",
            "lstm_layers", "feedback", "head", "vmtl", "label_names"]
    kwargs = {k: model_cfg[k] for k in keys}
    if model_cfg["intent_slot_constraints"] and not slot_types:
        raise TrainingError("model.intent_slot_constraints: no training utterance has both an intent and slot "
                            "labels, so there are no slot types per intent to allow")
    kwargs["vmtl"] = {**kwargs["vmtl"], "peer_tasks": list(peers)}
    if model_cfg["encoder_type"] == "hf":
        kwargs["encoder_config"] = encoder_config_dict(model_cfg["encoder"])
    return SLUConfig(intent_labels=label_maps.intents, slot_labels=label_maps.slots,
                     slot_types_by_intent=slot_types, vocab_size=len(tokenizer), word_split=word_split,
                     train_max_length=max_length, tokenizer_size=len(tokenizer), **kwargs)


def tau_at(progress: float, feedback: dict) -> float:
    """Gumbel temperature: exponential anneal from tau to tau_min over training."""
    tau0, tau_min = feedback["tau"], feedback["tau_min"]
    return tau0 * (tau_min / tau0) ** min(1.0, progress)


def kl_weight_at(progress: float, warmup: float) -> float:
    """VMTL KL weight: linear from 0 to 1 over the first `warmup` fraction of training."""
    return 1.0 if warmup <= 0 else min(1.0, progress / warmup)


def _replace_dir(tmp: Path, target: Path) -> None:
    """Swap a finished directory into place so an interrupted save never leaves a half-written one."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)  # a leftover of a save killed after its swap: os.replace refuses to overwrite it
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def save_models(models: list, tokenizer) -> None:
    """Write each (model, label_maps, folder, state_dict) into <folder>/model.tmp, then move the
    files into place, each replaced atomically: an interruption while writing (the slow part)
    leaves every folder of a joint run at the same previous best epoch."""
    staged = []
    for model, label_maps, folder, state_dict in models:
        tmp = folder / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        (tmp / "label_maps.json").write_text(json.dumps(label_maps.to_dict(), indent=1), encoding="utf-8")
        readable_weights(tmp)
        staged.append((tmp, folder))
    for tmp, folder in staged:
        for item in tmp.iterdir():
            os.replace(item, folder / item.name)
        tmp.rmdir()


def mixed_batches(loaders: dict):
    """Every batch of every dataset once per epoch, the datasets interleaved in a random order
    (drawn from the seeded global RNG, so the same on every process); each batch is tagged with
    its dataset for `JointSLUModel.forward`."""
    order = [name for name, loader in loaders.items() for _ in range(len(loader))]
    order = [order[i] for i in torch.randperm(len(order)).tolist()]
    iterators = {name: iter(loader) for name, loader in loaders.items()}
    for name in order:
        yield {**next(iterators[name]), "dataset": name}
    for iterator in iterators.values():  # let each prepared loader finish (Accelerate's cleanup)
        next(iterator, None)


def mean_metrics(by_dataset: dict) -> dict:
    """A joint run's validation metrics: the unweighted mean over datasets (what checkpoint selection
    sees), the total count, and each dataset's own metrics under "datasets"."""
    values = list(by_dataset.values())
    out = {k: sum(m[k] for m in values) / len(values) for k in values[0]
           if k != "n" and all(isinstance(m.get(k), (int, float)) for m in values)}
    out["n"] = sum(m.get("n", 0) for m in values)
    out["datasets"] = by_dataset
    return out


def infusion_points(gates: dict) -> dict:
    """The most probable infusion point per direction (per dataset for a joint model): where a
    Gumbel gate infuses at evaluation. A soft gate has none (it infuses everywhere, weighted)."""
    return {k: infusion_points(v) if isinstance(v, dict) else max(range(len(v)), key=v.__getitem__)
            for k, v in gates.items()}


# matrices that are not weights of a layer: the VMTL prior mixtures' logits (decay would pull each
# mixture towards uniform) and the label-role offsets (per-role biases); they get no weight decay
NO_DECAY = ("latent_beta", "weight_beta", "role_offset")


def untrained_hint(validation: dict, split, recipe: dict, epochs_run: int) -> str | None:
    """Why a finished run may be of no use, and what to change: at its best validation epoch it
    found no slot span, or its intents are no better than always guessing the commonest (seen with
    a BiLSTM on the quickstart's few hundred utterances, which learns nothing in 8 epochs)."""
    from collections import Counter

    problems = []
    if validation["slot_f1"] == 0 and any(tag != "O" for tags in split["slots"] if tags for tag in tags):
        problems.append("found no slot span (slot F1 0.00)")
    intents = Counter(i for i in split["intent"] if i is not None)
    if len(intents) > 1:
        commonest, count = intents.most_common(1)[0]
        share = count / intents.total()
        if validation["intent_acc"] <= share:
            problems.append(f"predicts intents no better than always saying {commonest} "
                            f"({100 * validation['intent_acc']:.2f} % against {100 * share:.2f} %)")
    if not problems:
        return None
    advice = (f"train longer (train.epochs, now {recipe['train']['epochs']}; {epochs_run} run) "
              "or raise optim.lr and optim.head_lr")
    if recipe["model"]["encoder_type"] == "bilstm":
        advice += ("; a BiLSTM learns its embeddings from scratch and needs far more epochs and data than a "
                   "pretrained encoder (recipes/atis_bilstm.yaml: 30 epochs on 4,478 utterances)")
    return f"the model {' and '.join(problems)} on the validation split: {advice}"


def epoch_seed(seed: int, epoch: int) -> int:
    """The RNG seed of one epoch of the run seeded `seed`: distinct for every (seed, epoch), so runs
    with neighbouring seeds share no epoch (`seed + epoch` gave seed 2's first epoch the data order
    and dropout of seed 1's second)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def param_groups(model, recipe: dict) -> list:
    """Encoder at `lr`, everything task-specific at `head_lr`, the feedback gates' logits at
    `gate_lr` (default `head_lr`); weight decay only on the weight matrices of layers (not on
    biases, norms, embeddings or `NO_DECAY`)."""
    optim = recipe["optim"]
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        encoder = name.startswith("encoder.")
        # a group of its own only when gate_lr is set (checkpoints saved without one still resume)
        gate = optim["gate_lr"] is not None and name.endswith(("slot_to_intent.beta", "intent_to_slot.beta"))
        decay = param.dim() > 1 and "embedding" not in name.lower() and not name.endswith(NO_DECAY)
        lr = optim["lr"] if encoder else optim["gate_lr"] if gate else optim["head_lr"]
        groups.setdefault((encoder, gate, decay), {"params": [], "lr": lr,
                                                   "weight_decay": optim["weight_decay"] if decay else 0.0})["params"].append(param)
    return list(groups.values())


def new_accelerator(grad_accum: int, joint: bool, unused_parameters: bool = False, **kwargs) -> Accelerator:
    # a joint batch leaves the other datasets' heads without gradient, a fixed feedback gate its
    # logits: DDP must allow that (`unused_parameters`, implied by `joint`); and a joint run's
    # batches come from several loaders, so accumulation counts steps, not loader ends
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if joint or unused_parameters else []
    accumulation = GradientAccumulationPlugin(num_steps=grad_accum, sync_with_dataloader=not joint)
    accelerator = Accelerator(gradient_accumulation_plugin=accumulation, kwargs_handlers=handlers, **kwargs)
    accelerator.register_save_state_pre_hook(copy_shared_views)
    return accelerator


def copy_shared_views(models, weights, output_dir) -> None:
    """On a GPU, cuDNN keeps an LSTM's weights as views of one flat buffer; `save_state` would take
    them for shared tensors and keep only one (the BiLSTM could not resume). Save each view as
    its own copy."""
    for state in weights:
        seen = set()
        for name, tensor in state.items():
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = (tensor.device, tensor.untyped_storage().data_ptr())
            if storage in seen:
                state[name] = tensor.clone()
            seen.add(storage)


def choose_run_dir(recipe: dict, resume: bool, overwrite: bool, accelerator) -> Path:
    """output_dir, or (--resume) the latest run of the recipe, or a fresh runs/<recipe>-<time>;
    chosen and checked once, on rank 0 (ranks on other machines may not see its disk), for every rank."""
    if recipe["output_dir"]:
        run_dir = Path(recipe["output_dir"])
    elif resume:
        run_dir = latest_run(recipe)
        if run_dir is None:
            raise TrainingError(f"--resume: no run of {recipe['recipe_name']!r} with a checkpoint under runs/")
    else:
        run_dir = default_output_dir(recipe)
    run_dir = Path(broadcast_object_list([str(run_dir)])[0])  # all ranks use rank 0's timestamped name
    problem = broadcast_object_list([run_dir_problem(run_dir, resume, overwrite) if accelerator.is_main_process else None])[0]
    if problem:
        raise TrainingError(problem)
    return run_dir


def check_cls_first(tokenizer, model_cfg: dict) -> None:
    """model.pooling=cls feeds the intent head the first sub-token: refuse a tokenizer that does not
    put its classification token there (XLNet puts it last), which would train on the first word."""
    if model_cfg["pooling"] != "cls" or model_cfg["encoder_type"] != "hf":
        return
    first_id = tokenizer("a")["input_ids"][0]
    if tokenizer.cls_token_id is None or first_id != tokenizer.cls_token_id:
        raise TrainingError(f"model.pooling=cls reads the first sub-token, but {model_cfg['encoder']}'s tokenizer starts "
                            f"with {tokenizer.convert_ids_to_tokens(first_id)!r}, not a classification token; "
                            f"use model.pooling=mean")


def choose_word_splits(parts: dict, accelerator) -> dict:
    """{dataset: "rule" | "whitespace"}, how its training words were split, which the parser will
    follow (see `off_rule`); "whitespace" is said with an example, since it changes how slu-parse
    reads punctuation ("st." stays one word)."""
    splits = {}
    for name, (data, _) in parts.items():
        off = off_rule(data["train"]["tokens"])
        splits[name] = "whitespace" if off else "rule"
        if off:
            i, word, pieces = off[0]
            accelerator.print(f"{name + ': ' if name else ''}slu-parse will split text into words at whitespace only: "
                              f"{len(off)} of {len(data['train'])} training utterances have words that the tokenisation "
                              f"rule would split (utterance {i + 1}: {word!r} -> {' '.join(map(repr, pieces))}); "
                              "see data/FORMATS.md")
    return splits


def build_models(recipe: dict, parts: dict, word_splits: dict):
    """The tokenizer and one SLUModel per dataset ({"": model} unless joint), all on one encoder
    checkpoint; `word_splits`: {dataset: how its training words were split}. An encoder or tokenizer
    that cannot be loaded (neither a folder nor reachable on the Hub, a slow tokenizer) is one line,
    not transformers' traceback."""
    names = list(parts)

    def cannot_load(error):
        first = (str(error).splitlines() or [type(error).__name__])[0]
        return TrainingError(f"model.encoder / model.tokenizer could not be loaded: {first}")

    try:  # not found locally and no Hub connection, no such model id, a slow tokenizer
        tokenizer = load_tokenizer(recipe["model"])
    except (OSError, ValueError) as error:
        raise cannot_load(error) from None
    check_cls_first(tokenizer, recipe["model"])
    try:
        encoder_path = resolve_encoder(recipe["model"]["encoder"]) if recipe["model"]["encoder_type"] == "hf" else None
        models = {name: SLUModel.from_encoder(
            build_model_config(recipe["model"], labels, tokenizer, peer_tasks(recipe["model"], names, name),
                               slot_types_by_intent(data["train"]), word_splits[name],
                               recipe["data"]["max_length"]),
            encoder_path, tokenizer=tokenizer) for name, (data, labels) in parts.items()}
    except OSError as error:
        raise cannot_load(error) from None
    return tokenizer, models


def start_run_files(recipe: dict, run_dir: Path, paths: dict) -> None:
    """A new run's recipe.yaml and empty metrics.jsonl; a joint run also gets a folder per dataset,
    each a run of its own for slu-eval / slu-parse / slu-serve."""
    save_recipe(recipe, run_dir / "recipe.yaml")
    (run_dir / "metrics.jsonl").write_text("")
    if "" not in paths:
        for name, path in paths.items():
            (run_dir / name).mkdir(exist_ok=True)
            save_recipe({**recipe, "data": {**recipe["data"], "path": path}, "output_dir": str(run_dir / name)},
                        run_dir / name / "recipe.yaml")
        (run_dir / JOINT_FILE).write_text(json.dumps({"datasets": list(paths)}, indent=1), encoding="utf-8")


def keep_resumed_settings(recipe: dict, run_dir: Path, paths: dict) -> None:
    """--resume: the run's recipe.yaml files (a joint run's per dataset too) record the
    RESUME_MAY_CHANGE values the run goes on with; the rest is as the run started (resume_problem)."""
    folders = [run_dir] + ([run_dir / name for name in paths] if "" not in paths else [])
    for file in (folder / "recipe.yaml" for folder in folders):
        if file.is_file():
            saved = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
            for key in RESUME_MAY_CHANGE:
                section, name = key.split(".")
                saved.setdefault(section, {})[name] = recipe[section][name]
            save_recipe(saved, file)


def results_epochs(run_dir: Path) -> int | None:
    """The epochs a run's all_results.json was written after (None: no readable file)."""
    try:
        return json.loads((run_dir / "all_results.json").read_text())["epochs_run"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def refuse_finished(run_dir: Path, state: dict, train_cfg: dict) -> None:
    """--resume of a run that finished (all_results.json written after its last epoch) is refused
    before anything of it is rewritten; without that file, or with one of another epoch, the last
    process died while finishing, and resuming finishes it."""
    finished = finished_problem(state, train_cfg)
    if finished and results_epochs(run_dir) == state["epoch"]:
        raise TrainingError(f"--resume: {run_dir} {finished}")


def finished_problem(state: dict, train_cfg: dict) -> str | None:
    """What --resume would have nothing to do for: a run that ran its epochs or stopped early."""
    if state["epoch"] >= train_cfg["epochs"]:
        return (f"has finished its {state['epoch']} epochs; to train on, raise train.epochs "
                f"(e.g. train.epochs={state['epoch'] + 2})")
    if state["bad_epochs"] >= train_cfg["patience"]:
        return (f"stopped early after {state['bad_epochs']} epochs without improvement (train.patience="
                f"{train_cfg['patience']}); to train on, raise train.patience")
    return None


def restore_checkpoint(accelerator, checkpoint: Path, recipe: dict) -> dict:
    """--resume: load the last checkpoint into the prepared objects; return the trainer state. The
    metrics logged after the checkpoint are forgotten: those epochs are redone."""
    previous = checkpoint.with_name("checkpoint.old")
    if not checkpoint.exists() and previous.exists() and accelerator.is_main_process:
        os.replace(previous, checkpoint)  # killed between the two renames of a save: keep the older one
    accelerator.wait_for_everyone()
    if not (checkpoint / "trainer_state.json").exists():
        raise TrainingError(f"--resume: {checkpoint} holds no complete checkpoint (a run stopped before its first "
                            f"epoch ended has nothing to continue: start it again with --overwrite)")
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        accelerator.load_state(str(checkpoint))
    except Exception as error:  # a damaged file: name the checkpoint, keep the cause
        hint = ""
        if "vmtl_prior" in str(error):  # joint VMTL runs from before priors spanned the datasets
            hint = " (a joint VMTL run started before vmtl.across_datasets: add model.vmtl.across_datasets=false)"
        elif "custom checkpoints" in str(error):  # the weight average is the one custom object
            hint = (f" (the run was started with{'out' if recipe['optim']['ema_decay'] else ''} a weight average:"
                    f" resume with optim.ema_decay={'0' if recipe['optim']['ema_decay'] else 'its value'})")
        raise TrainingError(f"--resume: cannot load the checkpoint in {checkpoint} ({type(error).__name__}: "
                            f"{error}){hint}; run without --resume to start over") from error
    run_dir = checkpoint.parent
    accelerator.print(f"resumed {run_dir} after epoch {state['epoch']} (step {state['step']})")
    if accelerator.is_main_process:
        kept = [row for row in read_jsonl(run_dir / "metrics.jsonl") if row["epoch"] <= state["epoch"]]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kept))
    return state


def metrics_logger(metrics_file: Path, accelerator):
    """log(row): appends a row to metrics.jsonl (and TensorBoard, when installed) on the main
    process; log.close() closes TensorBoard."""
    tensorboard = open_tensorboard(metrics_file.parent / "tensorboard") if accelerator.is_main_process else None

    def log(row: dict) -> None:
        if accelerator.is_main_process:
            with metrics_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            if tensorboard is not None:
                validation = row.get("validation", {})
                scalars = {**{k: v for k, v in row.items() if isinstance(v, (int, float))},
                           **{f"validation/{k}": v for k, v in validation.items() if isinstance(v, (int, float))},
                           **{f"validation/{name}/{k}": v for name, m in validation.get("datasets", {}).items()
                              for k, v in m.items() if isinstance(v, (int, float))}}
                for key, value in scalars.items():
                    if key not in ("step", "epoch"):
                        tensorboard.add_scalar(f"{row['type']}/{key}", value, row["step"])

    log.close = tensorboard.close if tensorboard is not None else (lambda: None)
    return log


def write_results(recipe: dict, run_dir: Path, paths: dict, parts: dict, state: dict) -> None:
    """all_results.json (a joint run: also one per dataset folder), the training-curve PNG, and a
    warning when the best epoch learnt nothing."""
    joint = "" not in paths
    bayes = recipe["model"]["head"] == "vmtl"
    names = list(parts)
    metrics_file = run_dir / "metrics.jsonl"
    epochs = [row for row in read_jsonl(metrics_file) if row["type"] == "epoch"]
    best = next((row for row in epochs if row["epoch"] == state["best_epoch"]), None)
    results = {"best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
               "validation": best["validation"] if best else None,
               "train_seconds_per_epoch": state["epoch_seconds"],
               "train_examples": sum(len(data["train"]) for data, _ in parts.values()),
               "gate_probabilities": state.get("gate_at_best", {}),
               "infusion_points": ({} if recipe["model"]["feedback"]["gate"] == "soft"
                                   else infusion_points(state.get("gate_at_best", {})))}
    if bayes:  # VMTL prior mixture weights (softmax(beta)) at the best epoch
        results["prior_weights"] = state.get("prior_at_best", {})
    results["provenance"] = run_provenance(
        {name: resolve_data_path(path, recipe.get("recipe_dir")) for name, path in paths.items()},
        {name: data for name, (data, _) in parts.items()})
    if joint:
        results["datasets"] = names
        for name, (data, _) in parts.items():  # each dataset's folder: its own view of the run
            own = {k: results[k].get(name, {}) for k in ("gate_probabilities", "infusion_points", "prior_weights")
                   if k in results}
            (run_dir / name / "all_results.json").write_text(json.dumps(
                {**results, **own, "validation": (best["validation"]["datasets"][name] if best else None),
                 "train_examples": len(data["train"]), "joint_run": str(run_dir),
                 "note": "train_seconds_per_epoch is the joint epoch (every dataset's batches)"}, indent=1),
                encoding="utf-8")
    (run_dir / "all_results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    plot_training_curves(metrics_file, run_dir / "training_curves.png")
    for name, (data, _) in parts.items() if best else ():
        hint = untrained_hint(best["validation"]["datasets"][name] if joint else best["validation"],
                              data["validation"], recipe, state["epoch"])
        if hint:
            warnings.warn(f"{name}: {hint}" if joint else hint)


def train(recipe: dict, resume: bool = False, detect_anomaly: bool = False, stop_after_epoch: int | None = None,
          overwrite: bool = False) -> Path:
    """Train a recipe; return the run directory. `stop_after_epoch` ends this call early (as if
    interrupted) after that epoch's checkpoint; `resume=True` continues where the last one ended;
    `overwrite=True` replaces a run already in output_dir (otherwise an error)."""
    commit_at_start()  # read now, for all_results.json at the end
    train_cfg = recipe["train"]
    paths = dataset_paths(recipe)
    joint = "" not in paths
    fixed_gate = recipe["model"]["feedback"]["gate"].startswith("fixed:")
    accelerator = new_accelerator(train_cfg["grad_accum"], joint, unused_parameters=fixed_gate)
    sharded = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
    if recipe["optim"]["ema_decay"] and accelerator.distributed_type in sharded:
        raise TrainingError(f"optim.ema_decay: the weight average needs every parameter whole on each process; "
                            f"under {accelerator.distributed_type.value} they are sharded (use DDP, or no average)")
    run_dir = choose_run_dir(recipe, resume, overwrite, accelerator)
    if resume and (problem := resume_problem(recipe, run_dir)):
        raise TrainingError(problem)
    try:  # Ctrl-C: say which run stopped and what of it is kept (slu-train's message)
        return train_in(run_dir, recipe, accelerator, resume, overwrite, detect_anomaly, stop_after_epoch)
    except KeyboardInterrupt:
        raise TrainingInterrupted(run_dir) from None


def train_in(run_dir: Path, recipe: dict, accelerator, resume: bool, overwrite: bool, detect_anomaly: bool,
             stop_after_epoch: int | None) -> Path:
    """`train` in the run folder it chose: load the data, build the models, run the epochs."""
    train_cfg = recipe["train"]
    paths = dataset_paths(recipe)
    joint = "" not in paths
    recipe = {**recipe, "output_dir": str(run_dir)}
    torch.autograd.set_detect_anomaly(detect_anomaly)

    if resume and (run_dir / "checkpoint" / "trainer_state.json").is_file():  # before the data and model load
        try:
            refuse_finished(run_dir, json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text()), train_cfg)
        except (OSError, ValueError, KeyError, TypeError):  # a damaged state: restore_checkpoint names it
            pass
    set_seed(recipe["seed"])
    parts = {name: load_data(recipe, path) for name, path in paths.items()}  # name -> (DatasetDict, LabelMaps)
    names = list(parts)
    tokenizer, models = build_models(recipe, parts, choose_word_splits(parts, accelerator))
    model = JointSLUModel(models, train_cfg["other_datasets_weight"], tokenizer) if joint else models[""]
    config = model.config  # the model settings; labels differ per dataset (models[name].config)
    if accelerator.is_main_process:  # only now: bad data or a missing encoder leaves no empty run folder
        if overwrite and holds_run(run_dir):  # and keeps the old run until then; only a run's folder goes
            shutil.rmtree(run_dir.resolve())
        run_dir.resolve().mkdir(parents=True, exist_ok=True)  # (output_dir may be a link to the folder)
    accelerator.wait_for_everyone()

    max_length = recipe["data"]["max_length"]
    train_loaders, val_loaders = [], []
    for name, (data, labels) in parts.items():
        train_loaders.append(make_loader(featurize(data["train"], tokenizer, labels, max_length,
                                                   f"{name} train" if name else "train"), train_cfg["batch_size"],
                                         tokenizer, True, train_cfg["num_workers"], train_cfg["group_by_length"]))
        val_loaders.append(make_loader(featurize(data["validation"], tokenizer, labels, max_length,
                                                 f"{name} validation" if name else "validation"),
                                       train_cfg["eval_batch_size"], tokenizer, False))

    optimizer = torch.optim.AdamW(param_groups(model, recipe))
    # per process: each loader is sharded on its own (ceil per loader)
    batches_per_epoch = sum(math.ceil(len(loader) / accelerator.num_processes) for loader in train_loaders)
    updates_per_epoch = math.ceil(batches_per_epoch / train_cfg["grad_accum"])
    total_updates = updates_per_epoch * train_cfg["epochs"]
    n_proc = accelerator.num_processes  # the prepared scheduler advances n_proc times per update (split_batches=False)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(recipe["optim"]["warmup_ratio"] * total_updates) * n_proc, total_updates * n_proc)
    model, optimizer, *loaders, scheduler = accelerator.prepare(model, optimizer, *train_loaders, *val_loaders, scheduler)
    train_loaders, val_loaders = dict(zip(names, loaders[:len(names)])), dict(zip(names, loaders[len(names):]))
    raw_model = accelerator.unwrap_model(model)
    # optim.ema_decay > 0: validate and save an exponential moving average of the weights (updated
    # after every optimizer step) instead of the last step's weights; it is part of the checkpoint.
    # Buffers are not averaged: ours are constants (position ids), which averaging would round down
    ema = None
    if recipe["optim"]["ema_decay"]:
        ema = AveragedModel(raw_model, multi_avg_fn=get_ema_multi_avg_fn(recipe["optim"]["ema_decay"]))
        accelerator.register_for_checkpointing(ema)
    evaluated = ema.module if ema else raw_model  # the weights validation scores and the run saves
    validated = ema.module if ema else model  # the same, as validation calls it (the prepared model)

    state = {"epoch": 0, "step": 0, "best": -1.0, "best_epoch": None, "bad_epochs": 0, "epoch_seconds": []}
    checkpoint = run_dir / "checkpoint"
    if resume:
        state = restore_checkpoint(accelerator, checkpoint, recipe)
        refuse_finished(run_dir, state, train_cfg)  # (a checkpoint.old taken back: not checked before)
        if accelerator.is_main_process:
            keep_resumed_settings(recipe, run_dir, paths)
    elif accelerator.is_main_process:
        start_run_files(recipe, run_dir, paths)
    metrics_file = run_dir / "metrics.jsonl"
    log = metrics_logger(metrics_file, accelerator)

    select = train_cfg["select_metric"]
    feedback = config.feedback
    bayes = config.head == "vmtl"
    for epoch in range(state["epoch"], train_cfg["epochs"]):
        if state["bad_epochs"] >= train_cfg["patience"]:
            break
        set_seed(epoch_seed(recipe["seed"], epoch))  # shuffling, dropout and Gumbel noise: a function of (seed, epoch)
        model.train()
        started, running, count = time.time(), 0.0, 0
        batches = mixed_batches(train_loaders) if joint else train_loaders[""]
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{train_cfg['epochs']}", total=batches_per_epoch,
                   disable=not accelerator.is_local_main_process)
        if joint:  # accumulation counts batches (see new_accelerator): restart the count with each epoch
            accelerator.step = 0
        for i, batch in enumerate(bar):
            if joint and i == batches_per_epoch - 1:
                accelerator.step = train_cfg["grad_accum"] - 1  # the epoch's last batch always completes an update
            raw_model.gate_tau = tau_at(state["step"] / max(1, total_updates), feedback)
            if bayes:
                raw_model.vmtl_tau = tau_at(state["step"] / max(1, total_updates), config.vmtl)
                raw_model.kl_weight = kl_weight_at(state["step"] / max(1, total_updates), config.vmtl["kl_warmup"])
            with accelerator.accumulate(model):
                out = model(**batch)
                if not torch.isfinite(out.loss):
                    raise TrainingError(
                        f"loss is {out.loss.item()} at epoch {epoch + 1}, step {state['step']}; the last good "
                        f"checkpoint is kept in {checkpoint} (try a lower optim.lr, or --detect-anomaly)")
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), recipe["optim"]["max_grad_norm"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                state["step"] += 1
                if ema:
                    ema.update_parameters(raw_model)
            running, count = running + out.loss.item(), count + 1
            bar.set_postfix(loss=f"{running / count:.4f}")
            if state["step"] % train_cfg["log_every"] == 0 and accelerator.sync_gradients:
                log({"type": "step", "epoch": epoch + 1, "step": state["step"], "loss": out.loss.item(),
                     "lr": scheduler.get_last_lr()[0], "tau": raw_model.gate_tau,
                     "gate": raw_model.gate_probabilities(), **{f"loss_{k}": v for k, v in out.loss_parts.items()},
                     **({"vmtl_tau": raw_model.vmtl_tau, "kl_weight": raw_model.kl_weight,
                         "prior": raw_model.prior_probabilities()} if bayes else {})})
        epoch_seconds = time.time() - started
        # every process's mean loss, averaged (the progress bar shows this process's own)
        train_loss = accelerator.reduce(torch.tensor(running / max(1, count), device=accelerator.device), "mean").item()
        by_dataset = {name: evaluate_split(validated, val_loaders[name], parts[name][0]["validation"], models[name].config,
                                           accelerator, dataset=name or None)[0] for name in names}
        metrics = mean_metrics(by_dataset) if joint else by_dataset[""]
        state["epoch"] = epoch + 1
        state["epoch_seconds"].append(epoch_seconds)
        improved = metrics[select] > state["best"]
        if improved:
            state.update(best=metrics[select], best_epoch=epoch + 1, bad_epochs=0,
                         gate_at_best=evaluated.gate_probabilities())
            if bayes:
                state["prior_at_best"] = evaluated.prior_probabilities()
            # on every rank: gathers FSDP/DeepSpeed shards (the average, DDP or one process only, is whole)
            state_dict = ema.module.state_dict() if ema else accelerator.get_state_dict(model)
            if accelerator.is_main_process:
                save_models([(models[name], labels, run_dir / name, sub_state_dict(state_dict, name) if joint
                              else state_dict) for name, (_, labels) in parts.items()], tokenizer)
        else:
            state["bad_epochs"] += 1
        log({"type": "epoch", "epoch": epoch + 1, "step": state["step"], "train_loss": train_loss,
             "seconds": epoch_seconds, "validation": metrics, "best": improved, "gate": evaluated.gate_probabilities(),
             **({"prior": evaluated.prior_probabilities()} if bayes else {})})
        accelerator.print(
            f"epoch {epoch + 1}: loss {train_loss:.4f}  validation intent {100 * metrics['intent_acc']:.2f}"
            f"  slot F1 {100 * metrics['slot_f1']:.2f}  sentence {100 * metrics['sentence_acc']:.2f}"
            + "".join(f"  [{name}: sentence {100 * m['sentence_acc']:.2f}]" for name, m in by_dataset.items() if joint)
            + f"{'  (best)' if improved else ''}  [{epoch_seconds:.0f}s]")
        save_checkpoint(accelerator, checkpoint, state)
        if stop_after_epoch is not None and state["epoch"] >= stop_after_epoch:
            break

    if accelerator.is_main_process:
        write_results(recipe, run_dir, paths, parts, state)
    log.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run_dir


def open_tensorboard(log_dir: Path):
    """A TensorBoard writer when tensorboard is installed (`pip install -e .[tensorboard]`), else None."""
    if importlib.util.find_spec("tensorboard") is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir))


def save_checkpoint(accelerator, checkpoint: Path, state: dict) -> None:
    """`save_state` into a temporary folder, then swap it in (a kill mid-save keeps the old one)."""
    tmp = checkpoint.with_name("checkpoint.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    # every rank writes its own random_states_<rank>.pkl: all must be done before the folder moves
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
        readable_weights(tmp)
        _replace_dir(tmp, checkpoint)
    accelerator.wait_for_everyone()
