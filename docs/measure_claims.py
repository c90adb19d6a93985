"""Measure every claim of configs/experiments/ at full size: the numbers of the README's claims table.

    python docs/measure_claims.py [--out logs/claims]

Each experiment runs as one ``compare`` study (the YAML's own command; a ``fit`` of members trains
exactly the same runs), then this script reads the runs' event files and prints, per claim, the
numbers the README quotes: mean ± standard deviation over the seeds. A study that finished before
is reused (``compare`` skips its finished runs), so rerunning only prints.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from lit_activations.events import read_scalars

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = REPO / "configs" / "experiments"
Scalars = dict[str, list[tuple[int, float]]]

# name -> the arguments of its compare study
STUDIES: dict[str, list[str]] = {
    "tutorial": ["--config", "configs/tutorial.yaml", "--activations", "sigmoid,tanh,relu", "--seeds", "0,1,2,3,4"],
    "softmax_spirals": ["--config", "configs/experiments/softmax_spirals.yaml", "--activations", "relu,tanh",
                        "--seeds", "0,1,2"],
    "mixed_layers": ["--config", "configs/experiments/mixed_layers.yaml", "--activations", "relu+tanh,relu,tanh",
                     "--seeds", "0,1,2"],
    "dying_relu": ["--config", "configs/experiments/dying_relu.yaml", "--activations", "relu,leaky_relu,prelu",
                   "--seeds", "0,1,2,3,4"],
    "relu_learning_rate": ["--config", "configs/experiments/relu_learning_rate.yaml", "--activations", "relu,tanh",
                           "--seeds", "0,1,2,3,4", "--grid", "model.optimizer.lr=[0.001, 0.1]",
                           "--grid", "model.init=[default, kaiming]"],
    "selu_deep": ["--config", "configs/experiments/selu_deep.yaml", "--activations", "selu,relu,tanh",
                  "--seeds", "0,1,2,3", "--grid", "model.init=[lecun_normal, default]"],
    "depth_vanishing": ["--config", "configs/experiments/depth_vanishing.yaml", "--activations", "sigmoid,relu",
                        "--seeds", "0,1,2", "--grid", f"model.hidden_sizes=[[16, 16], [{', '.join(['16'] * 8)}]]"],
    "elu_means": ["--config", "configs/experiments/elu_means.yaml", "--activations", "elu,relu", "--seeds", "0,1,2"],
    "critical_depth": ["--config", "configs/experiments/critical_depth.yaml", "--activations", "sigmoid,tanh",
                       "--seeds", "0,1,2", "--grid", "model.init=[critical, default]", "--grid",
                       f"model.hidden_sizes=[[{', '.join(['16'] * 8)}], [{', '.join(['16'] * 16)}]]"],
    "digits": ["--config", "configs/experiments/digits.yaml",
               "--activations", "sigmoid,tanh,relu,relu6,leaky_relu,identity", "--seeds", "0,1,2"],
}  # fmt: skip


def final(scalars: Scalars, tag: str) -> float:
    return scalars[tag][-1][1]


def first(scalars: Scalars, tag: str) -> float:
    return scalars[tag][0][1]


def hidden(scalars: Scalars, stat: str, reduce: Callable[[list[float]], float] = statistics.fmean) -> float:
    """``stat`` (e.g. ``dead_units``) at the end of training, reduced over the hidden activations."""
    return reduce([final(scalars, tag) for tag in scalars if tag.startswith(f"{stat}/")])


def last_layer(scalars: Scalars, stat: str, when: Callable[[Scalars, str], float] = final) -> float:
    """``stat`` of the last hidden activation (the highest module index), at the end or (``when=first``) epoch 1."""
    tags = sorted((t for t in scalars if t.startswith(f"{stat}/")), key=lambda t: int(t.rsplit(".", 1)[1]))
    return when(scalars, tags[-1])


STATISTICS: dict[str, dict[str, Callable[[Scalars], float]]] = {
    "tutorial": {"val/acc": lambda s: final(s, "val/acc"),
                 "vanishing_ratio": lambda s: final(s, "vanishing_ratio/epoch")},
    "softmax_spirals": {"val/acc": lambda s: final(s, "val/acc")},
    "mixed_layers": {"val/acc": lambda s: final(s, "val/acc"),
                     "layer 2 |mean activation|": lambda s: abs(last_layer(s, "activation_mean"))},
    "dying_relu": {"dead_units": lambda s: hidden(s, "dead_units"), "val/acc": lambda s: final(s, "val/acc"),
                   "mean learned slope": lambda s: hidden(s, "activation_param")},
    "relu_learning_rate": {"dead_units": lambda s: hidden(s, "dead_units"), "val/acc": lambda s: final(s, "val/acc")},
    "selu_deep": {"last layer activation_std after epoch 1": lambda s: last_layer(s, "activation_std", first),
                  "at the end": lambda s: last_layer(s, "activation_std"),
                  "last layer |activation_mean|": lambda s: abs(last_layer(s, "activation_mean"))},
    "depth_vanishing": {"vanishing_ratio": lambda s: final(s, "vanishing_ratio/epoch")},
    "elu_means": {"|activation_mean| over layers": lambda s: hidden(s, "activation_mean", lambda v: statistics.fmean(
        map(abs, v)))},
    "critical_depth": {"val/acc": lambda s: final(s, "val/acc"),
                       "vanishing_ratio at epoch 1": lambda s: first(s, "vanishing_ratio/epoch"),
                       "predicted at the start": lambda s: first(s, "theory/vanishing_ratio"),
                       "at the end": lambda s: final(s, "vanishing_ratio/epoch")},
    "digits": {"val/acc": lambda s: final(s, "val/acc"), "vanishing_ratio": lambda s: final(s, "vanishing_ratio/epoch"),
               "saturation": lambda s: hidden(s, "saturation")},
}  # fmt: skip


def groups(study: Path) -> dict[str, list[Path]]:
    """The study's runs by table row (``setting/activation``): its ``seed_<s>`` directories, finished or not."""
    rows: dict[str, list[Path]] = {}
    for run in sorted(study.rglob("seed_*")):
        if "fits" not in run.relative_to(study).parts and run.is_dir():
            rows.setdefault(run.parent.relative_to(study).as_posix(), []).append(run)
    return rows


def spread(values: list[float]) -> str:
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3g} ± {deviation:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("logs/claims"), help="the studies' parent directory"
                        " (default: logs/claims, under the project)")  # fmt: skip
    parser.add_argument("--only", nargs="*", default=list(STUDIES), choices=list(STUDIES), metavar="NAME",
                        help=f"these experiments only (default: all of {', '.join(STUDIES)})")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="3 epochs on 200 points: to try the script in a minute"
                        " (the numbers are not the README's; give another --out)")  # fmt: skip
    args = parser.parse_args()
    for name in args.only:
        fewer_points = ["--data.n_samples=200"] if name != "digits" else []  # the digits are 1,797 images, no draw
        reduced = ["--trainer.max_epochs=3", *fewer_points] if args.quick else []
        study = args.out / name
        command = [sys.executable, "-m", "lit_activations", "compare", *STUDIES[name], *reduced, f"--study_dir={study}"]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"{name} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        print(f"\n## {name}  ({result.stdout.strip().splitlines()[-1]})")
        for row, all_runs in groups(REPO / study).items():
            runs = [run for run in all_runs if (run / "finished").exists()]  # a failed run is no number
            failed = f", {len(all_runs) - len(runs)} failed" if len(runs) < len(all_runs) else ""
            scalars = [read_scalars(run) for run in runs]
            figures = []
            for label, statistic in STATISTICS[name].items():
                # (a figure these runs do not log, e.g. PReLU's slopes for ReLU, is left out)
                with contextlib.suppress(statistics.StatisticsError, IndexError, KeyError):
                    figures.append(f"{label} {spread([statistic(s) for s in scalars])}")
            print(f"- {row} ({len(runs)} seeds{failed}): {', '.join(figures)}", flush=True)


if __name__ == "__main__":
    main()
