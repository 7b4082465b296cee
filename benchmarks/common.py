"""What every benchmark results file records about where and how it was made."""

import datetime
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

from slu_feedback.provenance import commit_at_start, git_commit as package_commit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# the package's checkout, or this one where the package is installed from elsewhere; read when the
# benchmark starts (it imports this module first)
COMMIT_AT_START = commit_at_start() or package_commit(ROOT)


def git_commit() -> str:
    """The commit of the code this process imported (+ "-dirty" when the code or recipes differed
    from it); SLU_BENCH_COMMIT overrides it for a copy of the tree whose git metadata lags behind (a
    tree sent to a GPU machine)."""
    return os.environ.get("SLU_BENCH_COMMIT") or COMMIT_AT_START or "unknown"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def provenance() -> dict:
    return {"command": " ".join([Path(sys.executable).name] + sys.argv), "commit": git_commit(), "machine": machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def mean_std(values: list) -> dict:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
