"""What produced a run: the package's version and git commit, library versions, the command, the
date and a fingerprint of the data, recorded in all_results.json (GET /model serves it)."""

import datetime
import functools
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

from . import __version__

SOURCE = Path(__file__).resolve().parents[1]  # the checkout of an editable install (no .git in a wheel)


def git_commit(root: Path = SOURCE) -> str | None:
    """HEAD of the git checkout that tracks the package at `root` (also when that checkout is a
    folder of a larger repository), + "-dirty" when the package or recipes differ from it; None for
    an installed wheel, even one inside somebody else's repository (a virtualenv in a project)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)

    try:
        if git("ls-files", "--error-unmatch", "slu_feedback/provenance.py").returncode != 0:
            return None
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("diff", "--quiet", "HEAD", "--", "slu_feedback", "recipes").returncode
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except OSError:  # no git on this machine, or `root` is gone
        return None


@functools.cache
def commit_at_start() -> str | None:
    """`git_commit()` the first time this process asks (slu-train asks when training starts): a
    commit made while it trains (a long run, or a benchmark training seed after seed in one process)
    did not produce it."""
    return git_commit()


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

    return {"slu_feedback": __version__, "commit": commit_at_start(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "data": {name or "dataset": {"path": str(path), **(data_fingerprint(data[name]) if data else {})}
                     for name, path in (data_paths or {}).items()}}
