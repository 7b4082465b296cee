"""MTIF: exactness on a tiny multitask linear model (against leave-one-out retraining), solvers,
per-example gradients, and `slu-influence score|prune|validate` on a tiny trained run."""

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from slu_feedback.influence.mtif import (Problem, converge, influence_vectors, leave_one_out,
                                         score_chunks)

D, R = 6, 3  # input features (fixed, like cached encoder features), shared layer width


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    a = x[:, :3].sum(1) + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    y1 = (a > 0).long() + (a > 1).long()  # task 1: 3 classes
    y2 = ((x[:, 1] - x[:, 4] + 0.7 * torch.randn(n, generator=g, dtype=torch.float64)) > 0).long()  # task 2
    return [{"x": x, "y1": y1, "y2": y2, "index": torch.arange(n)}]


def _losses(p, c):
    """Shared linear layer A, then one linear classifier per task; per-example CE of each task."""
    z = c["x"] @ p["A"].T
    l1 = F.cross_entropy(z @ p["W1"].T + p["b1"], c["y1"], reduction="none")
    l2 = F.cross_entropy(z @ p["W2"].T + p["b2"], c["y2"], reduction="none")
    return torch.stack([l1, l2], 1)


@pytest.fixture(scope="module")
def linear_problem():
    g = torch.Generator().manual_seed(1)
    params = {"A": 0.3 * torch.randn(R, D, generator=g, dtype=torch.float64),
              "W1": 0.3 * torch.randn(3, R, generator=g, dtype=torch.float64), "b1": torch.zeros(3, dtype=torch.float64),
              "W2": 0.3 * torch.randn(2, R, generator=g, dtype=torch.float64), "b2": torch.zeros(2, dtype=torch.float64)}
    return Problem(params, _losses, _data(80, 0), _data(40, 1))


def test_mtif_matches_leave_one_out_retraining(linear_problem):
    """The key check: predicted changes of each task's validation loss against exact retraining
    without each sample (L2-damped objective, so the optimum is unique), within and between tasks."""
    result = leave_one_out(linear_problem, 0.1, list(range(0, 80, 2)), solver="explicit", subsets=8)
    c = result["correlation"]
    assert c["within"]["pearson"] >= 0.95 and c["between"]["pearson"] >= 0.95, c
    for pair in ("intent->intent", "intent->slot", "slot->intent", "slot->slot"):
        assert c[pair]["pearson"] >= 0.95, (pair, c[pair])
    assert result["solver"]["min_eigenvalue"] > 0
    # sign: positive MTIF = removing the sample raises the validation loss (it helped)
    rows = result["loo"]
    assert all((r["predicted"][k] > 0) == (r["actual"][k] > 0) for r in rows for k in range(2)
               if abs(r["predicted"][k]) > 1e-3)
    assert result["datamodel"]["intent"]["spearman"] > 0.5 and result["datamodel"]["slot"]["spearman"] > 0.5


def test_leave_one_out_resumes_from_its_rows_file(linear_problem, tmp_path, monkeypatch):
    """An interrupted check keeps what it measured: a rerun retrains only the missing samples and
    subsets and gives the same result; a rows file from other settings is not trusted."""
    import slu_feedback.influence.mtif as mtif

    calls = []
    real_converge = mtif.converge
    monkeypatch.setattr(mtif, "converge", lambda *a, **k: calls.append(1) or real_converge(*a, **k))
    rows_file = tmp_path / "rows.jsonl"
    kw = dict(solver="explicit", subsets=2, rows_file=rows_file)
    first = leave_one_out(linear_problem, 0.1, [3, 7, 11], **kw)
    assert len(calls) == 1 + 3 * 2 + 2  # w*, one retraining per sample, one per subset
    lines = rows_file.read_text().splitlines()
    assert len(lines) == 1 + 3 * 2 + 2
    rows_file.write_text("\n".join(lines[:4]) + "\n" + lines[4][:10])  # killed while writing row 4

    calls.clear()
    resumed = leave_one_out(linear_problem, 0.1, [3, 7, 11], **kw)
    assert len(calls) == 1 + (3 * 2 + 2 - 3)  # rows 1-3 were kept, the half-written one is redone
    assert resumed["loo"] == first["loo"] and resumed["datamodel"] == first["datamodel"]
    assert len(rows_file.read_text().splitlines()) == 1 + 3 * 2 + 2

    calls.clear()
    leave_one_out(linear_problem, 0.2, [3, 7, 11], **kw)  # other damping: everything is remeasured
    assert len(calls) == 1 + 3 * 2 + 2


def test_solvers_agree(linear_problem):
    w = linear_problem.flat()
    w_star = converge(linear_problem, w, w, 0.1)  # positive definite there
    s_exp, info = influence_vectors(linear_problem, 0.1, "explicit", w=w_star)
    s_cg, info_cg = influence_vectors(linear_problem, 0.1, "cg", w=w_star)
    s_lissa, _ = influence_vectors(linear_problem, 0.1, "lissa", w=w_star, depth=500)
    assert ((s_cg - s_exp).norm() / s_exp.norm()) < 1e-6 and "warning" not in info_cg
    assert ((s_lissa - s_exp).norm() / s_exp.norm()) < 1e-2
    with pytest.raises(ValueError, match="cg"):
        influence_vectors(linear_problem, 0.1, "explicit", w=w_star, max_params=10)
    # one cg step does not solve it: the warning names the residual and the option to raise;
    # another solver's option is ignored (so `auto` honours --cg-iterations), a misspelt one is not
    _, short = influence_vectors(linear_problem, 0.1, "cg", w=w_star, max_iter=1, depth=7)
    assert short["iterations"] == 1 and max(short["residual"]) > 1e-3
    assert "did not converge" in short["warning"] and "--cg-iterations" in short["warning"]
    with pytest.raises(TypeError, match="max_iters"):
        influence_vectors(linear_problem, 0.1, "cg", w=w_star, max_iters=1)


def _loop_gradients(problem, w, chunk, rows):
    out = []
    for j in rows:
        one = {k: v[j:j + 1] for k, v in chunk.items()}
        u = w.clone().requires_grad_(True)
        losses = problem.losses(u, one)[0] * problem._c
        out.append(torch.stack([torch.autograd.grad(losses[t], u, retain_graph=True)[0] for t in range(2)]))
    return torch.stack(out)


def test_per_example_gradients_equal_a_loop(linear_problem):
    w = linear_problem.flat()
    chunk = {k: v[:5] for k, v in linear_problem.train[0].items()}
    assert torch.allclose(linear_problem.per_example_gradients(w, chunk), _loop_gradients(linear_problem, w, chunk, range(5)))
    s = torch.randn(2, linear_problem.size, dtype=torch.float64)
    index, scores = score_chunks(linear_problem, s, [chunk])
    assert index.tolist() == list(range(5)) and scores.shape == (5, 2, 2)


# -- on a tiny trained run --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tiny_run_factory):
    return tiny_run_factory("model.head_hidden=8", "model.feedback.iterations=1", "model.slot_decoder=crf")


@pytest.mark.e2e
def test_slu_problem_gradients_and_last_layer_features(tiny_run):
    from slu_feedback.influence.slu import build_problem

    problem, splits, model = build_problem(tiny_run, "heads", batch_size=16)
    assert problem.n == len(splits["train"]) == 200
    assert not any(n.startswith("model.encoder.") or n.endswith(".beta") for n in problem.names)
    w = problem.flat()
    chunk = {k: v[:3] for k, v in problem.train[0].items()}
    assert torch.allclose(problem.per_example_gradients(w, chunk), _loop_gradients(problem, w, chunk, range(3)))
    # per-example losses sum to the objective; the last feedback iteration's CRF NLL is used
    assert torch.isclose(problem.objective(w), sum(problem.losses(w, c).sum() for c in problem.train) / problem.n)

    last, _, model = build_problem(tiny_run, "heads+last", batch_size=16)
    assert any(".layer.1." in n for n in last.names) and last.size > problem.size
    c = last.train[0]
    from slu_feedback.influence.slu import TaskLosses

    features = TaskLosses(model, "heads+last").features(c)
    ref = [problem.train[0][k].to(torch.float64) for k in ("utterance", "words")]
    assert torch.allclose(features[0], ref[0], atol=1e-5) and torch.allclose(features[1], ref[1], atol=1e-5)
    w = last.flat()
    chunk = {k: v[:2] for k, v in c.items()}
    assert torch.allclose(last.per_example_gradients(w, chunk), _loop_gradients(last, w, chunk, range(2)), atol=1e-10)


def test_heads_last_is_refused_where_the_re_run_layer_gives_other_features(tiny_run, monkeypatch):
    """Re-running one layer on its input reproduces a BERT layer's output, not one that needs more
    (relative position biases, DeBERTa): a scope that would score another model is refused."""
    from slu_feedback.influence import slu

    real = slu.last_layer
    monkeypatch.setattr(slu, "last_layer", lambda model: (0, real(model)[1].__class__(model.encoder.model.config)))
    with pytest.raises(ValueError, match="does not reproduce BertModel's features .*use --scope heads"):
        slu.build_problem(tiny_run, "heads+last", batch_size=16)


@pytest.mark.e2e
def test_the_slot_samples_average_to_the_per_word_loss_the_trainer_minimises(tiny_run_factory):
    """The trainer's softmax slot loss is one mean over every labelled word; MTIF's Hessian must be
    of that objective, not of a mean of per-utterance means (which weighs short utterances' words up)."""
    from slu_feedback.influence.slu import build_problem

    problem, _, model = build_problem(tiny_run_factory("model.head_hidden=8"), "heads", batch_size=16)
    w = problem.flat()
    slot = sum(problem.losses(w, c)[:, 1].sum() for c in problem.train) / problem.n
    ce, words, lengths = 0.0, 0, set()
    for c in problem.train:
        with torch.no_grad():
            logits = model.run_heads(c["utterance"], c["words"], c["word_mask"], 0)[1][-1]
        labels = c["slot_labels"]
        ce = ce + F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="sum")
        words += int((labels != -100).sum())
        lengths |= set((labels != -100).sum(1).tolist())
    assert len(lengths) > 3 and torch.isclose(slot, ce / words)


def test_a_vmtl_run_is_refused_with_a_message():
    from slu_feedback.influence.slu import TaskLosses
    from test_vmtl import make_vmtl

    with pytest.raises(ValueError, match="VMTL head"):
        TaskLosses(make_vmtl(), "heads")


@pytest.mark.e2e
def test_score_prune_validate_cli(tiny_run, tmp_path):
    from slu_feedback.cli.influence import main
    from slu_feedback.data.dataset import load_splits
    from slu_feedback.training.recipe import load_recipe

    runner = CliRunner()
    out = tmp_path / "influence"
    result = runner.invoke(main, ["score", str(tiny_run), "--solver", "cg", "--cg-iterations", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "the cg solve did not converge" in result.output  # 5 steps: too few
    rows = list(csv.DictReader((out / "influence.csv").open()))
    assert len(rows) == 200 and {"intent->intent", "intent->slot", "slot->intent", "slot->slot"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["relatedness_mean"]) == {"intent", "slot"}
    assert len(summary["top"]["slot"]["most_harmful"]) == 10 and (out / "histogram.png").stat().st_size > 0
    # with feedback the heads are coupled: between-task influence is not identically zero
    assert any(float(r["intent->slot"]) != 0 for r in rows)
    assert summary["target_split"] == "validation"

    # the test split as target: a diagnostic, other values, and prune refuses to rank by it
    on_test = tmp_path / "influence-test"
    result = runner.invoke(main, ["score", str(tiny_run), "--solver", "cg", "--cg-iterations", "5", "--out",
                                  str(on_test), "--target-split", "test"])
    assert result.exit_code == 0, result.output
    assert json.loads((on_test / "summary.json").read_text())["target_split"] == "test"
    test_rows = list(csv.DictReader((on_test / "influence.csv").open()))
    assert [r["id"] for r in test_rows] == [r["id"] for r in rows]
    assert any(t["intent->intent"] != v["intent->intent"] for t, v in zip(test_rows, rows))
    result = runner.invoke(main, ["prune", str(tiny_run), "--fraction", "0.1", "--scores",
                                  str(on_test / "influence.csv"), "--out", str(tmp_path / "refused")])
    assert result.exit_code != 0 and "test split" in result.output and not (tmp_path / "refused").exists()

    # scores of other utterances (another run's training set), a missing file, other scoring settings:
    # each refused in one line; the folder of influence.csv may be given for the file
    other = tmp_path / "other-run-scores"
    other.mkdir()
    shutil.copy(out / "summary.json", other / "summary.json")
    swapped = [dict(r) for r in rows]
    swapped[0]["text"], swapped[1]["text"] = rows[1]["text"], rows[0]["text"]
    with (other / "influence.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(swapped)
    for scores, extra, message in ((other, [], "scores other training utterances than"),
                                   (tmp_path / "nope" / "influence.csv", [], "no influence.csv there"),
                                   (out, ["--scope", "heads+last"], "was scored with scope heads, not heads\+last"),
                                   (out, ["--damping", "0.5"], "was scored with damping 0.01, not 0.5")):
        result = runner.invoke(main, ["prune", str(tiny_run), "--fraction", "0.1", "--scores", str(scores),
                                      "--out", str(tmp_path / "refused"), *extra])
        assert result.exit_code == 1 and re.search(message, result.output), result.output
        assert not (tmp_path / "refused").exists() and not (tmp_path / "nope").exists()
    assert runner.invoke(main, ["validate", str(tiny_run), "--n", "0"]).exit_code == 2  # a usage error, before any work

    sizes = {}
    for extra in ([], ["--random"]):
        dest = tmp_path / ("random" if extra else "pruned")
        result = runner.invoke(main, ["prune", str(tiny_run), "--fraction", "0.1", "--target", "both",
                                      "--scores", str(out / "influence.csv"), "--out", str(dest), *extra])
        assert result.exit_code == 0, result.output
        # ranking by scores from an unconverged solve is said (random pruning does not use them)
        assert ("warning:" in result.output and "did not converge" in result.output) == (not extra), result.output
        info = json.loads((dest / "prune.json").read_text())
        data = load_splits(dest / "data")
        assert len(data["train"]) == 200 - info["dropped"] and 0 < info["dropped"] <= 20
        assert len(data["validation"]) == 50 and len(data["test"]) == 50
        recipe_file = next(dest.glob("*.yaml"))
        assert recipe_file.read_text().startswith(f"# slu-train {recipe_file}")
        recipe = load_recipe(recipe_file)
        assert recipe["data"]["path"] == str((dest / "data").resolve()) and recipe["output_dir"] is None
        sizes[bool(extra)] = info["dropped"]
        if not extra:  # the most negative utterances are the ones dropped
            value = {int(r["id"]): float(r["utterance->intent"]) + float(r["utterance->slot"]) for r in rows}
            kept = sorted(set(value) - set(info["dropped_ids"]), key=value.get)
            assert max(value[i] for i in info["dropped_ids"]) <= value[kept[0]]
    assert sizes[True] == sizes[False]

    # --per-intent: the same share of every intent, the most negative within it; random matches the counts
    intents = {int(r["id"]): r["intent"] for r in rows}
    counts = {}
    for extra in ([], ["--random"]):
        dest = tmp_path / f"per-intent{extra}"
        result = runner.invoke(main, ["prune", str(tiny_run), "--fraction", "0.1", "--per-intent", "--scores",
                                      str(out / "influence.csv"), "--out", str(dest), *extra])
        assert result.exit_code == 0, result.output
        info = json.loads((dest / "prune.json").read_text())
        assert info["per_intent"] is True
        counts[bool(extra)] = {i: sum(intents[d] == i for d in info["dropped_ids"]) for i in set(intents.values())}
        for intent, dropped in counts[bool(extra)].items():
            members = [i for i in intents if intents[i] == intent]
            assert dropped == round(0.1 * len(members)), intent
            if not extra:
                ranked = sorted(members, key=value.get)
                assert {d for d in info["dropped_ids"] if intents[d] == intent} == set(ranked[:dropped])
    assert counts[True] == counts[False] and sum(counts[False].values()) > 0

    # --unit sample: drop the most negative single samples (an utterance's intent or its slots),
    # written as JSONL with null labels; an utterance loses both only if both rank that low
    dest = tmp_path / "samples"
    result = runner.invoke(main, ["prune", str(tiny_run), "--fraction", "0.1", "--unit", "sample", "--scores",
                                  str(out / "influence.csv"), "--out", str(dest)])
    assert result.exit_code == 0, result.output
    info = json.loads((dest / "prune.json").read_text())
    assert info["unit"] == "sample" and info["dropped"] == 40 and info["kept"] == 360
    sample_value = {(int(r["id"]), l): sum(float(r[f"{l}->{k}"]) for k in ("intent", "slot"))
                    for r in rows for l in ("intent", "slot")}
    dropped = {(i, l) for i, l in info["dropped_ids"]}
    # the most negative samples, but for those kept as the last example of a label
    skipped = [d for d, v in sample_value.items() if d not in dropped and v < max(sample_value[d] for d in dropped)]
    assert len(skipped) <= info["kept_for_labels"]
    data = load_splits(dest / "data")
    train = data["train"]
    both = {i for i, _ in dropped if (i, "intent") in dropped and (i, "slot") in dropped}
    assert len(train) == 200 - len(both) == info["utterances_kept"]
    assert train["intent"].count(None) == info["unlabelled"]["intent"] == sum(l == "intent" for _, l in dropped) - len(both)
    assert sum(s is None for s in train["slots"]) == info["unlabelled"]["slot"] == sum(l == "slot" for _, l in dropped) - len(both)
    assert len(data["validation"]) == 50 and None not in data["validation"]["intent"]
    # no label loses its last training example, however much is pruned (MTIF and random, samples and utterances)
    from slu_feedback.data.dataset import build_label_maps
    from slu_feedback.influence.slu import run_recipe, run_splits

    full_labels = build_label_maps(run_splits(run_recipe(tiny_run))["train"])
    for unit, extra in (("sample", []), ("sample", ["--random"]), ("utterance", []), ("utterance", ["--random"])):
        heavy = tmp_path / f"{unit}-most{extra}"
        result = runner.invoke(main, ["prune", str(tiny_run), "--fraction", "0.9", "--unit", unit, "--scores",
                                      str(out / "influence.csv"), "--out", str(heavy), *extra])
        assert result.exit_code == 0, result.output
        heavy_info = json.loads((heavy / "prune.json").read_text())
        assert heavy_info["kept_for_labels"] > 0 and heavy_info["dropped"] == (360 if unit == "sample" else 180)
        assert build_label_maps(load_splits(heavy / "data")["train"]) == full_labels
    recipe = load_recipe(next(dest.glob("*.yaml")), ["train.epochs=1", f"output_dir={tmp_path / 'retrained'}"])
    assert recipe["data"]["format"] == "jsonl"
    from slu_feedback.training.trainer import train  # the partially labelled set trains like any other

    retrained = Path(train(recipe))
    results = json.loads((retrained / "all_results.json").read_text())
    assert results["train_examples"] == info["utterances_kept"]
    assert all(math.isfinite(results["validation"][k]) for k in ("intent_acc", "slot_f1", "sentence_acc"))
    # random pruning needs no scores (none are computed); each seed has its own folder
    for seed in ("0", "1"):
        result = runner.invoke(main, ["prune", str(retrained), "--fraction", "0.1", "--random", "--seed", seed])
        assert result.exit_code == 0, result.output
        assert (retrained / "pruned" / f"random-both-10pct-seed{seed}" / "prune.json").is_file()
    assert not (retrained / "influence").exists()
    # and such a run is scored and pruned again: its missing samples are no candidates, nulls stay JSONL
    for extra in (["--unit", "sample", "--per-intent"], []):
        again = tmp_path / f"again{extra}"
        result = runner.invoke(main, ["prune", str(retrained), "--fraction", "0.1", "--out", str(again), *extra])
        assert result.exit_code == 0, result.output
        again_info = json.loads((again / "prune.json").read_text())
        n = info["utterances_kept"]
        labelled = 2 * n - info["unlabelled"]["intent"] - info["unlabelled"]["slot"] if extra else n
        assert again_info["dropped"] + again_info["kept"] == labelled
        again_train = load_splits(again / "data")["train"]
        assert (again / "data" / "train.jsonl").is_file() and None in list(again_train["intent"]) + list(again_train["slots"])

    result = runner.invoke(main, ["validate", str(tiny_run), "--n", "2", "--subsets", "2", "--solver", "cg",
                                  "--cg-iterations", "5", "--max-iter", "10", "--out", str(tmp_path / "val")])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'val' / 'validate.json'}, validate.png" in result.output
    assert "a correlation needs at least 3 points" in result.output  # --n 2
    report = json.loads((tmp_path / "val" / "validate.json").read_text())
    assert len(report["loo"]) == 4 and (tmp_path / "val" / "validate.png").exists()


@pytest.mark.e2e
def test_heldout_target_scores_the_unseen_part_and_pruning_puts_it_back(tiny_run_factory, tiny_run, tmp_path):
    """--target-split heldout: MTIF's target is the part of the training split a run with
    data.train_fraction < 1 did not train on (so validation stays free to choose the fraction); the
    pruned set is the whole training split less the drops, comparable with the full-set run."""
    from slu_feedback.cli.influence import main
    from slu_feedback.data.dataset import load_splits
    from slu_feedback.influence.report import prune_run
    from slu_feedback.influence.slu import build_problem, run_recipe, run_splits
    from slu_feedback.training.recipe import load_recipe

    run = tiny_run_factory("model.head_hidden=8", "data.train_fraction=0.8")
    splits = run_splits(run_recipe(run))
    assert len(splits["train"]) == 160 and len(splits["heldout"]) == 40
    assert sorted(list(splits["train"]["text"]) + list(splits["heldout"]["text"])) == sorted(load_splits(
        run_recipe(run)["data"]["path"])["train"]["text"])
    problem, _, _ = build_problem(run, target_split="heldout")
    assert problem.n == 160 and problem.n_valid == 40

    runner = CliRunner()
    out = {}
    for split in ("validation", "heldout"):
        out[split] = tmp_path / f"influence-{split}"
        result = runner.invoke(main, ["score", str(run), "--target-split", split, "--out", str(out[split])])
        assert result.exit_code == 0, result.output
        assert json.loads((out[split] / "summary.json").read_text())["target_split"] == split
    rows = {split: list(csv.DictReader((out[split] / "influence.csv").open())) for split in out}
    assert len(rows["heldout"]) == 160 and any(
        a["slot->slot"] != b["slot->slot"] for a, b in zip(rows["heldout"], rows["validation"]))

    for extra in ([], ["--random"]):
        dest = tmp_path / f"pruned{extra}"
        result = runner.invoke(main, ["prune", str(run), "--fraction", "0.1", "--scores",
                                      str(out["heldout"] / "influence.csv"), "--out", str(dest), *extra])
        assert result.exit_code == 0, result.output
        info = json.loads((dest / "prune.json").read_text())
        assert info["target_split"] == "heldout" and info["dropped"] == 16
        train = load_splits(dest / "data")["train"]
        assert len(train) == 200 - 16 == info["utterances_kept"] and info["utterances_dropped"] == 16
        assert set(splits["heldout"]["text"]) <= set(train["text"])  # the held-out part is never pruned
        recipe_file = next(dest.glob("*.yaml"))
        assert "plus the 40 held-out utterances" in recipe_file.read_text()
        assert info["heldout_rejoined"] == 40 and "plus the 40 training utterances" in result.output
        assert load_recipe(recipe_file)["data"]["train_fraction"] == 1.0
    # ranked by validation scores, the run's held-out part is put back all the same: nothing is lost silently
    info = prune_run(run, 0.1, scores=out["validation"] / "influence.csv", out_dir=tmp_path / "by-validation")
    train = load_splits(tmp_path / "by-validation" / "data")["train"]
    assert info["target_split"] == "validation" and info["heldout_rejoined"] == 40 and len(train) == 184
    assert set(splits["heldout"]["text"]) <= set(train["text"])
    # scores made against another split than the one asked for are refused, both ways and from the command line
    with pytest.raises(ValueError, match="scored against validation, not heldout"):
        prune_run(run, 0.1, scores=out["validation"] / "influence.csv", out_dir=tmp_path / "no", target_split="heldout")
    with pytest.raises(ValueError, match="scored against heldout, not validation"):
        prune_run(run, 0.1, scores=out["heldout"] / "influence.csv", out_dir=tmp_path / "no", target_split="validation")
    result = runner.invoke(main, ["prune", str(run), "--fraction", "0.1", "--target-split", "heldout", "--scores",
                                  str(out["validation"] / "influence.csv"), "--out", str(tmp_path / "no")])
    assert result.exit_code != 0 and "scored against validation, not heldout" in result.output
    assert not (tmp_path / "no").exists()
    result = runner.invoke(main, ["score", str(tiny_run), "--target-split", "heldout", "--out", str(tmp_path / "none")])
    assert result.exit_code != 0 and "no held-out part" in result.output and "data.train_fraction" in result.output


@pytest.mark.e2e
def test_refit_prunes_within_the_scope(tiny_run_factory, tmp_path):
    from slu_feedback.cli.influence import main
    from slu_feedback.evaluation.report import evaluate_run
    from slu_feedback.influence.refit import Refitter
    from slu_feedback.influence.slu import split_losses
    from slu_feedback.models import load_run

    tiny_run = tiny_run_factory("model.head_hidden=8")  # softmax heads without feedback: a quick fit
    refitter = Refitter(tiny_run, max_iter=30, progress=False)
    p = refitter.problem

    def slope(w):  # largest gradient entry of the damped objective
        w = w.clone().requires_grad_(True)
        objective = p.objective(w) + 0.5 * refitter.damping * ((w - refitter.anchor) ** 2).sum()
        return torch.autograd.grad(objective, w)[0].abs().max()

    assert slope(refitter.w_full) < slope(refitter.anchor) / 20  # fitted towards the stationary point

    drops = {kind: refitter.select(0.1, random=kind == "random", unit="sample") for kind in ("mtif", "random")}
    assert len(drops["mtif"]) == len(drops["random"]) == 40  # 10 % of 400 samples
    assert drops["mtif"] != drops["random"]
    changes = {}
    for kind, drop in drops.items():
        w_new, report = refitter.refit(drop)
        assert report["dropped"] == 40 and sum(report["dropped_by_task"].values()) == 40
        changes[kind] = report["validation_loss_change"]
    # dropping the samples MTIF ranks most harmful lowers the validation losses, as predicted;
    # the same number at random does not lower them as much
    mtif = changes["mtif"]
    assert sum(mtif["predicted"].values()) < 0 and sum(mtif["actual"].values()) < 0
    assert sum(mtif["actual"].values()) < sum(changes["random"]["actual"].values())
    _, unchanged = refitter.refit([])
    assert unchanged["validation_loss_change"]["actual"] == {"intent": 0.0, "slot": 0.0}

    # the refitted heads are saved as a run that loads and evaluates; the encoder is the source's
    out = refitter.save(w_new, tmp_path / "refit", report)
    model, _ = load_run(out)
    source, _ = load_run(tiny_run)
    for name, value in p.unflatten(w_new).items():
        assert torch.allclose(model.get_parameter(name.removeprefix("model.")), value.float(), atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(model.encoder.parameters(), source.encoder.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), source.parameters()))
    assert 0 <= evaluate_run(out, "validation", out_dir=tmp_path / "eval")["metrics"]["sentence_acc"] <= 1
    assert json.loads((out / "refit.json").read_text())["source_run"] == str(tiny_run)

    # the saved runs' losses on a split are MTIF's: the full refit's validation loss, and the
    # pruned refit's moved by the actual change of its report (float32 saving aside)
    full = refitter.save(refitter.w_full, tmp_path / "full")
    full_loss, pruned_loss = (losses["validation"] for losses in split_losses([full, out], ["validation"]))
    assert full_loss == pytest.approx(refitter.valid_full, abs=1e-5)
    actual = [report["validation_loss_change"]["actual"][t] for t in ("intent", "slot")]
    assert [b - a for a, b in zip(full_loss, pruned_loss)] == pytest.approx(actual, abs=1e-5)
    assert actual != pytest.approx([0, 0], abs=1e-4)
    with pytest.raises(ValueError, match="another encoder"):
        split_losses([full, tiny_run_factory()])

    result = CliRunner().invoke(main, ["refit", str(tiny_run), "--fraction", "0.05", "--per-intent", "--max-iter",
                                       "3", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "predicted" in result.output and (tmp_path / "cli" / "model.safetensors").exists()
    assert (tmp_path / "cli" / "influence" / "influence.csv").exists()
    assert json.loads((tmp_path / "cli" / "refit.json").read_text())["per_intent"] is True
    # each random draw refits into a folder of its own (seed 2 replaced seed 1's run)
    result = CliRunner().invoke(main, ["refit", str(tiny_run), "--fraction", "0.05", "--random", "--seed", "3",
                                       "--max-iter", "3"])
    assert result.exit_code == 0, result.output
    assert (Path(tiny_run) / "refit" / "refit-random-both-5pct-samples-seed3" / "refit.json").is_file()


def test_cg_stops_at_negative_curvature_and_names_the_damping_to_try():
    """An indefinite damped Hessian: the warning says which damping to try, not more iterations
    (which cannot help); a right-hand side solved exactly is no 0/0 (float32)."""
    from types import SimpleNamespace

    from slu_feedback.influence.mtif import solve_cg

    a = torch.diag(torch.tensor([2.0, 1.0, -0.5]))  # one negative eigenvalue, beyond a damping of 0.01
    problem = SimpleNamespace(hvp=lambda w, v, damping: a @ v + damping * v)
    b = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    _, info = solve_cg(problem, None, b, 0.01, max_iter=50)
    assert info["negative_curvature"] and "rerun with --damping 0.1 or more" in info["warning"]
    x, info = solve_cg(problem, None, b, 1.0, max_iter=1000)  # damped enough: solved, no warning
    assert "warning" not in info and torch.allclose(x, b / (torch.diag(a) + 1.0), atol=1e-5)
