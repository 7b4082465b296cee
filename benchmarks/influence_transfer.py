"""Does what MTIF finds harmful for the validation loss also harm the test loss? Writes
benchmarks/results/influence_transfer_<name>.json.

    python benchmarks/influence_transfer.py runs/bench/atis/seed1 --name atis

MTIF pruning drops the training samples whose removal it predicts lowers the *validation* loss;
on ATIS that raised validation sentence accuracy but not test (benchmarks/NOTES.md "Influence (MTIF)"). This
scores the run's training set against both splits (RUN_DIR/influence, reused when it holds
validation scores of the same scope, and RUN_DIR/influence_test) and compares them sample by
sample (an utterance's intent sample and slot sample, each summed over both target tasks):
rank correlation, how many of the `--fraction` most harmful for validation are also among the
most harmful for test, and the test-loss change MTIF predicts for dropping the validation-chosen
samples as a share of the change for dropping the test-chosen ones (1 = what helps validation
helps test as much as anything could, 0 = no better than chance on average). The test split
selects nothing here: it is only scored to measure this.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, provenance  # noqa: E402

from slu_feedback.influence.mtif import pearson, spearman  # noqa: E402
from slu_feedback.influence.report import read_scores, score_run, source_scores  # noqa: E402
from slu_feedback.influence.slu import TASKS, run_recipe  # noqa: E402


def sample_values(rows: list) -> torch.Tensor:
    """(2n,) influence of every sample (utterance i's intent sample, then its slot sample) on the
    sum of both tasks' target losses; positive = the sample helps."""
    return source_scores(rows, TASKS, TASKS, torch.float64).flatten()


def compare(valid: torch.Tensor, test: torch.Tensor, fraction: float) -> dict:
    """How well validation-targeted influence stands in for test-targeted influence."""
    k = max(1, int(round(fraction * len(valid))))
    by_valid, by_test = valid.argsort()[:k], test.argsort()[:k]  # most harmful first
    best = test[by_test].sum().item()  # predicted test-loss change of the best possible k removals
    random = k * test.mean().item()  # ... and of k removals at random, on average
    return {
        "samples": len(valid), "selected": k, "fraction": fraction,
        "spearman": spearman(valid, test), "pearson": pearson(valid, test),
        "overlap": len(set(by_valid.tolist()) & set(by_test.tolist())) / k,  # chance level: `fraction`
        "predicted_change": {  # sum of MTIF over the removed samples = predicted change of that split's loss
            "validation_loss_valid_chosen": valid[by_valid].sum().item(),
            "test_loss_valid_chosen": test[by_valid].sum().item(),
            "test_loss_test_chosen": best,
            "test_loss_random": random,
        },
        "test_gain_share": (test[by_valid].sum().item() - random) / (best - random),
    }


def markdown(name: str, result: dict) -> str:
    r, p = result["comparison"], result["comparison"]["predicted_change"]
    within = result["within_task"]
    return "\n".join([
        f"**Does MTIF's validation target stand in for test? `{name}`** ({r['samples']} training samples, "
        f"scope `{result['scope']}`)", "",
        f"- Rank correlation of each sample's influence on the validation loss and on the test loss: Spearman "
        f"{r['spearman']:.3f} (Pearson {r['pearson']:.3f}); within-task columns: intent->intent "
        f"{within['intent->intent']:.3f}, slot->slot {within['slot->slot']:.3f}.",
        f"- Of the {r['selected']} samples ({100 * r['fraction']:g} %) most harmful for validation, "
        f"{100 * r['overlap']:.1f} % are among the {r['selected']} most harmful for test (chance: {100 * r['fraction']:g} %).",
        f"- Predicted loss change from dropping them: validation {p['validation_loss_valid_chosen']:+.3e}, "
        f"test {p['test_loss_valid_chosen']:+.3e}; dropping the test-chosen set instead: {p['test_loss_test_chosen']:+.3e}; "
        f"a random set: {p['test_loss_random']:+.3e}. Share of the achievable test gain: **{r['test_gain_share']:.2f}**.",
        f"- Scoring: {result['seconds']['validation']:.0f} s (validation target"
        f"{', reused' if result['reused']['validation'] else ''}), {result['seconds']['test']:.0f} s (test target).",
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--name", help="results name (default: the run directory's name)")
    parser.add_argument("--scope", default="heads", choices=["heads", "heads+last"])
    parser.add_argument("--damping", type=float, default=0.01)
    parser.add_argument("--fraction", type=float, default=0.02, help="share of the samples compared as 'most harmful'")
    args = parser.parse_args(argv)
    run_dir, name = Path(args.run_dir), args.name or Path(args.run_dir).name

    seconds, values, reused = {}, {}, {}
    for split, folder in (("validation", run_dir / "influence"), ("test", run_dir / "influence_test")):
        summary_file = folder / "summary.json"
        previous = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        reused[split] = (previous.get("target_split", "validation") == split and previous.get("scope") == args.scope
                         and previous.get("solver", {}).get("damping") == args.damping)
        started = time.perf_counter()
        if not reused[split]:
            score_run(run_dir, folder, args.scope, damping=args.damping, target_split=split)
        seconds[split] = previous["seconds"]["total"] if reused[split] else time.perf_counter() - started
        values[split] = read_scores(folder / "influence.csv")
    valid, test = (sample_values(values[s]) for s in ("validation", "test"))
    within = {f"{t}->{t}": spearman([float(r[f"{t}->{t}"]) for r in values["validation"]],
                                    [float(r[f"{t}->{t}"]) for r in values["test"]]) for t in TASKS}
    result = {"benchmark": f"influence_transfer_{name}", **provenance(), "seeds": [run_recipe(run_dir)["seed"]],
              "run_dir": str(run_dir), "scope": args.scope, "damping": args.damping, "seconds": seconds, "reused": reused,
              "comparison": compare(valid, test, args.fraction), "within_task": within}
    result["summary_markdown"] = markdown(name, result)
    out = RESULTS / f"influence_transfer_{name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(result["summary_markdown"])
    print(f"-> {out}")


if __name__ == "__main__":
    main()
