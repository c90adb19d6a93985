"""The monitoring metrics as pure functions of tensors; ``ActivationMonitor`` only calls them.

Notation: a layer computes z = W a + b, then a = f(z), for B samples and n units. Units sit on
dimension 1 (features of a linear layer, channels of a convolution); every other dimension counts
as samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def gradient_norms(grads: list[torch.Tensor], p: float) -> list[torch.Tensor]:
    """The p-norm of each gradient as a 0-d tensor, from one fused call (what ``clip_grad_norm_`` uses).

    >>> [round(n.item(), 4) for n in gradient_norms([torch.tensor([3.0, -4.0]), torch.tensor([1.0, -1.0])], p=2)]
    [5.0, 1.4142]
    """
    return list(torch._foreach_norm(grads, p))


def mean_abs(l1_norm: float, numel: int) -> float:
    """Mean |grad| of a tensor, ‖∇W‖₁ / numel(W): comparable across layers of different sizes.

    >>> mean_abs(6.0, 3)
    2.0
    """
    return l1_norm / numel


def vanishing_ratio(first: float, last: float) -> float:
    """log10(mean|grad| of the first layer / of the last): strongly negative means vanishing.

    A first layer with no gradient at all gives -inf; a last layer with none leaves it undefined (NaN).

    >>> vanishing_ratio(1e-5, 1e-2)
    -3.0
    """
    if last == 0:
        return math.nan
    return math.log10(first / last) if first > 0 else -math.inf


def local_slopes(activation: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """f'(z) element by element, by autograd, for an element-wise activation (any module, even a user's own).

    Works inside validation's inference mode: the clone is an ordinary tensor that autograd may record.
    ``activation.forward`` is called directly so that forward hooks on the module do not fire again.

    >>> local_slopes(nn.ReLU(), torch.tensor([-1.0, 2.0]))
    tensor([0., 1.])
    """
    with torch.inference_mode(False), torch.enable_grad():
        z = z.detach().clone().requires_grad_(True)
        (slope,) = torch.autograd.grad(activation.forward(z).sum(), z)
    return slope


def max_slope(activation: nn.Module, n_units: int, span: float = 20.0, points: int = 40_001) -> float:
    """sup |f'(x)| estimated on a grid over [-span, span]: the scale that makes a slope "small".

    >>> round(max_slope(nn.Sigmoid(), n_units=1), 6)
    0.25
    """
    grid = torch.linspace(-span, span, points).unsqueeze(1).expand(points, n_units)
    return local_slopes(activation, grid).abs().max().item()


def units_last(t: torch.Tensor) -> torch.Tensor:
    """Reshape (B, n, ...) to (samples, n): units on dim 1 become columns, everything else rows."""
    return t.movedim(1, -1).reshape(-1, t.shape[1]) if t.dim() > 1 else t.reshape(-1, 1)


def small_slope_counts(slopes: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per unit, how many samples have |f'(z)| < threshold: shape (n,).

    >>> small_slope_counts(torch.tensor([[0.0, 1.0], [0.0, 0.01]]), threshold=0.05)
    tensor([2, 1])
    """
    return (units_last(slopes).abs() < threshold).sum(0)


def saturation_fraction(small_counts: Sequence[float], n_samples: float) -> float:
    """Share of (sample, unit) pairs with a small slope.

    >>> saturation_fraction([2, 1], n_samples=2)
    0.75
    """
    return sum(small_counts) / (n_samples * len(small_counts))


def dead_unit_fraction(small_counts: Sequence[float], n_samples: float) -> float:
    """Share of units whose slope is small for every sample (a ReLU unit that never fires).

    >>> dead_unit_fraction([2, 1], n_samples=2)
    0.5
    """
    return sum(count >= n_samples for count in small_counts) / len(small_counts)


def mean_and_std(total: float, total_sq: float, count: float) -> tuple[float, float]:
    """Mean and (population) standard deviation from the running sums Σa and Σa² of ``count`` values.

    >>> mean_and_std(6.0, 20.0, count=3)
    (2.0, 1.632993161855452)
    """
    mean = total / count
    return mean, math.sqrt(max(total_sq / count - mean**2, 0.0))
