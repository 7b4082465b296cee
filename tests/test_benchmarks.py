"""The benchmark scripts' bookkeeping: pruned recipes carry their pruning info into results files,
and render.py puts full, MTIF-pruned and random-pruned runs side by side."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import render  # noqa: E402
import run  # noqa: E402


def stat(mean):
    return {"mean": mean, "std": 0.1}


def result(sentence, **extra):
    return {"recipe": "atis", "seeds": [1, 2, 3],
            "test": {"intent_acc": stat(97.0), "slot_f1": stat(95.0), "sentence_acc": stat(sentence)}, **extra}


def test_a_pruned_recipe_records_how_its_training_set_was_made(tmp_path):
    recipe = tmp_path / "pruned-both-5pct.yaml"
    recipe.write_text("seed: 1\n")
    assert run.pruning_info(recipe) == {}
    (tmp_path / "prune.json").write_text(json.dumps({"run_dir": "runs/atis", "target": "both", "fraction": 0.05,
                                                     "random": False, "seed": 0, "dropped": 224, "kept": 4254,
                                                     "negative": 900, "dropped_ids": [1, 2],
                                                     "target_split": "heldout", "heldout_rejoined": 449}))
    info = run.pruning_info(recipe)["pruning"]
    assert info["dropped"] == 224 and info["fraction"] == 0.05 and "dropped_ids" not in info
    assert info["target_split"] == "heldout" and info["heldout_rejoined"] == 449


def test_render_puts_full_mtif_and_random_side_by_side():
    pruning = {"fraction": 0.05, "target": "both", "dropped": 224}
    results = {"atis": result(87.0),
               "atis_mtif_5pct": result(87.5, compare_to="atis", pruning={**pruning, "random": False}),
               "atis_random_5pct": result(86.75, compare_to="atis", pruning={**pruning, "random": True})}
    lines = render.pruning_table(results)
    rows = [line for line in lines if line.startswith("| atis")]
    assert [row.split(" | ")[2].split(" (")[0] for row in rows] == ["full", "MTIF", "random"]
    assert rows[0].endswith("| - |") and rows[1].endswith("| +0.50 |") and rows[2].endswith("| -0.25 |")
    assert "5 %" in rows[1] and "target both" in rows[1] and "target" not in rows[2]
    assert render.pruning_table({"atis": result(87.0)}) == []

    per_intent = {**pruning, "per_intent": True}
    results.update(atis_mtif_5pct_per_intent=result(87.25, compare_to="atis", pruning={**per_intent, "random": False}),
                   atis_random_5pct_per_intent=result(87.0, compare_to="atis", pruning={**per_intent, "random": True}))
    rows = [line for line in render.pruning_table(results) if line.startswith("| atis")]
    assert len(rows) == 6 and [r.split(" | ")[1] for r in rows[3:]] == ["5 %", "5 % of each intent", "5 % of each intent"]
    assert rows[4].endswith("| +0.25 |") and rows[5].endswith("| +0.00 |")

    # a pruned row over fewer seeds is compared with the full row's mean over those seeds
    results["atis"]["per_seed"] = [{"seed": s, "test": {"sentence_acc": v}} for s, v in ((1, 86.0), (2, 87.5), (3, 87.5))]
    results["atis_mtif_5pct_per_intent"]["seeds"] = [1]
    rows = [line for line in render.pruning_table(results) if line.startswith("| atis")]
    assert rows[4].endswith("| +1.25 |") and rows[1].endswith("| +0.50 |")

    # sample-level pruning (an utterance's intent or slot labels) is a group of its own
    samples = {**per_intent, "unit": "sample"}
    results.update(atis_mtif_5pct_per_intent_samples=result(87.5, compare_to="atis", pruning={**samples, "random": False}))
    rows = [line for line in render.pruning_table(results) if line.startswith("| atis")]
    assert len(rows) == 8 and [r.split(" | ")[2].split(" (")[0] for r in rows].count("full") == 3
    assert [r.split(" | ")[1:3] for r in rows if "(samples)" in r] == [["5 % of each intent (samples)",
                                                                       "MTIF (224 samples, target both)"]]

    # MTIF scored against a held-out part of the training set: its own group, said in the row
    heldout = {**samples, "target_split": "heldout"}
    results.update(atis_mtif_5pct_per_intent_samples_heldout=result(87.0, compare_to="atis",
                                                                     pruning={**heldout, "random": False}))
    rows = [line for line in render.pruning_table(results) if line.startswith("| atis")]
    assert len(rows) == 10 and [r.split(" | ")[2] for r in rows if "heldout" in r] == [
        "MTIF (224 samples, target both on the heldout part)"]


def test_the_readme_pruning_summary_is_rendered_into_its_marked_block(tmp_path, monkeypatch):
    pruning = {"fraction": 0.02, "target": "both", "dropped": 163, "unit": "sample", "per_intent": True}
    dataset, split, mtif_name, random_name = render.PRUNING_HEADLINE[0]
    results = {"atis_indep": result(87.0), mtif_name: result(87.0, compare_to="atis_indep", pruning=pruning),
               random_name: result(87.5, compare_to="atis_indep", pruning=pruning)}
    (row,) = render.pruning_summary(results)[2:]
    cells = row.strip("| ").split(" | ")
    assert cells[:4] == [dataset, split, "2 % of each intent (163 samples)", "3"]
    assert cells[4:7] == ["87.00 ± 0.10", "87.50 ± 0.10", "87.00"]
    assert cells[7] == f"{-0.5 * render.TEST_UTTERANCES[dataset] / 100:+.1f}"  # the gap in test utterances per seed
    assert render.pruning_summary({"atis_indep": result(87.0)}) == []
    # a pair that is not what the table says it is fails loudly
    results[random_name]["seeds"] = [1, 2]
    with pytest.raises(ValueError, match="seeds or base"):
        render.pruning_summary(results)
    results[random_name]["seeds"] = [1, 2, 3]
    results[mtif_name]["pruning"] = {**pruning, "target_split": "heldout"}
    with pytest.raises(ValueError, match="not validation"):
        render.pruning_summary(results)

    # main() rewrites the block in place, indented as the list item that holds it
    monkeypatch.setattr(render, "ROOT", tmp_path)
    monkeypatch.setattr(render, "render", lambda *figures: ("results\n", {
        (render.PRUNING_START, render.PRUNING_END): "| a |\n|---|"}))
    (tmp_path / "benchmarks").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text(f"- item\n\n  {render.PRUNING_START}\n  | old |\n  {render.PRUNING_END}\n")
    (tmp_path / "benchmarks" / "RESULTS.md").write_text("results\n")  # up to date: only the README block is stale
    assert render.main(["--check"]) == 1
    assert render.main([]) == 0 and render.main(["--check"]) == 0
    assert readme.read_text() == f"- item\n\n  {render.PRUNING_START}\n  | a |\n  |---|\n  {render.PRUNING_END}\n"


def test_variants_are_listed_beside_their_base_over_the_same_seeds():
    base = result(74.0, validation={"sentence_acc": stat(76.5)})
    base["test"]["intent_ece"] = stat(3.1)
    variant = result(74.5, compare_to="atis_10pct", validation={"sentence_acc": stat(77.25)})
    pruned = result(80.0, compare_to="atis_10pct", pruning={"fraction": 0.05, "random": False}, validation={})
    table = render.comparison_table({"atis_10pct": base, "atis_vmtl_10pct": variant, "p": pruned})
    rows = [line for line in table if line.startswith("| atis_vmtl")]
    assert rows == ["| atis_vmtl_10pct | atis_10pct | 3 | 77.25 / 76.50 | 74.50 / 74.00 | +0.50 | - |"]
    assert not any(line.startswith("| p |") for line in table)  # pruned runs have their own table
    assert render.comparison_table({"atis_10pct": base}) == []

    # a one-seed trial is compared with the base's run of that seed, not the base's mean
    base["per_seed"] = [{"seed": s, "validation": {"sentence_acc": v}, "test": {"sentence_acc": t, "intent_ece": 3.0}}
                        for s, v, t in ((1, 78.0, 73.0), (2, 76.0, 74.5), (3, 75.5, 74.5))]
    trial = result(74.0, compare_to="atis_10pct", seeds=[1], validation={"sentence_acc": stat(77.0)},
                   per_seed=[{"seed": 1, "validation": {"sentence_acc": 77.0}, "test": {"sentence_acc": 74.0}}])
    rows = [line for line in render.comparison_table({"atis_10pct": base, "trial": trial}) if line.startswith("| trial")]
    assert rows == ["| trial | atis_10pct | 1 | 77.00 / 78.00 | 74.00 / 73.00 | +1.00 | - |"]
    # a base without one of the run's seeds is compared over its own seeds, and the table says so
    wider = result(74.0, compare_to="atis_10pct", seeds=[1, 4], validation={"sentence_acc": stat(77.0)})
    (row,) = [line for line in render.comparison_table({"atis_10pct": base, "wider": wider}) if line.startswith("| wider")]
    assert row.startswith("| wider | atis_10pct (its seeds [1, 2, 3]: not the run's) | 2 |")


def test_the_speed_table_comes_from_the_speed_files_with_where_they_were_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    assert render.speed_summary() == []
    (tmp_path / "speed_feedback_atis_hf.json").write_text(json.dumps({
        "train_step_ratio": 1.1234, "inference_throughput_ratio": 0.9626, "commit": "2b72ade" + "0" * 33,
        "date": "2026-12-07T22:30:00+00:00", "machine": {"cpu": "Intel(R) Xeon(R) Processor @ 2.80GHz"}}))
    assert render.speed_summary()[2:] == ["| feedback | 1.12x | 0.96x | Intel(R) Xeon(R) Processor, 2026-12-07, commit 2b72ade |"]


def test_the_accuracy_table_compares_a_run_with_its_base_over_the_run_s_seeds():
    common = {"train_seconds_per_epoch": stat(40.0), "inference_utt_per_s": {"batch_1": stat(50.0), "batch_32": stat(300.0)}}
    base = result(87.0, **common, per_seed=[{"seed": s, "test": {"sentence_acc": v}} for s, v in ((1, 86.0), (2, 87.5), (3, 87.5))])
    trial = result(86.5, **common, compare_to="atis", seeds=[1])
    rows = [line for line in render.accuracy_table({"atis": base, "trial": trial}, {}, "atis") if line.startswith("| trial")]
    assert "| +0.50 (vs atis) |" in rows[0]  # 86.5 against seed 1's 86.0, not the base's mean of 87.0
    base.pop("per_seed")
    rows = [line for line in render.accuracy_table({"atis": base, "trial": trial}, {}, "atis") if line.startswith("| trial")]
    assert "| -0.50 (vs atis, other seeds) |" in rows[0]


def test_the_pruning_fraction_is_chosen_on_validation_over_the_seeds_all_candidates_share(tmp_path):
    def run_with(validation_by_seed, fraction=None, random=False):
        seeds = sorted(validation_by_seed)
        r = result(80.0, seeds=seeds, per_seed=[{"seed": s, "validation": {"sentence_acc": v},
                                                 "test": {"sentence_acc": 80.0}} for s, v in validation_by_seed.items()])
        if fraction is not None:
            r.update(compare_to="atis", pruning={"fraction": fraction, "target": "both", "dropped": 10,
                                                 "random": random, "per_intent": True})
        return r

    results = {"atis": run_with({1: 91.0, 2: 95.0, 3: 95.0}),
               "atis_mtif_5pct_per_intent": run_with({1: 91.5, 2: 90.0, 3: 90.0}, 0.05),
               "atis_random_5pct_per_intent": run_with({1: 99.0}, 0.05, random=True)}
    assert render.fraction_choice(results) == []  # one fraction tried: nothing to choose
    assert not render.plot_fraction_choice(results, tmp_path / "none.png") and not (tmp_path / "none.png").exists()

    results["atis_mtif_1pct_per_intent"] = run_with({1: 92.0}, 0.01)
    (line,) = [line for line in render.fraction_choice(results) if line.startswith("- ")]
    # compared on seed 1 only (the 1 % row has no other); the random row is never a candidate
    assert "seeds [1]" in line and "0 % 91.00, 1 % 92.00, 5 % 91.50" in line and line.endswith("chosen fraction: 1 %**")
    figure = tmp_path / "pruning.png"
    assert render.plot_fraction_choice(results, figure) and figure.stat().st_size > 1000

    results["atis_mtif_1pct_per_intent"] = run_with({1: 90.0}, 0.01)
    (line,) = [line for line in render.fraction_choice(results) if line.startswith("- ")]
    assert line.endswith("chosen fraction: 5 %**")
    results["atis_mtif_5pct_per_intent"] = run_with({1: 90.5}, 0.05)
    (line,) = [line for line in render.fraction_choice(results) if line.startswith("- ")]
    assert line.endswith("chosen fraction: 0 %** (no pruning)")


def test_fresh_retrains_from_scratch_instead_of_resuming_a_stale_run(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "ROOT", tmp_path)
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    stale = tmp_path / "runs" / "bench" / "atis" / "seed1" / "checkpoint"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text("{}")
    seen, where = [], []

    def fake_run_seed(recipe, overrides, seed, run_dir, device="auto"):
        seen.append((run_dir / "checkpoint").exists())
        where.append(run_dir)
        scores = {k: 90.0 for k in run.METRICS}
        return {"": {"seed": seed, "test": scores, "validation": scores, "train_seconds_per_epoch": 1.0,
                     "inference_utt_per_s": {"batch_1": 1.0, "batch_32": 1.0}, "peak_memory_mb": 1.0}}

    monkeypatch.setattr(run, "run_seed", fake_run_seed)
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "atis.yaml")
    run.main([recipe, "--seeds", "1"])
    run.main([recipe, "--seeds", "1"])  # already in the results file: skipped
    run.main([recipe, "--seeds", "1", "--fresh"])
    assert seen[:2] == [True, False], "without --fresh the run resumes; with it, it starts from an empty directory"
    assert json.loads((tmp_path / "results" / "atis.json").read_text())["seeds"] == [1]
    # a rerun elsewhere (reproducing a row without touching the committed results)
    run.main([recipe, "--seeds", "2", "--name", "again", "--results-dir", str(tmp_path / "mine"),
              "--runs-dir", str(tmp_path / "my_runs")])
    assert json.loads((tmp_path / "mine" / "again.json").read_text())["seeds"] == [2]
    assert not (tmp_path / "results" / "again.json").exists() and where[-1] == tmp_path / "my_runs" / "again" / "seed2"


def test_foundation_targets_judge_the_candidate_chosen_on_validation():
    def candidate(validation, slot_f1, seeds=(1, 2, 3)):
        r = result(88.0, seeds=list(seeds), validation={"sentence_acc": stat(validation)})
        r["test"].update(intent_acc=stat(97.6), slot_f1=stat(slot_f1))
        return r

    results = {"atis": candidate(91.5, 95.495), "atis_crf": candidate(91.6, 95.52),
               "atis_lr2e-4": candidate(99.0, 90.0, seeds=[1]), "atis_feedback": candidate(95.0, 99.0)}
    (row,) = [line for line in render.foundation_table(results) if line.startswith("| atis")]
    cells = row.split(" | ")
    assert cells[1] == "atis_crf", "best validation among candidates with 3+ seeds; non-candidates ignored"
    assert "atis 91.50" in cells[3] and "lr2e-4" not in cells[3] and "feedback" not in cells[3]
    assert cells[5] == "95.520 >= 95.5" and row.endswith("| 3 of 3 |")
    results["atis"]["validation"]["sentence_acc"] = stat(91.7)
    (row,) = [line for line in render.foundation_table(results) if line.startswith("| atis")]
    assert row.split(" | ")[1] == "atis" and "95.495 < 95.5" in row and row.endswith("| 2 of 3 |")
    assert render.foundation_table({"atis_feedback": candidate(95.0, 99.0)}) == []
    # a rerun with independent seeds replaces the candidate's row (once it has 3 seeds)
    results["atis_indep"] = candidate(91.65, 95.6, seeds=[1, 2])
    assert render.foundation_table(results)[4].split(" | ")[1] == "atis"
    results["atis_indep"]["seeds"] = [1, 2, 3]
    (row,) = [line for line in render.foundation_table(results) if line.startswith("| atis")]
    assert row.split(" | ")[1] == "atis_indep" and "atis 91.70" not in row and row.endswith("| 3 of 3 |")
    # equal means up to float noise (the same count of right frames): the smaller spread over seeds wins
    results["atis_crf"]["validation"]["sentence_acc"] = {"mean": 91.65 + 1e-12, "std": 0.5}
    results["atis_indep"]["validation"]["sentence_acc"] = {"mean": 91.65, "std": 0.2}
    assert render.foundation_table(results)[4].split(" | ")[1] == "atis_indep"
    results["atis_indep"]["validation"]["sentence_acc"]["std"] = 0.9
    assert render.foundation_table(results)[4].split(" | ")[1] == "atis_crf"
    # the same weights decoded with the intent-slot constraint flipped (run.py's other_decoding) compete too
    flipped = {"validation": {"sentence_acc": {"mean": 91.7, "std": 0.3}},
               "test": {"intent_acc": stat(97.9), "slot_f1": stat(95.7), "sentence_acc": stat(87.3)}}
    results["atis_crf"]["other_decoding"] = {"intent_slot_constraints": False, "on": flipped, "off": {}}
    (row,) = [line for line in render.foundation_table(results) if line.startswith("| atis")]
    cells = row.split(" | ")
    assert cells[1] == "atis_crf (constraint on)" and cells[2] == "91.70 ± 0.30" and cells[4] == "97.900 >= 97.5"
    assert "atis_crf 91.65, atis_crf (constraint on) 91.70" in cells[3]
    flipped["validation"]["sentence_acc"] = {"mean": 91.65, "std": 0.5}  # a tie: the run as trained
    assert render.foundation_table(results)[4].split(" | ")[1] == "atis_crf"
    results["atis_crf"]["other_decoding"]["intent_slot_constraints"] = True  # trained with it: "off" is the flip
    results["atis_crf"]["other_decoding"]["off"] = {**flipped, "validation": {"sentence_acc": stat(92.0)}}
    assert render.foundation_table(results)[4].split(" | ")[1] == "atis_crf (constraint off)"


def test_overrides_may_follow_the_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "ROOT", tmp_path)
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    seen = []

    def fake_run_seed(recipe, overrides, seed, run_dir, device="auto"):
        seen.append((list(overrides), seed))
        scores = {k: 90.0 for k in run.METRICS}
        return {"": {"seed": seed, "test": scores, "validation": scores, "train_seconds_per_epoch": 1.0,
                     "inference_utt_per_s": {"batch_1": 1.0, "batch_32": 1.0}, "peak_memory_mb": 1.0}}

    monkeypatch.setattr(run, "run_seed", fake_run_seed)
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "atis.yaml")
    run.main([recipe, "--seeds", "1", "2", "optim.lr=2e-4", "--name", "atis_x"])
    run.main([recipe, "train.epochs=2", "--seeds", "3"])
    assert seen == [(["optim.lr=2e-4"], 1), (["optim.lr=2e-4"], 2), (["train.epochs=2"], 3)]
    # more seeds later: the measured ones stay (never silently dropped), each with its commit
    run.main([recipe, "optim.lr=2e-4", "--name", "atis_x", "--seeds", "2", "4"])
    saved = json.loads((tmp_path / "results" / "atis_x.json").read_text())
    assert seen[3:] == [(["optim.lr=2e-4"], 4)] and saved["seeds"] == [1, 2, 4]
    assert [r["seed"] for r in saved["per_seed"]] == [1, 2, 4]
    # each seed records what ran it (the file's top-level command is the last invocation's)
    assert all({"command", "commit", "machine", "date"} <= set(r) for r in saved["per_seed"])


def test_a_joint_recipe_compares_each_dataset_with_its_own_base(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "ROOT", tmp_path)
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")

    def fake_run_seed(recipe, overrides, seed, run_dir, device="auto"):
        scores = {k: 90.0 for k in run.METRICS}
        row = {"seed": seed, "test": scores, "validation": scores, "train_seconds_per_epoch": 1.0,
               "inference_utt_per_s": {"batch_1": 1.0, "batch_32": 1.0}, "peak_memory_mb": 1.0}
        return {"": row, "atis": row, "snips": row}  # single-dataset recipes read "", joint ones each dataset

    monkeypatch.setattr(run, "run_seed", fake_run_seed)
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "atis_snips_joint_vmtl.yaml")
    compare = lambda name: json.loads((tmp_path / "results" / name).read_text())["compare_to"]  # noqa: E731
    run.main([recipe, "--seeds", "1"])
    assert [compare("atis_snips_joint_vmtl_atis.json"), compare("atis_snips_joint_vmtl_snips.json")] == ["atis", "snips"]
    run.main([recipe, "--seeds", "1", "--name", "v", "--compare-to", "atis_snips_joint_{dataset}"])
    assert [compare("v_atis.json"), compare("v_snips.json")] == ["atis_snips_joint_atis", "atis_snips_joint_snips"]
    run.main([str(Path(recipe).with_name("atis.yaml")), "--seeds", "1", "--name", "w", "--compare-to", "atis"])
    run.main([str(Path(recipe).with_name("atis.yaml")), "--seeds", "1", "--name", "x"])
    assert [compare("w.json"), compare("x.json")] == ["atis", None]
    for bad in (["--compare-to", "atis_{dataset}"], ["--compare-to", "x{y}"]):  # refused before any training
        with pytest.raises(SystemExit):
            run.main([str(Path(recipe).with_name("atis.yaml")), "--seeds", "2", "--name", "y", *bad])
    assert not (tmp_path / "results" / "y.json").exists()


def test_routing_is_summarised_over_the_seeds_that_measured_it_and_rendered():
    row = {"test": {k: 90.0 for k in run.METRICS}, "validation": {k: 90.0 for k in run.METRICS},
           "train_seconds_per_epoch": 1.0, "inference_utt_per_s": {"batch_1": 1.0, "batch_32": 2.0}, "peak_memory_mb": 1}
    rows = [{**row, "test": {**row["test"], "routing_acc": v}} for v in (92.0, 94.0)] + [row]
    summary = run.summarise(rows)["test"]["routing_acc"]
    assert summary["mean"] == 93.0 and summary["n"] == 2
    joint = result(86.0, dataset="atis")
    joint["test"]["routing_acc"] = {"mean": 92.27, "std": 0.5, "n": 3}
    table = render.routing_table({"atis_snips_joint_atis": joint, "atis": result(87.0)})
    assert table[-2] == "| atis_snips_joint_atis | atis | 3 | 92.27 ± 0.50 |" and len(table) == 6
    assert render.routing_table({"atis": result(87.0)}) == []


def test_paired_differences_are_per_seed_over_the_seeds_both_runs_have(tmp_path):
    def per_seed(*values):
        return [{"seed": s, "test": {"sentence_acc": v}, "validation": {}} for s, v in values]
    base = result(87.0, per_seed=per_seed((1, 86.0), (2, 87.0), (3, 88.0)))
    variant = result(87.5, compare_to="atis", per_seed=per_seed((1, 87.0), (3, 87.5)))
    orphan = result(90.0, compare_to="missing", per_seed=per_seed((1, 90.0)))
    results = {"atis": base, "atis_feedback": variant, "orphan": orphan}
    assert render.paired_differences(results) == [("atis_feedback", "atis", {1: 1.0, 3: -0.5})]
    assert render.paired_differences(results, "validation") == []  # not recorded: no row, no crash

    figure = tmp_path / "variants.png"
    assert render.plot_paired_differences(results, figure) and figure.stat().st_size > 1000
    assert not render.plot_paired_differences({"atis": base}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_influence_transfer_compares_validation_and_test_targets_sample_by_sample():
    import torch

    import influence_transfer

    rows = [{"intent->intent": "-1", "intent->slot": "0", "slot->intent": "0", "slot->slot": "2"},
            {"intent->intent": "3", "intent->slot": "1", "slot->intent": "-4", "slot->slot": "0"}]
    assert influence_transfer.sample_values(rows).tolist() == [-1.0, 2.0, 4.0, -4.0]

    test = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    same = influence_transfer.compare(test.clone(), test, 0.02)
    assert same["selected"] == 20 and same["overlap"] == 1.0 and same["test_gain_share"] == pytest.approx(1.0)
    assert same["spearman"] == pytest.approx(1.0)
    assert same["predicted_change"]["test_loss_test_chosen"] < same["predicted_change"]["test_loss_random"]
    opposite = influence_transfer.compare(-test, test, 0.02)  # what validation calls harmful helps test most
    assert opposite["overlap"] == 0.0 and opposite["test_gain_share"] < 0 and opposite["spearman"] == pytest.approx(-1.0)


def test_refit_table_puts_mtif_random_and_full_side_by_side():
    def split(sentence):
        return {"intent_acc": stat(97.0), "slot_f1": stat(95.0), "sentence_acc": stat(sentence)}

    def refit(dropped, predicted, actual):
        return {"dropped": dropped, "validation_loss_change": {"predicted": {"intent": predicted, "slot": 0.0},
                                                               "actual": {"intent": actual, "slot": -0.001}}}

    variants = {"trained": (90.0, 87.0, None), "full": (90.5, 87.25, refit(0, 0.0, 0.0)),
                "mtif_2pct": (91.0, 87.5, refit(180, -0.02, -0.01)), "random_2pct": (90.25, 86.75, refit(180, 0.0, 0.002))}
    seeds = [{"seed": s, "variants": {n: {"refit": x} if x else {} for n, (_, _, x) in variants.items()}} for s in (1, 2)]
    refits = {"refit_atis": {"base": "atis", "seeds": [1, 2], "chosen_fraction": 0.02, "per_seed": seeds,
                             "validation_sentence_by_fraction": {"0": 90.5, "2": 91.0},
                             "variants": {n: {"validation": split(v), "test": split(t)} for n, (v, t, _) in variants.items()}}}
    refits["refit_atis"]["variants"]["mtif_2pct"]["test"]["loss_change"] = {"mean": -0.004, "std": 0.001}
    lines = render.refit_table(refits)
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ")}
    assert rows["mtif_2pct"].split(" | ")[1] == "180"
    # Δ against the full refit, losses summed over tasks; the test loss only where the file has it
    assert rows["mtif_2pct"].endswith("| +0.25 | -0.0200 / -0.0110 | -0.0040 ± 0.0010 |")
    assert rows["random_2pct"].endswith("| -0.50 | +0.0000 / +0.0010 | - |")
    assert rows["full (refitted on every sample)"].endswith("| - | - | - |")
    assert any("0 % 90.50, 2 % 91.00 -> **chosen fraction: 2 %**" in line for line in lines)
    assert render.refit_table({}) == []


def test_other_decoding_scores_the_same_weights_with_the_constraint_off_and_on(tiny_run_factory):
    run_dir = Path(tiny_run_factory())
    decoding = run.other_decoding(run_dir, "cpu")
    assert decoding["intent_slot_constraints"] is False  # the run's own setting: the recipe leaves it off
    for setting, suffix in (("off", ""), ("on", "-constraints")):  # slu-eval's folders for these settings
        for split in ("validation", "test"):
            metrics = json.loads((run_dir / f"eval_{split}{suffix}" / "metrics.json").read_text())
            assert metrics["settings"]["intent_slot_constraints"] is (setting == "on")
            assert decoding[setting][split] == {k: 100 * metrics["metrics"][k] for k in run.METRICS}
    row = {"test": {k: 90.0 for k in run.METRICS}, "validation": {k: 91.0 for k in run.METRICS},
           "train_seconds_per_epoch": 1.0, "inference_utt_per_s": {"batch_1": 1.0, "batch_32": 2.0},
           "peak_memory_mb": 1}
    rows = [{**row, "other_decoding": {"intent_slot_constraints": True,
                                       "off": {"validation": {k: 91.0 for k in run.METRICS},
                                               "test": {k: 90.0 for k in run.METRICS}},
                                       "on": {"validation": {k: v for k in run.METRICS},
                                              "test": {k: v + 1 for k in run.METRICS}}}}
            for v in (92.0, 94.0)]
    summary = run.summarise(rows)
    assert summary["other_decoding"]["on"]["validation"]["sentence_acc"]["mean"] == 93.0
    assert "other_decoding" not in run.summarise(rows + [row])  # only where every seed measured it
    table = render.decoding_table({"snips": {**result(90.0), **summary}})
    assert table[-2] == "| snips | 3 | 91.00 ± 0.00 | 93.00 ± 1.41 | 90.00 ± 0.00 | 94.00 ± 1.41 | 90.00 / 94.00 |"


def test_the_readme_table_shows_the_headline_runs_with_what_they_ran(monkeypatch):
    monkeypatch.setattr(render, "HEADLINE", {"atis": ["atis_crf", "atis", "missing"]})
    base = result(87.0, command="python benchmarks/run.py recipes/atis.yaml --seeds 1 2 3")
    crf = result(87.5, compare_to="atis", command="python benchmarks/run.py recipes/atis_crf.yaml model.dropout=0.2 --fresh --seeds 1 2 3")
    other = result(90.0, command="python benchmarks/run.py recipes/atis_other.yaml --seeds 1")
    anchors = {"atis": [{"model": "JointBERT", "intent_acc": 97.5, "slot_f1": 96.1, "sentence_acc": 88.2}]}
    lines = render.headline_table({"atis": base, "atis_crf": crf, "atis_other": other}, anchors, "atis")
    rows = [line for line in lines if line.startswith("| ")][1:]  # without the header
    assert [row.split(" | ")[0] for row in rows] == ["| atis_crf", "| atis", "| *JointBERT, published*"]
    # the base has no per-seed rows but the run's seeds: its mean is over the same seeds
    assert "| `recipes/atis_crf.yaml model.dropout=0.2` | 3 |" in rows[0] and rows[0].endswith("| +0.50 (vs atis) |")
    crf["seeds"] = [1, 4]  # a seed the base lacks: its mean is over other seeds, and the cell says so
    rows = [line for line in render.headline_table({"atis": base, "atis_crf": crf}, anchors, "atis") if line.startswith("| atis_crf")]
    assert rows[0].endswith("| +0.50 (vs atis, other seeds) |")
    assert all(line.count("|") == lines[0].count("|") for line in lines if line.startswith("|"))
    assert render.headline_table({"atis_other": other}, anchors, "atis") == []


def test_one_seed_shows_no_spread_and_the_committed_tables_are_up_to_date(capsys):
    assert render.fmt({"mean": 86.5, "std": 0.0, "n": 1}) == "86.50"
    assert render.fmt({"mean": 86.5, "std": 0.25, "n": 3}) == "86.50 ± 0.25"
    # RESULTS.md and the README table are what render.py makes of the committed results files
    assert render.main(["--check"]) == 0, capsys.readouterr().out
