"""Mean-field signal propagation: what a wide random network does at initialisation, as pure functions.

Poole et al. 2016 ("Exponential expressivity in deep neural networks through transient chaos"),
Schoenholz et al. 2017 ("Deep information propagation"), Klambauer et al. 2017 ("Self-normalizing
neural networks"). Nothing here trains or logs: every function takes an activation and numbers and
returns numbers, so that a fit's monitored measurements (``lit_activations.monitor``) can be set
against what the theory predicts for the same network.

Notation. Layer ℓ computes z^ℓ = W^ℓ a^{ℓ-1} + b^ℓ and a^ℓ = φ(z^ℓ), a^0 = x the input; W^ℓ has
N_ℓ × N_{ℓ-1} entries of variance σ_w²(ℓ)/N_{ℓ-1} (N_{ℓ-1} = fan_in) and b^ℓ entries of second moment
σ_b²(ℓ). Over the random weights each unit's z^ℓ is Gaussian (wide layers), and:

* variance map: q^1 = σ_w²(1)·m_x + σ_b²(1), m_x = mean over features of E[x_j²];
  q^{ℓ+1} = σ_w²(ℓ+1)·E_{z~N(0,q^ℓ)}[φ(z)²] + σ_b²(ℓ+1); its fixed point q* (one σ_w², σ_b² for all layers).
* correlation map, two inputs of the same q: q^{ℓ+1} c^{ℓ+1} = σ_w² E[φ(u1)φ(u2)] + σ_b² with
  (u1, u2) ~ N(0, q^ℓ [[1, c^ℓ], [c^ℓ, 1]]); c = 1 is always a fixed point; c* the one iteration reaches.
* χ₁ = σ_w² E[φ'(z)²] at q*: the growth per layer of back-propagated gradients and the slope of the
  correlation map at c = 1. χ₁ < 1: ordered (inputs' correlations go to 1, gradients vanish);
  χ₁ > 1: chaotic (correlations decay to c* < 1, gradients explode); χ₁ = 1: critical.
* depth scales (Schoenholz): ξ_q⁻¹ = −log(χ₁ + σ_w² E[φ''(z)φ(z)]) at q*, ξ_c⁻¹ = −log(σ_w² E[φ'(u1)φ'(u2)])
  at (q*, c*); ξ_c is infinite at criticality (ξ_q stays finite). φ'' is never formed: by Gaussian integration by parts
  (Stein), E[φ'² + φφ''] = d E[φ²]/dq = E[z φ(z) φ'(z)]/q, which needs only φ' and, unlike autograd
  twice, also counts the delta functions φ'' has at a kink where φ ≠ 0 (Hardtanh at ±1, ReLU6 at 6).
* backward: δ^ℓ = φ'(z^ℓ) ⊙ W^{ℓ+1}ᵀ δ^{ℓ+1}, so per unit E[(δ^ℓ)²] = χ^ℓ E[(δ^{ℓ+1})²] with
  χ^ℓ = σ_w²(ℓ+1)·E[φ'(z^ℓ)²]·N_{ℓ+1}/N_ℓ (the gradient-independence assumption: W^{ℓ+1} is drawn
  afresh for the backward pass); for two samples E[δ_b δ_b'] the same with E[φ'(u1)φ'(u2)].
* a weight's gradient, the loss a mean over a batch of B: g = (1/B) Σ_b δ_b a_b, so
  E[g²] = E[δ²]E[a²]/B + (1 − 1/B) E[δ_b δ_b'] E[a_b a_b'] (``predict``).

Activations. φ is any element-wise ``nn.Module`` (a user's own class; a learnable one such as PReLU at
its current parameters) or callable. It is evaluated in float64 on a copy (``copy.deepcopy(m).double()``;
a module that cannot run in float64 runs in float32 and its results are cast), values under
``torch.no_grad`` and φ' by autograd, exactly as the monitor measures slopes
(``lit_activations.statistics.slopes``: for torch.nn's common activations by the formula of their
backward, which gives autograd's values bit for bit).

Quadrature (``GaussianExpectation``). E_{z~N(0,q)}[f(z)] = E_{s~N(0,1)}[f(√q s)] by composite
Gauss–Legendre, 8 nodes per panel, on s ∈ [−10, 10] (the mass outside is 1.5e-23). Panel edges: every
0.5 in s, and fixed points of z divided by √q where they fall in range (every 0.5 over [−8, 8], then
±10, 12, 16, 24, 32). The z edges hold every kink of the common activations (``KINK_CANDIDATES``),
where a Gauss rule would lose its order, and keep panels narrow in z where φ has its structure when q
is large. The 2-D expectation E[f(u1) g(u2)] nests the rule (u2 given u1 is Gaussian): the inner
panels follow g's kinks as they move with u1, and the outer rule gets edges around the corners the
inner integral leaves next to the activation's own kinks (``Elementwise.kinks``, found once).
Measured (the tests assert the bounds in brackets): ReLU's E[φ], E[φ²], E[φ'²], ReLU6's and
Hardtanh's E[φ²] within 5e-15 relative for q ∈ [1e-4, 1e4] (1e-12); tanh, sigmoid, GELU, SiLU, SELU,
Hardtanh, ReLU6 within 1e-12 of a rule four times finer, q up to 1e4; ReLU's arc-cosine kernel within
2e-13 relative and the erf arcsine kernel within 3e-15 for q ∈ [0.01, 100], c ∈ [−0.99, 0.999999]
(1e-10, 1e-12). A kink elsewhere costs the rule its order there (1e-6 to 1e-4 relative): give
``GaussianExpectation`` ``z_edges`` and ``kinks`` that hold it.

Saturation, as the monitor counts it: a slope is small when |φ'(z)| < ε·sup|φ'|, sup|φ'| measured as
``statistics.max_slopes`` measures it (φ' on a 40 001-point grid over [−20, 20]). The set where it
holds is found once as intervals of z (a grid of step 0.005 over [−20, 20], geometric beyond, each
change of the indicator located by 60 bisection steps), and its Gaussian probability is a sum of
normal CDFs: exact to ~1e-12 except for a small-slope interval shorter than the grid step, which
can be missed.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from lit_activations.statistics import known_slopes, knows_slopes, max_slopes, slopes

ActivationLike = nn.Module | Callable[[torch.Tensor], torch.Tensor]
Numbers = float | torch.Tensor  # a number, or a tensor of them: one value per layer or member
Phase = Literal["ordered", "chaotic", "critical", "not computed"]

DTYPE = torch.float64
# Where the common activations have kinks (of φ or of φ'): ReLU, LeakyReLU, ELU, SELU at 0; Hardshrink at ±0.5;
# Hardtanh at ±1; Hardsigmoid and Hardswish at ±3; ReLU6 at 0 and 6. Every one is a panel edge of the quadrature.
KINK_CANDIDATES = (-6.0, -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 6.0)
CRITICAL_TOLERANCE = 1e-3  # |χ₁ − 1| below it: "critical"
DIVERGED = 1e12  # a variance beyond it counts as infinite


# ---------------------------------------------------------------------------------------------------------------
# Activations: values and slopes in float64


class _FunctionModule(nn.Module):
    """A plain callable as a module, so that the monitor's slope and sup-slope functions take it unchanged."""

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


class Elementwise:
    """An activation ready for the theory: φ(z) and φ'(z) on float64 tensors of any shape.

    The public functions accept the activation itself and wrap it here; wrap once and pass the
    ``Elementwise`` to avoid copying a module on every call (``fixed_point`` iterates hundreds of times).
    Tensors reach the module as a column (M, 1), the shape of one unit's samples, which an element-wise
    module (PReLU with one parameter included) takes.
    """

    def __init__(self, phi: ActivationLike) -> None:
        # on the CPU, where the theory's nodes are (a fit's PReLU holds its slope on the GPU)
        self.original = copy.deepcopy(phi).cpu() if isinstance(phi, nn.Module) else _FunctionModule(phi)
        self.module, self.dtype = self._float64_copy(self.original)
        self.kinks = self._find_kinks(KINK_CANDIDATES)
        self._sup_slope: float | None = None
        self.small_slope_sets: dict[tuple[float, float], torch.Tensor] = {}  # by (threshold, z_max): q-free

    @staticmethod
    def _float64_copy(module: nn.Module) -> tuple[nn.Module, torch.dtype]:
        """A float64 copy of the module if it runs in float64; else the module itself, run in float32."""
        probe = torch.linspace(-2, 2, 5, dtype=DTYPE).unsqueeze(1)
        try:
            double = copy.deepcopy(module).double()
            with torch.no_grad():
                out = double(probe)
            if isinstance(out, torch.Tensor) and out.dtype == DTYPE and out.shape == probe.shape:
                return double, DTYPE
        except (RuntimeError, TypeError):
            pass
        return module, torch.float32

    def _find_kinks(self, candidates: Sequence[float], h: float = 1e-4) -> tuple[float, ...]:
        """The candidates where φ' jumps (ReLU, SELU, Hardtanh) or bends (ELU: φ'' jumps), by one-sided differences.

        ``GaussianExpectation.pair`` refines its rule around these only: a smooth φ needs no refinement.
        """
        k = _tensor(list(candidates))
        left2, left1, right1, right2 = (self.slope(k + d * h) for d in (-2, -1, 1, 2))
        bend_left, bend_right = (left1 - left2) / h, (right2 - right1) / h
        bend = torch.maximum(bend_left.abs(), bend_right.abs())
        jumps = (right1 - left1).abs() > 1e-6 + 4 * h * bend
        bends = (bend_right - bend_left).abs() > 1e-2 * (1 + bend)
        return tuple(k[jumps | bends].tolist())

    def _column(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(-1, 1).to(self.dtype)

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """φ(z), element by element, in float64."""
        with torch.no_grad():
            return self.module(self._column(z)).to(DTYPE).reshape(z.shape)

    def slope(self, z: torch.Tensor) -> torch.Tensor:
        """φ'(z) as the monitor measures it (``statistics.slopes``: autograd's values, by formula where known)."""
        return slopes(self.module, self._column(z)).to(DTYPE).reshape(z.shape)

    def value_and_slope(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """φ(z) and φ'(z) from one forward pass and its backward: ``slope`` as ``local_slopes`` computes it, and the
        value that forward gives on the way (half the work of ``value`` and ``slope`` apart); for an activation
        ``statistics.known_slopes`` knows, the forward and the formula. Both are contiguous tensors of z's shape that
        the caller may overwrite (the value may share z's memory: φ the identity)."""
        column = self._column(z)
        if knows_slopes(self.module, column.dtype):
            with torch.no_grad():
                out = self.module.forward(column)
            slope = known_slopes(self.module, column, out)
            return out.to(DTYPE).reshape(z.shape).contiguous(), slope.to(DTYPE).reshape(z.shape).contiguous()
        with torch.inference_mode(False), torch.enable_grad():
            # an inference tensor cannot be saved for backward; any other is used in place, without a copy
            column = (column.clone() if column.is_inference() else column.detach()).requires_grad_(True)
            out = self.module.forward(column)
            slope = None
            if out.requires_grad:  # else a step, say: its slope is 0 everywhere
                (slope,) = torch.autograd.grad(out.sum(), column, allow_unused=True)
        value = out.detach().to(DTYPE).reshape(z.shape).contiguous()
        return value, torch.zeros_like(value) if slope is None else slope.to(DTYPE).reshape(z.shape).contiguous()

    def sup_slope(self) -> float:
        """sup|φ'| by the monitor's rule (``statistics.max_slopes``, on the original module in its own dtype),
        so that ε·sup|φ'| is the very threshold the monitor uses."""
        if self._sup_slope is None:  # (a 40,001-point grid: once per wrapped activation)
            self._sup_slope = float(max_slopes(self.original, n_units=1)[0])
        return self._sup_slope


def as_elementwise(phi: ActivationLike | Elementwise) -> Elementwise:
    """``phi`` wrapped for the theory's functions (an ``Elementwise`` passes through)."""
    return phi if isinstance(phi, Elementwise) else Elementwise(phi)


def _tensor(x: Numbers) -> torch.Tensor:
    return torch.as_tensor(x, dtype=DTYPE)


# ---------------------------------------------------------------------------------------------------------------
# Gaussian expectations


def _gauss_legendre(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss–Legendre nodes and weights on [−1, 1] (Golub–Welsch: eigen-decomposition of the Jacobi matrix)."""
    k = torch.arange(1, n, dtype=DTYPE)
    off = k / torch.sqrt(4 * k**2 - 1)
    nodes, vectors = torch.linalg.eigh(torch.diag(off, 1) + torch.diag(off, -1))
    return nodes, 2 * vectors[0] ** 2


class GaussianExpectation:
    """Composite Gauss–Legendre quadrature for Gaussian expectations of kinked functions.

    A Gauss rule converges fast only where the integrand is smooth, and activations are not: ReLU's
    φ' jumps at 0, ReLU6's at 0 and 6, Hardtanh's at ±1. Panels are therefore cut at fixed points of z
    (``z_edges``, which hold those kinks) as well as on a uniform grid of standard units, so that every
    kink is a panel edge whatever q is. Accuracy: see the module docstring.

    Args:
        span: integrate s = z/√q over [−span, span].
        panel: width of the uniform panels, in standard units.
        nodes: Gauss–Legendre nodes per panel.
        z_edges: panel edges in z units (kinks, and the region where φ has structure); default every 0.5 on
            [−8, 8], then ±10, 12, 16, 24, 32.
        kinks: where ``pair``'s second function may have kinks, when its caller does not say (``pair``'s
            ``kinks``): a kink smoothed by the inner integral over a short width is a corner the outer
            rule's panels must be cut around.
    """

    def __init__(
        self,
        span: float = 10.0,
        panel: float = 0.5,
        nodes: int = 8,
        z_edges: Sequence[float] | None = None,
        kinks: Sequence[float] = KINK_CANDIDATES,
    ) -> None:
        self.span = span
        self.s_edges = torch.linspace(-span, span, round(2 * span / panel) + 1, dtype=DTYPE)
        if z_edges is None:  # every 0.5 where activations have their structure, wider into the tails
            tails = _tensor([10.0, 12.0, 16.0, 24.0, 32.0])
            z_edges = torch.cat([-tails.flip(0), torch.linspace(-8, 8, 33, dtype=DTYPE), tails]).tolist()
        self.z_edges = _tensor(list(z_edges))
        # z edges scaled about 0 (the outer rule's): z = 0 stays at s = 0, a uniform edge already if there is one there
        self._scaled_z_edges = self.z_edges[self.z_edges != 0] if bool((self.s_edges == 0).any()) else self.z_edges
        self.kinks = tuple(kinks)
        self.x, self.w = _gauss_legendre(nodes)
        self._log_w = (self.w / math.sqrt(2 * math.pi)).log()  # each node's weight with the density's constant

    def standard_nodes(self, offset: Numbers, scale: Numbers) -> tuple[torch.Tensor, torch.Tensor]:
        """Nodes s and weights w, shape (*offset.shape, N): Σ w f(offset + scale·s) ≈ E_{s~N(0,1)}[f(offset + scale·s)].

        Panel edges: the uniform grid in s, and the z edges at s = (z_edge − offset)/scale where they fall inside
        (−span, span) (none for scale 0). Rows with fewer edges than others end in empty panels, whose nodes weigh 0.
        """
        offset, scale = torch.broadcast_tensors(_tensor(offset), _tensor(scale))
        return self._panels(self._edges(offset, scale))

    def _edges(self, offset: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``standard_nodes``' panel edges, sorted along a last dimension added to offset and scale (broadcast)."""
        moved = self._in_range((self.z_edges - offset.unsqueeze(-1)) / scale.unsqueeze(-1))
        return torch.cat([self.s_edges.expand(*moved.shape[:-1], -1), moved], -1).sort(-1).values

    def _in_range(self, s: torch.Tensor) -> torch.Tensor:
        """Edges in standard units, those outside (−span, span) or undefined (a scale of 0) moved to span, where
        they make empty panels at the end that ``_panels`` cuts off."""
        return torch.where(s.abs() < self.span, s, self.span)

    def _panels(self, edges: torch.Tensor, dim: int = -1, lead: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Gauss–Legendre nodes and Gaussian-density weights on the panels between ``edges``, sorted along ``dim``.

        Edges repeated at span (those ``_in_range`` moved there) are cut off as far as every row allows; what is left
        makes empty panels, whose weights are exactly 0. Nodes are laid out node by node, each over all panels, so that
        the innermost dimension is long (short ones make PyTorch's elementwise loops several times slower). ``lead``:
        the nodes come after that many rows along dim, left for the caller's own points (one tensor, one call of f).
        """
        dim %= edges.dim()
        if edges.numel():
            edges = edges.narrow(dim, 0, int((edges < self.span).sum(dim).max()) + 1)
        half = edges.diff(dim=dim) / 2
        mid = edges.narrow(dim, 0, half.shape[dim]) + half
        nodes = len(self.x) * half.shape[dim]
        points = half.new_empty((*half.shape[:dim], lead + nodes, *half.shape[dim + 1 :]))
        along = (-1,) + (1,) * (edges.dim() - dim)  # the node index, before the panels
        s = points.narrow(dim, lead, nodes).unflatten(dim, (len(self.x), -1))  # (..., nodes, panels, ...)
        torch.addcmul(mid.unsqueeze(dim), half.unsqueeze(dim), self.x.view(along), out=s)
        w = torch.addcmul(self._log_w.view(along), s, s, value=-0.5).exp_().mul_(half.unsqueeze(dim))
        return points, w.flatten(dim, dim + 1)

    def __call__(self, f: Callable[[torch.Tensor], torch.Tensor], q: Numbers) -> torch.Tensor:
        """E_{z~N(0,q)}[f(z)] for each q (a tensor of them: one call for many layers); f acts element-wise."""
        root = _tensor(q).clamp(min=0).sqrt()
        s, w = self.standard_nodes(torch.zeros_like(root), root)
        return (w * f(root.unsqueeze(-1) * s)).sum(-1)

    def pair(
        self,
        f: Callable[[torch.Tensor], torch.Tensor],
        g: Callable[[torch.Tensor], torch.Tensor],
        q1: Numbers,
        q2: Numbers,
        q12: Numbers,
        kinks: Sequence[float] | None = None,
    ) -> torch.Tensor:
        """E[f(u1) g(u2)] for (u1, u2) ~ N(0, [[q1, q12], [q12, q2]]), broadcast over the three arguments.

        ``kinks``: where g or g' jumps (``Elementwise.kinks``); None: all of ``self.kinks``, to be safe. The
        rule: ``pair_nodes``.
        """
        q1, q2, q12 = torch.broadcast_tensors(_tensor(q1), _tensor(q2), _tensor(q12))
        nodes = self.pair_nodes(q1.flatten(), q2.flatten(), q12.flatten(), kinks)
        return nodes.outer(f(nodes.u1), nodes.inner(g(nodes.u2))).reshape(q1.shape)

    def pair_nodes(
        self, q1: torch.Tensor, q2: torch.Tensor, q12: torch.Tensor, kinks: Sequence[float] | torch.Tensor | None = None
    ) -> PairNodes:
        """The nodes of ``pair`` for pairs (q1, q2, q12), each of shape (pairs,); they do not depend on f and g.

        ``kinks``: g's kinks, shared by every pair, or a tensor (pairs, M) of each pair's, NaN where a pair has fewer.

        u1 = √q1 s1 and u2 = a s1 + b s2 with a = √q2 ρ, b = √q2 √(1−ρ²), ρ = q12/√(q1 q2) (clipped to
        [−1, 1]; 0 if a variance is 0). The inner rule over s2, one per outer node, has its panels at g's
        kinks, which move with s1: s2 = (z_edge − a s1)/b. The inner integral is g smoothed over a width
        b, a function of s1 with kinks of f at z_edge/√q1, rounded kinks of g at kink/a, and corners of
        width b/|a| around them, all made outer panel edges.
        """
        q1, q2 = q1.clamp(min=0), q2.clamp(min=0)
        rho = torch.where(q1 * q2 > 0, q12 / (q1 * q2).sqrt(), 0.0).clamp(-1, 1)
        r1, r2 = q1.sqrt(), q2.sqrt()
        a, b = r2 * rho, r2 * (1 - rho**2).clamp(min=0).sqrt()
        # The same number of outer edges for every pair, so that all pairs go at once: an edge that does not
        # apply lies at +span, and a repeated edge makes an empty panel, whose nodes weigh 0. The first two sets are
        # the edges of the 1-D rule at q1 (``__call__``'s), whose nodes come with these.
        z_edges = self._scaled_z_edges
        single = torch.cat([self.s_edges.expand(len(r1), -1), self._in_range(z_edges / r1.unsqueeze(1))], 1)
        outer = [single, self._in_range(z_edges / a.unsqueeze(1))]
        if not isinstance(kinks, torch.Tensor):
            kinks = _tensor(list(self.kinks if kinks is None else kinks)).expand(len(r1), -1)
        if kinks.shape[1]:  # corners narrower than a panel, where b < |a| / 2
            offsets = kinks.new_tensor([-8, -4, -2, -1, -0.5, 0.5, 1, 2, 4, 8])
            corners = (kinks.unsqueeze(2) + b.reshape(-1, 1, 1) * offsets).flatten(1) / a.unsqueeze(1)
            outer.append(torch.where((b < 0.5 * a.abs()).unsqueeze(1), self._in_range(corners), self.span))
        outer = torch.cat(outer, 1)
        single = torch.cat([single, single.new_full((len(r1), outer.shape[1] - single.shape[1]), self.span)], 1)
        (s, s1), (w, w1) = self._panels(torch.stack([single, outer]).sort(-1).values)  # (pairs, N1) each
        offset = a.unsqueeze(1) * s1
        inner = self._edges(offset, b.unsqueeze(1)).transpose(1, 2).contiguous()  # (pairs, E2, N1)
        points, w2 = self._panels(inner, dim=1, lead=2)  # (pairs, 2 + N2, N1): the outer nodes innermost
        s2 = points[:, 2:]
        torch.addcmul(offset.unsqueeze(1), b.reshape(-1, 1, 1), s2, out=s2)  # u2 = a s1 + b s2, in place of s2
        torch.mul(r1.unsqueeze(1), s, out=points[:, 0])
        torch.mul(r1.unsqueeze(1), s1, out=points[:, 1])
        return PairNodes(points, w, w1, w2)


@dataclass(frozen=True)
class PairNodes:
    """The nested rule of ``GaussianExpectation.pair`` for many pairs: E[f(u1) g(u2)] ≈ Σ_i w1_i f(u1_i) Σ_j w2_ji
    g(u2_ji), and the 1-D rule at q1 beside it. One set serves every f and g with the same kinks (a layer's E[φ],
    E[φ²], E[φ'²], E[φφ] and E[φ'φ']), and all its points are one tensor (one call of f for all)."""

    points: torch.Tensor  # (pairs, 2 + N2, N1): z, u1, then u2 (N2 rows, one column per outer node)
    w: torch.Tensor  # (pairs, N1): E[f(u1)] ≈ Σ_i w_i f(z_i), the 1-D rule as ``__call__`` has it
    w1: torch.Tensor  # (pairs, N1)
    w2: torch.Tensor  # (pairs, N2, N1)

    @property
    def z(self) -> torch.Tensor:
        return self.points[:, 0]

    @property
    def u1(self) -> torch.Tensor:
        return self.points[:, 1]

    @property
    def u2(self) -> torch.Tensor:
        return self.points[:, 2:]

    def inner(self, g_u2: torch.Tensor, rows: slice = slice(None), overwrite: bool = False) -> torch.Tensor:
        """Σ_j w2_ji g(u2_ji) (pairs, N1) from g at ``u2`` (of the pairs ``rows`` only, if given).

        ``overwrite``: the products go into ``g_u2`` (for a caller that owns it: a new tensor this size costs more
        than the products)."""
        return (g_u2.mul_(self.w2[rows]) if overwrite else self.w2[rows] * g_u2).sum(1)

    def outer(self, f_u1: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
        """E[f(u1) g(u2)] per pair from f at ``u1`` and g's ``inner`` sums."""
        return (self.w1 * f_u1 * inner).sum(-1)


GAUSSIAN = GaussianExpectation()  # the rule every function below uses
# A coarser rule for predictions made while a model trains (``predict(rule=FIT_RULE)``, ``SignalTheory``): a
# 2-D expectation on ~70² nodes instead of ~700², within 1e-5 relative of GAUSSIAN on the registry's activations
# (tests/test_theory.py), far below what a finite network's spread from its theory is.
FIT_RULE = GaussianExpectation(span=8.0, panel=1.0, nodes=4, z_edges=(-6, -3, -2, -1, 0, 1, 2, 3, 6))


# ---------------------------------------------------------------------------------------------------------------
# Moments and the maps between layers


@dataclass(frozen=True)
class Moments:
    """Gaussian moments of an activation at variance q, each shaped like q.

    Attributes:
        mean: E[φ(z)], z ~ N(0, q).
        second: E[φ(z)²]: what the next layer's variance is made of.
        slope2: E[φ'(z)²]: what a back-propagated gradient is multiplied by.
    """

    mean: torch.Tensor
    second: torch.Tensor
    slope2: torch.Tensor


def moments(phi: ActivationLike | Elementwise, q: Numbers, rule: GaussianExpectation | None = None) -> Moments:
    """E[φ], E[φ²] and E[φ'²] under z ~ N(0, q), for each q.

    >>> m = moments(nn.ReLU(), torch.tensor([1.0, 4.0]))
    >>> [round(v, 12) for v in m.second.tolist() + m.slope2.tolist()]
    [0.5, 2.0, 0.5, 0.5]
    """
    act, rule = as_elementwise(phi), rule or GAUSSIAN
    return Moments(
        mean=rule(act.value, q),
        second=rule(lambda z: act.value(z) ** 2, q),
        slope2=rule(lambda z: act.slope(z) ** 2, q),
    )


def variance_map(phi: ActivationLike | Elementwise, sw2: Numbers, sb2: Numbers, q: Numbers) -> torch.Tensor:
    """q^{ℓ+1} = σ_w² E[φ(z)²] + σ_b², z ~ N(0, q^ℓ): the next layer's pre-activation variance."""
    act = as_elementwise(phi)
    return _tensor(sw2) * GAUSSIAN(lambda z: act.value(z) ** 2, q) + _tensor(sb2)


def variance_map_slope(phi: ActivationLike | Elementwise, sw2: Numbers, q: Numbers) -> torch.Tensor:
    """dq^{ℓ+1}/dq^ℓ = σ_w² E[φ'² + φφ''] = σ_w² E[z φ(z) φ'(z)]/q (Stein's lemma; kinks' deltas included).

    How fast a perturbation of the variance dies out: ξ_q⁻¹ = −log of it at q*. q is kept ≥ 1e-12.
    """
    act = as_elementwise(phi)
    q = _tensor(q).clamp(min=1e-12)
    return _tensor(sw2) * GAUSSIAN(lambda z: z * act.value(z) * act.slope(z), q) / q


def chi1(phi: ActivationLike | Elementwise, sw2: Numbers, q: Numbers) -> torch.Tensor:
    """χ₁ = σ_w² E[φ'(z)²], z ~ N(0, q): the per-layer factor of a gradient's second moment (equal widths)."""
    act = as_elementwise(phi)
    return _tensor(sw2) * GAUSSIAN(lambda z: act.slope(z) ** 2, q)


def correlation_map(
    phi: ActivationLike | Elementwise, sw2: Numbers, sb2: Numbers, q: Numbers, c: Numbers
) -> torch.Tensor:
    """c^{ℓ+1} = (σ_w² E[φ(u1)φ(u2)] + σ_b²)/q^{ℓ+1} for two inputs of variance q and correlation c."""
    act = as_elementwise(phi)
    q, c = torch.broadcast_tensors(_tensor(q), _tensor(c))
    cross = GAUSSIAN.pair(act.value, act.value, q, q, q * c, act.kinks)
    return (_tensor(sw2) * cross + _tensor(sb2)) / variance_map(act, sw2, sb2, q)


def correlation_map_slope(phi: ActivationLike | Elementwise, sw2: Numbers, q: Numbers, c: Numbers) -> torch.Tensor:
    """χ_c = ∂c^{ℓ+1}/∂c^ℓ = σ_w² E[φ'(u1)φ'(u2)] at a fixed point q (Price's theorem); χ_c = χ₁ at c = 1."""
    act = as_elementwise(phi)
    q, c = torch.broadcast_tensors(_tensor(q), _tensor(c))
    return _tensor(sw2) * GAUSSIAN.pair(act.slope, act.slope, q, q, q * c, act.kinks)


# ---------------------------------------------------------------------------------------------------------------
# Fixed points, depth scales and the phase


def fixed_point(phi: ActivationLike | Elementwise, sw2: float, sb2: float, max_iter: int = 200) -> float:
    """q*: the variance a deep network of these (σ_w², σ_b²) settles at, by iterating the variance map from 1.0.

    ``math.inf`` when the variance grows past 1e12 or without bound (ReLU with σ_w² > 2); ``nan`` when φ
    gives nan. Iteration is capped at ``max_iter`` steps and, if still moving (slow near a critical point:
    tanh at σ_w² = 1, σ_b² = 0 creeps to q* = 0 as 1/ℓ), finished by bisection between the last iterate
    and 0 (falling) or a bound found by doubling (rising): the root in the direction of travel, to 1e-12
    (absolute below 1). 1.0 itself is returned when it is a fixed point, stable or not (``critical_point``'s
    q* = 1 is unstable for GELU, SiLU, Mish: see ``depth_scales``).
    """
    act = as_elementwise(phi)

    def excess(q: float) -> float:  # F(q) − q, F the variance map
        return float(variance_map(act, sw2, sb2, q)) - q

    q, tol = 1.0, 1e-12
    for _ in range(max_iter):
        step = excess(q)
        if math.isnan(step):
            return math.nan
        if q + step > DIVERGED:
            return math.inf
        if abs(step) <= tol * max(1.0, q):
            return q + step
        q += step
    if excess(q) > 0:  # still rising: a root above q, if any
        lo, hi = q, max(2 * q, 1.0)
        while excess(hi) > 0:
            lo, hi = hi, 2 * hi
            if hi > DIVERGED:
                return math.inf
    else:  # falling: a root in [0, q] (F(0) ≥ 0)
        lo, hi = 0.0, q
    while hi - lo > tol * max(1.0, hi):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


def fixed_correlation(phi: ActivationLike | Elementwise, sw2: float, sb2: float) -> float:
    """c*: the correlation any two inputs (of correlation ≥ 0) settle at in a deep network; nan when q* is not finite.

    On c ∈ [0, 1] the correlation map is increasing and convex (by Price's theorem its derivatives in c
    are q^k E[φ^(k)(u1) φ^(k)(u2)] ≥ 0), maps [0, 1] into itself and has slope χ₁ at c = 1. Hence
    (Poole et al. 2016): χ₁ ≤ 1 (ordered, critical) → c* = 1, every input ends up at the same point;
    χ₁ > 1 (chaotic) → the one root of c = map(c) in [0, 1), found by bisection to 1e-12 (0 for an odd
    φ without biases).
    """
    return _fixed_points(as_elementwise(phi), sw2, sb2)[1]


def _fixed_points(act: Elementwise, sw2: float, sb2: float) -> tuple[float, float]:
    """(q*, c*), c* nan where q* is not finite."""
    q_star = fixed_point(act, sw2, sb2)
    if not math.isfinite(q_star):
        return q_star, math.nan
    q = max(q_star, 1e-12)  # q* = 0 (an ordered network without biases): the maps' limit at small q
    if float(chi1(act, sw2, q)) <= 1 + 1e-9:  # (critical to the precision of critical_point)
        return q_star, 1.0
    lo, hi = 0.0, 1.0  # map(lo) ≥ lo, map(hi) < hi, except at the root 1 itself
    if float(correlation_map(act, sw2, sb2, q, lo)) <= lo:
        return q_star, lo
    while hi - lo > 1e-12:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(correlation_map(act, sw2, sb2, q, mid)) > mid else (lo, mid)
    return q_star, (lo + hi) / 2


def _depth(slope: float) -> float:
    """ξ = −1/log(slope): inf within 1e-9 of slope 1 (criticality, to the quadrature's precision), 0 at slope 0,
    negative above 1 (an unstable fixed point: a perturbation grows e-fold every |ξ| layers)."""
    if math.isnan(slope):
        return math.nan
    if abs(slope - 1) <= 1e-9:
        return math.inf
    return 0.0 if slope <= 0 else -1.0 / math.log(slope)


def depth_scales(phi: ActivationLike | Elementwise, sw2: float, sb2: float) -> tuple[float, float]:
    """(ξ_q, ξ_c): over how many layers a perturbation of the variance, and of the correlation, dies out.

    ξ_q⁻¹ = −log(dq^{ℓ+1}/dq^ℓ at q*) = −log(χ₁ + σ_w² E[φ''φ]) (by Stein's lemma, no φ'' needed) and
    ξ_c⁻¹ = −log(σ_w² E[φ'(u1)φ'(u2)] at (q*, c*)) (Schoenholz et al. 2017). ξ_c is inf at criticality,
    where information travels arbitrarily deep; ξ_q stays finite there. A negative ξ: the fixed point is
    unstable, a perturbation grows e-fold every |ξ| layers (ξ_q ≈ −15 at GELU's ``critical_point``).
    nan when q* is not finite.
    """
    act = as_elementwise(phi)
    return _depth_scales(act, sw2, sb2, *_fixed_points(act, sw2, sb2))


def _depth_scales(act: Elementwise, sw2: float, sb2: float, q: float, c: float) -> tuple[float, float]:
    """(ξ_q, ξ_c) at the fixed points (q*, c*) already found."""
    if not math.isfinite(q):
        return math.nan, math.nan
    return _depth(float(variance_map_slope(act, sw2, q))), _depth(float(correlation_map_slope(act, sw2, q, c)))


def phase(phi: ActivationLike | Elementwise, sw2: float, sb2: float) -> Phase:
    """The phase of (σ_w², σ_b²): "ordered" (χ₁ < 1 at q*), "chaotic" (χ₁ > 1) or "critical" (within 1e-3 of 1).

    Where q* is infinite (the variance explodes) χ₁ is taken at q = 1e12, its large-q limit.

    Raises:
        ValueError: q* is nan.
    """
    act = as_elementwise(phi)
    q = fixed_point(act, sw2, sb2)
    if math.isnan(q):
        raise ValueError("the variance map gives nan: no phase")
    chi = float(chi1(act, sw2, min(q, DIVERGED)))
    if abs(chi - 1) <= CRITICAL_TOLERANCE:
        return "critical"
    return "ordered" if chi < 1 else "chaotic"


def critical_point(phi: ActivationLike | Elementwise, sb2_tolerance: float = 1e-9) -> tuple[float, float] | None:
    """One (σ_w², σ_b²) on the critical line χ₁(q*) = 1, by a fixed rule.

    1. The point whose fixed point is q* = 1: σ_w² = 1/E[φ'²], σ_b² = 1 − σ_w² E[φ²], both at q = 1, if
       that σ_b² ≥ 0 (≥ −``sb2_tolerance``, which absorbs rounding for ReLU, whose σ_b² is exactly 0).
       q* = 1 need not be stable: for GELU, SiLU and Mish the variance map's slope there is 1.07, 1.10,
       1.02, so a network whose q^1 ≠ 1 drifts away from it (``depth_scales`` gives a negative ξ_q).
    2. Otherwise the point without biases: σ_w² with χ₁(q*(σ_w², 0)) = 1, the first crossing found
       scanning σ_w² ∈ [1e-6, 1e4] geometrically (121 points), refined by bisection of log σ_w² to 1e-10.
       Sigmoid lands here, at σ_w² ≈ 103 (q* ≈ 45.6).
    3. None if neither exists: softplus (χ₁ < σ_w²/2 < 1 wherever q* is finite), φ(z) = z + 1, a step.
    """
    act = as_elementwise(phi)
    at_one = moments(act, 1.0)
    if float(at_one.slope2) == 0:  # a step, a constant: no slope carries a signal back at any variance
        return None
    sw2 = 1.0 / float(at_one.slope2)
    sb2 = 1.0 - sw2 * float(at_one.second)
    if sb2 >= -sb2_tolerance:
        return sw2, sb2 if sb2 > sb2_tolerance else 0.0

    def excess(log_sw2: float) -> float:  # χ₁ − 1 at q*(σ_w², 0); nan where q* is infinite
        sw2 = math.exp(log_sw2)
        q = fixed_point(act, sw2, 0.0)
        return float(chi1(act, sw2, q)) - 1 if math.isfinite(q) else math.nan

    grid = torch.linspace(math.log(1e-6), math.log(1e4), 121, dtype=DTYPE).tolist()
    previous = math.nan
    for low, high in itertools.pairwise(grid):
        e_low = excess(low) if math.isnan(previous) else previous
        e_high = previous = excess(high)
        if e_low < 0 <= e_high:
            while high - low > 1e-10:
                mid = (low + high) / 2
                low, high = (mid, high) if excess(mid) < 0 else (low, mid)
            return math.exp(high), 0.0
    return None


# ---------------------------------------------------------------------------------------------------------------
# Initialisations


InitName = Literal["default", "xavier", "kaiming", "lecun_normal"]


def init_variances(init: InitName, fan_in: int, fan_out: int) -> tuple[float, float]:
    """(σ_w², σ_b²) of ``nn.Linear`` drawn as ``lit_activations.networks`` draws it (``--model.init``).

    ``default``: PyTorch's W, b ~ U(±1/√fan_in), so E[W²] = 1/(3 fan_in): σ_w² = 1/3, σ_b² = 1/(3 fan_in).
    ``xavier``: xavier_uniform_, E[W²] = 2/(fan_in + fan_out): σ_w² = 2 fan_in/(fan_in + fan_out).
    ``kaiming``: kaiming_normal_ with ReLU's gain: σ_w² = 2. ``lecun_normal``: σ_w² = 1. The last three zero
    the biases.

    >>> init_variances("default", 4, 5), init_variances("xavier", 3, 1)
    ((0.3333333333333333, 0.08333333333333333), (1.5, 0.0))
    """
    if init == "default":
        return 1 / 3, 1 / (3 * fan_in)
    if init == "xavier":
        return 2 * fan_in / (fan_in + fan_out), 0.0
    if init == "kaiming":
        return 2.0, 0.0
    if init == "lecun_normal":
        return 1.0, 0.0
    raise ValueError(f"unknown init {init!r}; expected one of: default, xavier, kaiming, lecun_normal")


def measured_variances(weight: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(σ_w², σ_b²) of actual tensors: fan_in · mean(W²) and mean(b²) (0 without a bias).

    ``weight`` is laid out as ``nn.Linear``'s, (..., out, in), fan_in its last dimension; leading
    dimensions are members and give one value each: ``MemberLinear``'s weight is (K, out, in) and its
    bias (K, out), which give (K,) tensors. A single layer gives 0-d tensors (``float()`` them).
    """
    weight = weight.detach().to(DTYPE)
    sw2 = weight.shape[-1] * weight.square().mean((-2, -1))
    sb2 = torch.zeros_like(sw2) if bias is None else bias.detach().to(DTYPE).square().mean(-1)
    return sw2, sb2


# ---------------------------------------------------------------------------------------------------------------
# Saturation and dead units


def small_slope_set(phi: ActivationLike | Elementwise, threshold: float, z_max: float = 20.0) -> torch.Tensor:
    """The set {z : |φ'(z)| < threshold} as intervals, shape (M, 2), ends ±inf where it is unbounded.

    Found on a grid of step 0.005 over [−20, 20] (geometric, ratio 1.001, out to ``z_max`` beyond),
    each change of the indicator refined by 60 bisection steps; outside the grid the indicator keeps
    its value at the grid's end. An interval shorter than the grid step can be missed.
    """
    act = as_elementwise(phi)
    if (threshold, z_max) in act.small_slope_sets:  # the set does not depend on q: found once per activation
        return act.small_slope_sets[threshold, z_max]
    grid = torch.linspace(-20, 20, 8001, dtype=DTYPE)
    if z_max > 20:
        outer = torch.exp(torch.arange(math.log(20), math.log(z_max) + 1e-3, 1e-3, dtype=DTYPE))[1:]
        grid = torch.cat([-outer.flip(0), grid, outer])
    small = act.slope(grid).abs() < threshold
    cells = torch.nonzero(small[1:] != small[:-1]).flatten()
    lo, hi = grid[cells], grid[cells + 1]
    for _ in range(60):
        mid = (lo + hi) / 2
        same = (act.slope(mid).abs() < threshold) == small[cells]
        lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    ends = torch.cat([_tensor([-math.inf]), (lo + hi) / 2, _tensor([math.inf])])
    inside = torch.cat([small[:1], small[cells + 1]])  # the indicator on each piece between ends
    act.small_slope_sets[threshold, z_max] = torch.stack([ends[:-1], ends[1:]], 1)[inside]
    return act.small_slope_sets[threshold, z_max]


def _reach(q: torch.Tensor) -> float:
    """``small_slope_set``'s ``z_max`` for variances q: 12 standard deviations of the largest, at least 20, rounded up
    to 20·2^k, so that a set found once serves every q below it (a fit's variances change at each prediction)."""
    needed = 12 * float(q.max()) ** 0.5 if q.numel() else 0.0
    return 20.0 * 2.0 ** math.ceil(math.log2(needed / 20)) if 20 < needed < math.inf else 20.0


def _probability(
    ends: torch.Tensor, signs: torch.Tensor, base: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """P(z ∈ S) for z ~ N(mean, std²), S open intervals given by ``_ends``: base + Σ sign·Φ((end − mean)/std).

    ``ends``, ``signs`` (E, ...) and ``base`` broadcast against mean's and std's shape, ends first (the last
    dimension, many points, stays the one the arithmetic runs along). std 0: a point mass, in S or not (an end itself
    is not in S).
    """
    below = torch.special.ndtr((ends - mean).div_(std))  # P(z < end)
    if not bool((std > 0).all()):
        below = torch.where(std > 0, below, torch.where(signs > 0, mean < ends, mean <= ends).to(DTYPE))
    return below.mul_(signs).sum(0).add_(base)


def _ends(intervals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A set of sorted disjoint intervals (M, 2) as ``_probability`` takes it: its finite ends (E,), each with sign
    +1 (an upper end) or −1 (a lower one), and base 1 if the set is unbounded above, else 0: P(S) = Σ Φ(b) − Φ(a)
    without the Φ(±inf) terms, which cost as much as the others."""
    ends, signs = [], []
    for lower, upper in intervals.tolist():
        for end, sign in ((lower, -1.0), (upper, 1.0)):
            if math.isfinite(end):
                ends.append(end)
                signs.append(sign)
    return _tensor(ends), _tensor(signs), _tensor(float(len(intervals) > 0 and intervals[-1, 1] == math.inf))


def _threshold(act: Elementwise, epsilon: float, sup_slope: float | None) -> float:
    return epsilon * (act.sup_slope() if sup_slope is None else sup_slope)


def saturated_fraction(
    phi: ActivationLike | Elementwise, q: Numbers, epsilon: float = 0.05, sup_slope: float | None = None
) -> torch.Tensor:
    """P_{z~N(0,q)}(|φ'(z)| < ε·sup|φ'|): the share of (sample, unit) pairs the monitor counts as saturated.

    ``sup_slope`` None: measured as the monitor measures it (``statistics.max_slopes``). The
    probability is exact over the intervals of ``small_slope_set`` (normal CDFs).

    >>> saturated_fraction(nn.ReLU(), torch.tensor([1.0, 9.0])).tolist()
    [0.5, 0.5]
    """
    act = as_elementwise(phi)
    q = _tensor(q).clamp(min=0)
    intervals = small_slope_set(act, _threshold(act, epsilon, sup_slope), z_max=_reach(q))
    ends, signs, base = _ends(intervals)
    points = (-1,) + (1,) * q.dim()  # ends first
    return _probability(ends.reshape(points), signs.reshape(points), base, torch.zeros_like(q), q.sqrt())


# The u-integral of ``dead_fraction``: panels 0.25 wide on [−10, 10], 8 nodes each, and edges where p(u) turns over.
_DEAD_RULE = GaussianExpectation(span=10.0, panel=0.25, nodes=8, z_edges=())
_TURNS = torch.linspace(-8, 8, 33, dtype=DTYPE)  # those edges, in units of √(q(1−c)) around each end of the set


def dead_fraction(
    phi: ActivationLike | Elementwise,
    q: Numbers,
    c: Numbers,
    epsilon: float = 0.05,
    sup_slope: float | None = None,
    samples: int = 200,
) -> torch.Tensor:
    """The share of units whose slope is small for every one of ``samples`` inputs (the monitor's dead units).

    A unit's pre-activations over the inputs are modelled as z_i = √q (√c u + √(1−c) e_i): u its own
    (weights and bias, shared by every input), e_i independent N(0, 1), so that any two inputs have
    correlation c (clipped to [0, 1]: negative correlations cannot be shared by many inputs at once).
    Then dead = E_u[p(u)^samples], p(u) = P_e(z ∈ small-slope set), a normal-CDF sum; the u-integral is
    composite Gauss–Legendre (panels 0.25 wide, plus edges near each end of the set on the scale
    where p(u)^samples turns over): within 1e-12 of a 400 001-point trapezoid rule for ReLU, tanh, sigmoid.
    """
    act = as_elementwise(phi)
    q, c = torch.broadcast_tensors(_tensor(q).clamp(min=0), _tensor(c).clamp(0, 1))
    ends, signs, base = _ends(small_slope_set(act, _threshold(act, epsilon, sup_slope), z_max=_reach(q)))
    points = q.numel()
    dead = _all_small(ends.unsqueeze(1).expand(-1, points), signs.unsqueeze(1).expand(-1, points), base.expand(points),
                      q.flatten(), c.flatten(), samples)  # fmt: skip
    return dead.reshape(q.shape)


def _all_small(
    ends: torch.Tensor, signs: torch.Tensor, base: torch.Tensor, q: torch.Tensor, c: torch.Tensor, samples: int
) -> torch.Tensor:
    """``dead_fraction`` at P points (q, c), each with its own small-slope set (``_ends``: (E, P), (E, P), (P,))."""
    shared, own = (q * c).sqrt(), (q * (1 - c)).sqrt()
    # edges near each end of the set, where p(u) turns over; out of range for padding (an end at inf) or no u (shared 0)
    near = (ends.unsqueeze(2) + own.reshape(1, -1, 1) * _TURNS).transpose(0, 1).flatten(1) / shared.unsqueeze(1)
    edges = torch.cat([_DEAD_RULE.s_edges.expand(len(q), -1), _DEAD_RULE._in_range(near)], 1).sort(1).values
    u, weight = _DEAD_RULE._panels(edges)  # (P, N)
    p = _probability(ends.unsqueeze(2), signs.unsqueeze(2), base.unsqueeze(1), shared.unsqueeze(1) * u,
                     own.unsqueeze(1))  # fmt: skip
    return p.pow_(samples).mul_(weight).sum(1)


def _saturated_and_dead(
    acts: Sequence[Elementwise], q: torch.Tensor, c: torch.Tensor, epsilon: float, samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``saturated_fraction`` and ``dead_fraction`` at P points, the i-th with activation ``acts[i]``, q[i], c[i]: in
    one pass over all of them, each point with its activation's small-slope set (ends padded with inf, sign 0)."""
    q, c = q.clamp(min=0), c.clamp(0, 1)
    points: dict[int, list[int]] = {}
    for i, act in enumerate(acts):
        points.setdefault(id(act), []).append(i)
    sets, which = [], torch.empty(len(acts), dtype=torch.long)
    for j, indices in enumerate(points.values()):
        act = acts[indices[0]]
        sets.append(_ends(small_slope_set(act, _threshold(act, epsilon, None), z_max=_reach(q[indices]))))
        which[indices] = j
    most = max(len(ends) for ends, _, _ in sets)
    ends = torch.stack([torch.cat([e, e.new_full((most - len(e),), math.inf)]) for e, _, _ in sets], 1)[:, which]
    signs = torch.stack([torch.cat([s, s.new_zeros(most - len(s))]) for _, s, _ in sets], 1)[:, which]
    base = torch.stack([b for _, _, b in sets])[which]
    return _probability(ends, signs, base, torch.zeros_like(q), q.sqrt()), _all_small(ends, signs, base, q, c, samples)


# ---------------------------------------------------------------------------------------------------------------
# A whole network


@dataclass(frozen=True)
class LayerSpec:
    """One linear layer and the activation after it (None: the output layer)."""

    fan_in: int
    fan_out: int
    sw2: float  # (a 0-d tensor, as ``measured_variances`` gives, is taken too)
    sb2: float
    phi: ActivationLike | None = None


@dataclass(frozen=True)
class Prediction:
    """What mean-field theory predicts a network's monitor to show at initialisation.

    Per hidden layer: ``q`` (variance of z), ``c`` (correlation of z between two inputs),
    ``activation_mean`` and ``activation_std`` (of φ(z) over samples and units), ``saturation`` and
    ``dead_units`` (the monitor's definitions), ``chi`` (E[δ^ℓ²]/E[δ^{ℓ+1}²] per unit). Per weight layer:
    ``grad_mean_abs`` (mean|∇W| relative to the last weight layer's). ``vanishing_ratio``: log10 of the
    first weight layer's mean|∇W| over the last's, as the monitor logs it. ``q_star`` … ``phase``: the
    fixed-point quantities of the last hidden layer's activation and (σ_w², σ_b²), what a deeper stack
    of that layer tends to. ``output_delta_correlation``: E[δ_b δ_b']/E[δ²] at the output, as used.
    """

    q: tuple[float, ...]
    c: tuple[float, ...]
    activation_mean: tuple[float, ...]
    activation_std: tuple[float, ...]
    saturation: tuple[float, ...]
    dead_units: tuple[float, ...]
    chi: tuple[float, ...]
    grad_mean_abs: tuple[float, ...]
    vanishing_ratio: float
    q_star: float
    c_star: float
    chi1_star: float
    xi_q: float
    xi_c: float
    phase: Phase
    output_delta_correlation: float


def bce_delta_correlation(q: Numbers, c: Numbers, rule: GaussianExpectation | None = None) -> float | torch.Tensor:
    """E[δ_b δ_b']/E[δ_b²] at a BCE-with-logits output of variance q and correlation c, balanced classes.

    δ = σ(z) − y with y ∈ {0, 1} equally likely and, at init, independent of z in expectation over the
    weights (the last layer's W and −W are equally likely, so E[σ(z) | x] = 1/2). Then
    E[δ²] = E[σ(z)²] − E[σ(z)] + 1/2 = E[σ(z)²] and, for two samples, E[δ_b δ_b'] = E[σ(u1)σ(u2)] − 1/4.
    """
    rule = rule or GAUSSIAN
    q, c = torch.broadcast_tensors(_tensor(q), _tensor(c))
    nodes = rule.pair_nodes(q.flatten(), q.flatten(), (q * c).flatten(), kinks=())
    sigma = torch.sigmoid(nodes.points)  # at z, u1 and u2: one call
    second = (nodes.w * sigma[:, 0] ** 2).sum(1)
    cross = nodes.outer(sigma[:, 1], nodes.inner(sigma[:, 2:], overwrite=True))
    ratio = ((cross - 0.25) / second).reshape(q.shape)
    return float(ratio) if ratio.dim() == 0 else ratio


def predict(
    layers: Sequence[LayerSpec],
    input_second_moment: float,
    input_correlation: float,
    batch_size: int,
    epsilon: float = 0.05,
    probe_samples: int = 200,
    output_delta_correlation: float | None = None,
    rule: GaussianExpectation | None = None,
    fixed_points: bool = True,
) -> Prediction:
    """The monitor's layer-by-layer measurements at initialisation, as mean-field theory predicts them.

    Forward: q and the covariance of two inputs, layer by layer (the maps above, with each layer's own
    σ_w², σ_b²). Backward: per-unit E[δ²] by χ^ℓ and E[δ_b δ_b'] by σ_w² E[φ'(u1)φ'(u2)] N_{ℓ+1}/N_ℓ,
    starting from the output's delta correlation. The loss is a mean over a batch of B, so a weight's
    gradient g = (1/B) Σ_b δ_b a_b has E[g²] = E[δ²]E[a²]/B + (1 − 1/B) E[δ_b δ_b'] E[a_b a_b']: inputs
    that look alike (c near 1) add their gradients coherently, unlike ones do not. mean|g| ∝ √E[g²]
    (Gaussian g; the constant cancels in ratios).

    Args:
        layers: the linear layers in order, every one but the last with its activation.
        input_second_moment: m_x, the mean over features of E[x_j²] (1 for standardised data).
        input_correlation: E[x·x']/(features·m_x) for two distinct inputs (≈ 0 for standardised data).
        batch_size: B of the loss's mean.
        epsilon, probe_samples: the monitor's ε and its probe set's size (dead units).
        output_delta_correlation: E[δ_b δ_b']/E[δ²] at the output; None: ``bce_delta_correlation`` (one
            logit, BCE with logits, balanced classes).
        rule: the quadrature (default ``GAUSSIAN``; ``FIT_RULE`` is coarser and about 20x faster).
        fixed_points: also q*, c*, χ₁*, ξ_q, ξ_c and the phase (iterations: the slowest part); else NaN and
            ``"not computed"``.

    Raises:
        ValueError: no hidden layer, an activation on the output layer or none on a hidden one, or
            fan-ins that do not match the previous fan-outs.
    """
    (prediction,) = predict_members(
        [layers], input_second_moment, input_correlation, batch_size, epsilon, probe_samples, output_delta_correlation,
        rule,
    )  # fmt: skip
    if not fixed_points:
        return prediction
    last, act = layers[-2], as_elementwise(layers[-2].phi)
    sw2, sb2 = float(last.sw2), float(last.sb2)
    q_star, c_star = _fixed_points(act, sw2, sb2)
    xi_q, xi_c = _depth_scales(act, sw2, sb2, q_star, c_star)
    chi1_star = float(chi1(act, sw2, min(q_star, DIVERGED))) if not math.isnan(q_star) else math.nan
    return replace(prediction, q_star=q_star, c_star=c_star, chi1_star=chi1_star, xi_q=xi_q, xi_c=xi_c,
                   phase=phase(act, sw2, sb2))  # fmt: skip


def predict_members(
    networks: Sequence[Sequence[LayerSpec]],
    input_second_moment: float,
    input_correlation: float,
    batch_size: int,
    epsilon: float = 0.05,
    probe_samples: int = 200,
    output_delta_correlation: float | None = None,
    rule: GaussianExpectation | None = None,
) -> list[Prediction]:
    """``predict`` (without the fixed points) for many networks, e.g. the members of a fit.

    Networks of one depth go through their layers together, whatever their activations: each layer's
    quadrature nodes are built once for all of them, and each activation object is called once per layer, for
    its value and slope at once, on the nodes of every network that has it there (so wrap an activation once
    with ``as_elementwise`` and pass that object: ``SignalTheory`` wraps each configuration of a torch.nn
    activation once). With ``FIT_RULE``, on one CPU core: 2.4 ms for the tutorial's network, 11 ms for the 15
    members of its study (5 activations), against 5.7 and 50 ms predicting each group of the same activations
    apart; most of what is left is arithmetic on the 2-D rule's ~10^4 nodes a network and layer.

    Raises:
        ValueError: as ``predict``.
    """
    rule = rule or GAUSSIAN
    together: dict[tuple[int, ...], list[int]] = {}  # networks of the same activations, next to each other
    wrapped = []
    for index, layers in enumerate(networks):
        hidden, output = layers[:-1], layers[-1]
        if not hidden or output.phi is not None or any(layer.phi is None for layer in hidden):
            raise ValueError("layers: one or more hidden layers with an activation, then the output layer without")
        if any(nxt.fan_in != prev.fan_out for prev, nxt in itertools.pairwise(layers)):
            raise ValueError("layers: each fan_in must equal the previous layer's fan_out")
        wrapped.append([as_elementwise(layer.phi) for layer in hidden])
        together.setdefault(tuple(map(id, wrapped[-1])), []).append(index)
    by_depth: dict[int, list[int]] = {}
    for signature, indices in together.items():
        by_depth.setdefault(len(signature), []).extend(indices)
    predictions: list[Prediction | None] = [None] * len(networks)
    for indices in by_depth.values():
        # ordinary tensors also inside inference mode (a fit's validation): autograd takes the nodes without a copy
        with torch.inference_mode(False), torch.no_grad():
            lockstep = _predict_lockstep(
                [networks[i] for i in indices], [wrapped[i] for i in indices], input_second_moment,
                input_correlation, batch_size, epsilon, probe_samples, output_delta_correlation, rule,
            )  # fmt: skip
        for index, prediction in zip(indices, lockstep, strict=True):
            predictions[index] = prediction
    return predictions  # type: ignore[return-value]


def _predict_lockstep(
    networks: Sequence[Sequence[LayerSpec]], acts: Sequence[Sequence[Elementwise]], input_second_moment: float,
    input_correlation: float, batch_size: int, epsilon: float, probe_samples: int,
    output_delta_correlation: float | None, rule: GaussianExpectation,
) -> list[Prediction]:  # fmt: skip
    """The forward and backward passes of ``predict`` for networks of one depth, as tensors (layer, network).

    The forward pass needs each layer's E[φ²] and E[φ(u1)φ(u2)] before the next; E[φ], E[φ'²] and E[φ'(u1)φ'(u2)]
    come from the same nodes and calls (``_layer_expectations``), saturation and dead units for all layers at the
    end (``_saturated_and_dead``).
    """
    hidden = len(acts[0])

    def per_layer(value: Callable[[LayerSpec], float]) -> torch.Tensor:
        return _tensor([[value(layers[ell]) for layers in networks] for ell in range(hidden + 1)])

    sw2, sb2 = per_layer(lambda layer: float(layer.sw2)), per_layer(lambda layer: float(layer.sb2))
    widths = per_layer(lambda layer: layer.fan_out / layer.fan_in)
    # Forward: second moment A and cross moment A' of each weight layer's input, and (q, q·c) of its output.
    ones = torch.ones(len(networks), dtype=DTYPE)
    a2, a_cross = [input_second_moment * ones], [input_correlation * input_second_moment * ones]
    q, c, mean, slope2, slope_cross = ([] for _ in range(5))
    for ell in range(hidden):
        q.append(sw2[ell] * a2[-1] + sb2[ell])
        c.append((sw2[ell] * a_cross[-1] + sb2[ell]) / q[-1])
        moments_l = _layer_expectations(rule, [network[ell] for network in acts], q[-1], c[-1])
        for values, moment in zip((mean, a2, slope2, a_cross, slope_cross), moments_l, strict=True):
            values.append(moment)
    q_out = sw2[hidden] * a2[-1] + sb2[hidden]
    c_out = (sw2[hidden] * a_cross[-1] + sb2[hidden]) / q_out
    rho = bce_delta_correlation(q_out, c_out, rule) if output_delta_correlation is None else output_delta_correlation
    rho = rho * ones
    q_all, c_all = torch.stack(q), torch.stack(c)  # (layer, network)
    every = [network[ell] for ell in range(hidden) for network in acts]  # in the order of q_all.flatten()
    saturation, dead = (t.reshape(q_all.shape) for t in _saturated_and_dead(
        every, q_all.flatten(), c_all.flatten(), epsilon, probe_samples))  # fmt: skip

    # Backward, from the output (E[δ²] = 1: only ratios are predicted).
    width = sw2[1:] * widths[1:]  # σ_w²(ℓ+1) N_{ℓ+1}/N_ℓ
    chi = width * torch.stack(slope2)
    d2, d_cross = [ones], [rho]
    for ell in reversed(range(hidden)):
        d2.insert(0, chi[ell] * d2[0])
        d_cross.insert(0, width[ell] * slope_cross[ell] * d_cross[0])
    b = batch_size
    g2 = torch.stack(d2) * torch.stack(a2) / b + (1 - 1 / b) * torch.stack(d_cross) * torch.stack(a_cross)
    grad = (g2.clamp(min=0) / g2[-1]).sqrt()
    ratio = torch.where(grad[0] > 0, grad[0].log10(), -math.inf)

    mean_all, second = torch.stack(mean), torch.stack(a2[1:])
    std = (second - mean_all**2).clamp(min=0).sqrt()
    layers = torch.stack([q_all, c_all, mean_all, std, saturation, dead, chi]).permute(2, 0, 1).tolist()
    return [
        Prediction(
            *map(tuple, rows),
            grad_mean_abs=tuple(grads),
            vanishing_ratio=vanishing,
            q_star=math.nan,
            c_star=math.nan,
            chi1_star=math.nan,
            xi_q=math.nan,
            xi_c=math.nan,
            phase="not computed",
            output_delta_correlation=out,
        )
        for rows, grads, vanishing, out in zip(layers, grad.T.tolist(), ratio.tolist(), rho.tolist(), strict=True)
    ]


def _layer_expectations(
    rule: GaussianExpectation, acts: Sequence[Elementwise], q: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """E[φ], E[φ²], E[φ'²] at q and E[φ(u1)φ(u2)], E[φ'(u1)φ'(u2)] at (q, c), network k with φ = ``acts[k]``.

    What ``moments`` and ``GaussianExpectation.pair`` give, from one set of nodes for all networks (nodes depend on
    q, c and φ's kinks, not on φ) and one call of each activation per run of networks that share it, on all of
    their nodes at once (value and slope from one autograd pass): the number of small tensor operations, which
    made most of a prediction's cost, no longer grows with the networks.
    """
    pairs = rule.pair_nodes(q, q, q * c, _kinks(acts))
    values, slopes, inner_values, inner_slopes = [], [], [], []
    start = 0
    for _, run in itertools.groupby(acts, key=id):
        rows = slice(start, start + sum(1 for _ in run))
        start = rows.stop
        value, slope = acts[rows.start].value_and_slope(pairs.points[rows])
        values.append(value[:, :2].clone())  # a copy, so that the run's whole tensor can go
        slopes.append(slope[:, :2].clone())
        inner_values.append(pairs.inner(value[:, 2:], rows, overwrite=True))
        inner_slopes.append(pairs.inner(slope[:, 2:], rows, overwrite=True))
    value, slope = torch.cat(values), torch.cat(slopes)  # (networks, 2, N1): at z, then at u1
    v, d = value[:, 0], slope[:, 0]
    return (
        (pairs.w * v).sum(1),
        (pairs.w * v * v).sum(1),
        (pairs.w * d * d).sum(1),
        pairs.outer(value[:, 1], torch.cat(inner_values)),
        pairs.outer(slope[:, 1], torch.cat(inner_slopes)),
    )


def _kinks(acts: Sequence[Elementwise]) -> tuple[float, ...] | torch.Tensor:
    """The activations' kinks for ``pair_nodes``: one tuple if they are all the same, else padded with NaN."""
    kinks = [act.kinks for act in acts]
    if all(k == kinks[0] for k in kinks):
        return kinks[0]
    most = max(map(len, kinks))
    return _tensor([[*k, *[math.nan] * (most - len(k))] for k in kinks])
