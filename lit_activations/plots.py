"""Figures, built with matplotlib's object API (no pyplot, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn

from lit_activations.statistics import local_slopes


def activation_figure(activations: Mapping[str, nn.Module], title: str, span: float = 5.0) -> Figure:
    """f(x) and f'(x) (by autograd) on [-span, span] of each activation (label -> module), e.g. one per layer."""
    x = torch.linspace(-span, span, 501).unsqueeze(1)
    figure = Figure(figsize=(4, 3), dpi=80)
    axes = figure.subplots()
    for label, activation in activations.items():
        with torch.no_grad():
            y = activation(x)
        slope = local_slopes(activation, x)
        xs, y, slope = (t[:, 0].numpy() for t in (x, y, slope))  # matplotlib walks tensors element by element
        prefix = f"{label}: " if len(activations) > 1 else ""
        line = axes.plot(xs, y, label=f"{prefix}f(x)")[0]
        axes.plot(xs, slope, label=f"{prefix}f'(x)", linestyle="--", color=line.get_color())
    axes.axhline(0, color="grey", linewidth=0.5)
    axes.set(title=title, xlabel="x")
    axes.legend(fontsize="small")
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
    _dots(image, points, np.where(labels[:, None] > 0.5, _POINT_COLOURS[1], _POINT_COLOURS[0]), low, high)
    return image


def decision_regions_image(
    probabilities: np.ndarray, points: np.ndarray, labels: np.ndarray, low: np.ndarray, high: np.ndarray, scale: int = 2
) -> np.ndarray:
    """The class each point of the plane is given, paler where the model is less sure, with the borders between
    classes in black and the points on top, as an RGB array: ``decision_boundary_image`` for K classes.

    Args:
        probabilities: (side², classes) over the grid, rows as in ``decision_boundary_image``.
        points, labels, low, high, scale: as for ``decision_boundary_image``.
    """
    side, classes = round(len(probabilities) ** 0.5), probabilities.shape[1]
    grid = np.flipud(probabilities.reshape(side, side, classes)).repeat(scale, 0).repeat(scale, 1)
    predicted, sure = grid.argmax(-1), grid.max(-1)
    strength = np.clip((sure - 1 / classes) / (1 - 1 / classes), 0, 1)[..., None] * 0.6  # white where unsure
    palette = _CLASS_COLOURS[np.arange(classes) % len(_CLASS_COLOURS)].astype(float)
    image = (255 + (palette[predicted] - 255) * strength).astype(np.uint8)
    edge = np.zeros_like(predicted, dtype=bool)
    edge[:-1] |= predicted[:-1] != predicted[1:]
    edge[:, :-1] |= predicted[:, :-1] != predicted[:, 1:]
    image[edge] = 0
    _dots(image, points, (palette[labels.astype(int) % len(palette)] * 0.6).astype(np.uint8), low, high)
    return image


def _dots(image: np.ndarray, points: np.ndarray, colours: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
    """2x2-pixel dots at ``points`` (in the grid's coordinates, corners ``low`` and ``high``)."""
    height, width = image.shape[:2]
    fraction = (points - low) / (high - low)
    cols = np.clip(np.round(fraction[:, 0] * (width - 2)).astype(int), 0, width - 2)
    rows = np.clip(np.round((1 - fraction[:, 1]) * (height - 2)).astype(int), 0, height - 2)
    for dr in (0, 1):
        for dc in (0, 1):
            image[rows + dr, cols + dc] = colours


# matplotlib's tab10, the classes' colours
_CLASS_COLOURS = np.array(
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
     [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]],
    dtype=np.uint8,
)  # fmt: skip
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
    figure = Figure(figsize=(12, 2.6 * len(curves)), dpi=90)
    grid = figure.subplots(len(curves), 2, squeeze=False)
    for (activation, series), (left, right) in zip(curves.items(), grid, strict=True):
        for tag, label in (("val/loss", "loss"), ("val/acc", "accuracy")):
            _band(left, series[tag], label)
        left.set(title=activation, xlabel="epoch", ylim=(0, 1.05))
        left.legend(loc="lower left", fontsize="small")
        for layer in layers:
            if layer in series:
                _band(right, series[layer], layer.removeprefix("grad_mean_abs_epoch/").removesuffix(".weight"))
        right.set(title="mean |grad| per layer", xlabel="epoch", yscale="log")
        right.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", ncol=1 + len(layers) // 9)
        for axes in (left, right):
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not fractions of one
    figure.tight_layout()
    return figure


def _band(axes, values: np.ndarray, label: str) -> None:
    epochs = np.arange(values.shape[1])
    line = axes.plot(epochs, values.mean(0), label=label)[0]
    axes.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.25, linewidth=0)


@dataclass(frozen=True)
class PhasePanel:
    """What ``phase_diagram`` draws for one activation: χ₁ at the fixed point over a (σ_b², σ_w²) grid, and
    labelled (σ_w², σ_b²) points."""

    activation: str
    sw2: np.ndarray  # (columns,)
    sb2: np.ndarray  # (rows,)
    chi1: np.ndarray  # (rows, columns)
    points: Mapping[str, tuple[float, float]]


def phase_diagram(panels: Sequence[PhasePanel]) -> Figure:
    """One panel per activation over the (σ_w², σ_b²) plane: the gradients' depth scale 1/|ln χ₁| as colour, the
    critical line χ₁ = 1 between the ordered and the chaotic phase, and the configuration's layers as points."""
    figure = Figure(figsize=(4.2 * len(panels), 3.6), dpi=90)
    for axes, panel in zip(np.atleast_1d(figure.subplots(1, len(panels))), panels, strict=True):
        depth = np.log10(np.clip(1.0 / np.abs(np.log(panel.chi1)), 1e-2, 1e4))
        mesh = axes.pcolormesh(panel.sw2, panel.sb2, depth, shading="auto", cmap="viridis")
        figure.colorbar(mesh, ax=axes, label="log10 depth scale 1/|ln χ₁| (layers)")
        if np.nanmin(panel.chi1) < 1 < np.nanmax(panel.chi1):
            axes.contour(panel.sw2, panel.sb2, panel.chi1, levels=[1.0], colors="white", linewidths=1.5)
        labels = list(panel.points)
        shown = set(labels) if len(labels) <= 6 else {labels[0], labels[-1]}  # many layers: the first and the last
        for label, (sw2, sb2) in panel.points.items():
            axes.plot(sw2, sb2, marker="o", markersize=6, markeredgecolor="black", color="red", linestyle="none")
            if label in shown:
                axes.annotate(label, (sw2, sb2), textcoords="offset points", xytext=(5, 5), fontsize="small",
                              color="white")  # fmt: skip
        axes.set(title=f"{panel.activation}: χ₁ = 1 (white) between order and chaos", xlabel="σ_w²", ylabel="σ_b²")
        axes.title.set_fontsize("small")
    figure.tight_layout()
    return figure
