"""MTIF pruning benchmark (METHODS.md section 3): retrain on the training set without its most
harmful utterances, and on one without as many random utterances; both against the full set.

    python benchmarks/prune.py runs/bench/atis/seed1 --base atis --fraction 0.05 --seeds 1 2 3
    python benchmarks/prune.py runs/bench/atis/seed1 --base atis --fraction 0.05 --per-intent  # *_5pct_per_intent
    python benchmarks/prune.py runs/bench/atis/seed1 --base atis --fraction 0.01 --per-intent --methods mtif --seeds 1
    python benchmarks/prune.py runs/bench/atis/seed1 --base atis --fraction 0.02 --per-intent --unit sample  # *_samples
    python benchmarks/prune.py runs/atis_heldout --base atis_indep --fraction 0.02 --per-intent --unit sample \
        --target-split heldout    # *_heldout: RUN_DIR trained with data.train_fraction=0.9, MTIF's target the rest

RUN_DIR is a trained run of the base recipe (its training set is scored with MTIF if it has no
influence/influence.csv yet; with --target-split heldout, against the training utterances the run
did not train on, which the pruned sets then get back). Writes results/<base>_mtif_<pct>pct.json and
results/<base>_random_<pct>pct.json through benchmarks/run.py (same seeds, compared with
results/<base>.json, which must be the full-data run of the same recipe); render.py puts the three
side by side with the fraction, and picks the fraction whose MTIF pruning has the best validation
sentence accuracy. Interrupted runs continue where they stopped, like run.py.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402
from common import RESULTS  # noqa: E402

from slu_feedback.influence.report import prune_run  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a trained run of the base recipe (scored with MTIF if needed)")
    parser.add_argument("--base", required=True, help="results name of the full-data run (e.g. atis)")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--target", default="both", choices=["intent", "slot", "both"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--random-seed", type=int, default=0, help="seed of the random pruning")
    parser.add_argument("--per-intent", action="store_true", help="drop the fraction within each intent")
    parser.add_argument("--unit", default="utterance", choices=["utterance", "sample"],
                        help="drop whole utterances, or single samples (an utterance's intent or its slot labels)")
    parser.add_argument("--methods", nargs="+", default=["mtif", "random"], choices=["mtif", "random"],
                        help="which prunings to train (mtif alone to try fractions on validation)")
    parser.add_argument("--target-split", default="validation", choices=["validation", "heldout"],
                        help="MTIF's target: RUN_DIR is scored against it if not scored yet, and scores made "
                             "against another split are refused (heldout: RUN_DIR trained with "
                             "data.train_fraction < 1; the results names end in _heldout)")
    args = parser.parse_args(argv)
    if not (RESULTS / f"{args.base}.json").exists():
        parser.error(f"results/{args.base}.json (the full-data run to compare with) does not exist")

    pct = (f"{100 * args.fraction:g}pct" + ("_per_intent" if args.per_intent else "")
           + ("_samples" if args.unit == "sample" else "") + ("_heldout" if args.target_split == "heldout" else ""))
    for method in args.methods:
        random = method == "random"
        info = prune_run(args.run_dir, args.fraction, args.target, random=random, seed=args.random_seed,
                         per_intent=args.per_intent, unit=args.unit, target_split=args.target_split)
        print(f"[{method}] dropped {info['dropped']} of {info['dropped'] + info['kept']} -> {info['recipe']}")
        run.main([info["recipe"], "--seeds", *map(str, args.seeds), "--name", f"{args.base}_{method}_{pct}",
                  "--compare-to", args.base,
                  "--note", f"{args.base} trained without {info['dropped']} training {args.unit}s "
                            f"({'at random' if random else 'most harmful by MTIF on ' + args.target}; "
                            f"scored on {Path(args.run_dir).name})"])


if __name__ == "__main__":
    main()
