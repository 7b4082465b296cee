"""The commit a run records: found in a checkout, in a checkout nested in a larger repository, and
never borrowed from a repository that merely contains an installed copy."""

import shutil
import subprocess
from pathlib import Path

import pytest

from slu_feedback.provenance import git_commit

PACKAGE = Path(__file__).resolve().parents[1] / "slu_feedback"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def copy_package(dest: Path) -> Path:
    shutil.copytree(PACKAGE, dest / "slu_feedback", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "recipes").mkdir()
    (dest / "recipes" / "r.yaml").write_text("seed: 1\n")
    return dest


def commit_all(repo: Path) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "x")
    return git(repo, "rev-parse", "HEAD")


def test_checkout_at_the_repository_root(tmp_path):
    git(tmp_path, "init", "-q")
    head = commit_all(copy_package(tmp_path))
    assert git_commit(tmp_path) == head
    (tmp_path / "recipes" / "r.yaml").write_text("seed: 2\n")
    assert git_commit(tmp_path) == head + "-dirty"


def test_checkout_nested_in_a_larger_repository(tmp_path):
    git(tmp_path, "init", "-q")
    nested = copy_package(tmp_path / "vendor" / "slu")
    head = commit_all(tmp_path)
    assert git_commit(nested) == head
    (nested / "slu_feedback" / "__init__.py").write_text("# edited\n")
    assert git_commit(nested) == head + "-dirty"


def test_untracked_copy_inside_another_repository_records_none(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "app.py").write_text("x = 1\n")
    commit_all(tmp_path)
    installed = copy_package(tmp_path / ".venv" / "site-packages")  # not added to the repository
    assert git_commit(installed) is None


def test_outside_any_repository_records_none(tmp_path):
    assert git_commit(copy_package(tmp_path)) is None


@pytest.mark.e2e
def test_a_run_records_the_commit_its_code_was_imported_at(tiny_recipe, monkeypatch):
    """A commit made while a long run trains (or between a benchmark's seeds) did not produce it."""
    import json

    import slu_feedback.provenance as provenance
    import slu_feedback.training.trainer as trainer

    monkeypatch.setattr(provenance, "commit_at_start", lambda: "abc-at-import")
    monkeypatch.setattr(provenance, "git_commit", lambda *a: "def-committed-later")
    run_dir = trainer.train(tiny_recipe("train.epochs=1"))
    assert json.loads((run_dir / "all_results.json").read_text())["provenance"]["commit"] == "abc-at-import"


def test_benchmarks_record_the_commit_they_started_at(monkeypatch):
    monkeypatch.syspath_prepend(str(PACKAGE.parent / "benchmarks"))
    import common

    monkeypatch.delenv("SLU_BENCH_COMMIT", raising=False)
    monkeypatch.setattr(common, "COMMIT_AT_START", "abc-at-start")
    monkeypatch.setattr(common, "package_commit", lambda *a: "def-committed-later")
    assert common.provenance()["commit"] == "abc-at-start"
    monkeypatch.setenv("SLU_BENCH_COMMIT", "given")  # a tree copied to a GPU machine
    assert common.provenance()["commit"] == "given"
