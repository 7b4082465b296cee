"""Train and evaluate a recipe over several seeds; write benchmarks/results/<name>.json.

    python benchmarks/run.py recipes/atis.yaml --seeds 1 2 3
    python benchmarks/run.py recipes/atis.yaml --name atis_feedback --compare-to atis model.feedback.iterations=3
    python benchmarks/run.py recipes/atis_snips_joint.yaml     # -> atis_snips_joint_atis.json, ..._snips.json

Checkpoints are selected on validation; the test split is scored once per seed at the end. The
results file is rewritten after every seed, and seeds already in it are skipped (--fresh to redo them
from scratch: it deletes their run directories under runs/bench/<name>/, or --runs-dir),
so an interrupted benchmark continues where it stopped; seeds measured earlier and not named now
stay in the file (`--seeds 4 5` adds two seeds), each with the commit it ran at. A joint recipe (data.path a list) writes one
results file per dataset, `<name>_<dataset>.json`, compared by default with `<dataset>`; a
`--compare-to` naming `{dataset}` is filled in per dataset:

    python benchmarks/run.py recipes/atis_snips_joint_vmtl.yaml --compare-to atis_snips_joint_{dataset}
"""

import argparse
import json
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, mean_std, provenance  # noqa: E402

from slu_feedback.evaluation.report import evaluate_run  # noqa: E402
from slu_feedback.inference.parser import SLUParser  # noqa: E402
from slu_feedback.models import load_run  # noqa: E402
from slu_feedback.models.joint import joint_datasets  # noqa: E402
from slu_feedback.training.recipe import load_recipe  # noqa: E402
from slu_feedback.training.trainer import train  # noqa: E402

METRICS = ("intent_acc", "slot_f1", "slot_f1_strict", "sentence_acc")
CALIBRATION = ("intent_ece", "intent_nll")  # ECE in percent (15 bins, top-1), NLL in nats
OPTIONAL = CALIBRATION + ("routing_acc",)  # summarised over the seeds that measured them


def calibration(metrics: dict) -> dict:
    """ECE (as a percentage, like the other metrics) and NLL (nats) of the intent, where measured."""
    out = {}
    if metrics.get("intent_ece") is not None:
        out["intent_ece"] = 100 * metrics["intent_ece"]
    if metrics.get("intent_nll") is not None:
        out["intent_nll"] = metrics["intent_nll"]
    return out


def throughput(parser, texts: list, batch_size: int, limit: int) -> float:
    """Utterances per second of `SLUParser` at a batch size (after one warm-up batch)."""
    texts = texts[:limit]
    parser(texts[:batch_size], batch_size=batch_size)
    start = time.perf_counter()
    parser(texts, batch_size=batch_size)
    return len(texts) / (time.perf_counter() - start)


def run_seed(recipe_path, overrides, seed: int, run_dir: Path, device: str = "auto") -> dict:
    """Train one seed; {dataset: row} ({"": row} unless the recipe is joint). Evaluation and
    inference speed run on `device` (training goes where Accelerate puts it)."""
    recipe = load_recipe(recipe_path, list(overrides) + [f"seed={seed}", f"output_dir={run_dir}"])
    resume = any((run_dir / name / "trainer_state.json").exists() for name in ("checkpoint", "checkpoint.old"))
    run_dir = train(recipe, resume=resume, overwrite=not resume)  # no checkpoint: start over
    rows = {name: score_run(run_dir / name, seed, device) for name in joint_datasets(run_dir) or [""]}
    add_routing(run_dir, rows, device)
    return rows


def add_routing(run_dir: Path, rows: dict, device: str = "auto") -> None:
    """Joint runs: `test.routing_acc`, the percentage of each dataset's test utterances that the
    joint parser, given no dataset, answers with that dataset's heads."""
    names = joint_datasets(run_dir)
    if not names:
        return
    parser = SLUParser.from_pretrained(run_dir, device)
    for name in names:
        predictions = (run_dir / name / "eval_test" / "predictions.jsonl").read_text().splitlines()
        answers = parser([json.loads(x)["text"] for x in predictions], batch_size=64)
        rows[name]["test"]["routing_acc"] = 100 * sum(a.get("dataset") == name for a in answers) / len(answers)


def score_run(run_dir: Path, seed: int, device: str = "auto") -> dict:
    results = json.loads((run_dir / "all_results.json").read_text())
    test = evaluate_run(run_dir, "test", device=device)
    parser = SLUParser.from_pretrained(run_dir, device)
    texts = [json.loads(x)["text"] for x in (Path(test["out_dir"]) / "predictions.jsonl").read_text().splitlines()]
    row = {
        "seed": seed,
        "run_dir": str(run_dir),
        "best_epoch": results["best_epoch"],
        "epochs_run": results["epochs_run"],
        "validation": {**{k: 100 * results["validation"][k] for k in METRICS}, **calibration(results["validation"])},
        "test": {**{k: 100 * test["metrics"][k] for k in METRICS}, **calibration(test["metrics"])},
        # median: one epoch slowed by another job on the shared CPU should not move the run's figure
        "train_seconds_per_epoch": statistics.median(results["train_seconds_per_epoch"]),
        "train_seconds_each_epoch": results["train_seconds_per_epoch"],
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "inference_utt_per_s": {"batch_1": throughput(parser, texts, 1, 200),
                                "batch_32": throughput(parser, texts, 32, len(texts))},
        "inference_device": str(parser.device),
        "gate_probabilities": results.get("gate_probabilities"),
    }
    if "prior_weights" in results:  # VMTL head: prior mixture weights at the best epoch
        row["prior_weights"] = results["prior_weights"]
    if "feedback" in test:
        row["feedback"] = {k: test["feedback"][k] for k in ("changed", "fixed", "broken", "mean_iterations")}
    decoding = other_decoding(run_dir, device)
    if decoding:
        row["other_decoding"] = decoding
    return row


def other_decoding(run_dir: Path, device: str = "auto") -> dict:
    """The same weights decoded with model.intent_slot_constraints off and on, on validation and
    test, all four by one code path: a paired comparison, free of the spread over training seeds.
    `intent_slot_constraints` records the run's own setting."""
    model, tokenizer = load_run(run_dir, device)
    if not model.config.slot_types_by_intent:  # trained before the slot types were recorded
        return {}
    out = {"intent_slot_constraints": model.config.intent_slot_constraints}
    for setting in ("off", "on"):
        for split in ("validation", "test"):  # into slu-eval's folders (eval_<split>[-[no-]constraints])
            report = evaluate_run(run_dir, split, model=model, tokenizer=tokenizer,
                                  intent_slot_constraints=setting == "on")
            out.setdefault(setting, {})[split] = {k: 100 * report["metrics"][k] for k in METRICS}
    return out


def summarise(rows: list) -> dict:
    def split(name):  # calibration and routing only over the seeds that measured them (older rows lack them)
        out = {k: mean_std([r[name][k] for r in rows]) for k in METRICS}
        for k in OPTIONAL:
            values = [r[name][k] for r in rows if k in r[name]]
            if values:
                out[k] = mean_std(values)
        return out

    other = {}
    if all("other_decoding" in r for r in rows):
        other = {"other_decoding": {"intent_slot_constraints": rows[0]["other_decoding"]["intent_slot_constraints"],
                                    **{setting: {s: {k: mean_std([r["other_decoding"][setting][s][k] for r in rows])
                                                     for k in METRICS} for s in ("validation", "test")}
                                       for setting in ("off", "on")}}}
    return {
        **other,
        "test": split("test"),
        "validation": split("validation"),
        "train_seconds_per_epoch": mean_std([r["train_seconds_per_epoch"] for r in rows]),
        "inference_utt_per_s": {b: mean_std([r["inference_utt_per_s"][b] for r in rows]) for b in ("batch_1", "batch_32")},
        "peak_memory_mb": max(r["peak_memory_mb"] for r in rows),
    }


def pruning_info(recipe_path) -> dict:
    """A recipe written by `slu-influence prune` sits beside its prune.json: record how its
    training set was made (fraction, MTIF or random, how many dropped) with the results."""
    path = Path(recipe_path).resolve().parent / "prune.json"
    if not path.exists():
        return {}
    info = json.loads(path.read_text())
    return {"pruning": {k: info[k] for k in ("run_dir", "target", "fraction", "random", "seed", "dropped", "kept",
                                              "negative", "per_intent", "unit", "target_split", "heldout_rejoined")
                        if k in info}}


def seeds_last(argv: list) -> list:
    """Move `--seeds N ...` to the end, so that `--seeds 1 2 3 optim.lr=2e-4` keeps the override
    (argparse's nargs="+" would read it as a seed). Overrides may then come anywhere."""
    argv = list(argv)
    if "--seeds" not in argv:
        return argv
    i = j = argv.index("--seeds")
    while j + 1 < len(argv) and argv[j + 1].isdigit():
        j += 1
    return argv[:i] + argv[j + 1:] + argv[i:j + 1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--name", help="results name (default: the recipe's file name)")
    parser.add_argument("--compare-to", help="results name of the base model this row is compared with "
                        "(joint recipes: {dataset} is replaced by each dataset's name)")
    parser.add_argument("--note", default="", help="a sentence for RESULTS.md")
    parser.add_argument("--device", default="auto",
                        help="where evaluation and the inference speed run: auto (a GPU if torch sees one), cpu, cuda")
    parser.add_argument("--results-dir", type=Path, default=RESULTS,
                        help="where the results file goes (default: benchmarks/results, what render.py reads)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench",
                        help="where each seed's run directory goes (<runs-dir>/<name>/seed<N>)")
    parser.add_argument("--fresh", action="store_true",
                        help="redo every seed: ignore the results file and delete the seeds' run directories")
    args = parser.parse_intermixed_args(seeds_last(sys.argv[1:] if argv is None else argv))

    name = args.name or Path(args.recipe).stem
    paths = load_recipe(args.recipe, args.overrides)["data"]["path"]
    datasets = [Path(str(p)).stem for p in paths] if isinstance(paths, list) and len(paths) > 1 else [""]
    outs = {d: args.results_dir / (f"{name}_{d}.json" if d else f"{name}.json") for d in datasets}
    if args.compare_to and "{dataset}" in args.compare_to and datasets == [""]:
        parser.error("--compare-to: {dataset} is for joint recipes (data.path a list)")
    try:  # each dataset's base, checked before any seed trains
        bases = {d: (args.compare_to or "{dataset}").format(dataset=d) or None for d in datasets}
    except (KeyError, IndexError, ValueError) as error:
        parser.error(f"--compare-to {args.compare_to!r}: only {{dataset}} may appear in braces ({error})")
    rows = {}
    for d, out in outs.items():
        previous = json.loads(out.read_text()) if out.exists() and not args.fresh else {}
        rows[d] = previous.get("per_seed", [])  # a measured seed is never dropped (--fresh starts over)
        if kept := sorted({r["seed"] for r in rows[d]} - set(args.seeds)):
            print(f"[{name}] keeps seeds {kept} already in {out.name}")
    for seed in args.seeds:
        if all(any(r["seed"] == seed for r in rows[d]) for d in datasets):
            print(f"[{name}] seed {seed}: already in {', '.join(o.name for o in outs.values())}, skipped")
            continue
        run_dir = args.runs_dir / name / f"seed{seed}"
        if args.fresh:  # a finished or stale run there would be resumed, whatever the recipe says now
            shutil.rmtree(run_dir, ignore_errors=True)
        by_dataset = run_seed(args.recipe, args.overrides, seed, run_dir, args.device)
        # each seed records what ran it: a row's seeds may come from several invocations and machines
        at = {k: v for k, v in provenance().items() if k in ("command", "commit", "machine", "date")}
        for d, out in outs.items():
            rows[d] = sorted([r for r in rows[d] if r["seed"] != seed] + [{**by_dataset[d], **at}], key=lambda r: r["seed"])
            result = {"recipe": out.stem, "recipe_file": str(Path(args.recipe)), "overrides": args.overrides,
                      "compare_to": bases[d],
                      "note": args.note, **provenance(),
                      **pruning_info(args.recipe),
                      **({"dataset": d, "joint_datasets": datasets} if d else {}),
                      "seeds": [r["seed"] for r in rows[d]], **summarise(rows[d]), "per_seed": rows[d]}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")
            t = result["test"]
            print(f"[{out.stem}] seeds {result['seeds']}: test intent {t['intent_acc']['mean']:.2f}  slot F1 "
                  f"{t['slot_f1']['mean']:.2f}  sentence {t['sentence_acc']['mean']:.2f}"
                  + (f"  intent ECE {t['intent_ece']['mean']:.2f}  NLL {t['intent_nll']['mean']:.4f}"
                     if "intent_ece" in t and "intent_nll" in t else "") + f" -> {out}")


if __name__ == "__main__":
    main()
