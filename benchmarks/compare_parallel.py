"""Does ``compare`` use the cores? The study's wall time against the sum of its fits run one by one.

Over the tutorial's five activations, in one invocation: each fit alone as its own command
(``python -m lit_activations fit ...``, the sum of the single runs), then ``compare`` with
``--jobs 1`` and with its default ``--jobs`` (the machine's cores), each in a fresh directory.
Targets: compare's wall time at most 0.6 of the sum of the single runs on 2 cores.
Run:  python benchmarks/compare_parallel.py --epochs 30
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parent.parent / "configs" / "tutorial.yaml"
ACTIVATIONS = ("sigmoid", "tanh", "relu", "relu6", "leaky_relu")
QUIET = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")


def wall_time(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def single_runs(epochs: int) -> float:
    """The five fits one after the other, each a command of its own, as a user would run them by hand."""
    with tempfile.TemporaryDirectory() as logs:
        command = [sys.executable, "-m", "lit_activations", "fit", "--config", str(TUTORIAL), *QUIET,
                   f"--trainer.max_epochs={epochs}", f"--trainer.logger.init_args.save_dir={logs}"]  # fmt: skip
        return sum(wall_time([*command, f"--model.activation={activation}"]) for activation in ACTIVATIONS)


def study(epochs: int, jobs: int | None) -> float:
    with tempfile.TemporaryDirectory() as study_dir:
        command = [sys.executable, "-m", "lit_activations", "compare", "--activations", ",".join(ACTIVATIONS),
                   "--study_dir", study_dir, "--config", str(TUTORIAL), f"--trainer.max_epochs={epochs}"]  # fmt: skip
        return wall_time(command + ([] if jobs is None else ["--jobs", str(jobs)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    singles = single_runs(args.epochs)
    sequential = study(args.epochs, jobs=1)
    parallel = study(args.epochs, jobs=None)
    print(f"5 tutorial fits of {args.epochs} epochs on {os.cpu_count()} cores:")
    print(f"  one by one, each its own command: {singles:.1f} s in all")
    print(f"  compare --jobs 1: {sequential:.1f} s;  compare (default --jobs): {parallel:.1f} s")
    print(f"compare / sum of single runs = {parallel / singles:.2f}  (target <= 0.60)")
    print(f"compare --jobs 1 / sum of single runs = {sequential / singles:.2f}")


if __name__ == "__main__":
    main()
