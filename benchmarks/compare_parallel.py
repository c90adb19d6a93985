"""Does ``compare`` use the cores? Wall time of the study with ``--jobs 2`` against ``--jobs 1``.

With ``--jobs 1`` the fits run one after the other, so its wall time is the sum of the single
runs; the target is a ratio of at most 0.6 on 2 cores. Both studies run side by side in one
invocation, each in a fresh directory. Run:  python benchmarks/compare_parallel.py --epochs 30
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parent.parent / "configs" / "tutorial.yaml"
ACTIVATIONS = "sigmoid,tanh,relu,relu6,leaky_relu"


def study_wall_time(jobs: int, epochs: int) -> float:
    with tempfile.TemporaryDirectory() as study:
        command = [sys.executable, "-m", "lit_activations", "compare", "--activations", ACTIVATIONS,
                   "--jobs", str(jobs), "--study_dir", study, "--config", str(TUTORIAL),
                   f"--trainer.max_epochs={epochs}"]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    sequential = study_wall_time(jobs=1, epochs=args.epochs)
    parallel = study_wall_time(jobs=2, epochs=args.epochs)
    print(f"5 tutorial fits of {args.epochs} epochs: --jobs 1 {sequential:.1f} s, --jobs 2 {parallel:.1f} s")
    print(f"parallel / sum of single runs = {parallel / sequential:.2f}  (target <= 0.60)")


if __name__ == "__main__":
    main()
