"""Add the joint parser's routing accuracy to the results of a joint benchmark run before
benchmarks/run.py measured it (`test.routing_acc`: the percentage of each dataset's test utterances
answered by that dataset's heads when the parser is given no dataset).

    python benchmarks/routing.py atis_snips_joint     # runs/bench/atis_snips_joint/seed*/ -> results
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402
from common import RESULTS, ROOT  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the joint benchmark's name (results/<name>_<dataset>.json)")
    args = parser.parse_args(argv)
    files = sorted(RESULTS.glob(f"{args.name}_*.json"))
    results = {f: json.loads(f.read_text()) for f in files}
    results = {f: r for f, r in results.items() if r.get("dataset") and r.get("joint_datasets")}
    if not results:
        parser.error(f"no joint results named {args.name}_<dataset>.json in {RESULTS}")
    seeds = sorted({s for r in results.values() for s in r["seeds"]})
    for seed in seeds:
        rows = {r["dataset"]: next(p for p in r["per_seed"] if p["seed"] == seed) for r in results.values()}
        run.add_routing(ROOT / "runs" / "bench" / args.name / f"seed{seed}", rows)
        print(f"seed {seed}: " + ", ".join(f"{d} {row['test']['routing_acc']:.2f} %" for d, row in rows.items()))
    for f, r in results.items():
        r["test"] = run.summarise(r["per_seed"])["test"]
        f.write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
