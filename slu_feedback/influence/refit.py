"""Prune within MTIF's own scope: refit the heads on the fixed encoder without the harmful samples.

`slu-influence prune` writes a dataset and the model is retrained from the pretrained encoder with a
new seed; MTIF's estimate says nothing about that (a first-order change of the heads on a fixed
encoder). Here the pruning is applied where the estimate holds: the scope (`heads`) is refitted on
the cached encoder features by full-batch L-BFGS on the damped objective, as in the leave-one-out
check, and saved as a new run that `slu-eval` and `slu-parse` load like any other. It takes
minutes, not a training run.

    refitter = Refitter("runs/atis-1")        # cache features, fit the full set, score MTIF there
    drop = refitter.select(0.02, per_intent=True, unit="sample")
    refitter.save(refitter.refit(drop), "runs/atis-1-refit-2pct")
"""

import json
import shutil
import time
from functools import cached_property
from pathlib import Path

import torch

from ..models import load_run
from ..models.run import readable_weights
from .mtif import converge, influence_vectors, score_chunks
from .report import pruning_name, select_drops, write_scores
from .slu import TASKS, build_problem

COPIED = ("recipe.yaml", "label_maps.json", "metrics.jsonl", "all_results.json")  # kept from the source run


class Refitter:
    """The heads of a trained run as an MTIF problem: fitted to convergence on the full training set
    (w_full, where the influence formula is exact for the damped objective), MTIF scored there."""

    def __init__(self, run_dir, damping: float = 0.01, batch_size: int = 64, max_iter: int = 500,
                 progress: bool = True, cg_iterations: int = 1000):
        self.run_dir, self.damping, self.max_iter = Path(run_dir), damping, max_iter
        started = time.perf_counter()
        self.problem, splits, _ = build_problem(self.run_dir, "heads", batch_size)
        self.train = splits["train"]
        self.anchor = self.problem.flat()  # the trained heads; the proximal term keeps refits near them
        self.w_full = converge(self.problem, self.anchor, self.anchor, damping, max_iter=max_iter, progress=progress)
        fitted = time.perf_counter()
        s, self.solver = influence_vectors(self.problem, damping, "cg", w=self.w_full, progress=progress,
                                           max_iter=cg_iterations)
        index, scores = score_chunks(self.problem, s, w=self.w_full, progress=progress)
        self.table = torch.empty_like(scores)
        self.table[index] = scores
        self.valid_full = self.problem.valid_losses(self.w_full).tolist()
        self.seconds = {"fit_full": fitted - started, "score": time.perf_counter() - fitted}

    def write_scores(self, out_dir) -> dict:
        """influence.csv / summary.json of the scores at w_full (the format `slu-influence score` writes)."""
        return write_scores(Path(out_dir), self.train, self.table.cpu(), {
            "run_dir": str(self.run_dir), "scope": "heads", "n_params": self.problem.size, "n_train": self.problem.n,
            "target_split": "validation", "n_valid": self.problem.n_valid, "parameters": self.problem.names,
            "solver": self.solver, "at": "heads refitted to convergence on the full training set",
            "seconds": self.seconds})

    def select(self, fraction: float, target: str = "both", random: bool = False, seed: int = 0,
               per_intent: bool = False, unit: str = "sample") -> list:
        """[(utterance id, "utterance" | task)] to drop, chosen as `slu-influence prune` chooses."""
        if fraction == 0:
            return []
        chosen = select_drops(self.table.cpu(), self.train, fraction, target, random, seed, per_intent, unit)
        return [chosen["candidates"][c] for c in chosen["drop"]]

    def refit(self, drop: list) -> tuple:
        """(heads refitted without the dropped samples, report): starts at w_full, same damped
        objective, so the actual change of the validation losses is comparable with the summed MTIF."""
        weights = torch.ones(self.problem.n, len(TASKS), dtype=self.w_full.dtype, device=self.w_full.device)
        predicted = torch.zeros(len(TASKS), dtype=self.table.dtype)
        for i, source in drop:
            tasks = range(len(TASKS)) if source == "utterance" else [TASKS.index(source)]
            for l in tasks:
                weights[i, l] = 0
                predicted += self.table[i, l].cpu()
        started = time.perf_counter()
        w = converge(self.problem, self.w_full, self.anchor, self.damping, weights, self.max_iter) if drop else self.w_full
        actual = [a - b for a, b in zip(self.problem.valid_losses(w).tolist(), self.valid_full)]
        report = {"dropped": len(drop), "seconds": time.perf_counter() - started,
                  "dropped_by_task": {t: sum(1 for _, s in drop if s in (t, "utterance")) for t in TASKS},
                  "validation_loss_full": dict(zip(TASKS, self.valid_full)),
                  "validation_loss_change": {"predicted": dict(zip(TASKS, predicted.tolist())),
                                             "actual": dict(zip(TASKS, actual))}}
        return w, report

    @cached_property
    def source_run(self) -> tuple:
        """(float32 model, tokenizer) of the run, loaded once: `save` overwrites the scope's parameters."""
        return load_run(self.run_dir)

    def save(self, w, out_dir, report: dict | None = None) -> Path:
        """A run directory with the refitted heads (float32, `save_pretrained`), the source run's
        tokenizer, recipe and label maps, and refit.json."""
        out_dir = Path(out_dir)
        model, tokenizer = self.source_run
        with torch.no_grad():
            for name, value in self.problem.unflatten(w).items():
                model.get_parameter(name.removeprefix("model.")).copy_(value.to(torch.float32))
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        readable_weights(out_dir)
        tokenizer.save_pretrained(out_dir)
        for name in COPIED:
            if (self.run_dir / name).exists():
                shutil.copy2(self.run_dir / name, out_dir / name)
        info = {"source_run": str(self.run_dir), "scope": "heads", "damping": self.damping,
                "seconds": self.seconds, **(report or {})}
        (out_dir / "refit.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
        return out_dir


def refit_run(run_dir, out_dir=None, fraction: float = 0.02, target: str = "both", random: bool = False,
              seed: int = 0, per_intent: bool = False, unit: str = "sample", damping: float = 0.01,
              max_iter: int = 500, progress: bool = True, cg_iterations: int = 1000) -> dict:
    """`slu-influence refit`: drop the `fraction` of training samples (or utterances) with the most
    negative MTIF (or as many at random), refit the heads, save the run; returns refit.json."""
    if not 0 <= fraction < 1:
        raise ValueError(f"--fraction must be in [0, 1), got {fraction}")
    if unit not in ("utterance", "sample"):
        raise ValueError(f"--unit must be utterance or sample, not {unit!r}")
    refitter = Refitter(run_dir, damping, max_iter=max_iter, progress=progress, cg_iterations=cg_iterations)
    name = (f"refit-{'random' if random else 'mtif'}-{pruning_name(target, fraction, per_intent, unit)}"
            + (f"-seed{seed}" if random else ""))  # each random draw its own run
    out_dir = Path(out_dir) if out_dir else Path(run_dir) / "refit" / name
    refitter.write_scores(out_dir / "influence")
    drop = refitter.select(fraction, target, random, seed, per_intent, unit)
    w, report = refitter.refit(drop)
    report.update(fraction=fraction, target=target, random=random, seed=seed, per_intent=per_intent, unit=unit)
    if refitter.solver.get("warning") and not random:
        report["warning"] = f"the ranking's scores: {refitter.solver['warning']}"
    refitter.save(w, out_dir, report)
    return {**report, "out_dir": str(out_dir)}
