"""The monitoring metrics as pure functions of tensors; ``ActivationMonitor`` only calls them.

Notation: a layer computes z = W a + b, then a = f(z), for B samples and n units. Tensors of
activations carry the members first (``lit_activations.stacked``; one network is K = 1): shape
(K, B, n, ...), units on dimension 2 (features of a linear layer, channels of a convolution), every
other dimension after the members counting as samples.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


def gradient_norms(grads: list[torch.Tensor], p: float, num_members: int = 1) -> torch.Tensor:
    """The p-norm of each member's part of each gradient, shape (len(grads), K); members on dim 0.

    One network (K = 1) takes one fused call over every gradient (what ``clip_grad_norm_`` uses).

    >>> gradient_norms([torch.tensor([3.0, -4.0]), torch.tensor([1.0, -1.0])], p=2)
    tensor([[5.0000],
            [1.4142]])
    >>> gradient_norms([torch.tensor([[3.0, -4.0], [0.0, 2.0]])], p=1, num_members=2)
    tensor([[7., 2.]])
    """
    if num_members == 1:
        return torch.stack(torch._foreach_norm(grads, p)).unsqueeze(1)
    return torch.stack([torch.linalg.vector_norm(g.reshape(num_members, -1), p, dim=1) for g in grads])


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


def local_slopes(activation: nn.Module | Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """f'(z) element by element, by autograd, for an element-wise activation (any module, even a user's own, or
    a function).

    Works inside validation's inference mode: the clone is an ordinary tensor that autograd may record.
    ``activation.forward`` is called directly so that forward hooks on the module do not fire again.

    >>> local_slopes(nn.ReLU(), torch.tensor([-1.0, 2.0]))
    tensor([0., 1.])
    """
    with torch.inference_mode(False), torch.enable_grad():
        z = z.detach().clone().requires_grad_(True)
        out = activation.forward(z) if isinstance(activation, nn.Module) else activation(z)
        if not out.requires_grad:  # a step, say: nothing in it depends on z smoothly, its slope is 0 everywhere
            return torch.zeros_like(z).detach()
        (slope,) = torch.autograd.grad(out.sum(), z, allow_unused=True)
    return torch.zeros_like(z).detach() if slope is None else slope


def knows_slopes(activation: nn.Module, dtype: torch.dtype) -> bool:
    """Whether ``known_slopes`` has a formula for ``activation`` computing in ``dtype``."""
    return (type(activation) in _KNOWN_SLOPES and dtype in (torch.float32, torch.float64)
            and not getattr(activation, "inplace", False))  # fmt: skip


_KNOWN_SLOPES = (nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Hardtanh, nn.ReLU6, nn.Sigmoid, nn.Tanh)


def known_slopes(activation: nn.Module, z: torch.Tensor, output: torch.Tensor | None = None) -> torch.Tensor | None:
    """f'(z) of torch.nn's ReLU, LeakyReLU, Hardtanh (ReLU6), Sigmoid, Tanh and Identity on float32 or float64: the
    values their backward in torch gives for a gradient of ones (``threshold_backward``, ``leaky_relu_backward``,
    ``hardtanh_backward``, ``sigmoid_backward``, ``tanh_backward``), what ``local_slopes`` gets from autograd, bit
    for bit (tests), in a few ops instead of a forward and a backward pass. ``None`` for any other module, a
    subclass (it may change ``forward``), one working in place, or another dtype. ``output``: f(z) if at hand,
    from which sigmoid's and tanh's are computed, as their backward does.

    >>> known_slopes(nn.LeakyReLU(0.1), torch.tensor([-1.0, 2.0]))
    tensor([0.1000, 1.0000])
    """
    if not knows_slopes(activation, z.dtype):
        return None
    kind = type(activation)
    if kind is nn.Identity:
        return torch.ones_like(z)
    # A comparison is written straight into z's dtype (0 or 1): on the CPU a fifth of the time of a bool mask
    # converted, as the probe pass makes it for every layer and member each epoch.
    if kind is nn.ReLU:
        return torch.le(z, 0, out=torch.empty_like(z)).neg_().add_(1)  # 0 where relu(z) <= 0; NaN passes the gradient
    if kind is nn.LeakyReLU:  # (lerp gives its ends exactly for a weight of 0 or 1)
        above = torch.gt(z, 0, out=torch.empty_like(z))
        return torch.lerp(z.new_tensor(activation.negative_slope).expand(z.shape), z.new_ones(()), above)
    if kind in (nn.Hardtanh, nn.ReLU6):  # (for NaN torch's own gives 1 in its scalar loop and 0 in its vector one)
        inside = torch.gt(z, activation.min_val, out=torch.empty_like(z))
        return inside.mul_(torch.lt(z, activation.max_val, out=torch.empty_like(z)))
    if kind is nn.Sigmoid:
        a = torch.sigmoid(z) if output is None else output.detach()
        return (1 - a) * a
    if kind is nn.Tanh:
        a = torch.tanh(z) if output is None else output.detach()
        return torch.addcmul(torch.ones_like(a), a, a, value=-1)  # 1 − a², rounded once, as tanh_backward's is
    raise AssertionError(f"no formula for {type(activation).__name__}")  # knows_slopes and this list differ


def slopes(activation: nn.Module, z: torch.Tensor, output: torch.Tensor | None = None) -> torch.Tensor:
    """f'(z): ``known_slopes`` where it knows the module (``output``: f(z), if at hand), else ``local_slopes``."""
    known = known_slopes(activation, z, output)
    return known if known is not None else local_slopes(activation, z)


def is_elementwise(module: nn.Module, z: torch.Tensor, output: torch.Tensor) -> bool:
    """Whether ``module``, which gave ``output`` for ``z``, acts element by element: the same shape, and changing
    one entry of the input changes no other entry of the output. How a user's own activation is recognised.

    >>> z = torch.randn(4, 3)
    >>> is_elementwise(nn.Tanh(), z, torch.tanh(z)), is_elementwise(nn.Softmax(dim=1), z, z.softmax(1))
    (True, False)
    """
    if not (isinstance(output, torch.Tensor) and output.shape == z.shape and z.is_floating_point() and z.numel() > 1):
        return False
    probe = z.detach().clone()
    probe.view(-1)[0] += 1.0
    with torch.no_grad():
        changed = module.forward(probe) != output
    changed.view(-1)[0] = False
    return not bool(changed.any())


def max_slopes(
    activation: nn.Module,
    n_units: int,
    num_members: int | None = None,
    span: float = 20.0,
    points: int = 40_001,
    slopes: Callable[[nn.Module, torch.Tensor], torch.Tensor] = slopes,
) -> torch.Tensor:
    """sup |f'(x)| estimated on a grid over [-span, span]: the scale that makes a slope "small", per member (K,).

    ``num_members``: the activation takes (K, B, n) and each member gets its own; ``None``: it takes (B, n).
    ``slopes``: how f' is found (default ``slopes``: by formula where known, else autograd; the monitor gives its
    own, which takes a stacked activation block by block).

    >>> max_slopes(nn.Sigmoid(), n_units=1)
    tensor([0.2500])
    """
    state = next(itertools.chain(activation.parameters(), activation.buffers()), None)  # where it computes
    device = state.device if state is not None else None
    grid = torch.linspace(-span, span, points, device=device).unsqueeze(1).expand(points, n_units)
    if num_members is not None:
        grid = grid.expand(num_members, points, n_units)
    return slopes(activation, grid).abs().reshape(num_members or 1, -1).amax(1)


def units_last(t: torch.Tensor) -> torch.Tensor:
    """Reshape (K, B, n, ...) to (K, samples, n): units on dim 2 become columns, the rest after K rows."""
    return t.movedim(2, -1).reshape(t.shape[0], -1, t.shape[2]) if t.dim() > 2 else t.reshape(t.shape[0], -1, 1)


def small_slope_counts(slopes: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Per member and unit, how many samples have |f'(z)| below the member's threshold: shape (K, n).

    >>> small_slope_counts(torch.tensor([[[0.0, 1.0], [0.0, 0.01]]]), thresholds=torch.tensor([0.05]))
    tensor([[2, 1]])
    """
    slopes = units_last(slopes).abs()
    small = torch.lt(slopes, thresholds.view(-1, 1, 1), out=torch.empty_like(slopes))  # 0 or 1 (see known_slopes)
    return small.sum(1, dtype=torch.float64).long()  # exact: a float64 sum counts to 2⁵³


def histograms(values: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's histogram of ``values`` (K, N), as ``numpy.histogram(values[k], bins)`` makes it.

    Returns (counts (K, bins), edges (K, bins + 1)): equal-width bins over each member's own range,
    the last one closed; a member whose values are all equal gets the range value ± 0.5, as NumPy
    does. One pass for every member instead of a ``numpy.histogram`` each.

    >>> counts, edges = histograms(torch.tensor([[0.0, 1.0, 1.0, 4.0]]), bins=4)
    >>> counts.tolist(), edges.tolist()
    ([[1, 2, 0, 1]], [[0.0, 1.0, 2.0, 3.0, 4.0]])
    """
    values = values.detach().double()
    low, high = values.amin(1), values.amax(1)
    flat = low == high
    low, high = torch.where(flat, low - 0.5, low), torch.where(flat, high + 0.5, high)
    steps = torch.linspace(0, 1, bins + 1, dtype=values.dtype, device=values.device)
    edges = low[:, None] + (high - low)[:, None] * steps
    index = ((values - low[:, None]) / (high - low)[:, None] * bins).floor().long().clamp(0, bins - 1)
    counts = torch.zeros(len(values), bins, dtype=torch.long, device=values.device)
    return counts.scatter_add_(1, index, torch.ones_like(index)), edges


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
