"""Two nodes simulated on this machine: the README's torchrun and srun commands, on CPU over gloo.

Each "node" is a separate launch of the same command with its own node rank, as an operator would
start it on each machine; they meet at 127.0.0.1. What two nodes train must be what one process
trains, and only global rank 0 writes the run.
"""

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runs import QUIET, REPO, fit

TUTORIAL = str(REPO / "configs" / "tutorial.yaml")
# The tutorial for 2 epochs; each node is one CPU process (the README's commands use the GPU preset instead).
ARGS = ["--config", TUTORIAL, "--model.activation=tanh", "--trainer.max_epochs=2", *QUIET]
NODES = ["--trainer.accelerator=cpu", "--trainer.strategy=ddp", "--trainer.devices=1", "--trainer.num_nodes=2"]
# A launcher's variables left in this environment (a test run inside a SLURM job) must not reach the nodes.
LAUNCHERS = ("SLURM_", "MASTER_", "RANK", "WORLD_SIZE", "LOCAL_", "NODE_RANK", "GROUP_RANK", "TORCHELASTIC_")
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHERS)}


def free_port(low: int = 1024, high: int = 65535) -> int:
    for port in range(low, high):  # from the bottom of the range, as SLURM jobs' ports are derived
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def run_nodes(commands: list[list[str]], envs: list[dict[str, str]], cwd: Path) -> None:
    """Start every node's command at once, as on separate machines, and wait for all of them (none outlives it)."""
    outputs = [cwd / f"node_{rank}.log" for rank in range(len(commands))]  # files: a full pipe cannot stall a node
    with contextlib.ExitStack() as files:
        nodes = [subprocess.Popen(c, cwd=cwd, env=e, stdout=files.enter_context(o.open("w")), stderr=subprocess.STDOUT)
                 for c, e, o in zip(commands, envs, outputs, strict=True)]  # fmt: skip
        try:
            for node in nodes:
                node.wait(timeout=300)
        finally:
            for node in nodes:
                node.kill()
    for rank, (node, output) in enumerate(zip(nodes, outputs, strict=True)):
        assert node.returncode == 0, f"node {rank}:\n{output.read_text()[-3000:]}"


def assert_trains_like_one_process(cwd: Path) -> None:
    """One run directory, one config.yaml, one event file, and the weights of the same fit in one process."""
    runs = cwd / "logs" / "tanh"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]
    run = runs / "version_0"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1 and len(list(run.rglob("config.yaml"))) == 1
    weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]
    for name, weight in fit(*ARGS).model.state_dict().items():  # 1 process x batch 32 = 2 nodes x 16
        torch.testing.assert_close(weights[name], weight, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.ddp
def test_two_torchrun_nodes_train_what_one_process_trains(tmp_path):
    port = free_port(29500)
    commands = [
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}",
         "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "lit_activations", "fit", *ARGS, *NODES]
        for rank in (0, 1)
    ]  # fmt: skip
    run_nodes(commands, [CLEAN, CLEAN], tmp_path)
    assert_trains_like_one_process(tmp_path)


@pytest.mark.slow
@pytest.mark.ddp
def test_two_srun_tasks_on_two_nodes_train_what_one_process_trains(tmp_path):
    """The variables `srun` sets for `--nodes=2 --ntasks-per-node=1`; Lightning's SLURMEnvironment does the rest."""
    port = free_port(15000, 25000)  # Lightning derives the port from the job id: 15000 + its last four digits
    job = {"SLURM_JOB_ID": str(100000 + port - 15000), "SLURM_JOB_NAME": "lit_activations", "SLURM_NTASKS": "2",
           "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_NODELIST": "127.0.0.1",
           "SLURM_LOCALID": "0"}  # fmt: skip
    envs = [CLEAN | job | {"SLURM_PROCID": str(rank), "SLURM_NODEID": str(rank)} for rank in (0, 1)]
    command = [sys.executable, "-m", "lit_activations", "fit", *ARGS, *NODES]
    run_nodes([command, command], envs, tmp_path)
    assert_trains_like_one_process(tmp_path)
