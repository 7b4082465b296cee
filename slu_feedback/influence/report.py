"""What `slu-influence` writes: the influence table and summary (`score`), a pruned dataset with
its recipe (`prune`), and the check against retraining (`validate`).

Column `l->k` of `influence.csv` is MTIF_{k <- (l, i)}: the predicted change of task k's
validation loss if the task-l sample of utterance i were removed from training. POSITIVE = the
sample HELPS task k (removing it would raise k's validation loss); negative = it hurts task k.
`intent->intent` and `slot->slot` are within-task, `intent->slot` and `slot->intent` between-task;
`utterance->k` is the sum over the utterance's two samples (what pruning ranks).
"""

import csv
import json
import math
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch
import yaml

from ..data.readers import write_examples
from ..evaluation.plots import plt
from ..models.joint import joint_datasets
from .mtif import compute_mtif, influence_vectors, leave_one_out, score_chunks
from .slu import TASKS, build_problem, run_recipe, run_splits

PAIRS = [(l, k) for l in TASKS for k in TASKS]  # (source, target)
FIELD = {"intent": "intent", "slot": "slots"}  # a task's label field in an example


def default_solver(problem, solver: str) -> str:
    if solver != "auto":
        return solver
    return "explicit" if problem.size <= 5000 else "cg"


def _distributed():
    """(rank, world, gather) under torchrun / accelerate launch; (0, 1, identity) otherwise."""
    try:
        from accelerate import PartialState
        from accelerate.utils import gather_object

        state = PartialState()
        if state.num_processes > 1:
            return state.process_index, state.num_processes, gather_object, state.device
        return 0, 1, lambda x: x, state.device
    except ImportError:  # pragma: no cover
        return 0, 1, lambda x: x, torch.device("cpu")


def score_run(run_dir, out_dir=None, scope: str = "heads", solver: str = "auto", damping: float = 0.01,
              batch_size: int = 64, dtype=torch.float64, progress: bool = True, target_split: str = "validation",
              **solver_kw) -> dict:
    """MTIF for every training utterance of a run; writes influence.csv, summary.json, histogram.png.

    `target_split="heldout"` scores against the part of the training split that a run trained with
    data.train_fraction < 1 did not see, so that validation stays free to choose the pruning fraction;
    `"test"` scores against the test losses: a diagnostic of whether what helps validation also helps
    test (benchmarks/influence_transfer.py); prune_run refuses such scores.

    Under torchrun / accelerate launch each process scores a strided share of the training chunks
    (the cheap solves are repeated on every process) and the main process writes the results."""
    run_dir = Path(run_dir)
    # test scores (a diagnostic prune refuses) never replace the validation scores prune ranks by
    out_dir = Path(out_dir) if out_dir else run_dir / ("influence_test" if target_split == "test" else "influence")
    rank, world, gather, device = _distributed()
    started = time.perf_counter()
    problem, splits, model = build_problem(run_dir, scope, batch_size, dtype, device, target_split=target_split)
    cached = time.perf_counter()
    solver = default_solver(problem, solver)
    s, info = influence_vectors(problem, damping, solver, progress=progress and rank == 0, **solver_kw)
    solved = time.perf_counter()
    index, scores = score_chunks(problem, s, problem.train[rank::world], progress=progress and rank == 0)
    parts = gather([(index.cpu(), scores.cpu())])
    index = torch.cat([p[0] for p in parts])
    table = torch.empty(problem.n, len(TASKS), len(TASKS), dtype=scores.dtype)
    table[index] = torch.cat([p[1] for p in parts])
    timing = {"cache_features": cached - started, "solve": solved - cached, "per_example": time.perf_counter() - solved,
              "total": time.perf_counter() - started, "processes": world}
    if rank != 0:
        return {}
    summary = write_scores(out_dir, splits["train"], table, {
        "run_dir": str(run_dir), "scope": scope, "n_params": problem.size, "n_train": problem.n,
        "target_split": target_split, "n_valid": problem.n_valid, "parameters": problem.names, "solver": info,
        "seconds": timing,
        "feedback_iterations": model.config.feedback["iterations"], "slot_decoder": model.config.slot_decoder})
    return summary


def write_scores(out_dir: Path, train, table: torch.Tensor, meta: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [f"{l}->{k}" for l, k in PAIRS]
    utterance = table.sum(1)  # (n, targets)
    with (out_dir / "influence.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "intent", *columns, *(f"utterance->{k}" for k in TASKS)])
        for i, ex in enumerate(train):
            values = [table[i, TASKS.index(l), TASKS.index(k)].item() for l, k in PAIRS]
            writer.writerow([i, " ".join(ex["tokens"]), ex["intent"], *(f"{v:.6e}" for v in values),
                             *(f"{v:.6e}" for v in utterance[i].tolist())])
    relatedness = {l: {k: table[:, a, b].mean().item() for b, k in enumerate(TASKS)} for a, l in enumerate(TASKS)}
    totals = {l: {k: table[:, a, b].sum().item() for b, k in enumerate(TASKS)} for a, l in enumerate(TASKS)}

    def row(i, k):
        return {"id": i, "text": scored_text(train[i]["tokens"]), "intent": train[i]["intent"],
                "influence": utterance[i, k].item(),
                **{f"{l}->{TASKS[k]}": table[i, a, k].item() for a, l in enumerate(TASKS)}}

    top = {}
    for k, task in enumerate(TASKS):
        order = utterance[:, k].argsort(descending=True).tolist()
        top[task] = {"most_helpful": [row(i, k) for i in order[:10]],
                     "most_harmful": [row(i, k) for i in reversed(order[-10:])]}
    split = meta.get("target_split", "validation")
    summary = {**meta, "sign": "positive = the sample helps the target task (removing it would raise that task's "
                               f"{split} loss); column l->k = influence of task l's sample on task k",
               "relatedness_mean": relatedness, "relatedness_sum": totals,
               "negative_fraction": {f"{l}->{k}": (table[:, a, b] < 0).float().mean().item()
                                     for a, l in enumerate(TASKS) for b, k in enumerate(TASKS)},
               "top": top, "files": ["influence.csv", "summary.json", "histogram.png"]}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    for ax, (l, k) in zip(axes.flat, PAIRS):
        values = table[:, TASKS.index(l), TASKS.index(k)].numpy()
        ax.hist(values, bins=40, color="tab:blue" if l == k else "tab:orange")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set(title=f"{l} samples -> {k} {split} loss", xlabel="MTIF (positive = helps)", ylabel="utterances")
    fig.tight_layout()
    fig.savefig(out_dir / "histogram.png", dpi=100)
    plt.close(fig)
    return summary


def scored_text(tokens) -> str:
    """An utterance as influence.csv's `text` column writes it (prune checks the scores against it)."""
    return " ".join(tokens)


def read_scores(path) -> list:
    with Path(path).open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def source_scores(rows: list, sources, targets, dtype=None) -> torch.Tensor:
    """(n, len(sources)) from influence.csv rows: each source column (a task's sample, or
    `utterance`) summed over the target tasks."""
    return torch.tensor([[sum(float(r[f"{source}->{k}"]) for k in targets) for source in sources] for r in rows],
                        dtype=dtype)


def table_scores(table: torch.Tensor, sources, targets) -> torch.Tensor:
    """source_scores from an (n, sources, targets) influence table instead of influence.csv rows."""
    k = [TASKS.index(t) for t in targets]
    columns = [table[:, :, k].sum(1) if s == "utterance" else table[:, TASKS.index(s), k] for s in sources]
    return torch.stack([c.sum(-1) for c in columns], 1).to(torch.float32)


def pruning_name(target: str, fraction: float, per_intent: bool, unit: str) -> str:
    """The part of a pruned set's (or refit's) name after its method: `both-2pct-per-intent-samples`."""
    return f"{target}-{100 * fraction:g}pct{'-per-intent' if per_intent else ''}{'-samples' if unit == 'sample' else ''}"


class LabelKeeper:
    """Pruning never takes the last training example of a label: a sample (or a whole utterance) is
    released only if every intent or slot tag it carries keeps another utterance labelled with it
    (else the label would leave the vocabulary, and its validation and test occurrences could not be
    learned; on ATIS, 2 % of samples per intent would otherwise remove 6 of 120 slot tags)."""

    def __init__(self, train):
        self.intents, self.slots = train["intent"], train["slots"]
        self.count = Counter(("intent", x) for x in self.intents)
        self.count.update(("slot", tag) for tags in self.slots if tags is not None for tag in set(tags))
        self.refused = 0

    def release(self, i: int, task: str) -> bool:
        """Whether sample `task` ("intent", "slot" or the whole "utterance") of utterance `i` may go."""
        labels = set()
        if task in ("intent", "utterance") and self.intents[i] is not None:
            labels.add(("intent", self.intents[i]))
        if task in ("slot", "utterance") and self.slots[i] is not None:
            labels |= {("slot", t) for t in self.slots[i]}
        if any(self.count[label] <= 1 for label in labels):
            self.refused += 1
            return False
        self.count.subtract(labels)
        return True


def select_drops(scores, train, fraction: float, target: str = "both", random: bool = False, seed: int = 0,
                 per_intent: bool = False, unit: str = "utterance") -> dict:
    """Which candidates to drop (see prune_run), from influence.csv rows or an (n, T, T) table:
    `drop` indexes `candidates`, a list of (utterance id, "utterance" | task) in the order of
    `value.flatten()`."""
    targets = TASKS if target == "both" else (target,)
    sources = ["utterance"] if unit == "utterance" else list(TASKS)
    value = table_scores(scores, sources, targets) if torch.is_tensor(scores) else source_scores(scores, sources, targets)
    candidates = [(i, source) for i in range(len(value)) for source in sources]  # in the order of value.flatten()
    intents, slots = train["intent"], train["slots"]
    labels = {"intent": intents, "slot": slots}
    # a run trained on partial labels: its missing samples are no candidates
    labelled = [source == "utterance" or labels[source][i] is not None for i, source in candidates]
    wanted = int(round(fraction * sum(labelled)))
    groups = defaultdict(list)  # candidates by intent (one group of all without per_intent), most negative first
    for c in value.flatten().argsort().tolist():
        if labelled[c]:
            groups[str(intents[candidates[c][0]]) if per_intent else ""].append(c)
    quota = {g: int(round(fraction * len(ids))) if per_intent else wanted for g, ids in groups.items()}
    keeper = LabelKeeper(train)

    def take(order: list, n: int) -> list:  # the first n candidates of `order` the keeper lets go
        out = []
        for c in order:
            if len(out) == n:
                break
            if keeper.release(*candidates[c]):
                out.append(c)
        return out

    if random:  # as many from each group, at random
        generator = torch.Generator().manual_seed(seed)
        drop = []
        for g, ids in sorted(groups.items()):
            pool = sorted(ids)
            drop += take([pool[j] for j in torch.randperm(len(pool), generator=generator).tolist()], quota[g])
    else:
        drop = [c for g, ids in sorted(groups.items()) for c in take(ids, quota[g])]
    return {"drop": drop, "candidates": candidates, "value": value, "keeper": keeper, "wanted": wanted,
            "labelled": labelled}


def prune_run(run_dir, fraction: float, target: str = "both", random: bool = False, seed: int = 0, scores=None,
              out_dir=None, per_intent: bool = False, unit: str = "utterance", **score_kw) -> dict:
    """Drop the `fraction` of training utterances (unit "utterance") or of training samples (unit
    "sample": an utterance's intent label and its slot labels are two samples, METHODS.md section 3)
    with the most negative influence on the target task(s), or as many at random; write the dataset
    and a recipe training on it.

    An utterance's influence is the sum over its two samples; with target `both` a value is summed
    over both targets. Utterance pruning writes the folder format; sample pruning writes JSONL in
    which a dropped sample is a null intent or null slots (the utterance then trains the other head
    only) and an utterance with both samples dropped is left out. No label loses its last example
    (`LabelKeeper`), for MTIF and random pruning alike (utterances too since 2026-12-07). valid/ and
    test/ are copied. Random pruning needs no scores; it is written to a folder named with its seed.
    `scores`: an influence.csv (or the folder holding it) of this run's training set.

    `per_intent` drops the fraction within each intent (none from an intent with fewer than
    1 / (2 * fraction) candidates), random pruning then the same count per intent: on ATIS the
    global ranking dropped two thirds of several rare intents (atis_aircraft, atis_flight_time,
    atis_ground_fare), whose examples share a large negative score.

    A run trained on part of its training split (`data.train_fraction` < 1) is scored and ranked on
    the utterances it trained on (`score --target-split heldout` scores them against the rest); the
    held-out utterances are put back, after the others, so the pruned training set is the whole
    training split less the drops, as with the full-set run it is compared with."""
    run_dir = Path(run_dir)
    if not 0 < fraction < 1:
        raise ValueError(f"--fraction must be in (0, 1), got {fraction}")
    if target not in ("intent", "slot", "both"):
        raise ValueError(f"--target must be intent, slot or both, not {target!r}")
    if unit not in ("utterance", "sample"):
        raise ValueError(f"--unit must be utterance or sample, not {unit!r}")
    names = joint_datasets(run_dir)
    if names:
        raise ValueError(f"{run_dir} is a joint run: prune one of its datasets, "
                         + ", ".join(str(run_dir / name) for name in names))
    recipe = run_recipe(run_dir)
    splits = run_splits(recipe)
    train = splits["train"]
    scores_file = Path(scores) if scores else run_dir / "influence" / "influence.csv"
    if scores_file.is_dir():  # the folder slu-influence score --out wrote
        scores_file = scores_file / "influence.csv"
    if not scores_file.exists() and scores:
        raise ValueError(f"--scores {scores}: no influence.csv there (write one with slu-influence score RUN_DIR --out FOLDER)")
    if not scores_file.exists() and not random:  # random pruning needs no scores
        score_run(run_dir, scores_file.parent, **score_kw)
    summary, rows = {}, None
    if scores_file.exists():
        summary_file = scores_file.parent / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        rows = read_scores(scores_file)
    scored_on = summary.get("target_split", score_kw.get("target_split", "validation"))
    if score_kw.get("target_split", scored_on) != scored_on:
        raise ValueError(f"{scores_file} was scored against {scored_on}, not {score_kw['target_split']}: score again "
                         f"into another folder (slu-influence score --out) and pass it with --scores")
    if scored_on == "test":
        raise ValueError(f"{scores_file} was scored against the test split (a diagnostic); pruning by it would pick "
                         "the training data on test. Score against validation: slu-influence score RUN_DIR")
    for key, scored_with in (("scope", summary.get("scope")), ("damping", summary.get("solver", {}).get("damping"))):
        if score_kw.get(key) is not None and scored_with is not None and score_kw[key] != scored_with:
            raise ValueError(f"{scores_file} was scored with {key} {scored_with}, not {score_kw[key]} (--{key} applies "
                             f"when scoring): score again into another folder with slu-influence score --out and "
                             f"pass it with --scores")
    if rows is None:
        chosen = select_drops(torch.zeros(len(train), len(TASKS), len(TASKS)), train, fraction, target, True, seed,
                              per_intent, unit)
    else:
        if len(rows) != len(train) or [r["text"] for r in rows] != [scored_text(t) for t in train["tokens"]]:
            scored_run = summary.get("run_dir", "another run")
            raise ValueError(f"{scores_file} scores other training utterances than {run_dir} trained on "
                             f"({len(rows)} against {len(train)}; scored on {scored_run}): score this run")
        chosen = select_drops(rows, train, fraction, target, random, seed, per_intent, unit)
    drop, candidates, value, keeper = chosen["drop"], chosen["candidates"], chosen["value"], chosen["keeper"]
    wanted, labelled = chosen["wanted"], chosen["labelled"]
    negative = int((value.flatten()[drop] < 0).sum()) if drop else 0
    drop = set(drop)
    dropped = defaultdict(set)  # utterance id -> its dropped samples
    for c in drop:
        dropped[candidates[c][0]].add(candidates[c][1])
    name = (f"{'random' if random else 'pruned'}-{pruning_name(target, fraction, per_intent, unit)}"
            + ("-heldout" if scored_on == "heldout" else "") + (f"-seed{seed}" if random else ""))
    out_dir = Path(out_dir) if out_dir else run_dir / "pruned" / name
    data_dir = out_dir / "data"
    kept = []
    for i, ex in enumerate(train):
        gone = dropped.get(i, set()) | {task for task, field in FIELD.items() if ex[field] is None}  # or missing
        if "utterance" in gone or len(gone) == len(TASKS):
            continue
        kept.append({**ex, **{FIELD[task]: None for task in gone}})
    rejoined = list(splits["heldout"]) if "heldout" in splits else []
    kept += rejoined
    complete = all(ex["intent"] is not None and ex["slots"] is not None for ex in kept)
    format = "folder" if unit == "utterance" and complete else "jsonl"
    for split, stem in (("train", "train"), ("validation", "valid"), ("test", "test")):
        examples = kept if split == "train" else splits[split]
        write_examples(examples, data_dir / (stem if format == "folder" else stem + ".jsonl"), format)
    new = {k: v for k, v in recipe.items() if k not in ("recipe_dir", "recipe_name")}
    new["data"] = {**new["data"], "path": str(data_dir.resolve()), "format": format, "train_fraction": 1.0}
    new["output_dir"] = None
    recipe_file = out_dir / f"{name}.yaml"
    header = (f"# slu-train {recipe_file}\n# {run_dir.name}: {len(drop)} of {sum(labelled)} training {unit}s "
              f"dropped ({'at random' if random else 'most negative MTIF on ' + target}"
              f"{', the same share of each intent' if per_intent else ''}, seed {seed})\n"
              + (f"# plus the {len(rejoined)} held-out utterances the run did not train on\n" if rejoined else ""))
    recipe_file.write_text(header + yaml.safe_dump(new, sort_keys=False), encoding="utf-8")
    info = {"run_dir": str(run_dir), "target": target, "target_split": scored_on,
            "fraction": fraction, "random": random, "seed": seed,
            "per_intent": per_intent, "unit": unit, "requested": wanted, "dropped": len(drop),
            "kept": sum(labelled) - len(drop), "negative": int((value < 0).sum()),
            "heldout_rejoined": len(rejoined),
            "utterances_kept": len(kept), "utterances_dropped": len(train) + len(rejoined) - len(kept),
            "dropped_ids": sorted(dropped) if unit == "utterance" else sorted([i, s] for i, s in (candidates[c] for c in drop)),
            "data": str(data_dir), "recipe": str(recipe_file), "scores": str(scores_file) if rows is not None else None}
    info["kept_for_labels"] = keeper.refused
    if unit == "sample":
        info["unlabelled"] = {task: sum(1 for ex in kept if ex[field] is None) for task, field in FIELD.items()}
    if negative < len(drop) and not random:
        info["note"] = (f"only {negative} of the {len(drop)} lowest-ranked {unit}s have negative influence on "
                        f"{target}; the others were dropped as the least helpful")
    if summary.get("solver", {}).get("warning") and not random:
        info["warning"] = f"{scores_file} was scored with a warning: {summary['solver']['warning']}"
    (out_dir / "prune.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info


def validate_run(run_dir, n: int = 40, scope: str = "heads", solver: str = "auto", damping: float = 0.01,
                 subsets: int = 20, seed: int = 0, batch_size: int = 64, out_dir=None, retrain_iter: int = 500,
                 progress: bool = True, **solver_kw) -> dict:
    """Leave-one-out and linear-datamodeling check of MTIF on a run (see `mtif.leave_one_out`):
    the scope is retrained on the cached features by full-batch L-BFGS on the damped objective."""
    if n < 1 or subsets < 0:
        raise ValueError(f"validate needs n >= 1 utterances and subsets >= 0, got n={n}, subsets={subsets}")
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / "influence"
    started = time.perf_counter()
    problem, _, _ = build_problem(run_dir, scope, batch_size)
    examples = torch.randperm(problem.n, generator=torch.Generator().manual_seed(seed))[: min(n, problem.n)].tolist()
    result = leave_one_out(problem, damping, examples, default_solver(problem, solver), subsets=subsets, seed=seed,
                           retrain_iter=retrain_iter, progress=progress, rows_file=out_dir / "validate_rows.jsonl",
                           **solver_kw)
    result.update(run_dir=str(run_dir), scope=scope, seed=seed, seconds=time.perf_counter() - started)
    result = json.loads(json.dumps(result, default=float).replace("NaN", "null"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "validate.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    fig, axes = plt.subplots(1, 3 if subsets else 2, figsize=(14 if subsets else 9, 4))
    for ax, kind in zip(axes, ("within", "between")):
        for k, task in enumerate(TASKS):
            rows = [r for r in result["loo"] if (r["source"] == task) == (kind == "within")]
            ax.scatter([r["predicted"][k] for r in rows], [r["actual"][k] for r in rows], s=12,
                       label=f"-> {task}")
        c = result["correlation"][kind]
        ax.set(title=f"leave-one-out, {kind}-task (r={_fmt(c['pearson'])})", xlabel="predicted change of V_k (MTIF)",
               ylabel="actual change (retrained)")
        ax.axline((0, 0), slope=1, color="gray", linewidth=0.7)
        ax.legend()
    if subsets:
        ax = axes[2]
        for k, task in enumerate(TASKS):
            rows = result["datamodel"]["rows"]
            ax.scatter([r["predicted"][k] for r in rows], [r["actual"][k] for r in rows], s=12,
                       label=f"{task} (rho={_fmt(result['datamodel'][task]['spearman'])})")
        ax.set(title="50% subsets (datamodeling)", xlabel="summed MTIF of removed", ylabel="actual change")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "validate.png", dpi=100)
    plt.close(fig)
    return result


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


__all__ = ["score_run", "prune_run", "validate_run", "compute_mtif"]
