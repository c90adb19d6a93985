"""The study command, through the real command line."""

import argparse
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from matplotlib.image import imread

from lit_activations.events import read_scalars
from lit_activations.study import local
from lit_activations.study.cells import Cell, fit_arguments, split
from lit_activations.study.command import _activation_list, _grid, compare_main
from lit_activations.study.fits import Progress, run_fits
from lit_activations.study.local import LocalLauncher

from runs import fit

COMMAND = [sys.executable, "-m", "lit_activations", "compare", "--activations", "tanh,relu,crash.Crash", "--seeds",
           "0,1", "--jobs", "2", "--data.n_samples=200", "--trainer.max_epochs=3"]  # fmt: skip
# An activation with a bug that shows only in training: the fit fails, its cells alone are reported.
CRASH = """
import torch

class Crash(torch.nn.Module):
    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("a bug in my activation")
        return torch.relu(x)
"""


def table_rows(study) -> dict[str, dict[str, str]]:
    return {row["activation"]: row for row in csv.DictReader((study / "results.csv").open())}


@pytest.mark.slow
def test_compare_tabulates_the_event_files_reports_a_failure_and_skips_finished_runs(tmp_path, capsys, monkeypatch):
    (tmp_path / "crash.py").write_text(CRASH)
    monkeypatch.syspath_prepend(tmp_path)  # for the study run in this process below, as `python -m` does
    result = subprocess.run(COMMAND, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 1, result.stderr  # the others finished; the failed cells make the status
    assert "[6/6]" in result.stdout and "| activation | final val acc" in result.stdout
    assert "tanh seed 0: ok" in result.stdout and "(3 runs in one fit)" in result.stdout  # 6 cells, 2 jobs
    assert result.stdout.strip().splitlines()[-1] == (
        "Table logs/study/results.md, CSV logs/study/results.csv, figure logs/study/comparison.png;"
        " to look at the runs: tensorboard --logdir logs/study"
    )
    study = tmp_path / "logs" / "study"

    rows = table_rows(study)
    for activation in ("tanh", "relu"):
        scalars = [read_scalars(study / activation / f"seed_{seed}") for seed in (0, 1)]
        row = rows[activation]
        assert float(row["val_acc_mean"]) == pytest.approx(statistics.fmean(s["val/acc"][-1][1] for s in scalars))
        assert float(row["vanishing_ratio"]) == pytest.approx(
            statistics.fmean(s["vanishing_ratio/epoch"][-1][1] for s in scalars)
        )
        for stat in ("saturation", "dead_units"):
            hidden = [statistics.fmean(v[-1][1] for t, v in s.items() if t.startswith(f"{stat}/")) for s in scalars]
            assert float(row[stat]) == pytest.approx(statistics.fmean(hidden))
        assert row["failed"] == "0"
    assert (
        rows["crash.Crash"]["failed"] == "2" and rows["crash.Crash"]["error"] == "RuntimeError: a bug in my activation"
    )
    assert "| crash.Crash | failed: RuntimeError: a bug in my activation |" in (study / "results.md").read_text()
    log = (study / "crash" / "seed_1" / "error.log").read_text()  # all of it, where the progress line says
    assert "Traceback" in log and 'crash.py", line 7, in forward' in log
    assert f"(all of it: {Path('logs/study/crash/seed_1/error.log')})" in result.stdout

    # a study's run is an ordinary fit: the same numbers as `fit` run on its own with the same arguments
    alone = read_scalars(fit("--model.activation=tanh", "--data.n_samples=200", "--trainer.max_epochs=3",
                             "--seed_everything=1").trainer.logger.log_dir)  # fmt: skip
    member = read_scalars(study / "tanh" / "seed_1")
    assert member.keys() == alone.keys()
    for tag, values in alone.items():
        assert [v for _, v in member[tag]] == pytest.approx([v for _, v in values], rel=1e-5, abs=1e-9), tag

    image = imread(study / "comparison.png")
    assert image.shape[0] > 300 and image.shape[1] > 600  # a real PNG, two rows of plots

    # one process per cell: the same run
    other = tmp_path / "per_cell"
    # (the study's command in this process from here on: `python -m` costs 5 s of imports each time)
    per_cell = ["--activations", "tanh", "--seeds", "1", *COMMAND[8:], "--vectorize=false", f"--study_dir={other}"]
    assert compare_main(per_cell) == 0 and "runs in one fit" not in capsys.readouterr().out
    assert read_scalars(other / "tanh" / "seed_1").keys() == member.keys()
    for tag, values in read_scalars(other / "tanh" / "seed_1").items():
        assert [v for _, v in member[tag]] == pytest.approx([v for _, v in values], rel=1e-5, abs=1e-9), tag

    finished = study / "tanh" / "seed_0" / "finished"
    before = finished.stat().st_mtime_ns
    assert compare_main([*COMMAND[4:], "--threads=2"]) == 1  # threads change the speed, not the runs
    again = capsys.readouterr().out
    assert again.count("skipped (finished before)") == 4 and "crash.Crash seed 0: failed" in again
    assert finished.stat().st_mtime_ns == before
    fits = sorted(p.name.partition("-and-")[0] for p in (study / "fits").glob("*/*"))  # named after their cells:
    assert fits == ["crash.Crash-seed_0", "crash.Crash-seed_1", "relu-seed_1", "relu-seed_1", "tanh-seed_0"]
    # 2 fits of 3 cells, the failed one's 3 retries cell by cell; the crash cells' replaced when they train again

    # an activation that does not exist: one line before any fit, exit 2, nothing touched
    files = {p: p.read_bytes() for p in study.rglob("*") if p.is_file()}
    assert compare_main(["--activations", "tanh,relu7", *COMMAND[8:]]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: unknown activation 'relu7'; choose one")
    assert {p: p.read_bytes() for p in study.rglob("*") if p.is_file()} == files

    # a changed setting never comes back as the old table: one line naming it, nothing touched
    files = {p: p.read_bytes() for p in study.rglob("*") if p.is_file()}
    assert compare_main([*COMMAND[4:-1], "--trainer.max_epochs=4"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(
        "was trained with trainer.max_epochs=3, not 4; give another --study_dir, or --fresh to train the study's"
        " runs again"
    )
    assert {p: p.read_bytes() for p in study.rglob("*") if p.is_file()} == files
    fresh = ["--activations", "tanh", "--seeds", "0", *COMMAND[8:-1], "--trainer.max_epochs=4", "--fresh"]
    assert compare_main(fresh) == 0
    assert len(read_scalars(study / "tanh" / "seed_0")["val/acc"]) == 4


def test_grid_options_come_from_the_command_line_or_a_yaml_file(tmp_path):
    assert _grid("model.optimizer.lr=[0.001, 0.01]") == [("model.optimizer.lr", [0.001, 0.01])]
    assert _grid("data=[CirclesDataModule, MoonsDataModule]") == [("data", ["CirclesDataModule", "MoonsDataModule"])]
    (tmp_path / "grid.yaml").write_text("model.init: [default, kaiming]\nmodel.hidden_sizes: [[5], [5, 5]]\n")
    assert _grid(str(tmp_path / "grid.yaml")) == [("model.init", ["default", "kaiming"]),
                                                  ("model.hidden_sizes", [[5], [5, 5]])]  # fmt: skip
    assert _activation_list("relu+tanh,sigmoid,relu+tanh") == [["relu", "tanh"], "sigmoid"]
    # a fit gets a string as typed (`--model.init="default"` is no init), anything else as JSON
    assert fit_arguments([], tmp_path, {"model.init": "default", "model.hidden_sizes": [5, 5]})[1:3] == [
        "--model.init=default", "--model.hidden_sizes=[5, 5]"]  # fmt: skip
    for bad in ("model.optimizer.lr=0.1", "model.optimizer.lr=[]", "=[1]", "nothing.yaml"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected OPTION=|cannot read the grid file"):
            _grid(bad)


class CtrlCLauncher:
    """The study's fits as a user stops them: Ctrl-C comes once the first fit has started, and a fit runs until told
    to stop. (The checks of the fits' configuration before them run as usual, without a launcher.)"""

    cpus = default_jobs = 1

    def __init__(self, context) -> None:
        self.local = LocalLauncher(context)
        self.started = 0
        self.stopped = threading.Event()

    def run(self, arguments, threads, config=None, log=None):
        self.started += 1
        for _ in range(30):  # Ctrl-C to the thread waiting for the fits, again each second until interrupt() comes:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # (in the whole suite, now and then
            if self.stopped.wait(timeout=1):  # the first one was not acted on; cause not found)
                return 1, ["Detected KeyboardInterrupt, attempting graceful shutdown ..."]
        raise AssertionError("interrupt() never came")

    def interrupt(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        pass


def test_ctrl_c_stops_the_running_fit_starts_no_queued_one_and_marks_nothing_finished(tmp_path, monkeypatch, capsys):
    launchers = []
    monkeypatch.setattr(
        "lit_activations.study.command.LocalLauncher", lambda c, d: launchers.append(CtrlCLauncher(c)) or launchers[-1]
    )
    study = ["--activations", "relu,tanh", "--seeds", "0,1", "--vectorize=false", "--jobs", "1", "--data.n_samples=200"]
    assert compare_main(study) == 130
    assert launchers[-1].stopped.is_set() and launchers[-1].started == 1  # told to stop; the 3 queued fits never ran
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "interrupted: the finished runs are kept in logs/study; the same command trains the others"
    )
    assert not list((tmp_path / "logs").rglob("finished")) and not (tmp_path / "logs" / "study" / "results.md").exists()


class ScriptedLauncher:
    """Fits that fail whenever a cell named in ``failing`` is among their members, as a crashing member would."""

    cpus = default_jobs = 2

    def __init__(self, failing: set[str]) -> None:
        self.failing, self.fits = failing, []

    def run(self, arguments, threads, config=None, log=None):
        members = json.loads(next(a for a in arguments if a.startswith("--members.activations=")).partition("=")[2])
        cells = [f"{m['name']}/{s}" for m in members for s in m["seeds"]]
        self.fits.append(cells)
        if self.failing & set(cells):
            return 1, ["error: a member crashed"]
        run_dir = next(a for a in arguments if a.startswith("--members.run_dir=")).partition("=")[2]
        for m in members:  # what a fit writes: each member's run directory
            for seed in m["seeds"]:
                Path(run_dir.format(activation=m["name"], seed=seed)).mkdir(parents=True)
        return 0, []

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_failed_fit_of_several_cells_is_retried_cell_by_cell_so_only_the_bad_cell_fails(tmp_path):
    launcher = ScriptedLauncher(failing={"tanh/1"})
    cells = [Cell(a, s, tmp_path / a / f"seed_{s}") for a in ("relu", "tanh") for s in (0, 1)]
    run_fits(split(cells, 2), launcher, Progress(len(cells)), fit_args=[], study_dir=tmp_path, jobs=2, configs={})
    assert sorted(launcher.fits) == [["relu/0", "relu/1"], ["tanh/0"], ["tanh/0", "tanh/1"], ["tanh/1"]]  # 2 at a time
    assert [cell.error for cell in cells] == ["", "", "", "error: a member crashed"]
    assert sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("finished")) == [
        "relu/seed_0", "relu/seed_1", "tanh/seed_0"]  # fmt: skip


@pytest.mark.slow
def test_ctrl_c_while_the_fits_are_checked_is_one_line_and_exit_130(tmp_path):
    study = subprocess.Popen([*COMMAND[:4], "--activations", "tanh"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    time.sleep(2)  # importing Lightning in the fork server, or checking the fit's configuration
    os.killpg(study.pid, signal.SIGINT)  # as a terminal's Ctrl-C reaches every process of the study
    _, err = study.communicate(timeout=60)
    assert study.returncode == 130
    assert err.strip().splitlines() == ["interrupted: nothing was written; the same command trains the others"]
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_a_study_of_a_model_of_ones_own_varies_its_options_one_fit_per_cell(tmp_path, capsys):
    options = ["--model=functional_mlp.FunctionalMLP", "--data.n_samples=200", "--trainer.max_epochs=2"]
    assert compare_main([*options, "--grid", "model.width=[4, 8]", "--seeds", "0,1"]) == 0
    study = tmp_path / "logs" / "study"
    rows = list(csv.DictReader((study / "results.csv").open()))
    assert [(row["setting"], row["activation"], row["runs"]) for row in rows] == [
        ("width=4", "functionalmlp", "2"), ("width=8", "functionalmlp", "2")]  # fmt: skip
    assert rows[0]["saturation"] == "nan" and "| width=4 | functionalmlp |" in (study / "results.md").read_text()
    alone = fit(*options, "--model.width=8", "--seed_everything=1")  # the cell is that fit, in its own directory
    ours = read_scalars(study / "width=8" / "functionalmlp" / "seed_1")
    assert ours["val/acc"] == read_scalars(alone.trainer.logger.log_dir)["val/acc"]
    assert float(rows[1]["val_acc_mean"]) == pytest.approx(
        statistics.fmean(
            read_scalars(study / "width=8" / "functionalmlp" / f"seed_{s}")["val/acc"][-1][1] for s in (0, 1)
        )
    )
    capsys.readouterr()
    assert compare_main([*options, "--activations", "relu,tanh"]) == 2  # members are ActivationMLP's
    assert capsys.readouterr().err.startswith("error: invalid --activations for FunctionalMLP: the activations of")


def study_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lit_activations", "compare", "--seeds", "0", "--data.n_samples=200", *args]


@pytest.mark.slow
def test_two_studies_started_together_on_one_directory_one_refuses_and_the_others_runs_are_whole(tmp_path):
    # overlapping activations and other settings: the worst case of two studies writing one directory
    commands = (study_command("--activations", "relu,tanh", "--trainer.max_epochs=12"),
                study_command("--activations", "tanh,sigmoid", "--trainer.max_epochs=6"))  # fmt: skip
    studies = [subprocess.Popen(c, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for c in commands]  # fmt: skip
    outputs = [study.communicate(timeout=600) for study in studies]
    codes = [study.returncode for study in studies]
    assert sorted(codes) == [0, 2], outputs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert outputs[loser][1].strip().splitlines() == [
        f"error: logs/study is in use by another study (pid {studies[winner].pid} on {os.uname().nodename}); wait"
        " for it to end, or give another --study_dir"
    ]
    study = tmp_path / "logs" / "study"
    activations, epochs = (["relu", "tanh"], 12) if winner == 0 else (["tanh", "sigmoid"], 6)
    assert [row["activation"] for row in csv.DictReader((study / "results.csv").open())] == activations
    for activation in activations:
        run = study / activation / "seed_0"
        assert len(list(run.glob("events.out.tfevents.*"))) == 1 and len(read_scalars(run)["val/acc"]) == epochs
    assert sorted(p.name for p in study.iterdir() if p.is_dir()) == sorted([*activations, "fits"])


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "kill -9"])
def test_a_stopped_study_leaves_no_process_or_temporary_file_and_its_rerun_gives_the_undisturbed_table(
    tmp_path, signum, monkeypatch
):
    args = ["--activations", "tanh,relu", "--trainer.max_epochs=100000"]  # fits that would not end on their own
    scratch = Path(tempfile.mkdtemp(prefix="study-tmp-", dir="/tmp"))  # its TMPDIR, to see what it leaves (a short
    # path: the fork server's socket lies under it)
    study = subprocess.Popen(study_command(*args), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, start_new_session=True, env=os.environ | {"TMPDIR": str(scratch)})  # fmt: skip
    events = lambda: list((tmp_path / "logs" / "study").glob("*/seed_0/events.out.tfevents.*"))  # noqa: E731
    deadline = time.monotonic() + 120
    while not events() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events(), study.stderr.read()
    os.kill(study.pid, signum)  # the study's own process alone, not its fits
    study.wait(timeout=60)
    if signum == signal.SIGTERM:
        assert study.returncode == 143 and study.stderr.read().strip().splitlines() == [
            "interrupted: the finished runs are kept in logs/study; the same command trains the others"
        ]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # every process of the study: the fork server and the fits too
        try:
            os.killpg(study.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("processes of the study outlived it")
    # (torch's own cache, and the session files Open MPI leaves where a CUDA build of torch is loaded)
    left = {p.name for p in scratch.iterdir() if not p.name.startswith(("torchinductor", "ompi."))}
    assert left == ({f"lit_activations-study-{study.pid}"} if signum == signal.SIGKILL else set())
    assert not list((tmp_path / "logs" / "study").rglob("finished"))  # stopped fits are not finished runs

    with monkeypatch.context() as patched:  # the next study in that TMPDIR removes what a dead one left there
        patched.setattr(tempfile, "tempdir", str(scratch))
        local.scratch()
        assert f"lit_activations-study-{study.pid}" not in {p.name for p in scratch.iterdir()}
    args[-1] = "--trainer.max_epochs=40"  # (the stopped runs are not finished: they train again, with any epochs)
    assert compare_main([*study_command(*args)[4:]]) == 0
    assert compare_main([*study_command(*args)[4:], "--study_dir=undisturbed"]) == 0
    rows = [list(csv.DictReader((tmp_path / d / "results.csv").open())) for d in ("logs/study", "undisturbed")]
    assert rows[0] == rows[1]
    for activation in ("tanh", "relu"):
        assert len(list((tmp_path / "logs" / "study" / activation / "seed_0").glob("events.out.tfevents.*"))) == 1
    shutil.rmtree(scratch)


def test_a_study_directory_that_is_a_file_is_one_line_before_anything_runs(tmp_path, capsys):
    (tmp_path / "results").write_text("mine")
    assert compare_main(["--activations", "relu", "--study_dir", "results/study"]) == 2
    assert capsys.readouterr().err == "error: invalid --study_dir results/study: results is a file, not a directory\n"
    assert (tmp_path / "results").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["results"]
