"""Time MTIF scoring of a trained run's full training set and check it against retraining;
write benchmarks/results/influence_<name>.json.

    python benchmarks/influence.py runs/bench/atis/seed1 --name atis
    python benchmarks/influence.py runs/bench/atis_feedback/seed1 --name atis_feedback --scope heads --solver cg

`score` runs on the whole training set (influence.csv, summary.json, histogram.png in
RUN_DIR/influence unless --influence-dir); `validate` leaves out --n utterances' samples one at
a time and retrains the scope on --subsets random halves (validate.json, validate.png).
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, provenance  # noqa: E402

from slu_feedback.influence.report import score_run, validate_run  # noqa: E402


def markdown(name: str, summary: dict, check: dict, seconds: dict) -> str:
    r = summary["relatedness_mean"]
    c = check["correlation"]
    lines = [
        f"**MTIF on `{name}`** ({summary['n_train']} training utterances, scope `{summary['scope']}`, "
        f"{summary['n_params']} parameters, solver `{summary['solver']['solver']}`, damping {summary['solver']['damping']})",
        "",
        "| source samples \\ target task | intent | slot |",
        "|---|---|---|",
        *(f"| {src} | {r[src]['intent']:.3e} | {r[src]['slot']:.3e} |" for src in ("intent", "slot")),
        "",
        f"Scoring the full training set: {seconds['score']:.1f} s (features {summary['seconds']['cache_features']:.1f} s, "
        f"solve {summary['seconds']['solve']:.1f} s, per-example gradients {summary['seconds']['per_example']:.1f} s).",
        "",
        f"Leave-one-out on {len(check['loo']) // 2} utterances (each sample separately; {seconds['validate']:.0f} s): "
        f"within-task Pearson {_f(c['within']['pearson'])} / Spearman {_f(c['within']['spearman'])}, "
        f"between-task Pearson {_f(c['between']['pearson'])} / Spearman {_f(c['between']['spearman'])}.",
    ]
    if "datamodel" in check:
        d = check["datamodel"]
        lines.append(f"Linear datamodeling score ({d['subsets']} random {int(100 * d['fraction'])}% subsets): "
                     f"intent {_f(d['intent']['spearman'])}, slot {_f(d['slot']['spearman'])}.")
    return "\n".join(lines)


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--name", help="results name (default: the run directory's name)")
    parser.add_argument("--scope", default="heads", choices=["heads", "heads+last"])
    parser.add_argument("--solver", default="auto", choices=["auto", "explicit", "cg", "lissa"])
    parser.add_argument("--damping", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n", type=int, default=40, help="utterances in the leave-one-out check")
    parser.add_argument("--subsets", type=int, default=20, help="random 50%% subsets for the datamodeling score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cg-iterations", type=int, default=1000)
    parser.add_argument("--max-iter", type=int, default=500, help="L-BFGS iterations per retraining")
    parser.add_argument("--influence-dir", help="where score/validate write (default RUN_DIR/influence)")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/influence_<name>.json)")
    args = parser.parse_args(argv)

    name = args.name or Path(args.run_dir).name
    kw = {"max_iter": args.cg_iterations}  # used when the solver is cg (also when auto picks it)
    started = time.perf_counter()
    summary = score_run(args.run_dir, args.influence_dir, args.scope, args.solver, args.damping, args.batch_size, **kw)
    seconds = {"score": time.perf_counter() - started}
    started = time.perf_counter()
    check = validate_run(args.run_dir, args.n, args.scope, args.solver, args.damping, args.subsets, args.seed,
                         args.batch_size, args.influence_dir, args.max_iter, **kw)
    seconds["validate"] = time.perf_counter() - started
    result = {
        "benchmark": f"influence_{name}", **provenance(), "seeds": [args.seed], "run_dir": str(args.run_dir),
        "settings": {k: v for k, v in vars(args).items() if k not in ("run_dir", "out")},
        "seconds": seconds,
        "score": {k: summary[k] for k in ("scope", "n_params", "n_train", "n_valid", "solver", "seconds",
                                          "relatedness_mean", "relatedness_sum", "negative_fraction")},
        "validate": {k: check[k] for k in ("correlation", "n_params", "damping")} | (
            {"datamodel": {k: v for k, v in check["datamodel"].items() if k != "rows"}} if "datamodel" in check else {}),
        "summary_markdown": markdown(name, summary, check, seconds),
    }
    out = Path(args.out) if args.out else RESULTS / f"influence_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(result["summary_markdown"])
    print(f"-> {out}")


if __name__ == "__main__":
    main()
