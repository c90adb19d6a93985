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


def decision_boundary_image(
    probabilities: np.ndarray, points: np.ndarray, labels: np.ndarray, low: np.ndarray, high: np.ndarray, scale: int = 2
) -> np.ndarray:
    """P(inner circle) over a square grid of the plane, the 0.5 contour and the points, as an RGB array (H, W, 3).

    Drawn with NumPy, not matplotlib: a fit of many members draws one per member every few epochs,
    and a matplotlib figure took 35-130 ms against 2 ms here (and 3 ms to encode the 200 x 200 PNG).

    Args:
        probabilities: (side², ) over the grid of ``CirclesDataModule.grid``: row-major, y the slow axis.
        points, labels: the training points (N, 2) in the grid's coordinates, and their classes.
        low, high: the grid's corners (x, y).
        scale: pixels per grid cell.
    """
    side = round(len(probabilities) ** 0.5)
    p = np.flipud(probabilities.reshape(side, side)).repeat(scale, 0).repeat(scale, 1)  # row 0 at the top: y up
    image = _RDBU[np.minimum((p * 10).astype(int), 9)]  # ten bands, as a filled contour plot
    inside = p > 0.5
    edge = np.zeros_like(inside)
    edge[:-1] |= inside[:-1] != inside[1:]
    edge[:, :-1] |= inside[:, :-1] != inside[:, 1:]
    image[edge] = 0  # the decision boundary, in black
    height, width = inside.shape
    fraction = (points - low) / (high - low)
    cols = np.clip(np.round(fraction[:, 0] * (width - 2)).astype(int), 0, width - 2)
    rows = np.clip(np.round((1 - fraction[:, 1]) * (height - 2)).astype(int), 0, height - 2)
    colours = np.where(labels[:, None] > 0.5, _POINT_COLOURS[1], _POINT_COLOURS[0])
    for dr in (0, 1):  # 2x2-pixel dots
        for dc in (0, 1):
            image[rows + dr, cols + dc] = colours
    return image


# Ten colours from blue (P = 0) through white to red (P = 1), the bands of matplotlib's RdBu_r, and the points' colours.
_RDBU = np.array(
    [[33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240], [247, 247, 247],
     [247, 247, 247], [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43]],
    dtype=np.uint8,
)  # fmt: skip
_POINT_COLOURS = np.array([[5, 48, 97], [103, 0, 31]], dtype=np.uint8)


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
