"""What the theory costs: its share of a fit, and the ``theory`` command's time beyond its imports.

(a) ``fit --config configs/tutorial.yaml`` with ``SignalTheory`` on (the default) against ``--theory=null``,
    alternated within each repeat, for one network and for the 15 members of one fit of the tutorial study
    (the target: the theory at most 2% of the fit's wall time);
(b) ``python -m lit_activations theory`` for 16 hidden layers against ``python -c`` importing what it imports
    (the target: at most 2 s more).

Ratios are medians over repeats of the ratio within a repeat (machines here are noisy). Run:
    python benchmarks/theory_cost.py [--epochs 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lit_activations.cli import cli_main

REPO = Path(__file__).resolve().parent.parent
TUTORIAL = REPO / "configs" / "tutorial.yaml"
MEMBERS = ["--members.activations=[sigmoid, tanh, relu, relu6, leaky_relu]", "--members.seeds=[0, 1, 2]"]


def fit_seconds(epochs: int, theory: bool, members: bool) -> float:
    with tempfile.TemporaryDirectory() as logs:
        args = ["fit", "--config", str(TUTORIAL), "--model.activation=relu", f"--trainer.max_epochs={epochs}",
                f"--trainer.logger.init_args.save_dir={logs}", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false", "--summary=null", *(MEMBERS if members else []),
                *([] if theory else ["--theory=null"])]  # fmt: skip
        started = time.perf_counter()
        cli_main(args)
        return time.perf_counter() - started


def command_seconds(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True, cwd=tempfile.gettempdir())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for members in (False, True):
        shares = []
        for _ in range(args.repeats):
            on, off = fit_seconds(args.epochs, True, members), fit_seconds(args.epochs, False, members)
            shares.append(1 - off / on)
            print(f"  {'15 members' if members else 'one network'}: theory on {on:.2f} s, off {off:.2f} s", flush=True)
        share = statistics.median(shares)
        print(f"(a) {'15 members' if members else 'one network'}, {args.epochs} epochs: the theory's share of the fit"
              f" {share:.1%} (target <= 2%: {'met' if share <= 0.02 else 'NOT met'})", flush=True)  # fmt: skip
    layers = "[" + ", ".join(["16"] * 16) + "]"
    figure = Path(tempfile.gettempdir()) / "theory_cost.png"
    extra = []
    for _ in range(args.repeats):
        command = command_seconds(["-m", "lit_activations", "theory", "--model.activation=tanh",
                                   f"--model.hidden_sizes={layers}", f"--figure={figure}"])  # fmt: skip
        imports = command_seconds(["-c", "import lit_activations.theory_command, lit_activations.cli,"
                                   " lit_activations.plots, matplotlib.figure"])  # fmt: skip
        extra.append(command - imports)
    beyond = statistics.median(extra)
    print(f"(b) theory, 16 layers: {beyond:.2f} s beyond its imports (target <= 2 s:"
          f" {'met' if beyond <= 2 else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
