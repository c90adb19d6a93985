"""The study command, through the real command line."""

import argparse
import csv
import json
import signal
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from matplotlib.image import imread

from lit_activations.compare import (
    LocalLauncher,
    Run,
    _fit_arguments,
    _grid,
    _names,
    _Progress,
    _run_fits,
    _split,
    compare_main,
)
from lit_activations.events import read_scalars

from runs import fit

COMMAND = [sys.executable, "-m", "lit_activations", "compare", "--activations", "tanh,relu,relu7", "--seeds", "0,1",
           "--jobs", "2", "--data.n_samples=200", "--trainer.max_epochs=3"]  # fmt: skip


def table_rows(study) -> dict[str, dict[str, str]]:
    return {row["activation"]: row for row in csv.DictReader((study / "results.csv").open())}


@pytest.mark.slow
def test_compare_tabulates_the_event_files_reports_a_failure_and_skips_finished_runs(tmp_path, capsys):
    result = subprocess.run(COMMAND, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "[6/6]" in result.stdout and "| activation | final val acc" in result.stdout
    assert "tanh seed 0: ok" in result.stdout and "(2 runs in one fit)" in result.stdout  # 4 cells, 2 jobs
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
    assert rows["relu7"]["failed"] == "2" and "unknown activation 'relu7'" in rows["relu7"]["error"]
    assert "relu7 | failed: error: unknown activation 'relu7'" in (study / "results.md").read_text()

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
    assert compare_main([*COMMAND[4:], "--threads=2"]) == 0  # threads change the speed, not the runs
    again = capsys.readouterr().out
    assert again.count("skipped (finished before)") == 4 and "relu7 seed 0: failed" in again
    assert finished.stat().st_mtime_ns == before

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
    assert _names("relu+tanh,sigmoid,relu+tanh") == [["relu", "tanh"], "sigmoid"]
    # a fit gets a string as typed (`--model.init="default"` is no init), anything else as JSON
    assert _fit_arguments([], tmp_path, {"model.init": "default", "model.hidden_sizes": [5, 5]})[1:3] == [
        "--model.init=default", "--model.hidden_sizes=[5, 5]"]  # fmt: skip
    for bad in ("model.optimizer.lr=0.1", "model.optimizer.lr=[]", "=[1]", "nothing.yaml"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected OPTION=|cannot read the grid file"):
            _grid(bad)


class CtrlCLauncher:
    """The study's fits as a user stops them: Ctrl-C comes once the first fit has started, and a fit runs until told
    to stop. The fit's own checks (``--print_config``) run as usual."""

    cpus = default_jobs = 1

    def __init__(self, context) -> None:
        self.local = LocalLauncher(context)
        self.started = 0
        self.stopped = threading.Event()

    def run(self, arguments, threads, setting=None):
        if "--print_config" in arguments:
            return self.local.run(arguments, threads)
        self.started += 1
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # to the thread waiting for the fits
        assert self.stopped.wait(timeout=30), "interrupt() never came"
        return 1, ["Detected KeyboardInterrupt, attempting graceful shutdown ..."]

    def interrupt(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        pass


def test_ctrl_c_stops_the_running_fit_starts_no_queued_one_and_marks_nothing_finished(tmp_path, monkeypatch, capsys):
    launchers = []
    monkeypatch.setattr(
        "lit_activations.compare.LocalLauncher", lambda c: launchers.append(CtrlCLauncher(c)) or launchers[-1]
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

    def run(self, arguments, threads, setting=None):
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
    runs = [Run(a, s, tmp_path / a / f"seed_{s}") for a in ("relu", "tanh") for s in (0, 1)]
    args = argparse.Namespace(jobs=2, study_dir=tmp_path)
    _run_fits(_split(runs, 2), args, [], launcher, _Progress(len(runs)))
    assert sorted(launcher.fits) == [["relu/0", "relu/1"], ["tanh/0"], ["tanh/0", "tanh/1"], ["tanh/1"]]  # 2 at a time
    assert [run.error for run in runs] == ["", "", "", "error: a member crashed"]
    assert sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("finished")) == [
        "relu/seed_0", "relu/seed_1", "tanh/seed_0"]  # fmt: skip
