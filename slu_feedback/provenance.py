"""What produced a run: the package's version and git commit, library versions, the command, the
date and a fingerprint of the data, recorded in all_results.json (GET /model serves it)."""

import datetime
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

from . import __version__

SOURCE = Path(__file__).resolve().parents[1]  # the checkout of an editable install (no .git in a wheel)


def git_commit(root: Path = SOURCE) -> str | None:
    """HEAD of the checkout at `root`, + "-dirty" when the package or recipes differ from it; None
    outside a git checkout (an installed wheel)."""
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=root, text=True,
                                         stderr=subprocess.DEVNULL).strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "slu_feedback", "recipes"], cwd=root,
                               stderr=subprocess.DEVNULL).returncode
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def data_fingerprint(data) -> dict:
    """Each split's size and a hash of its words and labels: two runs trained on the same data
    (wherever it was found) share it."""
    out = {}
    for split, rows in data.items():
        digest = hashlib.sha256()
        for column in ("tokens", "slots", "intent"):
            digest.update(json.dumps(list(rows[column]), ensure_ascii=False).encode("utf-8"))
        out[split] = {"n": len(rows), "sha256": digest.hexdigest()[:16]}
    return out


def run_provenance(data_paths: dict | None = None, data: dict | None = None) -> dict:
    """`data_paths`: {dataset: resolved path}; `data`: {dataset: DatasetDict} (dataset "" is a
    single-dataset run's, recorded as "dataset")."""
    import accelerate
    import torch
    import transformers

    return {"slu_feedback": __version__, "commit": git_commit(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "data": {name or "dataset": {"path": str(path), **(data_fingerprint(data[name]) if data else {})}
                     for name, path in (data_paths or {}).items()}}
