"""What ``ActivationMonitor`` watches in a model, and what it keeps while a fit runs.

``plan_watch`` reads a model's structure alone (no Trainer, no logger, no data) and returns a frozen
``WatchPlan``: the weight layers and parameters to watch, the activation modules and the member
count. The rest is the callback's state, one class per lifetime, so that nothing outlives its
reason to exist:

- ``FitState``, from one setup to the next: the plan, each member's loggers, and what probe passes
  learn once per fit (activations detected on data, ε · sup|f'| per module, tags described);
- ``GradientEpoch``, one training epoch: the running sums of ‖∇W‖₁;
- ``ProbePass``, one hooked pass over the probe set: its forward hooks and a ``Tally`` per module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.hooks import RemovableHandle

from lit_activations import statistics as stats
from lit_activations.activations import NOT_ELEMENTWISE, elementwise_classes
from lit_activations.stacked import MemberActivation

HISTOGRAM_ROWS = 10_000  # pre-activation rows kept per layer for a histogram
# Leaf modules that can act element by element without being activations.
NEVER_ACTIVATIONS = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                     nn.FeatureAlphaDropout, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
                     nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm,
                     nn.LocalResponseNorm)  # fmt: skip

ForwardHook = Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]


def default_activation_types() -> tuple[type[nn.Module], ...]:
    """Every element-wise activation class of ``torch.nn`` and of the registry, and ``MemberActivation``, which
    holds a model of members' activations whatever they are."""
    return (*elementwise_classes(), MemberActivation)


@dataclass(frozen=True)
class WatchPlan:
    """What to watch in one model, found from its structure by ``plan_watch``.

    Every mapping is keyed by qualified module name (parameters: ``<layer>.<param>``) in the order
    of ``named_modules``, so the layer nearest the input comes first, as the vanishing ratio needs.
    Frozen, and never changed: activations that only a probe pass reveals among ``candidates`` go to
    ``FitState.detected``.
    """

    layers: Mapping[str, nn.Module] = field(default_factory=dict)  # the weight layers
    params: Mapping[str, nn.Parameter] = field(default_factory=dict)  # their trainable parameters
    weights: Mapping[str, nn.Parameter] = field(default_factory=dict)  # the ".weight" entries of params
    weight_numels: tuple[int, ...] = ()  # elements of one member's share of each weight
    activations: Mapping[str, nn.Module] = field(default_factory=dict)
    stacked: frozenset[str] = frozenset()  # the activations with a member axis: they take (K, B, n)
    candidates: Mapping[str, nn.Module] = field(default_factory=dict)  # leaf modules to judge on the first probe pass
    num_members: int = 1


def plan_watch(
    model: nn.Module,
    *,
    layer_types: Sequence[type[nn.Module]],
    activation_types: Sequence[type[nn.Module]] | None = None,
    activation_pattern: str | re.Pattern[str] | None = None,
    detect_elementwise: bool = True,
) -> WatchPlan:
    """What ``ActivationMonitor`` watches in ``model``, with the options of the same names.

    Weight layers are the modules of ``layer_types``; activations those of ``activation_types``
    (``None``: ``default_activation_types()``) that are element-wise, or whose qualified name fully
    matches ``activation_pattern``; a module inside an activation is not looked at again. With
    ``detect_elementwise``, every other leaf module that is neither a weight layer nor one of
    ``NEVER_ACTIVATIONS`` is a candidate, unless the model holds several members, whose activations
    are in their member-stacked modules. Attribute names of the model are never used.

    Raises:
        RuntimeError: nothing to watch, or watched modules that hold different numbers of members.
    """
    layer_types = tuple(layer_types)
    pattern = re.compile(activation_pattern) if activation_pattern else None
    layers = {name: m for name, m in model.named_modules() if isinstance(m, layer_types)}
    params = {
        f"{name}.{pname}": p
        for name, module in layers.items()
        for pname, p in module.named_parameters(recurse=False)
        if p.requires_grad
    }
    types = default_activation_types() if activation_types is None else tuple(activation_types)
    activations = _activations(model, types, pattern)
    candidates = _candidates(model, layer_types, activations) if detect_elementwise else {}
    if not params and not activations and not candidates:
        raise RuntimeError(
            f"`ActivationMonitor` found no layer of types {[t.__name__ for t in layer_types]} and no"
            f" activation in {type(model).__name__}: set layer_types, activation_types or activation_pattern."
        )
    num_members = _num_members(model, [*layers.values(), *activations.values()])
    weights = {name: p for name, p in params.items() if name.endswith(".weight")}
    return WatchPlan(
        layers=layers,
        params=params,
        weights=weights,
        weight_numels=tuple(p.numel() // num_members for p in weights.values()),
        activations=activations,
        stacked=frozenset(name for name, module in activations.items() if hasattr(module, "num_members")),
        candidates=candidates if num_members == 1 else {},
        num_members=num_members,
    )


def _activations(
    model: nn.Module, types: tuple[type[nn.Module], ...], pattern: re.Pattern[str] | None
) -> dict[str, nn.Module]:
    """The element-wise modules of ``types`` and those named by ``pattern``, outermost only."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if _inside(name, found):
            continue  # e.g. a block of a MemberActivation
        if (isinstance(module, types) and not isinstance(module, NOT_ELEMENTWISE)) or (
            pattern is not None and pattern.fullmatch(name)
        ):
            found[name] = module
    return found


def _candidates(
    model: nn.Module, layer_types: tuple[type[nn.Module], ...], activations: Mapping[str, nn.Module]
) -> dict[str, nn.Module]:
    """The leaf modules that might be activations nobody named: the first probe pass judges them."""
    return {
        name: module
        for name, module in model.named_modules()
        if name
        and next(module.children(), None) is None
        and name not in activations
        and not _inside(name, activations)
        and not isinstance(module, (*layer_types, *NEVER_ACTIVATIONS))
    }


def _inside(name: str, outer: Mapping[str, nn.Module]) -> bool:
    return any(name.startswith(f"{o}.") for o in outer)


def _num_members(model: nn.Module, modules: list[nn.Module]) -> int:
    """The members every watched module holds (``num_members``; a module without one is one member)."""
    counts = {getattr(module, "num_members", 1) for module in modules}
    if len(counts) > 1:
        raise RuntimeError(
            f"`ActivationMonitor` found layers with different numbers of members {sorted(counts)} in"
            f" {type(model).__name__}: every watched layer must hold all the model's members."
        )
    return counts.pop() if counts else 1


@dataclass
class FitState:
    """What the monitor knows from one setup to the next; a new one at every setup.

    Probe passes add to it what holds for the whole fit: the candidates judged element-wise, each
    module's threshold ε · sup|f'| (sup|f'| is measured once, by autograd), and the tags whose
    TensorBoard description is written already (TensorBoard keeps a tag's first one).
    """

    plan: WatchPlan = field(default_factory=WatchPlan)
    loggers: list[list[Logger]] = field(default_factory=list)  # each member's
    detected: dict[str, nn.Module] = field(default_factory=dict)  # candidates found element-wise, in that order
    judged: set[str] = field(default_factory=set)  # candidates seen by a probe pass, element-wise or not
    thresholds: dict[str, torch.Tensor] = field(default_factory=dict)  # (K,): epsilon · sup|f'|
    described: set[str] = field(default_factory=set)
    unseen_noted: bool = False  # said that no activation could be watched

    @property
    def activations(self) -> dict[str, nn.Module]:
        """The activations watched now: the plan's, then those detected."""
        return {**self.plan.activations, **self.detected}

    @property
    def candidates(self) -> dict[str, nn.Module]:
        """The candidates still to judge: those no probe pass has called yet."""
        return {name: m for name, m in self.plan.candidates.items() if name not in self.judged}


@dataclass
class GradientEpoch:
    """One training epoch's gradient accumulators; a new one at every epoch start.

    Σ over the epoch's steps of each member's ‖∇W‖₁ per weight, kept on the device (no host sync), in two
    fused calls a step: one network sums the norms (``_foreach_norm``, ``_foreach_add_``); members sum |∇W|
    element by element (``_foreach_abs``, ``_foreach_add_``, where a norm per member and weight took a call
    each) and take each member's sum at the epoch's end.
    """

    num_members: int
    histograms_due: bool  # the gradient histograms wait for the epoch's first optimizer step
    steps: int = 0
    _sums: list[torch.Tensor] | None = None

    def add(self, grads: list[torch.Tensor]) -> None:
        """One optimizer step's gradients of the watched weights."""
        self.steps += 1
        if self.num_members == 1:
            norms = torch._foreach_norm(grads, 1)
            if self._sums is None:
                self._sums = list(norms)
            else:
                torch._foreach_add_(self._sums, norms)
        elif self._sums is None:
            self._sums = torch._foreach_abs(grads)
        else:
            torch._foreach_add_(self._sums, torch._foreach_abs(grads))

    def l1_sums(self) -> torch.Tensor:
        """(weights, K): Σ over the epoch's steps of ‖∇W‖₁ of each weight and member."""
        if self.num_members == 1:
            return torch.stack(self._sums).unsqueeze(1)
        return torch.stack([s.reshape(self.num_members, -1).sum(1) for s in self._sums])


class ProbePass:
    """One pass over the probe set: forward hooks on the activations and candidates, a ``Tally`` for each.

    The hooks live from construction to ``stop()``, so the model carries none outside the pass.

    Args:
        fit: the fit's state; the pass adds detected activations and thresholds to it.
        epsilon: a slope is small below ``epsilon`` · sup|f'|.
        keep_rows: keep pre-activations for histograms.
    """

    def __init__(self, fit: FitState, epsilon: float, keep_rows: bool) -> None:
        self.fit, self.epsilon, self.keep_rows = fit, epsilon, keep_rows
        activations = fit.activations
        self.tallies = {name: Tally(keep_rows=keep_rows) for name in activations}
        self.hooks: list[RemovableHandle] = [
            module.register_forward_hook(self._tally_hook(name, stacked=name in fit.plan.stacked))
            for name, module in activations.items()
        ] + [module.register_forward_hook(self._candidate_hook(name)) for name, module in fit.candidates.items()]

    def stop(self) -> None:
        """Remove the hooks."""
        for handle in self.hooks:
            handle.remove()
        self.hooks = []

    def _candidate_hook(self, name: str) -> ForwardHook:
        """On a module not known as an activation: if its first call is element-wise, watch it from this call on.

        This detection needs data, so it is the one part of what to watch that ``plan_watch`` cannot find.
        """
        tally = self._tally_hook(name, stacked=False)

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            fit = self.fit
            if name not in fit.judged:  # judged once, on its first call
                fit.judged.add(name)
                if not inputs or not stats.is_elementwise(module, inputs[0], output):
                    return
                fit.detected[name] = module
                self.tallies[name] = Tally(keep_rows=self.keep_rows)
            if name in fit.detected:
                tally(module, inputs, output)

        return hook

    def _tally_hook(self, name: str, stacked: bool) -> ForwardHook:
        """Count small slopes and output moments; a module that is not member-stacked gets a member axis of 1."""

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            z = inputs[0]
            threshold = self._threshold(name, module, z, stacked)
            slopes = slopes_of(module, z, output)
            if not stacked:
                z, output, slopes = z.unsqueeze(0), output.unsqueeze(0), slopes.unsqueeze(0)
            self.tallies[name].add(z, output, stats.small_slope_counts(slopes, threshold))

        return hook

    def _threshold(self, name: str, module: nn.Module, z: torch.Tensor, stacked: bool) -> torch.Tensor:
        """ε · sup|f'| of ``module`` per member, measured on its first call of the fit (``slopes_of``: autograd, or
        the formula that gives autograd's values, so a user's own activation works unchanged)."""
        fit = self.fit
        if name not in fit.thresholds:
            n_units = z.shape[-1 if stacked else 1] if z.dim() > 1 + stacked else 1
            if isinstance(module, MemberActivation):  # each block once, on the 2-D grid it would get alone
                slopes = torch.cat([stats.max_slopes(block, n_units, slopes=slopes_of).expand(size)
                                    for block, size in zip(module.blocks, module.sizes, strict=True)])  # fmt: skip
            else:
                slopes = stats.max_slopes(module, n_units, fit.plan.num_members if stacked else None, slopes=slopes_of)
            fit.thresholds[name] = self.epsilon * slopes.to(z.device)
        return fit.thresholds[name]


def slopes_of(module: nn.Module, z: torch.Tensor, output: torch.Tensor | None = None) -> torch.Tensor:
    """f'(z) of a watched module that gave ``output`` (if known) for ``z``: by the formula of torch's own backward where
    ``stats.known_slopes`` knows the module, else by autograd (``stats.local_slopes``); a ``MemberActivation`` block
    by block (autograd for the blocks only that need it): the probe pass's slopes in half the time for the tutorial
    study's members, and sup|f'| at the fit's start (``stats.max_slopes``) in a fraction of it."""
    if not isinstance(module, MemberActivation):
        return stats.slopes(module, z, output)
    parts, outputs = [], output.split(module.sizes) if output is not None else [None] * len(module.sizes)
    for block, (z_part, out_part) in enumerate(zip(z.split(module.sizes), outputs, strict=True)):
        known = stats.known_slopes(module.blocks[block], z_part, out_part)
        parts.append(known if known is not None else stats.local_slopes(partial(module.block_forward, block), z_part))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


@dataclass
class Tally:
    """Running sums over the probe set for one activation module, per member."""

    STATISTICS = ("saturation", "dead_units", "activation_mean", "activation_std")  # the tags, before /<module>

    keep_rows: bool
    small: torch.Tensor | None = None  # (K, n) samples with a small slope, per member and unit
    moments: torch.Tensor | None = None  # (K, 2): [Σa, Σa²] per member
    samples: int = 0  # per member
    values: int = 0  # per member
    rows: list[torch.Tensor] = field(default_factory=list)  # (K, rows, n) pre-activations, for histograms
    kept: int = 0

    def add(self, z: torch.Tensor, a: torch.Tensor, small: torch.Tensor) -> None:
        """``z``, ``a``: (K, B, n, ...); ``small``: (K, n)."""
        a = a.detach().double().reshape(a.shape[0], -1)
        moments = torch.stack([a.sum(1), a.square().sum(1)], dim=1)
        self.small = small if self.small is None else self.small + small
        self.moments = moments if self.moments is None else self.moments + moments
        self.samples += z[0].numel() // small.shape[1]
        self.values += a.shape[1]
        if self.keep_rows and self.kept < HISTOGRAM_ROWS:
            rows = stats.units_last(z)[:, : HISTOGRAM_ROWS - self.kept].detach().clone()
            self.rows.append(rows)
            self.kept += rows.shape[1]

    def packed(self) -> torch.Tensor:
        """Everything that adds up across ranks, (K, n + 4): [small per unit..., Σa, Σa², samples, values]."""
        counts = self.moments.new_tensor([self.samples, self.values]).expand(len(self.moments), 2)
        return torch.cat([self.small.double(), self.moments, counts], dim=1)

    @staticmethod
    def statistics(packed: list[float]) -> tuple[float, float, float, float]:
        """The logged statistics of one member (``STATISTICS``) from its (summed over ranks) row of ``packed()``."""
        small, (total, total_sq, samples, values) = packed[:-4], packed[-4:]
        mean, std = stats.mean_and_std(total, total_sq, values)
        return stats.saturation_fraction(small, samples), stats.dead_unit_fraction(small, samples), mean, std
