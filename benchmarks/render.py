"""Render benchmarks/RESULTS.md (every run) and the README's results tables (HEADLINE's runs and the
foundation targets) from benchmarks/results/*.json.

    python benchmarks/render.py

Numbers come only from the results files (written by the benchmark scripts) and anchors.json
(published numbers, labelled as such).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT  # noqa: E402

from slu_feedback.evaluation.plots import plt  # noqa: E402  (matplotlib with the Agg backend)

FIGURE = ROOT / "benchmarks" / "variants.png"
PRUNING_FIGURE = ROOT / "benchmarks" / "pruning.png"

START, END = "<!-- results:start -->", "<!-- results:end -->"
PRUNING_START, PRUNING_END = "<!-- pruning:start -->", "<!-- pruning:end -->"
SPEED_START, SPEED_END = "<!-- speed:start -->", "<!-- speed:end -->"
SPEED_VARIANTS = [("crf", "CRF"), ("feedback", "feedback"), ("vmtl", "VMTL")]  # results/speed_<variant>_atis_hf.json
METRICS = [("intent_acc", "intent acc"), ("slot_f1", "slot F1"), ("sentence_acc", "sentence acc")]


# Issue 2's targets for the plain joint MiniLM model, and the configurations that compete for them:
# the one with the best mean validation sentence accuracy (over at least 3 seeds; on a tie, the smaller
# spread over seeds) is the one judged, each run counting as trained and with its intent-slot decoding
# constraint flipped where run.py scored both (`decodings`).
FOUNDATION = {
    "atis": ({"intent_acc": 97.5, "slot_f1": 95.5, "sentence_acc": 87.0}, ["atis", "atis_lr2e-4", "atis_crf", "atis_intent_slots"]),
    "snips": ({"intent_acc": 98.0, "slot_f1": 95.5, "sentence_acc": 90.0},
              ["snips", "snips_lr2e-4", "snips_12ep", "snips_lr2e-4_12ep", "snips_crf", "snips_intent_slots", "snips_ema0.998", "snips_crf_ema0.998",
               "snips_crf_10ep", "snips_crf_lr3e-4", "snips_crf_intent_slots", "snips_crf_bs16"]),
}


# The README's tables show these runs (each the recipe as it stands or the configuration chosen on
# validation for it); RESULTS.md lists every run.
HEADLINE = {
    "atis": ["atis_indep", "atis_crf_indep", "atis_feedback_gate_once", "atis_vmtl_geninit", "atis_bilstm", "atis_bilstm_feedback"],
    "snips": ["snips_lr2e-4_indep", "snips_crf_indep", "snips_feedback_lr2e-4_gate_once", "snips_vmtl_geninit",
              "snips_bilstm", "snips_bilstm_feedback"],
}


# The README's pruning summary: per dataset and MTIF target split, the MTIF and random prunings
# (each row's base, from its results file, is the full set). TEST_UTTERANCES: the test splits' sizes.
PRUNING_HEADLINE = [
    ("ATIS", "validation", "atis_indep_mtif_2pct_per_intent_samples", "atis_indep_random_2pct_per_intent_samples"),
    ("ATIS", "heldout", "atis_indep_mtif_2pct_per_intent_samples_heldout", "atis_indep_random_2pct_per_intent_samples_heldout"),
    ("SNIPS", "validation", "snips_lr2e-4_indep_mtif_2pct_per_intent_samples",
     "snips_lr2e-4_indep_random_2pct_per_intent_samples"),
    ("SNIPS", "heldout", "snips_lr2e-4_indep_mtif_2pct_per_intent_samples_heldout",
     "snips_lr2e-4_indep_random_2pct_per_intent_samples_heldout"),
]
TEST_UTTERANCES = {"ATIS": 893, "SNIPS": 700}


def fmt(stat: dict) -> str:
    """mean ± sample std; one seed has no spread, so none is shown (not a misleading ± 0.00)."""
    if stat is None or stat.get("mean") is None:
        return "-"
    return f"{stat['mean']:.2f}" if stat.get("n") == 1 else f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def load_results() -> dict:
    return {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json")) if "test" in json.loads(p.read_text())}


def dataset_of(result: dict) -> str:
    if result.get("dataset"):  # one dataset of a joint run
        return result["dataset"]
    name = result["recipe"]
    return "snips" if name.startswith("snips") else "atis" if name.startswith("atis") else name.split("_")[0]


def accuracy_table(results: dict, anchors: dict, dataset: str) -> list:
    lines = [f"| model | seeds | {' | '.join(label for _, label in METRICS)} | Δ sentence vs base | s/epoch | utt/s b1 | utt/s b32 |",
             "|---|---|" + "---|" * (len(METRICS) + 4)]
    for name, r in results.items():
        if dataset_of(r) != dataset:
            continue
        inf = r["inference_utt_per_s"]
        lines.append(f"| {name} | {len(r['seeds'])} | " + " | ".join(fmt(r["test"][k]) for k, _ in METRICS)
                     + f" | {delta_vs_base(results, r)} | {r['train_seconds_per_epoch']['mean']:.0f} | "
                     f"{inf['batch_1']['mean']:.0f} | {inf['batch_32']['mean']:.0f} |")
    return lines + anchor_rows(anchors, dataset, 1, 4)


def headline_table(results: dict, anchors: dict, dataset: str) -> list:
    """The README's table: HEADLINE's runs with what they ran (recipe and overrides, from the
    results file's command), without timings (taken on different days, they compare only as
    side-by-side ratios)."""
    lines = [f"| run | recipe | seeds | {' | '.join(label for _, label in METRICS)} | Δ sentence vs base |",
             "|---|---|---|" + "---|" * (len(METRICS) + 1)]
    for name in HEADLINE.get(dataset, []):
        if name in results:
            r = results[name]
            lines.append(f"| {name} | `{recipe_of(r['command'])}` | {len(r['seeds'])} | "
                         + " | ".join(fmt(r["test"][k]) for k, _ in METRICS) + f" | {delta_vs_base(results, r)} |")
    return lines + anchor_rows(anchors, dataset, 2, 1) if len(lines) > 2 else []


def recipe_of(command: str) -> str:
    """`python benchmarks/run.py recipes/x.yaml a.b=1 --seeds 1 2` -> `recipes/x.yaml a.b=1`."""
    words = command.split()
    start = next((i + 1 for i, w in enumerate(words) if w.endswith("run.py")), 0)
    end = next((i for i, w in enumerate(words) if i >= start and w.startswith("--")), len(words))
    return " ".join(words[start:end])


def delta_vs_base(results: dict, r: dict) -> str:
    """Test sentence accuracy against the run's base over the run's seeds ("other seeds" where
    the base lacks one of them); "-" without a base."""
    base = results.get(r.get("compare_to") or "")
    if not base:
        return "-"
    d = r["test"]["sentence_acc"]["mean"] - seed_mean(base, "test", "sentence_acc", r["seeds"])
    return f"{d:+.2f} (vs {base['recipe']}{'' if over_seeds(base, r['seeds']) else ', other seeds'})"


def anchor_rows(anchors: dict, dataset: str, before: int, after: int) -> list:
    """The published numbers in italics, with `before` and `after` empty cells around the metrics."""
    return ["| " + " | ".join([f"*{a['model']}, published*"] + [""] * before + [f"*{a[k]:.1f}*" for k, _ in METRICS]
                              + [""] * after) + " |" for a in anchors.get(dataset, [])]


def inference_targets(s: dict) -> list:
    """The ratios the inference targets are stated in, computed from the file's own numbers."""
    t, lines = s["throughput"], []
    if t.get("int8") and t.get("fp32") and "batch_32" in t["fp32"]:
        line = f"int8 / fp32 throughput at batch 32: **{t['int8']['batch_32'] / t['fp32']['batch_32']:.2f}x** (target >= 1.5x)"
        if s.get("accuracy"):
            c = s["accuracy"]["change"]
            line += (f"; accuracy change intent {100 * c['intent_acc']:+.2f}, slot F1 {100 * c['slot_f1']:+.2f} "
                     "(targets: losses of at most 0.3 and 0.5 points)")
        lines.append(f"- {line}.")
    http = s.get("http", {}).get("clients_32")
    if http and t.get("fp32") and "batch_32" in t["fp32"]:
        lines.append(f"- HTTP with 32 clients / in-process fp32 batch 32: **{http['throughput_rps'] / t['fp32']['batch_32']:.0%}** "
                     f"(target >= 60%), {http['errors']} failed of {http['requests']} requests.")
    return lines + [""] if lines else []


def decodings(name: str, r: dict) -> list:
    """A run's decodings as (label, scores): as trained, and with model.intent_slot_constraints
    the other way where run.py scored the same weights so (`other_decoding`): a decoding setting
    is chosen on validation like any other."""
    other = r.get("other_decoding")
    if not other:
        return [(name, r)]
    flipped = "off" if other["intent_slot_constraints"] else "on"
    return [(name, r), (f"{name} (constraint {flipped})", other[flipped])]


def foundation_table(results: dict) -> list:
    """Issue 2's targets against the plain joint model chosen on validation among FOUNDATION's
    candidates, each candidate decoded both ways where measured; test means to three decimals,
    so that a miss by less than 0.005 shows."""
    lines = ["**Foundation targets** (plain joint MiniLM model, 3+ seeds: the candidate with the best mean "
             "validation sentence accuracy, on a tie the smaller spread over seeds, is judged on test; "
             "each run counts as trained and with the intent-slot decoding constraint flipped, "
             "where its file scored both)", "",
             "| dataset | chosen | validation sentence | candidates (validation sentence) | "
             + " | ".join(f"test {label}" for _, label in METRICS) + " | targets met |",
             "|---|---|---|---|" + "---|" * (len(METRICS) + 1)]
    for dataset, (targets, names) in FOUNDATION.items():
        # a candidate rerun with independent epoch seeds (`<name>_indep`, after 5e031f5) replaces its older row
        names = [f"{n}_indep" if len(results.get(f"{n}_indep", {}).get("seeds", [])) >= 3 else n for n in names]
        runs = {n: results[n] for n in names if n in results and len(results[n]["seeds"]) >= 3}
        if not runs:
            continue
        candidates = [(label, scores, as_trained == 0) for n, r in runs.items()
                      for as_trained, (label, scores) in enumerate(decodings(n, r))]
        # equal means (the same count of right frames: float sums may differ in the last digit) go to
        # the candidate with the smaller spread over seeds, then to the run as trained
        chosen, scores, _ = max(candidates, key=lambda c: (round(c[1]["validation"]["sentence_acc"]["mean"], 6),
                                                           -c[1]["validation"]["sentence_acc"]["std"], c[2]))
        test = scores["test"]
        met = {k: test[k]["mean"] >= t for k, t in targets.items()}
        lines.append(f"| {dataset} | {chosen} | {fmt(scores['validation']['sentence_acc'])} | "
                     + ", ".join(f"{label} {c['validation']['sentence_acc']['mean']:.2f}" for label, c, _ in candidates) + " | "
                     + " | ".join(f"{test[k]['mean']:.3f} {'>=' if met[k] else '<'} {targets[k]}" for k, _ in METRICS)
                     + f" | {sum(met.values())} of {len(met)} |")
    return lines + [""] if len(lines) > 4 else []


def comparison_table(results: dict) -> list:
    """Every run with a base (`--compare-to`) beside that base, the base over the run's seeds:
    validation and test sentence accuracy and the intent's calibration, the numbers the variants
    are chosen and judged by."""
    pairs = [(name, r, results[r["compare_to"]]) for name, r in results.items()
             if r.get("compare_to") in results and not r.get("pruning")]
    if not pairs:
        return []

    def pair(r, base, split, key):
        run, ref = (seed_mean(x, split, key, r["seeds"]) for x in (r, base))
        return "-" if run is None else f"{run:.2f} / " + ("-" if ref is None else f"{ref:.2f}")

    lines = ["**Variants against their base** (run / base, both over the run's seeds; validation picks, test reports)",
             "", "| run | base | seeds | validation sentence | test sentence | Δ test sentence | test intent ECE |",
             "|---|---|---|---|---|---|---|"]
    for name, r, base in pairs:
        delta = seed_mean(r, "test", "sentence_acc", r["seeds"]) - seed_mean(base, "test", "sentence_acc", r["seeds"])
        base_name = r["compare_to"] + ("" if over_seeds(base, r["seeds"]) else f" (its seeds {base['seeds']}: not the run's)")
        lines.append(f"| {name} | {base_name} | {len(r['seeds'])} | {pair(r, base, 'validation', 'sentence_acc')} | "
                     f"{pair(r, base, 'test', 'sentence_acc')} | {delta:+.2f} | {pair(r, base, 'test', 'intent_ece')} |")
    return lines + [""]


def routing_table(results: dict) -> list:
    """Joint runs: how often the parser, given no dataset, answers a test utterance with its own
    dataset's heads (`test.routing_acc`, measured by run.py or backfilled by routing.py)."""
    rows = [(name, r) for name, r in sorted(results.items()) if "routing_acc" in r["test"]]
    if not rows:
        return []
    lines = ["**Joint parser routing** (test utterances answered by their own dataset's heads, no dataset given)",
             "", "| run | dataset | seeds | routed to its own heads (%) |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['dataset']} | {r['test']['routing_acc']['n']} | {fmt(r['test']['routing_acc'])} |"
              for name, r in rows]
    return lines + [""]


def decoding_table(results: dict) -> list:
    """Runs scored with model.intent_slot_constraints off and on, on the same weights
    (`other_decoding`, measured by run.py): the decoding choice without the spread over seeds."""
    rows = [(name, r) for name, r in sorted(results.items()) if "other_decoding" in r]
    if not rows:
        return []
    lines = ["**Intent-slot decoding constraint on the same weights** (validation picks, test reports; "
             "sentence accuracy, mean ± std over seeds)", "",
             "| run | seeds | validation off | validation on | test off | test on | test slot F1 off / on |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        on, off = r["other_decoding"]["on"], r["other_decoding"]["off"]
        lines.append(f"| {name} | {len(r['seeds'])} | {fmt(off['validation']['sentence_acc'])} | "
                     f"{fmt(on['validation']['sentence_acc'])} | {fmt(off['test']['sentence_acc'])} | "
                     f"{fmt(on['test']['sentence_acc'])} | {off['test']['slot_f1']['mean']:.2f} / "
                     f"{on['test']['slot_f1']['mean']:.2f} |")
    return lines + [""]


def over_seeds(result: dict, seeds: list) -> bool:
    """Whether `seed_mean(result, ..., seeds)` is over exactly `seeds` (it falls back to all of
    `result`'s seeds where a per-seed row is missing)."""
    return set(seeds) <= {row["seed"] for row in result.get("per_seed", [])} or set(result["seeds"]) == set(seeds)


def seed_mean(result: dict, split: str, key: str, seeds: list):
    """`result`'s mean of `split`/`key` over `seeds` (over all its seeds when it has no per-seed
    rows or lacks one of them); None where the metric was not recorded."""
    by_seed = {r["seed"]: r[split].get(key) for r in result.get("per_seed", [])}
    if seeds and all(by_seed.get(s) is not None for s in seeds):
        return sum(by_seed[s] for s in seeds) / len(seeds)
    stat = result[split].get(key)
    return None if stat is None else stat["mean"]


def paired_differences(results: dict, split: str = "test", key: str = "sentence_acc") -> list:
    """(run, base, {seed: run - base}) for every run with a base, over the seeds both were
    trained with: a seed's difference cancels what that seed does to both, so the spread of these
    points against zero says whether a change is more than seed noise."""
    rows = []
    for name, r in sorted(results.items(), key=lambda item: (dataset_of(item[1]), item[0])):
        base = results.get(r.get("compare_to") or "")
        if not base:
            continue
        ours, ref = ({s["seed"]: s[split].get(key) for s in x.get("per_seed", [])} for x in (r, base))
        deltas = {s: ours[s] - ref[s] for s in sorted(ours) if ours[s] is not None and ref.get(s) is not None}
        if deltas:
            rows.append((name, r["compare_to"], deltas))
    return rows


def plot_paired_differences(results: dict, out_path) -> bool:
    """One row per run with a base: each seed's difference in sentence accuracy (validation left,
    test right) and their mean. Returns False (and writes nothing) when no run has a base."""
    panels = [(split, paired_differences(results, split)) for split in ("validation", "test")]
    names = list(dict.fromkeys(f"{name} vs {base}" for _, rows in panels for name, base, _ in rows))
    if not names:
        return False

    fig, axes = plt.subplots(1, 2, figsize=(13, 0.32 * len(names) + 1.5), sharey=True)
    for ax, (split, rows) in zip(axes, panels):
        for name, base, by_seed in rows:
            deltas, y = list(by_seed.values()), names.index(f"{name} vs {base}")
            ax.scatter(deltas, [y] * len(deltas), s=12, color="tab:blue", alpha=0.6)
            ax.scatter([sum(deltas) / len(deltas)], [y], marker="|", s=200, color="black")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set(title=f"{split}: run - base, points of sentence accuracy", xlabel="dots: one seed each; bar: mean")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names, fontsize=7)
    axes[0].invert_yaxis()
    fig.tight_layout()
    if out_path is not None:  # None: only whether there is a figure (render.py --check)
        fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return True


def pruned_rows(results: dict):
    """(name, result, pruning info) of every pruned run whose full-data run is in `results`."""
    return [(name, r, r["pruning"]) for name, r in results.items() if r.get("pruning") and r.get("compare_to") in results]


def pruning_table(results: dict) -> list:
    """MTIF vs random pruning vs the full training set, per base run and fraction."""
    groups = {}
    for name, r, p in pruned_rows(results):
        key = (r["compare_to"], p["fraction"], p["target"], p.get("per_intent", False), p.get("unit", "utterance"),
               p.get("target_split", "validation"))
        groups.setdefault(key, {})["random" if p["random"] else "MTIF"] = (name, r)
    if not groups:
        return []
    lines = ["**Pruning with MTIF** (retrained on the pruned training set; test split, mean ± std over seeds)", "",
             f"| base | fraction dropped | training set | seeds | {' | '.join(label for _, label in METRICS)} | Δ sentence vs full (same seeds) |",
             "|---|---|---|---|" + "---|" * (len(METRICS) + 1)]
    for (base, fraction, target, per_intent, unit, split), found in sorted(groups.items()):
        full = results[base]
        rows = [("full", base, full)] + [(kind, *found[kind]) for kind in ("MTIF", "random") if kind in found]
        for kind, name, r in rows:
            on = "" if split == "validation" else f" on the {split} part"
            dropped = "" if kind == "full" else f" ({r['pruning']['dropped']} {unit}s" + (")" if kind == "random" else f", target {target}{on})")
            delta = "-" if kind == "full" else \
                f"{r['test']['sentence_acc']['mean'] - seed_mean(full, 'test', 'sentence_acc', r['seeds']):+.2f}"
            share = " of each intent" if per_intent and kind != "full" else ""
            samples = " (samples)" if unit == "sample" and kind != "full" else ""
            lines.append(f"| {base} | {100 * fraction:g} %{share}{samples} | {kind}{dropped} | {len(r['seeds'])} | "
                         + " | ".join(fmt(r["test"][k]) for k, _ in METRICS) + f" | {delta} |")
    return lines + [""]


def pruning_summary(results: dict) -> list:
    """The README's table: test sentence accuracy after MTIF and random pruning and for the full
    set over the same seeds, and the gap in test utterances per seed. A pair whose files disagree
    with PRUNING_HEADLINE or with each other (target split, seeds, base) is an error."""
    lines = ["| dataset | MTIF's target | dropped | seeds | MTIF-pruned | random-pruned | full set | MTIF - random, test utterances per seed |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset, split, mtif_name, random_name in PRUNING_HEADLINE:
        missing = [name for name in (mtif_name, random_name) if name not in results]
        if missing:
            print(f"warning: no results/{missing[0]}.json: the README's pruning summary leaves out {dataset} ({split})",
                  file=sys.stderr)
            continue
        mtif, rand = results[mtif_name], results[random_name]
        for r, name in ((mtif, mtif_name), (rand, random_name)):
            if r["pruning"].get("target_split", "validation") != split:
                raise ValueError(f"{name}: MTIF's target is {r['pruning'].get('target_split', 'validation')}, "
                                 f"not {split} as PRUNING_HEADLINE says")
        if mtif["seeds"] != rand["seeds"] or mtif["compare_to"] != rand["compare_to"]:
            raise ValueError(f"{mtif_name} and {random_name} differ in seeds or base: not a side-by-side pair")
        full = seed_mean(results[mtif["compare_to"]], "test", "sentence_acc", mtif["seeds"])
        p = mtif["pruning"]
        share = " of each intent" if p.get("per_intent") else ""
        target = "held-out part of training" if split == "heldout" else split
        gap = mtif["test"]["sentence_acc"]["mean"] - rand["test"]["sentence_acc"]["mean"]
        lines.append(f"| {dataset} | {target} | {100 * p['fraction']:g} %{share} ({p['dropped']} {p.get('unit', 'utterance')}s) | "
                     f"{len(mtif['seeds'])} | {fmt(mtif['test']['sentence_acc'])} | {fmt(rand['test']['sentence_acc'])} | "
                     f"{full:.2f} | {gap * TEST_UTTERANCES[dataset] / 100:+.1f} |")
    return lines if len(lines) > 2 else []


def fraction_candidates(results: dict) -> list:
    """Per base run, target, share, unit and target split where more than one MTIF fraction was tried:
    (key, seeds, [(fraction, result)]) with 0 (the full set) first, `seeds` those every candidate
    was trained with, so that all are compared on the same seeds."""
    groups = {}
    for _, r, p in pruned_rows(results):
        if not p["random"]:
            key = (r["compare_to"], p["target"], p.get("per_intent", False), p.get("unit", "utterance"),
                   p.get("target_split", "validation"))
            groups.setdefault(key, []).append((p["fraction"], r))
    found = []
    for key, rows in sorted(groups.items()):
        candidates = [(0.0, results[key[0]])] + sorted(rows, key=lambda row: row[0])
        seeds = sorted(set.intersection(*(set(r["seeds"]) for _, r in candidates)))
        if len(rows) >= 2 and seeds:
            found.append((key, seeds, candidates))
    return found


def fraction_choice(results: dict) -> list:
    """The pruning fraction chosen on validation (METHODS.md section 3): per base run, target and
    share, the MTIF fraction (or none, the full set) with the highest validation sentence accuracy,
    over the seeds every candidate was trained with. Shown where more than one fraction was tried."""
    lines = []
    for (base, target, per_intent, unit, split), seeds, candidates in fraction_candidates(results):
        scores = [(fraction, seed_mean(r, "validation", "sentence_acc", seeds)) for fraction, r in candidates]
        best = max(scores, key=lambda fs: fs[1])[0]
        share = "within each intent" if per_intent else "globally"
        on = "" if split == "validation" else f" on the {split} part"
        lines.append(f"- {base}, MTIF target {target}{on}, {unit}s dropped {share}: validation sentence accuracy over seeds {seeds}: "
                     + ", ".join(f"{100 * f:g} % {v:.2f}" for f, v in scores)
                     + f" -> **chosen fraction: {100 * best:g} %**" + (" (no pruning)" if best == 0 else ""))
    return ["Fraction chosen on validation (0 % = the full training set):", ""] + lines + [""] if lines else []


def plot_fraction_choice(results: dict, out_path) -> bool:
    """One panel per fraction choice: validation and test sentence accuracy against the fraction
    MTIF dropped (0 = the full set), over the seeds all fractions share, with the same-size random
    prunings over those seeds beside them and the fraction validation chooses marked. Returns False
    (and writes nothing) when no choice had more than one fraction."""
    choices = fraction_candidates(results)
    if not choices:
        return False
    fig, axes = plt.subplots(1, len(choices), figsize=(5 * len(choices), 3.8), squeeze=False)
    for ax, ((base, target, per_intent, unit, split), seeds, candidates) in zip(axes[0], choices):
        x = [100 * fraction for fraction, _ in candidates]
        for data_split, style in (("validation", "o-"), ("test", "s--")):
            y = [seed_mean(r, data_split, "sentence_acc", seeds) for _, r in candidates]
            ax.plot(x, y, style, label=f"MTIF, {data_split}")
            if data_split == "validation":
                chosen = x[max(range(len(y)), key=y.__getitem__)]
                ax.axvline(chosen, color="grey", lw=0.8, ls=":", label=f"chosen on validation: {chosen:g} %")
        for name, r, p in pruned_rows(results):
            same = (r["compare_to"], p["target"], p.get("per_intent", False), p.get("unit", "utterance"),
                    p.get("target_split", "validation")) == (base, target, per_intent, unit, split)
            if p["random"] and same:
                for data_split, marker in (("validation", "x"), ("test", "+")):
                    ax.scatter([100 * p["fraction"]], [seed_mean(r, data_split, "sentence_acc", seeds)], marker=marker,
                               s=60, color="black", zorder=3, label=f"random, {data_split}")
        on = "" if split == "validation" else f", target: {split} part"
        ax.set(title=f"{base}{on}\n{unit}s dropped {'within each intent' if per_intent else 'globally'}, seeds {seeds}",
               xlabel="% dropped by MTIF (0 = full set)", ylabel="sentence accuracy (%)")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # one legend entry for several random fractions
        ax.legend(unique.values(), unique.keys(), fontsize=7)
    fig.tight_layout()
    if out_path is not None:  # None: only whether there is a figure (render.py --check)
        fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return True


def speed_summary() -> list:
    """The README's speed table: each variant's training-step and batch-32 inference ratio against
    the plain softmax model, measured side by side in one process (benchmarks/speed.py), with the
    machine and date each was measured on."""
    lines = ["| variant | training step | batch-32 inference throughput | measured |", "|---|---|---|---|"]
    for variant, label in SPEED_VARIANTS:
        path = RESULTS / f"speed_{variant}_atis_hf.json"
        if path.exists():
            s = json.loads(path.read_text())
            lines.append(f"| {label} | {s['train_step_ratio']:.2f}x | {s['inference_throughput_ratio']:.2f}x | "
                         f"{s['machine']['cpu'].split(' @')[0]}, {s['date'][:10]}, commit {s['commit'][:7]} |")
    return lines if len(lines) > 2 else []


def load_refits() -> dict:
    return {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("refit_*.json"))}


def refit_table(refits: dict) -> list:
    """benchmarks/refit.py: the heads refitted on the fixed encoder without MTIF's most harmful
    samples, against as many random ones and the full set; the fraction chosen on validation."""
    lines = []
    for name, r in refits.items():
        seeds, v = r["seeds"], r["variants"]
        lines += [f"**Pruning within MTIF's scope** (`{name}`: heads refitted on the fixed encoder of the `{r['base']}` "
                  f"runs, seeds {seeds}; mean ± std over seeds)", "",
                  f"| variant | samples dropped | validation sentence | test {' | test '.join(label for _, label in METRICS)} "
                  "| Δ test sentence vs full | validation loss change, predicted / actual | test loss change |",
                  "|---|---|---|" + "---|" * (len(METRICS) + 3)]
        for variant, stats in v.items():
            refits_ = [s["variants"][variant].get("refit") for s in r["per_seed"]]
            dropped = "-" if variant == "trained" else f"{sum(x['dropped'] for x in refits_) / len(refits_):.0f}"
            delta = "-" if variant in ("trained", "full") else \
                f"{stats['test']['sentence_acc']['mean'] - v['full']['test']['sentence_acc']['mean']:+.2f}"
            change = "-"
            if variant not in ("trained", "full"):
                pred, act = ([sum(x["validation_loss_change"][kind].values()) for x in refits_] for kind in ("predicted", "actual"))
                change = f"{sum(pred) / len(pred):+.4f} / {sum(act) / len(act):+.4f}"
            test_loss = stats["test"].get("loss_change")  # vs the full refit, summed over tasks
            test_loss = "-" if variant == "full" or not test_loss else f"{test_loss['mean']:+.4f} ± {test_loss['std']:.4f}"
            label = {"trained": "trained (as saved by slu-train)", "full": "full (refitted on every sample)"}.get(variant, variant)
            lines.append(f"| {label} | {dropped} | {fmt(stats['validation']['sentence_acc'])} | "
                         + " | ".join(fmt(stats["test"][k]) for k, _ in METRICS) + f" | {delta} | {change} | {test_loss} |")
        by_fraction = ", ".join(f"{f} % {x:.2f}" for f, x in r["validation_sentence_by_fraction"].items())
        best = r["chosen_fraction"]
        lines += ["", f"Validation sentence accuracy of the MTIF refits by fraction: {by_fraction} -> **chosen fraction: "
                  f"{100 * best:g} %**" + (" (no pruning)" if best == 0 else ""), ""]
    return lines


def render(figure=FIGURE, pruning_figure=PRUNING_FIGURE) -> tuple:
    """RESULTS.md's text and the README's marked blocks; the figures are written unless None."""
    results = load_results()
    anchors = json.loads((ROOT / "benchmarks" / "anchors.json").read_text())
    datasets = sorted({dataset_of(r) for r in results.values()})
    summary, readme = [], []
    for dataset in datasets:
        title = f"**{dataset.upper()}** (test split, mean ± sample std over seeds; checkpoint chosen on validation)"
        summary += [title, ""] + accuracy_table(results, anchors, dataset) + [""]
        headline = headline_table(results, anchors, dataset)
        readme += [title, ""] + headline + [""] if headline else []
    summary += foundation_table(results)
    readme += foundation_table(results)
    summary += comparison_table(results)
    summary += routing_table(results)
    summary += decoding_table(results)
    summary += pruning_table(results)
    pruning_readme = pruning_summary(results)
    summary += fraction_choice(results)
    if plot_fraction_choice(results, pruning_figure):
        summary += [f"![Sentence accuracy against the fraction MTIF dropped]({PRUNING_FIGURE.name})", ""]
    summary += refit_table(load_refits())
    body = ["# Benchmark results", "",
            "Generated by `python benchmarks/render.py` from `benchmarks/results/*.json`; do not edit by hand.",
            "Every number is written by the benchmark that measured it; the results file records the command,",
            "commit, machine, date and seeds. Published numbers are in *italics* and come from the papers.",
            "Timings (s/epoch: the median epoch of each seed; utterances/s at batch 1 and 32) are from a shared",
            "2-core CPU and are noisy (files from before 2026-11-27 record the mean epoch instead);",
            "compare speed only as ratios measured side by side in one run (see the speed rows below).", ""]
    body += summary
    if plot_paired_differences(results, figure):
        body += [f"![Per-seed differences against the base run]({FIGURE.name})", ""]
    body += ["## Per-run details", ""]
    for name, r in results.items():
        body += [f"### {name}", "", f"- command: `{r['command']}`", f"- commit: `{r['commit']}`, date {r['date']}",
                 f"- machine: {r['machine']['cpu']} ({r['machine']['cores']} cores)"
                 + (f", GPU {r['machine']['gpu']}" if r["machine"].get("gpu") else "") + f", torch {r['machine']['torch']}",
                 f"- seeds: {r['seeds']}; best epochs: {[s['best_epoch'] for s in r['per_seed']]}",
                 "- validation: " + ", ".join(f"{label} {fmt(r['validation'][k])}" for k, label in METRICS),
                 f"- strict IOB2 slot F1 (test): {fmt(r['test']['slot_f1_strict'])}",
                 "- intent calibration (test): " + ("not recorded (run before calibration was measured)"
                                                   if "intent_ece" not in r["test"] else
                                                   f"ECE {fmt(r['test']['intent_ece'])} %, NLL {r['test']['intent_nll']['mean']:.3f}"
                                                   f" ± {r['test']['intent_nll']['std']:.3f}"),
                 f"- peak memory: {r['peak_memory_mb']:.0f} MB"]
        if r.get("note"):
            body.append(f"- note: {r['note']}")
        fb = [s.get("feedback") for s in r["per_seed"] if s.get("feedback")]
        if fb:
            body.append("- feedback, test utterances whose frame changes from iteration 0 to the last: "
                        + "; ".join(f"seed {s['seed']}: {s['feedback']['changed']} changed, {s['feedback']['fixed']} fixed, "
                                    f"{s['feedback']['broken']} broken" for s in r["per_seed"] if s.get("feedback")))
            body.append("- gate choice (probabilities per infusion point 0=head input, 1=hidden, 2=logits): "
                        + "; ".join(f"seed {s['seed']}: " + ", ".join(f"{d} {[round(p, 2) for p in v]}" for d, v in
                                                                         (s.get("gate_probabilities") or {}).items())
                                    for s in r["per_seed"]))
        body.append("")
    for path in sorted(RESULTS.glob("speed_*.json")) + sorted(RESULTS.glob("inference_*.json")) + sorted(
            RESULTS.glob("influence_*.json")) + sorted(RESULTS.glob("refit_*.json")):
        s = json.loads(path.read_text())
        body += [f"## {path.stem}", "", s.get("summary_markdown", ""), ""]
        if s.get("benchmark") == "inference":
            body += inference_targets(s)
        body += [
                 f"command `{s['command']}`, commit `{s['commit']}`, {s['date']}", ""]
    return "\n".join(body) + "\n", {(START, END): "\n".join(readme), (PRUNING_START, PRUNING_END): "\n".join(pruning_readme),
                                    (SPEED_START, SPEED_END): "\n".join(speed_summary())}


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if RESULTS.md or the README tables are out of date")
    args = parser.parse_args(argv)
    results_md, blocks = render(None, None) if args.check else render()
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    new_text = text
    for (start, end), table in blocks.items():  # each marked block of the README, rewritten in place
        if start in new_text and end in new_text:
            head, rest = new_text.split(start, 1)
            _, tail = rest.split(end, 1)
            indent = head.rsplit("\n", 1)[-1]  # a block inside a list item keeps the item's indentation
            indent = indent if not indent.strip() else ""
            body = "".join(f"{indent}{line}\n" if line else "\n" for line in table.split("\n"))
            new_text = f"{head}{start}\n{body}{indent}{end}{tail}"
    results_file = ROOT / "benchmarks" / "RESULTS.md"
    stale = [f.name for f, new, old in ((results_file, results_md, results_file.read_text(encoding="utf-8")
                                         if results_file.exists() else None), (readme, new_text, text))
             if new != old]
    if args.check:
        print(f"out of date: {', '.join(stale)} (run python benchmarks/render.py)" if stale else "up to date")
        return 1 if stale else 0
    results_file.write_text(results_md, encoding="utf-8")
    if new_text != text:
        readme.write_text(new_text, encoding="utf-8")
    print("wrote benchmarks/RESULTS.md" + (" and the README tables" if START in text else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
