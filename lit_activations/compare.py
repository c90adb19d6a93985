"""``python -m lit_activations compare``: the activation study, many fits -> one table and one figure.

Each (activation, seed) is an ordinary ``fit`` through the same command line, in its own run
directory ``<study_dir>/<activation>/seed_<s>``, run as a separate process, ``--jobs`` at a time.
The processes are forked from a server that has imported Lightning once (multiprocessing's
"forkserver"), so a fit starts in a fraction of a second instead of the 5 s of a new interpreter.
The seed is ``--seed_everything`` (initialisation); the data stay those of ``--data.seed``. Every
other argument goes to each fit unchanged, e.g. ``--config configs/tutorial.yaml``. Afterwards the
runs are read back from their event files into ``results.md``, ``results.csv`` and
``comparison.png`` in the study directory. A run that fails is reported and the others go on; a
run that finished before is not run again.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import math
import multiprocessing
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from lit_activations.activations import run_name
from lit_activations.events import read_scalars
from lit_activations.plots import study_figure

# Loaded once by the server the fits are forked from: what a fit imports, and this module (the processes' target).
_PRELOAD = ["lit_activations.compare", "lit_activations.cli", "sklearn.datasets", "sklearn.model_selection"]

FINISHED = "finished"  # marker file in a run directory whose fit exited cleanly
COLUMNS = ("activation", "runs", "failed", "val_acc_mean", "val_acc_std", "epochs_to_90", "seeds_reaching_90",
           "vanishing_ratio", "saturation", "dead_units", "error")  # fmt: skip


@dataclass
class Run:
    activation: str
    seed: int
    directory: Path
    error: str = ""  # the failed fit's last line of output; empty if it finished
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # read back once it finished


def compare_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lit_activations compare",
        description="Fit every activation with every seed, then write a table and a figure of the study.",
        epilog="Any other argument is passed to each fit, e.g. --config configs/tutorial.yaml --trainer.max_epochs=50.",
    )
    parser.add_argument("--activations", required=True, type=_names, help="comma-separated, e.g. sigmoid,tanh,relu")
    parser.add_argument("--seeds", default=[0], type=_seeds, help="comma-separated integers (default: 0)")
    parser.add_argument("--jobs", default=os.cpu_count() or 1, type=_positive, help="fits at a time (default: cores)")
    parser.add_argument("--study_dir", default=Path("logs/study"), type=Path, help="default: logs/study")
    args, fit_args = parser.parse_known_args(argv)

    runs = [Run(a, s, args.study_dir / run_name(a) / f"seed_{s}") for a in args.activations for s in args.seeds]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)  # no oversubscription of the cores
    context = _process_context()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(_fit, run, fit_args, args.study_dir, threads, context): run for run in runs}
        for done, future in enumerate(as_completed(futures), start=1):
            run, seconds = futures[future], future.result()
            status = "skipped (finished before)" if seconds is None else f"{seconds:.1f} s"
            outcome = f"failed: {run.error}" if run.error else "ok"
            print(f"[{done}/{len(runs)}] {run.activation} seed {run.seed}: {outcome}, {status}", flush=True)
    print(f"{len(runs)} runs in {time.monotonic() - started:.1f} s", flush=True)
    for run in runs:
        if not run.error:
            run.scalars = read_scalars(run.directory)  # once: the table and the figure both use them

    args.study_dir.mkdir(parents=True, exist_ok=True)  # even if no fit got as far as its run directory
    rows = [_summarise(activation, [r for r in runs if r.activation == activation]) for activation in args.activations]
    table = _markdown(rows)
    (args.study_dir / "results.md").write_text(table)
    with open(args.study_dir / "results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    curves = {a: c for a in args.activations if (c := _curves([r for r in runs if r.activation == a and not r.error]))}
    if curves:
        layers = sorted(
            {tag for c in curves.values() for tag in c if tag.startswith("grad_mean_abs_epoch/")}, key=_natural
        )
        study_figure(curves, layers).savefig(args.study_dir / "comparison.png")
    print(table, flush=True)
    return 1 if all(r.error for r in runs) else 0


def _fit(
    run: Run, fit_args: list[str], study_dir: Path, threads: int, context: multiprocessing.context.BaseContext
) -> float | None:
    """Run one fit in its own process; return its wall time, or None if it had finished before."""
    if (run.directory / FINISHED).exists():
        return None
    shutil.rmtree(run.directory, ignore_errors=True)  # what an unfinished earlier attempt left
    arguments = [
        "fit", *fit_args,
        f"--model.activation={run.activation}", f"--seed_everything={run.seed}",
        f"--trainer.logger.init_args.save_dir={study_dir}", f"--trainer.logger.init_args.version=seed_{run.seed}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "output.txt"
        process = context.Process(target=_fit_process, args=(arguments, threads, output))
        process.start()
        process.join()
        lines = output.read_text(errors="replace").strip().splitlines() if output.exists() else []
    if process.exitcode == 0:
        (run.directory / FINISHED).touch()
    else:
        run.error = lines[-1] if lines else f"exit status {process.exitcode}"
    return time.monotonic() - started


def _fit_process(arguments: list[str], threads: int, output: Path) -> None:
    """The body of a fit's process: ``python -m lit_activations ARGUMENTS``, its output into ``output``."""
    from lit_activations.cli import cli_main  # here, not at the top: the study's own process needs no Lightning

    file = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(file, sys.stdout.fileno())  # C libraries' output too; multiprocessing flushes both at exit
    os.dup2(file, sys.stderr.fileno())
    torch.set_num_threads(threads)
    # To Lightning this process is `python -m lit_activations ARGUMENTS`: its DDP launcher starts the other
    # ranks as `python -m <__main__'s module> <sys.argv[1:]>` (multiprocessing's spawn sets __main__ the same way).
    sys.modules["__main__"] = importlib.import_module("lit_activations.__main__")
    sys.argv = ["lit_activations", *arguments]
    cli_main()


def _process_context() -> multiprocessing.context.BaseContext:
    """Fork from a server that has imported Lightning; where there is none (Windows), start fresh interpreters."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)  # takes effect when the server starts, at the first fit
    return context


def _summarise(activation: str, runs: list[Run]) -> dict[str, object]:
    finished = [r for r in runs if not r.error]
    row: dict[str, object] = {"activation": activation, "runs": len(runs), "failed": len(runs) - len(finished)}
    row["error"] = next((r.error for r in runs if r.error), "")
    if not finished:
        return row
    scalars = [r.scalars for r in finished]
    final_acc = [s["val/acc"][-1][1] for s in scalars]
    row["val_acc_mean"] = statistics.fmean(final_acc)
    row["val_acc_std"] = statistics.stdev(final_acc) if len(final_acc) > 1 else 0.0
    reached = [next((epoch + 1 for epoch, (_, acc) in enumerate(s["val/acc"]) if acc >= 0.9), None) for s in scalars]
    epochs = [e for e in reached if e is not None]
    row["epochs_to_90"] = statistics.fmean(epochs) if epochs else ""  # over the seeds that got there
    row["seeds_reaching_90"] = len(epochs)
    row["vanishing_ratio"] = statistics.fmean(s["vanishing_ratio/epoch"][-1][1] for s in scalars)
    for stat in ("saturation", "dead_units"):
        row[stat] = statistics.fmean(_hidden_mean(s, stat, r.directory) for s, r in zip(scalars, finished, strict=True))
    return row


def _hidden_mean(scalars: dict[str, list[tuple[int, float]]], stat: str, run_dir: Path) -> float:
    """The last value of ``stat`` averaged over the hidden activations (the output sigmoid left out)."""
    tags = sorted((t for t in scalars if t.startswith(f"{stat}/")), key=_natural)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    if config["model"].get("output") == "sigmoid":
        tags = tags[:-1]  # the tutorial's output sigmoid is monitored too, but is no hidden layer
    return statistics.fmean(scalars[t][-1][1] for t in tags) if tags else math.nan


def _curves(runs: list[Run]) -> dict[str, np.ndarray]:
    """Per-epoch series of the finished runs, stacked as (seeds, epochs) and cut to the shortest run."""
    if not runs:
        return {}
    scalars = [r.scalars for r in runs]
    tags = [t for t in scalars[0] if t in ("val/loss", "val/acc") or t.startswith("grad_mean_abs_epoch/")]
    curves = {}
    for tag in tags:
        series = [[v for _, v in s[tag]] for s in scalars if tag in s]
        length = min(len(v) for v in series)
        curves[tag] = np.array([v[:length] for v in series])
    return curves


def _markdown(rows: list[dict[str, object]]) -> str:
    columns = ["activation", "final val acc (mean ± std)", "epochs to 90%", "log10 vanishing ratio", "saturation",
               "dead units", "runs"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for row in rows:
        if "val_acc_mean" not in row:
            lines.append(f"| {row['activation']} | failed: {row['error']} | | | | | 0/{row['runs']} |")
            continue
        reaching, total = row["seeds_reaching_90"], row["runs"] - row["failed"]
        if reaching:
            epochs = f"{row['epochs_to_90']:.0f}" + (f" ({reaching}/{total} seeds)" if reaching < total else "")
        else:
            epochs = "never"
        ran = f"{row['runs'] - row['failed']}/{row['runs']}" + (f" ({row['error']})" if row["failed"] else "")
        lines.append(
            f"| {row['activation']} | {row['val_acc_mean']:.3f} ± {row['val_acc_std']:.3f} | {epochs} |"
            f" {row['vanishing_ratio']:.2f} | {row['saturation']:.2f} | {row['dead_units']:.2f} | {ran} |"
        )
    return "\n".join(lines) + "\n"


def _natural(tag: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", tag)]


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated activation names, e.g. sigmoid,tanh,relu")
    return list(dict.fromkeys(names))


def _seeds(text: str) -> list[int]:
    try:
        return list(dict.fromkeys(int(seed) for seed in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)
