"""Figures, built with matplotlib's object API (no pyplot, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from lit_activations.statistics import local_slopes


def activation_figure(activation: nn.Module, name: str, span: float = 5.0) -> Figure:
    """f(x) and f'(x) (by autograd) on [-span, span]."""
    x = torch.linspace(-span, span, 501).unsqueeze(1)
    with torch.no_grad():
        y = activation(x)
    slope = local_slopes(activation, x)
    x, y, slope = (t[:, 0].numpy() for t in (x, y, slope))  # matplotlib walks tensors element by element
    figure = Figure(figsize=(4, 3), dpi=80)
    axes = figure.subplots()
    axes.plot(x, y, label="f(x)")
    axes.plot(x, slope, label="f'(x)", linestyle="--")
    axes.axhline(0, color="grey", linewidth=0.5)
    axes.set(title=name, xlabel="x")
    axes.legend()
    figure.tight_layout()
    return figure


def decision_boundary_figure(
    grid: torch.Tensor, probabilities: torch.Tensor, points: torch.Tensor, labels: torch.Tensor, title: str
) -> Figure:
    """P(inner circle) over a square grid of the plane, the 0.5 contour, and the points on top."""
    side = round(len(grid) ** 0.5)
    xx, yy, pp = (t.reshape(side, side).numpy() for t in (grid[:, 0], grid[:, 1], probabilities))
    points, labels = points.numpy(), labels.numpy()  # as arrays: matplotlib walks a tensor element by element
    figure = Figure(figsize=(4, 4), dpi=64)
    axes = figure.subplots()
    axes.contourf(xx, yy, pp, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.8)
    axes.contour(xx, yy, pp, levels=[0.5], colors="black", linewidths=1)
    axes.scatter(points[:, 0], points[:, 1], c=labels, cmap="RdBu_r", s=4, edgecolors="none")
    axes.set(title=title, aspect="equal", xticks=[], yticks=[])
    figure.tight_layout()
    return figure


def study_figure(curves: Mapping[str, Mapping[str, np.ndarray]], layers: Sequence[str]) -> Figure:
    """The tutorial's figure, one row per activation, with the spread over seeds.

    ``curves[activation]`` maps ``val/loss``, ``val/acc`` and each name in ``layers`` to an array of
    shape (seeds, epochs). Left: loss and accuracy against epochs; right: each layer's mean |grad|
    (log scale). Lines are the mean over seeds, bands the min–max range.
    """
    figure = Figure(figsize=(11, 2.6 * len(curves)), dpi=90)
    grid = figure.subplots(len(curves), 2, squeeze=False)
    for (activation, series), (left, right) in zip(curves.items(), grid, strict=True):
        for tag, label in (("val/loss", "BCE"), ("val/acc", "accuracy")):
            _band(left, series[tag], label)
        left.set(title=activation, xlabel="epoch", ylim=(0, 1.05))
        left.legend(loc="lower left", fontsize="small")
        for layer in layers:
            if layer in series:
                _band(right, series[layer], layer.removeprefix("grad_mean_abs_epoch/").removesuffix(".weight"))
        right.set(title=f"{activation}: mean |grad| per layer", xlabel="epoch", yscale="log")
        right.legend(loc="lower left", fontsize="small", ncol=2)
    figure.tight_layout()
    return figure


def _band(axes, values: np.ndarray, label: str) -> None:
    epochs = np.arange(values.shape[1])
    line = axes.plot(epochs, values.mean(0), label=label)[0]
    axes.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.25, linewidth=0)
