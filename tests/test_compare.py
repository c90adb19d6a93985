"""The study command, through the real command line."""

import csv
import statistics
import subprocess
import sys

import pytest
from matplotlib.image import imread

from lit_activations.events import read_scalars

from runs import fit

COMMAND = [sys.executable, "-m", "lit_activations", "compare", "--activations", "tanh,relu,relu7", "--seeds", "0",
           "--jobs", "2", "--data.n_samples=200", "--trainer.max_epochs=3"]  # fmt: skip


@pytest.mark.slow
def test_compare_tabulates_the_event_files_reports_a_failure_and_skips_finished_runs(tmp_path):
    result = subprocess.run(COMMAND, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "[3/3]" in result.stdout and "| activation | final val acc" in result.stdout
    study = tmp_path / "logs" / "study"

    rows = {row["activation"]: row for row in csv.DictReader((study / "results.csv").open())}
    for activation in ("tanh", "relu"):
        scalars = read_scalars(study / activation / "seed_0")
        row = rows[activation]
        assert float(row["val_acc_mean"]) == pytest.approx(scalars["val/acc"][-1][1])
        assert float(row["vanishing_ratio"]) == pytest.approx(scalars["vanishing_ratio/epoch"][-1][1])
        for stat in ("saturation", "dead_units"):
            hidden = [values[-1][1] for tag, values in scalars.items() if tag.startswith(f"{stat}/")]
            assert float(row[stat]) == pytest.approx(statistics.fmean(hidden))
        assert row["failed"] == "0"
    assert rows["relu7"]["failed"] == "1" and "unknown activation 'relu7'" in rows["relu7"]["error"]
    assert "relu7 | failed: error: unknown activation 'relu7'" in (study / "results.md").read_text()

    # a study's fit is an ordinary fit: the same numbers as `fit` run on its own with the same arguments
    alone = fit("--model.activation=tanh", "--data.n_samples=200", "--trainer.max_epochs=3")
    assert read_scalars(study / "tanh" / "seed_0") == read_scalars(alone.trainer.logger.log_dir)

    image = imread(study / "comparison.png")
    assert image.shape[0] > 300 and image.shape[1] > 600  # a real PNG, two rows of plots

    finished = study / "tanh" / "seed_0" / "finished"
    before = finished.stat().st_mtime_ns
    again = subprocess.run(COMMAND, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert again.stdout.count("skipped (finished before)") == 2 and "relu7 seed 0: failed" in again.stdout
    assert finished.stat().st_mtime_ns == before
