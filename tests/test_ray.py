"""``compare --launcher ray`` on a real local Ray instance (2 CPUs), against the local launcher."""

import csv
import multiprocessing
import socket
import sys
from pathlib import Path

import pytest

from lit_activations.cli import cli_main  # noqa: F401  (imported here, so forked fits need not import it)
from lit_activations.events import read_scalars
from lit_activations.study.command import compare_main

ray = pytest.importorskip("ray")  # the `ray` extra, which the dev install includes

from lit_activations.study.ray_cluster import RayLauncher, _fit_task, check_shared, fit_shape, unreachable  # noqa: E402

# relu learns; killer.Killer kills the process it runs in at its first training step: a worker dying mid-fit.
KILLER = """
import os, signal, torch

class Killer(torch.nn.Module):
    def forward(self, x):
        if x.requires_grad:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.relu(x)
"""
# 3 jobs: the relu cells in one fit, each killer in a fit of its own (a fit of several that fails is retried cell by
# cell, which tests/test_compare.py checks without processes)
STUDY = ["--seeds", "0,1", "--jobs", "3", "--data.n_samples=200", "--trainer.max_epochs=2"]


def table(study: Path) -> dict[str, dict[str, str]]:
    return {row["activation"]: row for row in csv.DictReader((study / "results.csv").open())}


@pytest.mark.slow
def test_a_study_on_ray_equals_the_local_one_and_a_dead_worker_loses_only_its_runs(tmp_path, capsys, monkeypatch):
    (tmp_path / "killer.py").write_text(KILLER)
    monkeypatch.syspath_prepend(tmp_path)  # as `python -m` puts the working directory first
    cells = ["--activations", "relu,killer.Killer", *STUDY]
    assert compare_main([*cells, "--study_dir", "local"]) == 1  # the killed cells
    assert compare_main([*cells, "--study_dir", "on_ray", "--launcher", "ray"]) == 1
    assert not ray.is_initialized()  # the local instance is stopped when the study ends
    output = capsys.readouterr().out

    local, on_ray = table(tmp_path / "local"), table(tmp_path / "on_ray")
    assert on_ray["relu"] == local["relu"]  # every column, to the last digit
    for seed in (0, 1):
        run = Path("relu", f"seed_{seed}")
        assert read_scalars(tmp_path / "on_ray" / run) == read_scalars(tmp_path / "local" / run)
    assert on_ray["killer.Killer"] | {"error": ""} == local["killer.Killer"] | {"error": ""}
    assert local["killer.Killer"]["failed"] == "2"
    # the figure too (the finished runs' curves), byte for byte
    assert (tmp_path / "on_ray" / "comparison.png").read_bytes() == (tmp_path / "local" / "comparison.png").read_bytes()
    assert local["killer.Killer"]["error"] == "error: the fit's process was killed (signal 9)"
    assert on_ray["killer.Killer"]["error"] == "error: the Ray worker of this fit died (WorkerCrashedError)"
    # each killer's fit died; the relu runs are whole
    assert output.count("killer.Killer seed 1: failed") == 2 and output.count("relu seed 1: ok") == 2  # 2 launchers
    assert not list((tmp_path / "on_ray" / "killer.Killer").rglob("finished"))

    # a rerun skips what finished, without starting Ray, and writes the same table
    before = (tmp_path / "on_ray" / "results.md").read_text().splitlines()[:3]
    assert compare_main(["--activations", "relu", *STUDY, "--study_dir", "on_ray", "--launcher", "ray"]) == 0
    assert capsys.readouterr().out.count("skipped (finished before)") == 2 and not ray.is_initialized()
    assert (tmp_path / "on_ray" / "results.md").read_text().splitlines() == before  # the header and relu's row

    # --fresh with a cluster that is not there: one line, and the old runs are still whole
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    files = {p: p.read_bytes() for p in (tmp_path / "on_ray").rglob("*") if p.is_file()}
    fresh = ["--activations", "relu", *STUDY, "--study_dir", "on_ray", "--launcher", "ray", "--ray_address", "auto"]
    assert compare_main([*fresh, "--fresh"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: cannot join the Ray cluster at --ray_address auto: ")
    assert {p: p.read_bytes() for p in (tmp_path / "on_ray").rglob("*") if p.is_file()} == files


def test_without_ray_installed_the_launcher_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails and find_spec finds nothing, as without it
    assert compare_main(["--activations", "relu", "--launcher", "ray"]) == 2
    assert capsys.readouterr().err == "error: --launcher ray needs Ray, an optional extra: pip install -e '.[ray]'\n"
    assert not (tmp_path / "logs").exists()


def test_a_node_that_does_not_share_the_study_directory_is_named(tmp_path):
    marker = tmp_path / "study" / ".ray_check"
    assert check_shared(str(marker), str(tmp_path), "10.0.0.7") == (
        f"Ray node 10.0.0.7 does not see {tmp_path / 'study'}: with --launcher ray every node needs the working"
        " directory and --study_dir on shared storage, at the same path"
    )
    marker.parent.mkdir()
    marker.touch()
    assert check_shared(str(marker), str(tmp_path), "10.0.0.7") == ""
    # a directory no one may create files in, not even root (who ignores permissions): /proc/self
    assert check_shared("/proc/self/status", str(tmp_path), "10.0.0.7").startswith(
        "Ray node 10.0.0.7 cannot write to --study_dir /proc/self: "
    )


def test_a_fit_holds_a_gpu_per_device_on_gpus_and_its_processes_count():
    assert fit_shape({"accelerator": "cpu", "devices": 2}, cluster_has_gpus=True) == (2, 0)
    assert fit_shape({"accelerator": "cuda", "devices": [0, 1]}, cluster_has_gpus=True) == (2, 2)
    assert fit_shape({"accelerator": "auto", "devices": "auto"}, cluster_has_gpus=True) == (1, 1)
    assert fit_shape({"accelerator": "auto", "devices": "auto"}, cluster_has_gpus=False) == (1, 0)
    assert fit_shape({"accelerator": "gpu", "devices": "0,1,2"}, cluster_has_gpus=True) == (3, 3)


def launcher_on(nodes: list[tuple[int, int]], trainer: dict) -> RayLauncher:
    """A RayLauncher's view of a cluster of ``nodes`` (CPUs, GPUs), without starting Ray."""
    launcher = object.__new__(RayLauncher)
    launcher.nodes, launcher.configs = nodes, [{"trainer": trainer}]
    launcher.cpus, launcher.gpus = sum(c for c, _ in nodes), sum(g for _, g in nodes)
    return launcher


@pytest.mark.parametrize(
    ("nodes", "trainer", "message"),
    [
        ([(2, 0)], {"accelerator": "gpu", "devices": 1}, "invalid trainer.devices 1 for --launcher ray: a fit runs on"
         " one node, and no node of this cluster has 1 CPUs and 1 GPUs"),
        ([(2, 0)], {"accelerator": "cpu", "devices": 4}, "no node of this cluster has 4 CPUs"),
        ([(16, 0), (8, 1), (8, 1)], {"accelerator": "gpu", "devices": 2}, "has 2 CPUs and 2 GPUs"),  # GPUs on 2 nodes
        ([(2, 0)], {"accelerator": "cpu", "devices": 2}, ""),
    ],
)  # fmt: skip
def test_a_fit_no_node_can_hold_is_refused_rather_than_left_waiting(nodes, trainer, message):
    assert launcher_on(nodes, trainer)._infeasible().endswith(message)


def test_on_a_mixed_cluster_a_gpu_fit_takes_the_cores_of_a_gpu_node():
    launcher = launcher_on([(16, 0), (8, 1), (8, 1)], {"accelerator": "gpu", "devices": 1})
    assert launcher._node_cpus(1, 1) == 8 and launcher._node_cpus(1, 0) == 16  # not the CPU-only head's 16
    assert launcher.default_jobs == 2  # one fit per GPU


def test_an_address_where_nothing_answers_is_one_line_not_a_wait_for_ever():
    with socket.socket() as closed:  # a port that was free a moment ago: nothing listens there
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert unreachable(f"127.0.0.1:{port}").startswith(
        f"cannot join the Ray cluster at --ray_address 127.0.0.1:{port}: nothing answers there ("
    )
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert unreachable(f"127.0.0.1:{listening.getsockname()[1]}") == ""
    assert unreachable("auto") == unreachable(None) == unreachable("ray://head:10001") == ""


def run_task_body(arguments: list[str], cwd: str, results) -> None:
    results.send(_fit_task(arguments, 1, cwd, str(Path(cwd) / "fit.log")))


def test_a_ray_task_reports_the_fits_own_output_and_exit_status(tmp_path):
    """What a fit prints comes back from its Ray task as from a local process: a user's bug with its traceback, a
    mistyped option as its one line and status 2 (the task's body, in a process forked from this one, without Ray)."""
    (tmp_path / "buggy.py").write_text(
        "import torch\n\nclass Buggy(torch.nn.Module):\n    def forward(self, x):\n"
        "        raise ValueError('a bug in my activation')\n"
    )
    outcomes = []
    for arguments in (["fit", "--model.activation=buggy.Buggy"], ["fit", "--model.activation=relu7"]):
        receive, send = multiprocessing.Pipe(duplex=False)
        fork = multiprocessing.get_context("fork")  # from this process, which has imported Lightning (cli_main)
        process = fork.Process(target=run_task_body, args=(arguments, str(tmp_path), send))
        process.start()
        outcomes.append(receive.recv())
        process.join()
    (bug_status, bug_lines), (typo_status, typo_lines) = outcomes
    assert (tmp_path / "fit.log").read_text().strip().splitlines() == typo_lines  # the log in the study's directory
    assert bug_status == 1 and "Traceback (most recent call last):" in bug_lines
    assert bug_lines[-1] == "ValueError: a bug in my activation"
    assert typo_status == 2 and typo_lines[-1].startswith("error: unknown activation 'relu7'")
    assert "Traceback" not in "\n".join(typo_lines)
