"""Evaluate a trained run on a split: metrics, per-label reports, predictions file and plots."""

import json
import math
import os
import shutil
from pathlib import Path

import yaml

from ..data.dataset import (SPLIT_NAMES, SPLITS, LabelMaps, detect_format, is_one_split, load_data, pick_split,
                            resolve_data_path, split_name)
from ..data.features import featurize, make_loader, parse_length
from ..models import SLUConfig, load_run
from ..models.run import check_run_files
from .compare import compare_predictions
from .metrics import intent_report, reliability_bins, sentence_correct, slot_report
from .plots import plot_confusion, plot_reliability, plot_steps
from .predict import evaluate_split


def run_data_path(run_dir: Path):
    """The data the run was trained on, from its resolved recipe."""
    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.exists():
        raise ValueError(f"{run_dir} has no recipe.yaml; pass the data with --data")
    recipe = yaml.safe_load(recipe_file.read_text(encoding="utf-8"))
    return recipe["data"]["path"], recipe.get("recipe_dir"), recipe["data"]["format"], recipe["data"]["max_length"]


def run_max_length(run_dir: Path, config) -> int:
    """Sub-tokens per utterance the run was trained with, for other data (`--data`): its recipe's
    `data.max_length`, else its config's (`parse_length`), so that the cut is the parser's."""
    return parse_length(config, run_data_path(run_dir)[3] if (run_dir / "recipe.yaml").exists() else None)


def data_out_dir(run_dir: Path, data: Path, split: str, one_split: bool, suffix: str = "") -> Path:
    """Other data's results folder, never the run's own eval_<split>: eval_data-<name> for a split's
    file or folder (its parent folder's name too where the name is a split's, as in other/test.jsonl),
    eval_data-<folder>-<split> for a dataset, then `settings_suffix`; numbered where that folder holds
    other data's results (`metrics.json`'s "data", the real path)."""
    named = Path(os.path.abspath(data))  # as given (a link keeps its name), absolute for its folder's name
    if one_split:
        split_file = named.stem in {name for names in SPLIT_NAMES.values() for name in names}
        base = run_dir / f"eval_data-{f'{named.parent.name}-{named.stem}' if split_file else named.stem}{suffix}"
    else:
        base = run_dir / f"eval_data-{named.name}-{split}{suffix}"
    return numbered_dir(base, "metrics.json", lambda done: done.get("data") == str(data.resolve()))


def numbered_dir(base: Path, record: str, same) -> Path:
    """`base`, or `base`-2, -3, ...: the first folder without a `record` JSON file, or whose record
    `same(record)` says is of the same source (a rerun replaces its own results, never another's)."""
    out_dir, n = base, 1
    while (out_dir / record).exists() and not same(json.loads((out_dir / record).read_text(encoding="utf-8"))):
        n += 1
        out_dir = base.with_name(f"{base.name}-{n}")
    return out_dir


def eval_settings(config, iterations=None, quantize: bool = False) -> dict:
    """The options that change what is scored, as `config` and the arguments set them: recorded in
    metrics.json, so that a results folder says what produced it."""
    fb = config.feedback
    settings = {"iterations": (fb["max_iterations"] or fb["iterations"]) if iterations is None else iterations,
                "intent_slot_constraints": config.intent_slot_constraints, "quantize": quantize}
    if config.head == "vmtl":
        settings["predict"] = config.vmtl["predict"]
    return settings


def settings_suffix(settings: dict, own: dict) -> str:
    """The results folder's suffix for settings other than the run's own (`own`), so that an ablation
    (`--iterations 0`, ...) never overwrites the default eval_<split>: -k<K>, -predict-<mode>,
    -constraints / -no-constraints, -int8; empty for the run's own settings."""
    parts = []
    if settings["iterations"] != own["iterations"]:
        parts.append(f"k{settings['iterations']}")
    if settings.get("predict") != own.get("predict"):
        parts.append(f"predict-{settings['predict']}")
    if settings["intent_slot_constraints"] != own["intent_slot_constraints"]:
        parts.append("constraints" if settings["intent_slot_constraints"] else "no-constraints")
    if settings["quantize"]:
        parts.append("int8")
    return "".join(f"-{part}" for part in parts)


def clear_stale(out_dir: Path, report: dict) -> None:
    """A folder reused (`--out`) for other settings or data, or one written before metrics.json recorded
    its settings: its comparisons (compare-*/) were made against predictions about to be replaced, so they go."""
    old = out_dir / "metrics.json"
    if old.exists():
        old = json.loads(old.read_text(encoding="utf-8"))
        if (old.get("settings"), old.get("data")) != (report["settings"], report.get("data")):
            for stale in out_dir.glob("compare-*"):
                shutil.rmtree(stale)


def evaluate_run(run_dir, split: str = "test", data=None, out_dir=None, batch_size: int = 64,
                 iterations=None, model=None, tokenizer=None, quantize: bool = False, device: str = "cpu",
                 predict=None, intent_slot_constraints=None) -> dict:
    """Score `run_dir` on `split` (on `device`, unless a loaded `model` is given); write
    metrics.json, predictions.jsonl and PNGs (intent confusion, intent reliability diagram) into
    `out_dir` (default: eval_<split>, or `data_out_dir` for other data, plus `settings_suffix`).
    `predict` (VMTL: mean | mc) and `intent_slot_constraints` override the run's own setting."""
    run_dir = Path(run_dir)
    if model is None:
        check_run_files(run_dir)  # a folder that is not a run says so before anything asks for its data
    if data:  # other data, cut where the run was trained (`run_max_length`, once the model is loaded)
        path, base_dir, fmt, max_length = data, None, "auto", None
    else:
        path, base_dir, fmt, max_length = run_data_path(run_dir)
    data_path = resolve_data_path(path, base_dir)  # where the data was found (SLU_DATA_DIR, ~ expanded)
    # before the model: bad data fails fast. Only the split scored is read (its warnings only; SNIPS's
    # 13,084 training utterances are not read for nothing; a folder of test data alone will do), and
    # read as a split to be scored: a null label is an error naming its line
    wanted = SPLITS if split_name(split) not in SPLITS else (split_name(split),)
    splits = load_data(data_path, format=fmt, splits=wanted, partial=False)
    split, raw = pick_split(splits, split)  # a split file or folder given with --data: all of it, named after itself
    if model is None:
        model, tokenizer = load_run(run_dir, device)
    config = model.config
    if predict is not None:
        if config.head != "vmtl":
            raise ValueError("--predict applies to runs with model.head=vmtl only")
        config.vmtl["predict"] = predict
    if intent_slot_constraints is not None:
        config.intent_slot_constraints = intent_slot_constraints
    settings = eval_settings(config, iterations, quantize)
    if None in raw["intent"] or None in raw["slots"]:
        raise ValueError(f"the {split} split has utterances without an intent or slot labels (null in JSONL); "
                         "only fully labelled splits can be scored")
    labels = LabelMaps(config.intent_labels, config.slot_labels)
    max_length = max_length or run_max_length(run_dir, config)
    loader = make_loader(featurize(raw, tokenizer, labels, max_length, split), batch_size, tokenizer, shuffle=False)
    feedback = config.feedback["iterations"] > 0
    metrics, pred = evaluate_split(model, loader, raw, config, keep_iterations=feedback, iterations=iterations)

    if out_dir:
        out_dir = Path(out_dir)
    else:  # the run's own settings are those saved with it (a given `model` may have been changed)
        suffix = settings_suffix(settings, eval_settings(SLUConfig.from_pretrained(run_dir)))
        one_split = is_one_split(data_path, detect_format(data_path) if fmt == "auto" else fmt)
        out_dir = data_out_dir(run_dir, data_path, split, one_split, suffix) if data \
            else run_dir / f"eval_{split}{suffix}"
    out_dir.mkdir(parents=True, exist_ok=True)
    gold_intents, gold_slots = list(raw["intent"]), list(raw["slots"])
    report = {"split": split, "n": len(raw), **({"data": str(data_path.resolve())} if data else {}),
              "settings": settings, "metrics": metrics,
              "intents": intent_report(gold_intents, pred["pred_intents"]),
              "slots": slot_report(gold_slots, pred["pred_slots"])}
    confidences = [max(p) for p in pred["intent_probs"]]
    report["reliability"] = reliability_bins(confidences, [g == p for g, p in zip(gold_intents, pred["pred_intents"])])
    if quantize:  # the same split with a dynamically int8-quantised copy: metrics and the change
        from ..inference.quantize import quantize_model

        int8_metrics, int8_pred = evaluate_split(quantize_model(model), loader, raw, config, iterations=iterations)
        report["int8"] = {"metrics": int8_metrics,
                          "change": {k: int8_metrics[k] - metrics[k] for k in metrics
                                     if k != "n" and isinstance(metrics[k], (int, float))},
                          # is the change more than noise? the same paired tests as slu-eval --compare
                          "compare": compare_predictions(frames(raw, pred), frames(raw, int8_pred))}
    clear_stale(out_dir, report)
    (out_dir / "feedback_steps.png").unlink(missing_ok=True)  # an old setting's plot, unless replotted below
    changes = [{}] * len(raw)
    if feedback:
        report["feedback"], changes = feedback_changes(pred, raw, config)
        if report["feedback"]["mean_step"]:  # none when evaluated with iterations=0: nothing to plot
            plot_steps(report["feedback"]["mean_step"], out_dir / "feedback_steps.png")
    with (out_dir / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for i, frame in enumerate(frames(raw, pred)):
            row = {"id": i, **frame, "intent_score": round(max(pred["intent_probs"][i]), 4),
                   "intent_error": frame["gold_intent"] != frame["pred_intent"],
                   "slot_errors": [j for j, (g, p) in enumerate(zip(frame["gold_slots"], frame["pred_slots"])) if g != p],
                   "iterations": pred["iterations"][i], **changes[i]}
            if config.head == "vmtl":  # predictive entropy of the intent distribution (nats)
                probs = pred["intent_probs"][i]
                row["intent_entropy"] = round(-sum(q * math.log(q) for q in probs if q > 0), 4)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    plot_confusion(gold_intents, pred["pred_intents"], config.intent_labels, out_dir / "confusion.png")
    plot_reliability(report["reliability"], metrics["intent_ece"], out_dir / "reliability.png")
    report["out_dir"] = str(out_dir)
    return report


def frames(raw, pred: dict) -> list:
    """Each utterance's gold and predicted frame and whether it is wrong: the core of a predictions.jsonl
    row, and what `compare_predictions` reads of one."""
    return [{"text": ex["text"], "gold_intent": ex["intent"], "gold_slots": ex["slots"], "pred_intent": intent,
             "pred_slots": slots, "error": not sentence_correct(ex["intent"], intent, ex["slots"], slots)}
            for ex, intent, slots in zip(raw, pred["pred_intents"], pred["pred_slots"])]


def feedback_changes(pred: dict, raw, config) -> tuple:
    """How many utterances change their frame between iteration 0 and the final iteration:
    `fixed` (wrong -> right), `broken` (right -> wrong), and the mean step size per iteration; and,
    for error analysis from predictions.jsonl, each utterance's iteration-0 frame and `feedback`:
    "fixed", "broken", "still_wrong" (wrong either way, differently) or None (unchanged); `changed`
    counts all three."""
    rows = []
    for i, example in enumerate(raw):
        slots_0 = [config.slot_labels[s] for s in pred["slots_0"][i]]
        slots_0 += ["O"] * (len(example["slots"]) - len(slots_0))
        before = (config.intent_labels[pred["intent_0"][i]], slots_0)
        after = (pred["pred_intents"][i], pred["pred_slots"][i])
        change = None
        if before != after:
            ok_before = sentence_correct(example["intent"], before[0], example["slots"], before[1])
            ok_after = sentence_correct(example["intent"], after[0], example["slots"], after[1])
            change = "fixed" if ok_after and not ok_before else "broken" if ok_before and not ok_after else "still_wrong"
        rows.append({"pred_intent_0": before[0], "pred_slots_0": before[1], "feedback": change})
    changes = [row["feedback"] for row in rows]
    iterations = pred["iterations"]
    return {"changed": len(changes) - changes.count(None), "fixed": changes.count("fixed"), "broken": changes.count("broken"),
            "mean_iterations": sum(iterations) / max(1, len(iterations)),
            "mean_step": pred.get("mean_step", {})}, rows
