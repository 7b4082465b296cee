"""Two CPU processes under torchrun (gloo) train the quickstart recipe with the tiny encoder.

What is asserted, honestly:
- the launch exits 0 and the run directory is written once (one model, one all_results.json,
  one metrics row per epoch: rank 1 does not duplicate rank 0's rows);
- the training data is sharded: 200 examples at a per-process batch of 8 give 25 batches on one
  process but ceil(25 / 2) = 13 per process on two;
- against one process with the same GLOBAL batch (16, also 13 updates per epoch): the learning-rate
  schedule is identical step for step (it was not: Accelerate's prepared scheduler advances once
  per process per update, so the distributed run decayed to 0 halfway), and both runs learn
  (training loss falls). The weights are NOT expected to match: DDP averages two 8-example
  gradients (the slot loss is a per-token mean, so this differs from one 16-example mean), the
  batches are dealt differently and dropout noise differs per rank. So validation metrics are only
  compared within a loose tolerance.
"""

import json
import math
import os
import shutil
import signal
import subprocess

import pytest

from conftest import REPO, SAMPLE
from slu_feedback.training.trainer import train

pytestmark = pytest.mark.e2e

TRAIN_EXAMPLES = 200  # data/sample/train
EPOCHS = 3


def rows(run_dir, kind):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


@pytest.fixture(scope="module")
def distributed_run(tiny_encoder, tmp_path_factory):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH (it comes with torch; is the environment's bin/ on PATH?)")
    out = tmp_path_factory.mktemp("ddp") / "run"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    # --standalone: a local rendezvous on a free port (a fixed port would clash with parallel runs)
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "slu_feedback.cli.train",
           str(REPO / "recipes" / "quickstart.yaml"), f"model.encoder={tiny_encoder}", f"output_dir={out}",
           f"train.epochs={EPOCHS}", "model.head_hidden=32", f"data.path={SAMPLE}", "optim.lr=3e-3",
           "optim.head_lr=1e-2", "train.batch_size=8", "train.log_every=1"]
    # its own session, so a hang can be ended with the workers (not just the torchrun parent)
    proc = subprocess.Popen(cmd, env=env, cwd=out.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 180 s:\n{stdout[-2000:]}\n{stderr[-4000:]}")
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-5000:]}"
    return out


def test_run_directory_is_written_once(distributed_run):
    run = distributed_run
    assert len(list(run.rglob("all_results.json"))) == 1
    # the best model at the top, plus Accelerate's copy inside checkpoint/ -- nothing per rank
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("model.safetensors")) == \
        ["checkpoint/model.safetensors", "model.safetensors"]
    assert not list(run.glob("*.tmp")) and not list(run.glob("checkpoint.tmp"))
    # each rank's random state reached the checkpoint (the folder moves only once both are written)
    assert sorted(p.name for p in (run / "checkpoint").glob("random_states_*.pkl")) == \
        ["random_states_0.pkl", "random_states_1.pkl"]
    assert [r["epoch"] for r in rows(run, "epoch")] == list(range(1, EPOCHS + 1))
    steps = [r["step"] for r in rows(run, "step")]
    assert steps == sorted(set(steps)), "step rows are logged by rank 0 only, never twice"
    results = json.loads((run / "all_results.json").read_text())
    assert results["epochs_run"] == EPOCHS and results["validation"]["n"] == 50, \
        "validation is gathered over both ranks without duplicates"


def test_data_is_sharded(distributed_run):
    single_process_batches = math.ceil(TRAIN_EXAMPLES / 8)  # 25 at batch 8 on one process
    per_rank = math.ceil(single_process_batches / 2)  # 13: Accelerate pads the odd batch (even_batches)
    epoch_steps = [r["step"] for r in rows(distributed_run, "epoch")]
    assert epoch_steps == [per_rank * (e + 1) for e in range(EPOCHS)]


def test_same_global_batch_is_equivalent_to_one_process(distributed_run, tiny_recipe, tmp_path):
    single = train(tiny_recipe(f"output_dir={tmp_path / 'single'}", f"train.epochs={EPOCHS}",
                               "train.batch_size=16", "train.log_every=1"))
    ddp_steps, one_steps = rows(distributed_run, "step"), rows(single, "step")
    assert [r["step"] for r in ddp_steps] == [r["step"] for r in one_steps], "same number of optimizer updates"
    # the schedule (warm-up then linear decay to 0 at the last update) must not depend on the process count
    assert [r["lr"] for r in ddp_steps] == pytest.approx([r["lr"] for r in one_steps])
    assert ddp_steps[-1]["lr"] == pytest.approx(0.0) and ddp_steps[len(ddp_steps) // 2]["lr"] > 0
    for run in (distributed_run, single):  # both learn; under DDP train_loss is the mean over the processes
        losses = [r["train_loss"] for r in rows(run, "epoch")]
        assert losses[-1] < losses[0], (run, losses)
    ddp_val, one_val = (json.loads((r / "all_results.json").read_text())["validation"] for r in (distributed_run, single))
    # loose: different batches, reduction and dropout noise (see the module docstring)
    assert abs(ddp_val["intent_acc"] - one_val["intent_acc"]) <= 0.3, (ddp_val, one_val)
