"""The study's report: its runs read back from their event files into ``results.md``, ``results.csv`` and
``comparison.png``.

A row per setting and activation, over its seeds: the final validation accuracy (mean ± std), the
epochs to 90%, and the monitor's vanishing ratio, saturation and dead units. A run of a model of
your own that does not log a tag shows ``-`` there.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from pathlib import Path

import numpy as np

from lit_activations.events import read_scalars
from lit_activations.names import layers_name, setting_name
from lit_activations.study.cells import Cell

COLUMNS = ("setting", "activation", "runs", "failed", "val_acc_mean", "val_acc_std", "epochs_to_90",
           "seeds_reaching_90", "vanishing_ratio", "saturation", "dead_units", "error")  # fmt: skip


def write_report(cells: list[Cell], study_dir: Path) -> None:
    """Read the finished cells' runs back and write ``results.md``, ``results.csv`` and ``comparison.png``."""
    read_runs([cell for cell in cells if not cell.error])
    study_dir.mkdir(parents=True, exist_ok=True)  # even if no fit got as far as its run directory
    groups = list(dict.fromkeys(cell.group for cell in cells))
    rows = [summarise([c for c in cells if c.group == group]) for group in groups]
    table = markdown(rows)
    (study_dir / "results.md").write_text(table)
    with open(study_dir / "results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    curves = {g: c for g in groups if (c := _curves([x for x in cells if x.group == g and not x.error]))}
    if curves:
        layers = sorted(
            {tag for c in curves.values() for tag in c if tag.startswith("grad_mean_abs_epoch/")}, key=_natural
        )
        from lit_activations.plots import study_figure  # matplotlib, only now

        study_figure(curves, layers).savefig(study_dir / "comparison.png")
    print(table, flush=True)
    figure = f", figure {study_dir / 'comparison.png'}" if curves else ""
    print(f"Table {study_dir / 'results.md'}, CSV {study_dir / 'results.csv'}{figure};"
          f" to look at the runs: tensorboard --logdir {study_dir}", flush=True)  # fmt: skip


def read_runs(cells: list[Cell]) -> None:
    """Each cell's scalars (``Cell.scalars``), read once for the table and the figure, in this process: 20 ms a
    tutorial run (``benchmarks/read_runs.py``), less than a pool of processes would take to start."""
    for cell in cells:
        cell.scalars = read_scalars(cell.directory)


def summarise(cells: list[Cell]) -> dict[str, object]:
    """One row of the table (``COLUMNS``) from one group's cells; the means over the seeds where a value is finite."""
    finished = [c for c in cells if not c.error]
    row: dict[str, object] = {"setting": setting_name(cells[0].setting), "activation": layers_name(cells[0].activation)}
    row |= {"runs": len(cells), "failed": len(cells) - len(finished)}
    row["error"] = _brief(next((c.error for c in cells if c.error), ""))
    if not finished:
        return row
    scalars = [c.scalars for c in finished]
    final_acc = [_last(s, "val/acc") for s in scalars]
    row["val_acc_mean"] = _finite_mean(final_acc)
    finite = [acc for acc in final_acc if math.isfinite(acc)]
    row["val_acc_std"] = statistics.stdev(finite) if len(finite) > 1 else 0.0 if finite else math.nan
    reached = [
        next((epoch + 1 for epoch, (_, acc) in enumerate(s.get("val/acc", [])) if acc >= 0.9), None) for s in scalars
    ]
    epochs = [e for e in reached if e is not None]
    row["epochs_to_90"] = statistics.fmean(epochs) if epochs else ""  # over the seeds that got there
    row["seeds_reaching_90"] = len(epochs)
    # each over the seeds where it is finite: one seed's dead gradients (a ratio of 0) hide none of the others'
    row["vanishing_ratio"] = _finite_mean([_last(s, "vanishing_ratio/epoch") for s in scalars])
    for stat in ("saturation", "dead_units"):
        row[stat] = _finite_mean([_hidden_mean(s, stat) for s in scalars])
    return row


def markdown(rows: list[dict[str, object]]) -> str:
    """The table; a ``setting`` column first when the study has a grid."""
    gridded = any(row["setting"] for row in rows)
    columns = [*(["setting"] if gridded else []), "activation", "final val acc (mean ± std)", "epochs to 90%",
               "log10 vanishing ratio", "saturation", "dead units", "runs"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for row in rows:
        first = (f"{row['setting']} | " if gridded else "") + f"{row['activation']}"
        if "val_acc_mean" not in row:
            lines.append(f"| {first} | failed: {row['error']} | | | | | 0/{row['runs']} |")
            continue
        reaching, total = row["seeds_reaching_90"], row["runs"] - row["failed"]
        if reaching:
            epochs = f"{row['epochs_to_90']:.0f}" + (f" ({reaching}/{total} seeds)" if reaching < total else "")
        else:
            epochs = "never"
        ran = f"{row['runs'] - row['failed']}/{row['runs']}" + (f" ({row['error']})" if row["failed"] else "")
        lines.append(
            f"| {first} | {_shown(row['val_acc_mean'], 3)} ± {_shown(row['val_acc_std'], 3)} | {epochs} |"
            f" {_shown(row['vanishing_ratio'])} | {_shown(row['saturation'])} | {_shown(row['dead_units'])} | {ran} |"
        )
    return "\n".join(lines) + "\n"


def _last(scalars: dict[str, list[tuple[int, float]]], tag: str) -> float:
    """A tag's last value, NaN for a tag the run did not log (a model of your own may log other tags)."""
    return scalars[tag][-1][1] if scalars.get(tag) else math.nan


def _finite_mean(values: list[float]) -> float:
    """The mean of the finite values, NaN if there is none."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def _brief(error: str, width: int = 100) -> str:
    """A failed run's error for the table: its first ``width`` characters (the run's ``error.log`` has all)."""
    return error if len(error) <= width else error[: width - 1] + "…"


def _hidden_mean(scalars: dict[str, list[tuple[int, float]]], stat: str) -> float:
    """The last value of ``stat`` averaged over the hidden activations (the only ones the monitor finds in the MLP)."""
    tags = [t for t in scalars if t.startswith(f"{stat}/")]
    return statistics.fmean(scalars[t][-1][1] for t in tags) if tags else math.nan


def _curves(cells: list[Cell]) -> dict[str, np.ndarray]:
    """Per-epoch series of the finished cells' runs, stacked as (seeds, epochs) and cut to the shortest run."""
    if not cells:
        return {}
    scalars = [c.scalars for c in cells]
    tags = [t for t in scalars[0] if t in ("val/loss", "val/acc") or t.startswith("grad_mean_abs_epoch/")]
    curves = {}
    for tag in tags:
        series = [[v for _, v in s[tag]] for s in scalars if tag in s]
        length = min(len(v) for v in series)
        curves[tag] = np.array([v[:length] for v in series])
    return curves


def _shown(value: float, digits: int = 2) -> str:
    """A number of the table; ``-`` for one no run measured (NaN)."""
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def _natural(tag: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", tag)]
