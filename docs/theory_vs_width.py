"""How far a narrow network is from its mean-field prediction: the vanishing ratio at initialisation against width.

    python docs/theory_vs_width.py [--draws 200]

For each activation and width, ``--draws`` networks of 4 hidden layers are drawn with PyTorch's default
init (as the tutorial's), one batch of 32 standardised circle points goes through each with the BCE loss,
and the monitor's ``vanishing_ratio`` (log10 of the first weight's mean |grad| over the last's) is computed
as the monitor computes it; beside it, ``theory.predict`` for the same widths, variances and batch. Mean
field describes the average of infinitely wide networks: the table shows the spread of single networks
around it, which is what one seed of the tutorial's 5-unit network is.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics

import torch
from sklearn.datasets import make_circles
from torch import nn

from lit_activations import statistics as stats
from lit_activations import theory

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


def measured(activation: type[nn.Module], width: int, draws: int, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    ratios = []
    for draw in range(draws):
        torch.manual_seed(draw)
        sizes = [2, width, width, width, width, 1]
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(sizes):
            layers += [nn.Linear(n_in, n_out), activation()]
        net = nn.Sequential(*layers[:-1])
        loss = nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(-1), y)
        loss.backward()
        weights = [m.weight.grad for m in net if isinstance(m, nn.Linear)]
        first, last = (stats.mean_abs(float(g.abs().sum()), g.numel()) for g in (weights[0], weights[-1]))
        ratios.append(stats.vanishing_ratio(first, last))
    return ratios


def predicted(activation: type[nn.Module], width: int, x: torch.Tensor) -> float:
    sizes = [2, width, width, width, width, 1]
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        sw2, sb2 = theory.init_variances("default", n_in, n_out)
        layers.append(theory.LayerSpec(n_in, n_out, sw2, sb2, activation() if i < len(sizes) - 2 else None))
    second = float(x.pow(2).mean())
    gram = x @ x.T / x.shape[1]
    correlation = float((gram.sum() - gram.diagonal().sum()) / (len(x) * (len(x) - 1))) / second
    return theory.predict(layers, second, correlation, len(x), fixed_points=False).vanishing_ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    points, labels = make_circles(n_samples=32, noise=0.1, factor=0.5, random_state=0)
    x = torch.tensor(points, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(labels, dtype=torch.float32)
    print("| activation | width | predicted | measured at init, mean ± std over draws |")
    print("|---|---|---|---|")
    for name, activation in ACTIVATIONS.items():
        for width in (5, 16, 64, 256):
            every = measured(activation, width, args.draws, x, y)
            ratios = [r for r in every if math.isfinite(r)]  # a draw whose gradient dies on the way has none
            lost = f" ({len(every) - len(ratios)} draws without a finite ratio)" if len(ratios) < len(every) else ""
            print(f"| {name} | {width} | {predicted(activation, width, x):.2f} |"
                  f" {statistics.fmean(ratios):.2f} ± {statistics.stdev(ratios):.2f}{lost} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
