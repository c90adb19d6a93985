"""What the theory costs: its share of a fit, and the ``theory`` command's time beyond its imports.

(a) ``fit --config configs/tutorial.yaml`` as the tutorial runs it (300 epochs) with ``SignalTheory`` on (the default)
    and with ``--theory=null``, alternated within each repeat, for one network and for the 15 members of one fit of the
    tutorial study, the order alternating from one repeat to the next. The theory's share is given two ways: (on −
    off)/on of the wall time, the target's measure (at most 2% of the fit), and the time spent inside the callback's
    hooks over the fit's time with it on, far less noisy on a shared machine but blind to Lightning's cost of calling
    the callback. Also the time of one prediction (inside ``SignalTheory._log``, averaged over the fit's).
(b) ``python -m lit_activations theory`` for 16 hidden layers against ``python -c`` importing what it imports
    (the target: at most 2 s more).

Ratios are medians over repeats of the ratio within a repeat; a first, untimed fit warms the process. The noise of
one pair on a shared machine is several per cent, larger than the effect: take 11 repeats (about 10 minutes).
    python benchmarks/theory_cost.py [--epochs 300] [--repeats 11] [--only one|members]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lit_activations.cli import cli_main
from lit_activations.signal_theory import SignalTheory

REPO = Path(__file__).resolve().parent.parent
TUTORIAL = REPO / "configs" / "tutorial.yaml"
MEMBERS = ["--members.activations=[sigmoid, tanh, relu, relu6, leaky_relu]", "--members.seeds=[0, 1, 2]"]
HOOKS = ("setup", "on_train_start", "on_train_batch_start", "on_validation_epoch_end", "state_dict")


@contextmanager
def timed_callback() -> Iterator[dict[str, float]]:
    """Seconds spent inside ``SignalTheory``'s hooks ("hooks") and in its predictions ("predictions", made inside
    hooks; "count" of them), for the fits run inside the block."""
    spent = {"hooks": 0.0, "predictions": 0.0, "count": 0.0}
    originals = {name: getattr(SignalTheory, name) for name in (*HOOKS, "_log")}

    def timing(method: Callable[..., Any], key: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - started
                spent["count"] += key == "predictions"

        return wrapper

    for name, method in originals.items():
        setattr(SignalTheory, name, timing(method, "predictions" if name == "_log" else "hooks"))
    try:
        yield spent
    finally:
        for name, method in originals.items():
            setattr(SignalTheory, name, method)


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
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["one", "members"], help="one network or the 15 members (default: both)")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the fits get their arguments from cli_main's list, not from this script's
    for members in [m for m in (False, True) if args.only in (None, "members" if m else "one")]:
        what = "15 members" if members else "one network"
        wall, inside, per_prediction = [], [], []
        fit_seconds(10, True, members)  # untimed: the process's first fit pays one-time costs that later ones do not
        for repeat in range(args.repeats):
            if repeat % 2:  # alternate which goes first
                off = fit_seconds(args.epochs, False, members)
            with timed_callback() as spent:
                on = fit_seconds(args.epochs, True, members)
            if repeat % 2 == 0:
                off = fit_seconds(args.epochs, False, members)
            wall.append(1 - off / on)
            inside.append(spent["hooks"] / on)
            per_prediction.append(spent["predictions"] / max(spent["count"], 1))
            print(f"  {what}: theory on {on:.2f} s ({spent['hooks']:.3f} s inside it, {spent['count']:.0f}"
                  f" predictions), off {off:.2f} s", flush=True)  # fmt: skip
        share = statistics.median(wall)
        print(f"(a) {what}, {args.epochs} epochs: the theory's share of the fit {share:.1%} (on − off)/on, median of"
              f" {args.repeats} pairs (range {min(wall):.1%} to {max(wall):.1%});"
              f" {statistics.median(inside):.2%} inside its hooks; {statistics.median(per_prediction) * 1e3:.1f} ms"
              f" a prediction (target <= 2% side by side:"
              f" {'met' if share <= 0.02 else 'NOT met'})", flush=True)  # fmt: skip
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
