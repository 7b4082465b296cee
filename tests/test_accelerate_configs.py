"""The Accelerate launcher configs in recipes/accelerate/ parse with accelerate's own loader, use only
keys `accelerate launch` knows, and start with the command that uses them. Only cpu_2proc.yaml can
actually be launched here (no GPUs, no DeepSpeed); the others are checked for format only."""

import json
import os
import shlex
import shutil
import signal
import subprocess

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import launch_command_parser

from conftest import REPO, SAMPLE

CONFIGS = REPO / "recipes" / "accelerate"
EXPECTED = {  # file: (distributed_type, num_processes, num_machines)
    "multi_gpu.yaml": ("MULTI_GPU", 4, 1),
    "multi_node.yaml": ("MULTI_GPU", 8, 2),
    "fsdp.yaml": ("FSDP", 4, 1),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 4, 1),
    "cpu_2proc.yaml": ("MULTI_GPU", 2, 1),  # the torchrun launcher on CPU; see the file for why not MULTI_CPU
}


def test_every_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_and_names_its_command(name):
    path = CONFIGS / name
    config = load_config_from_file(str(path))  # raises on keys ClusterConfig does not have
    assert isinstance(config, ClusterConfig)
    distributed_type, processes, machines = EXPECTED[name]
    assert str(config.distributed_type.value) == distributed_type
    assert (config.num_processes, config.num_machines) == (processes, machines)
    if machines > 1:
        assert config.main_process_ip and config.main_process_port

    # nested sections are copied onto `accelerate launch` arguments: each key must be one of them
    launch_args = {action.dest for action in launch_command_parser()._actions}
    for key in config.fsdp_config:
        assert (key if key.startswith("fsdp") else "fsdp_" + key) in launch_args, key
    for key in config.deepspeed_config:
        assert key in launch_args, key

    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ")
    words = shlex.split(first[2:])
    words = words[1:] if words[0] == "ACCELERATE_USE_CPU=1" else words
    assert words[:4] == ["accelerate", "launch", "--config_file", f"recipes/accelerate/{name}"]
    assert words[4:6] == ["-m", "slu_feedback.cli.train"]
    assert (REPO / words[6]).is_file(), words[6]


@pytest.mark.e2e
def test_cpu_2proc_launches_two_processes(tiny_encoder, tmp_path):
    accelerate = shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the `accelerate` command is not on PATH")
    out = tmp_path / "run"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    # main_process_port 0 lets torchrun pick a free port (the file's default, 29500, may be taken)
    cmd = [accelerate, "launch", "--config_file", str(CONFIGS / "cpu_2proc.yaml"), "--main_process_port", "0",
           "-m", "slu_feedback.cli.train", str(REPO / "recipes" / "quickstart.yaml"),
           f"model.encoder={tiny_encoder}", f"output_dir={out}", "train.epochs=1", "model.head_hidden=32",
           f"data.path={SAMPLE}", "train.batch_size=8"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"accelerate launch did not finish in 180 s:\n{stderr[-4000:]}")
    assert proc.returncode == 0, f"{stdout[-2000:]}\n{stderr[-5000:]}"
    epochs = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == "epoch"]
    # 200 examples, batch 8: 25 batches on one process, 13 each on two
    assert [r["step"] for r in epochs] == [13], "two processes shared the data"
