"""MTIF pruning inside MTIF's scope: refit the heads on the fixed encoder without the most harmful
training samples, against as many random ones and against the full set. Writes
benchmarks/results/refit_<base>.json.

    python benchmarks/refit.py recipes/atis.yaml --base atis --seeds 1 2 3 --fractions 0.01 0.02 0.05

benchmarks/prune.py retrains encoder and heads from the pretrained weights on the pruned set; MTIF
estimates something narrower, the change of the validation losses when the heads on the fixed
encoder are refitted (scope `heads`). This applies the pruning where the estimate holds
(`slu_feedback.influence.refit`): for each seed's run of the recipe (runs/bench/<base>/seed<N>,
trained here as benchmarks/run.py trains it when missing), the heads are fitted to convergence on
the full training set (`full`), MTIF is scored there, and the heads are refitted without the
`--fraction` of samples MTIF ranks most harmful (`mtif`) or as many random ones (`random`), the
same share of each intent (--per-intent, the default) and never the last example of a label. Every
variant is evaluated on validation and test. The fraction is chosen on the mean validation
sentence accuracy of the MTIF refits (with the full refit as 0 %); test reports. Each variant's
mean task losses on validation and test are recorded too (MTIF's own quantity: does a pruning that
lowers the validation loss lower the test loss?). Seeds already in the results file are skipped, so
an interrupted run continues; `--losses-only` adds the losses to rows written before they were
recorded, from the saved refits.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, mean_std, provenance  # noqa: E402

from slu_feedback.evaluation.report import evaluate_run  # noqa: E402
from slu_feedback.influence.refit import Refitter  # noqa: E402
from slu_feedback.influence.slu import TASKS, split_losses  # noqa: E402
from slu_feedback.training.recipe import load_recipe  # noqa: E402
from slu_feedback.training.trainer import train  # noqa: E402

METRICS = ("intent_acc", "slot_f1", "sentence_acc")


def scores(run_dir: Path, out: Path) -> dict:
    """Validation and test metrics of a run (percent)."""
    return {split: {k: 100 * evaluate_run(run_dir, split, out_dir=out / f"eval_{split}")["metrics"][k] for k in METRICS}
            for split in ("validation", "test")}


def add_losses(row: dict) -> dict:
    """Every variant's mean task losses on validation and test (the heads as trained are the run itself)."""
    run_dir = Path(row["run_dir"])
    dirs = [run_dir if name == "trained" else run_dir / "refit" / name for name in row["variants"]]
    for name, losses in zip(row["variants"], split_losses(dirs, ("validation", "test"))):
        row["variants"][name]["loss"] = {split: dict(zip(TASKS, values)) for split, values in losses.items()}
    return row


def run_seed(recipe: str, overrides: list, seed: int, run_dir: Path, fractions: list, per_intent: bool,
             damping: float, max_iter: int) -> dict:
    if not (run_dir / "model.safetensors").exists():  # trained as benchmarks/run.py trains it
        resume = any((run_dir / name / "trainer_state.json").exists() for name in ("checkpoint", "checkpoint.old"))
        train(load_recipe(recipe, list(overrides) + [f"seed={seed}", f"output_dir={run_dir}"]), resume=resume, overwrite=not resume)
    started = time.perf_counter()
    refitter = Refitter(run_dir, damping, max_iter=max_iter)
    refitter.write_scores(run_dir / "refit" / "influence")
    row = {"seed": seed, "run_dir": str(run_dir), "seconds": dict(refitter.seconds),
           "variants": {"trained": scores(run_dir, run_dir / "refit" / "trained")}}
    plan = [("full", 0.0, False)] + [(f"{method}_{100 * f:g}pct", f, method == "random")
                                     for f in fractions for method in ("mtif", "random")]
    for name, fraction, random in plan:
        drop = refitter.select(fraction, "both", random, seed=seed, per_intent=per_intent, unit="sample")
        w, report = refitter.refit(drop)
        out = refitter.save(w, run_dir / "refit" / name, {**report, "fraction": fraction, "random": random})
        row["variants"][name] = {**scores(out, out), "fraction": fraction, "refit": report}
        print(f"[seed {seed}] {name}: dropped {len(drop)}, validation sentence "
              f"{row['variants'][name]['validation']['sentence_acc']:.2f}, test {row['variants'][name]['test']['sentence_acc']:.2f}",
              flush=True)
    row["seconds"]["total"] = time.perf_counter() - started
    return add_losses(row)


def summarise(rows: list, fractions: list) -> dict:
    names = list(rows[0]["variants"])
    summary = {name: {split: {k: mean_std([r["variants"][name][split][k] for r in rows]) for k in METRICS}
                      for split in ("validation", "test")} for name in names}
    candidates = {0.0: "full", **{f: f"mtif_{100 * f:g}pct" for f in fractions}}
    chosen = max(candidates, key=lambda f: summary[candidates[f]]["validation"]["sentence_acc"]["mean"])
    for name in names:
        if all("loss" in r["variants"][name] for r in rows):  # summed over the tasks, change from the full refit
            for split in ("validation", "test"):
                change = [sum(r["variants"][name]["loss"][split].values()) - sum(r["variants"]["full"]["loss"][split].values())
                          for r in rows]
                summary[name][split]["loss_change"] = mean_std(change)
    return {"variants": summary, "chosen_fraction": chosen,
            "validation_sentence_by_fraction": {f"{100 * f:g}": summary[n]["validation"]["sentence_acc"]["mean"]
                                                for f, n in candidates.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="the base recipe (its runs are runs/bench/<base>/seed<N>)")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides (as given to benchmarks/run.py)")
    parser.add_argument("--base", required=True, help="results name of the base recipe, e.g. atis")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.02, 0.05])
    parser.add_argument("--whole-set", action="store_true", help="rank over the whole set, not within each intent")
    parser.add_argument("--damping", type=float, default=0.01)
    parser.add_argument("--max-iter", type=int, default=500, help="L-BFGS iterations per fit")
    parser.add_argument("--losses-only", action="store_true",
                        help="add the validation and test losses to the file's rows that lack them, from the saved refits")
    args = parser.parse_intermixed_args(argv)

    out = RESULTS / f"refit_{args.base}.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    if args.losses_only:
        rows = [r if all("loss" in v for v in r["variants"].values()) else add_losses(r) for r in previous["per_seed"]]
        fractions = previous["settings"]["fractions"]
        out.write_text(json.dumps({**previous, **summarise(rows, fractions), "per_seed": rows,
                                   "losses_added_by": provenance()}, indent=1) + "\n")
        print(f"-> {out} (losses of seeds {[r['seed'] for r in rows]})")
        return
    rows = [r for r in previous.get("per_seed", []) if r["seed"] in args.seeds]
    for seed in args.seeds:
        if any(r["seed"] == seed for r in rows):
            print(f"seed {seed}: already in {out.name}, skipped")
            continue
        run_dir = ROOT / "runs" / "bench" / args.base / f"seed{seed}"
        rows = sorted(rows + [run_seed(args.recipe, args.overrides, seed, run_dir, args.fractions, not args.whole_set, args.damping,
                                       args.max_iter)], key=lambda r: r["seed"])
        result = {"benchmark": f"refit_{args.base}", "base": args.base, "recipe_file": args.recipe, "overrides": args.overrides,
                  **provenance(),
                  "seeds": [r["seed"] for r in rows],
                  "settings": {"fractions": args.fractions, "per_intent": not args.whole_set, "unit": "sample",
                               "target": "both", "scope": "heads", "damping": args.damping, "max_iter": args.max_iter},
                  **summarise(rows, args.fractions), "per_seed": rows}
        RESULTS.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"-> {out} (seeds {result['seeds']}, chosen fraction {100 * result['chosen_fraction']:g} %)")


if __name__ == "__main__":
    main()
