"""``ActivationMonitor``: per-layer gradients, saturation, dead units and activation statistics in TensorBoard."""

from __future__ import annotations

import pkgutil
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from lit_activations import statistics as stats
from lit_activations.activations import NOT_ELEMENTWISE, elementwise_classes
from lit_activations.errors import ConfigError
from lit_activations.logger import member_loggers, write_note, write_scalars
from lit_activations.stacked import MemberActivation

_HISTOGRAM_ROWS = 10_000  # pre-activation rows kept per layer for a histogram
# Leaf modules that can act element by element without being activations.
_NEVER_ACTIVATIONS = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                      nn.FeatureAlphaDropout, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
                      nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm,
                      nn.LocalResponseNorm)  # fmt: skip


class ActivationMonitor(Callback):
    """Logs how gradients and activations behave, layer by layer, for any LightningModule.

    Weight layers are found by type (``layer_types``); activations by type (``activation_types``,
    by default every element-wise activation of ``torch.nn`` and of the registry) or by a regular
    expression on module names (``activation_pattern``), never by attribute names of a model.

    Gradients are read in ``on_before_optimizer_step``: after AMP unscaling, after gradient
    accumulation and after DDP's all-reduce. Every ``log_every_n_steps`` (the Trainer's):

    - ``grad_norm/<param>``: ‖∇W‖₂, weights and biases apart;
    - ``grad_mean_abs/<weight>``: ‖∇W‖₁ / numel(W), for the weights (the tutorial's metric);
    - ``vanishing_ratio/step``: log10(mean|grad| of the first weight / of the last weight).

    At the end of each training epoch, from every step of the epoch:

    - ``grad_mean_abs_epoch/<weight>``: the epoch mean of mean|grad| (the tutorial's curve);
    - ``vanishing_ratio/epoch``: the same ratio from those epoch means.

    Every ``every_n_epochs``, on the validation set (the probe set), with forward hooks attached
    for that pass only, per activation module (z its input, f'(z) by autograd):

    - ``saturation/<module>``: share of (sample, unit) pairs with |f'(z)| < ``epsilon`` · sup|f'|;
    - ``dead_units/<module>``: share of units whose slope is that small for every sample;
    - ``activation_mean/<module>``, ``activation_std/<module>``: of the output f(z).

    At the end of each training epoch, the parameters of every watched activation that has any
    (PReLU's slopes, a user's learnable β): ``activation_param/<module>.<param>`` as a scalar (one
    per element, ``…/<i>``, up to 16 elements) or a histogram beyond that.

    sup|f'| is measured by autograd on [-20, 20] once per module, so a user's own activation works
    unchanged. Under DDP the counts are summed across ranks before the fractions are formed, and
    only rank 0 writes. Every ``histogram_every_n_epochs`` (0: never), TensorBoard histograms of
    the pre-activations (``preactivation/<module>``, rank 0's share of the probe set) and of the
    weight gradients at the first step of the epoch (``grad/<param>``).

    A model that trains K members side by side (modules with a ``num_members`` attribute, see
    ``lit_activations.stacked``) gets every value above per member, under the same tags, in each
    member's own run (``TensorBoardRunLogger``); any other model is one member.

    Args:
        epsilon: a slope is small below ``epsilon`` times sup|f'|; in (0, 1).
        every_n_epochs: measure activations on every n-th epoch's validation; >= 1.
        histogram_every_n_epochs: log histograms every n-th epoch; 0 turns them off.
        layer_types: import paths of the weight layers to watch.
        activation_types: import paths of activation classes; ``None`` takes every element-wise
            activation class of ``torch.nn`` and of ``lit_activations.activations.ACTIVATIONS``.
        activation_pattern: also watch modules whose qualified name fully matches this regex.
        detect_elementwise: also watch any other leaf module that the first probe pass shows to act element
            by element (``statistics.is_elementwise``), so a user's own activation needs no flag; dropout,
            normalisation and ``nn.Identity`` are never taken for activations.

    Raises:
        ValueError: an argument out of range or a class path that does not import.
        RuntimeError: at setup, the Trainer has no logger or the model has no layer to watch.

    Example::

        trainer = Trainer(callbacks=[ActivationMonitor(epsilon=0.05)], logger=TensorBoardLogger("logs"))
    """

    def __init__(
        self,
        epsilon: float = 0.05,
        every_n_epochs: int = 1,
        histogram_every_n_epochs: int = 10,
        layer_types: Sequence[str] = (
            "torch.nn.Linear",
            "torch.nn.Conv1d",
            "torch.nn.Conv2d",
            "torch.nn.Conv3d",
            "lit_activations.stacked.MemberLinear",
        ),
        activation_types: Sequence[str] | None = None,
        activation_pattern: str | None = None,
        detect_elementwise: bool = True,
    ) -> None:
        if not 0 < epsilon < 1:
            raise ConfigError(f"invalid ActivationMonitor epsilon {epsilon!r}; expected a number in (0, 1)")
        if every_n_epochs < 1:
            raise ConfigError(f"invalid ActivationMonitor every_n_epochs {every_n_epochs!r}; expected an integer >= 1")
        if histogram_every_n_epochs < 0:
            raise ConfigError(
                f"invalid ActivationMonitor histogram_every_n_epochs {histogram_every_n_epochs!r};"
                " expected an integer >= 0 (0 turns histograms off)"
            )
        self.epsilon = epsilon
        self.every_n_epochs = every_n_epochs
        self.histogram_every_n_epochs = histogram_every_n_epochs
        self.layer_types = tuple(_import_class(path, "layer_types") for path in layer_types)
        self.activation_types = (
            (*elementwise_classes(), MemberActivation)
            if activation_types is None
            else tuple(_import_class(path, "activation_types") for path in activation_types)
        )
        self.activation_pattern = re.compile(activation_pattern) if activation_pattern else None
        self.detect_elementwise = detect_elementwise
        self._state = _RunState()

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.loggers:
            raise RuntimeError("Cannot use `ActivationMonitor` with a Trainer that has no logger: set trainer.logger.")
        layers = {name: m for name, m in pl_module.named_modules() if isinstance(m, self.layer_types)}
        params = {
            f"{name}.{pname}": p
            for name, module in layers.items()
            for pname, p in module.named_parameters(recurse=False)
            if p.requires_grad
        }
        activations: dict[str, nn.Module] = {}
        for name, module in pl_module.named_modules():
            if any(name.startswith(f"{outer}.") for outer in activations):
                continue  # inside an activation already watched, e.g. a block of a MemberActivation
            if (isinstance(module, self.activation_types) and not isinstance(module, NOT_ELEMENTWISE)) or (
                self.activation_pattern is not None and self.activation_pattern.fullmatch(name)
            ):
                activations[name] = module
        candidates = {
            name: module
            for name, module in pl_module.named_modules()
            if self.detect_elementwise
            and name
            and next(module.children(), None) is None
            and name not in activations
            and not any(name.startswith(f"{outer}.") for outer in activations)
            and not isinstance(module, (*self.layer_types, *_NEVER_ACTIVATIONS))
        }
        if not params and not activations and not candidates:
            raise RuntimeError(
                f"`ActivationMonitor` found no layer of types {[t.__name__ for t in self.layer_types]} and no"
                f" activation in {type(pl_module).__name__}: set layer_types, activation_types or activation_pattern."
            )
        # a module without a member axis is one member
        counts = {getattr(module, "num_members", 1) for module in [*layers.values(), *activations.values()]}
        if len(counts) > 1:
            raise RuntimeError(
                f"`ActivationMonitor` found layers with different numbers of members {sorted(counts)} in"
                f" {type(pl_module).__name__}: every watched layer must hold all the model's members."
            )
        num_members = counts.pop() if counts else 1
        if num_members > 1:
            candidates = {}  # a model of members keeps its activations in its member-stacked modules
        weights = {name: p for name, p in params.items() if name.endswith(".weight")}
        stacked = {name for name, module in activations.items() if hasattr(module, "num_members")}
        self._state = _RunState(
            params=params,
            weights=weights,
            weight_numels=[p.numel() // num_members for p in weights.values()],
            activations=activations,
            candidates=candidates,
            stacked_activations=stacked,
            num_members=num_members,
            loggers=member_loggers(trainer, num_members),
        )

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state = self._state
        if state.params and not state.activations and not state.candidates:
            self._note_unseen_activations(trainer, pl_module)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state = self._state
        if not state.params:
            return
        state.l1_sums = torch.zeros(len(state.weights), state.num_members, device=pl_module.device)
        state.epoch_steps = 0
        state.grad_histograms_due = self._histogram_epoch(trainer)

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        state = self._state
        if not state.params or state.l1_sums is None:
            return
        with torch.no_grad():  # a fifth cheaper on this hot path
            l1_norms = stats.gradient_norms([_grad(w) for w in state.weights.values()], 1, state.num_members)
            state.l1_sums += l1_norms  # stays on the device: no host sync on steps that do not log
            state.epoch_steps += 1
            logging = trainer.global_step % trainer.log_every_n_steps == 0
            if not (logging or state.grad_histograms_due):
                return
            grads = {name: _grad(p) for name, p in state.params.items()}
            if logging:
                self._log_gradients(trainer, grads, l1_norms)
        if state.grad_histograms_due:
            state.grad_histograms_due = False
            for name, grad in grads.items():
                self._histogram(trainer, f"grad/{name}", grad.reshape(state.num_members, -1))

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state = self._state
        if not state.weights or not state.epoch_steps:
            return
        rows = []
        for l1_means in (state.l1_sums / state.epoch_steps).T.tolist():  # (K, weights): one host sync
            mean_abs = self._mean_abs(l1_means)
            rows.append({f"grad_mean_abs_epoch/{name}": value for name, value in mean_abs.items()})
            rows[-1] |= self._vanishing(mean_abs, "epoch")
        self._log(trainer, rows)
        self._log_activation_parameters(trainer)

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state = self._state
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        if not state.activations and not state.candidates:
            return
        state.keep_rows = self._histogram_epoch(trainer)
        state.tallies = {name: _Tally(keep_rows=state.keep_rows) for name in state.activations}
        state.hooks = [
            module.register_forward_hook(self._tally_hook(name, stacked=name in state.stacked_activations))
            for name, module in state.activations.items()
        ] + [module.register_forward_hook(self._candidate_hook(name)) for name, module in state.candidates.items()]

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state = self._state
        if not state.hooks:
            return
        self._remove_hooks()
        tallies = {name: t for name, t in state.tallies.items() if t.small is not None}
        state.tallies = {}
        if not state.activations and not state.candidates:  # the leaf modules tried were not activations either
            self._note_unseen_activations(trainer, pl_module)
        if not tallies:
            return
        # One all-reduce for every layer's counts, so the fractions describe the whole probe set, then one host sync.
        reduced = trainer.strategy.reduce(torch.cat([t.packed().flatten() for t in tallies.values()]), reduce_op="sum")
        rows: list[dict[str, float]] = [{} for _ in range(state.num_members)]
        descriptions: list[dict[str, str]] = [{} for _ in range(state.num_members)]
        for name, tally in tallies.items():
            size = tally.small.numel() + 4 * state.num_members
            layer, reduced = reduced[:size].reshape(state.num_members, -1).tolist(), reduced[size:]
            for row, packed in zip(rows, layer, strict=True):
                row |= {f"{stat}/{name}": value for stat, value in _Tally.statistics(packed).items()}
            if name not in state.described:  # TensorBoard keeps a tag's first description
                state.described.add(name)
                for described, threshold in zip(descriptions, state.thresholds[name].tolist(), strict=True):
                    described |= self._describe(name, threshold)
            if tally.rows:
                self._histogram(trainer, f"preactivation/{name}", torch.cat(tally.rows, dim=1))
        self._log(trainer, rows, descriptions)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._remove_hooks()  # Lightning calls on_exception, not teardown, when fit raises

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove_hooks()

    def _note_unseen_activations(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Say, once a fit, why the activation tags are missing and how to get them."""
        if self._state.unseen_noted:
            return
        self._state.unseen_noted = True
        write_note(
            trainer,
            "notes/activation_monitor",
            f"ActivationMonitor: no activation module in {type(pl_module).__name__} (one called as a function, such"
            " as F.relu in forward, has no module to hook), so its runs get no saturation/, dead_units/,"
            " activation_mean/ or activation_std/ tags; make each activation a module (nn.ReLU() in __init__, called"
            " in forward)",
        )

    def _candidate_hook(self, name: str):
        """On a module not known as an activation: if its first call is element-wise, watch it from this call on."""
        tally = self._tally_hook(name, stacked=False)

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            state = self._state
            if state.candidates.pop(name, None) is not None:  # judged once, on its first call
                if not inputs or not stats.is_elementwise(module, inputs[0], output):
                    return
                state.activations[name] = module
                state.tallies[name] = _Tally(keep_rows=state.keep_rows)
            if name in state.activations:
                tally(module, inputs, output)

        return hook

    def _tally_hook(self, name: str, stacked: bool):
        """The probe pass's forward hook; a module that is not member-stacked gets a member axis of 1."""

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            state = self._state
            z = inputs[0]
            if name not in state.thresholds:
                n_units = z.shape[-1 if stacked else 1] if z.dim() > 1 + stacked else 1
                slopes = stats.max_slopes(module, n_units, state.num_members if stacked else None)
                state.thresholds[name] = self.epsilon * slopes.to(z.device)
            slopes = stats.local_slopes(module, z)
            if not stacked:
                z, output, slopes = z.unsqueeze(0), output.unsqueeze(0), slopes.unsqueeze(0)
            state.tallies[name].add(z, output, stats.small_slope_counts(slopes, state.thresholds[name]))

        return hook

    def _log_gradients(self, trainer: Trainer, grads: dict[str, torch.Tensor], l1_norms: torch.Tensor) -> None:
        l2_norms = stats.gradient_norms(list(grads.values()), 2, self._state.num_members)
        rows = []
        for values in torch.cat([l2_norms, l1_norms]).T.tolist():  # (K, params + weights): one host sync
            mean_abs = self._mean_abs(values[len(grads) :])
            metrics = {f"grad_norm/{name}": value for name, value in zip(grads, values, strict=False)}
            metrics |= {f"grad_mean_abs/{name}": value for name, value in mean_abs.items()}
            rows.append(metrics | self._vanishing(mean_abs, "step"))
        self._log(trainer, rows)

    def _mean_abs(self, l1_norms: list[float]) -> dict[str, float]:
        names, numels = self._state.weights, self._state.weight_numels
        return {name: stats.mean_abs(l1, n) for name, n, l1 in zip(names, numels, l1_norms, strict=True)}

    @staticmethod
    def _vanishing(mean_abs: dict[str, float], when: str) -> dict[str, float]:
        if not mean_abs:
            return {}
        values = list(mean_abs.values())  # in module order: the layer nearest the input first
        return {f"vanishing_ratio/{when}": stats.vanishing_ratio(values[0], values[-1])}

    def _histogram_epoch(self, trainer: Trainer) -> bool:
        every = self.histogram_every_n_epochs
        return every > 0 and trainer.current_epoch % every == 0

    def _log_activation_parameters(self, trainer: Trainer) -> None:
        """Each member's learnable activation parameters: scalars when small, histograms otherwise."""
        k_members = self._state.num_members
        rows: list[dict[str, float]] = [{} for _ in range(k_members)]
        large: dict[str, list[torch.Tensor]] = {}  # tag -> each member's values, for histograms
        for name, module in self._state.activations.items():
            for k, row in enumerate(rows):
                for pname, p in _owner(module, k).named_parameters():  # member k's own (its block's, if stacked)
                    tag, values = f"activation_param/{name}.{pname}", p.detach().flatten()
                    if values.numel() > 16:
                        large.setdefault(tag, []).append(values)
                    elif values.numel() == 1:
                        row[tag] = values.item()
                    else:
                        row |= {f"{tag}/{i}": v for i, v in enumerate(values.tolist())}
        for tag, values in large.items():
            if len(values) == k_members:  # members with different activations: no histogram of a mix
                self._histogram(trainer, tag, torch.stack(values))
        if any(rows):
            self._log(trainer, rows)

    def _describe(self, name: str, threshold: float) -> dict[str, str]:
        """What saturation and dead units of module ``name`` mean, with the threshold that makes 0.00 explain itself."""
        small = (
            f"|f'(z)| < {self.epsilon} x sup|f'| = {self.epsilon} x {threshold / self.epsilon:.4g} = {threshold:.3g}"
        )
        return {
            f"saturation/{name}": f"Share of (sample, unit) pairs with a small slope, {small}: ReLU's inactive side,"
            " the flat tails of sigmoid and tanh (which a slope 0.05 x 0.25 = 0.0125 reaches only beyond |z| = 4.4"
            " for sigmoid); never for identity. --monitor.epsilon sets the factor.",
            f"dead_units/{name}": f"Share of units whose slope is small, {small}, for every sample of the probe"
            " set: units that pass no gradient (a ReLU that never fires, a tanh saturated on every input).",
        }

    def _log(
        self, trainer: Trainer, rows: list[dict[str, float]], descriptions: list[dict[str, str]] | None = None
    ) -> None:
        descriptions = descriptions or [{} for _ in rows]
        for loggers, metrics, described in zip(self._state.loggers, rows, descriptions, strict=True):
            for logger in loggers:
                write_scalars(logger, metrics, trainer.global_step, described)  # loggers write on rank 0 only

    def _histogram(self, trainer: Trainer, tag: str, values: torch.Tensor) -> None:
        """One histogram per member of ``values`` (K, ...), with 30 bins over the member's range.

        Computed for every member at once (``stats.histograms``): TensorBoard's ``add_histogram``
        on each member's values took 0.8 ms, which a fit of many members pays K times per tag.
        """
        if not trainer.is_global_zero:
            return
        values = values.detach().reshape(len(values), -1)
        counts, edges = stats.histograms(values, bins=30)
        summary = torch.stack([values.double().sum(1), values.double().square().sum(1), values.amin(1), values.amax(1)])
        counts, edges, (sums, squares, lows, highs) = counts.tolist(), edges.tolist(), summary.tolist()  # one sync
        for k, loggers in enumerate(self._state.loggers):
            for logger in loggers:
                if isinstance(logger, TensorBoardLogger):
                    # TensorBoard reads each bucket's right limit: a first empty bucket carries the left edge
                    logger.experiment.add_histogram_raw(
                        tag, min=lows[k], max=highs[k], num=values.shape[1], sum=sums[k], sum_squares=squares[k],
                        bucket_limits=edges[k], bucket_counts=[0, *counts[k]],
                        global_step=trainer.global_step,
                    )  # fmt: skip

    def _remove_hooks(self) -> None:
        for handle in self._state.hooks:
            handle.remove()
        self._state.hooks = []


@dataclass
class _Tally:
    """Running sums over the probe set for one activation module, per member."""

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
        if self.keep_rows and self.kept < _HISTOGRAM_ROWS:
            rows = stats.units_last(z)[:, : _HISTOGRAM_ROWS - self.kept].detach().clone()
            self.rows.append(rows)
            self.kept += rows.shape[1]

    def packed(self) -> torch.Tensor:
        """Everything that adds up across ranks, (K, n + 4): [small per unit..., Σa, Σa², samples, values]."""
        counts = self.moments.new_tensor([self.samples, self.values]).expand(len(self.moments), 2)
        return torch.cat([self.small.double(), self.moments, counts], dim=1)

    @staticmethod
    def statistics(packed: list[float]) -> dict[str, float]:
        """The logged statistics of one member from its (summed over ranks) row of ``packed()``."""
        small, (total, total_sq, samples, values) = packed[:-4], packed[-4:]
        mean, std = stats.mean_and_std(total, total_sq, values)
        return {
            "saturation": stats.saturation_fraction(small, samples),
            "dead_units": stats.dead_unit_fraction(small, samples),
            "activation_mean": mean,
            "activation_std": std,
        }


@dataclass
class _RunState:
    """What the callback learns at setup and accumulates while running; reset at every setup."""

    params: dict[str, nn.Parameter] = field(default_factory=dict)
    activations: dict[str, nn.Module] = field(default_factory=dict)
    candidates: dict[str, nn.Module] = field(default_factory=dict)  # to judge on the first probe pass
    keep_rows: bool = False  # this probe pass keeps pre-activations for histograms
    stacked_activations: set[str] = field(default_factory=set)  # those that take (K, B, n)
    weights: dict[str, nn.Parameter] = field(default_factory=dict)  # the ".weight" entries of params
    weight_numels: list[int] = field(default_factory=list)  # elements of one member's weight
    num_members: int = 1
    loggers: list[list[Logger]] = field(default_factory=list)  # each member's
    l1_sums: torch.Tensor | None = None  # (weights, K): Σ over the epoch's steps of ‖∇W‖₁
    epoch_steps: int = 0
    grad_histograms_due: bool = False
    thresholds: dict[str, torch.Tensor] = field(default_factory=dict)  # (K,): epsilon · sup|f'|
    described: set[str] = field(default_factory=set)  # modules whose tags carry their description already
    tallies: dict[str, _Tally] = field(default_factory=dict)
    hooks: list[RemovableHandle] = field(default_factory=list)
    unseen_noted: bool = False  # said that no activation could be watched


def _owner(module: nn.Module, member: int) -> nn.Module:
    """The module whose parameters are ``member``'s: its block of a ``MemberActivation``, or the module itself."""
    return module.blocks[module.block_of(member)] if isinstance(module, MemberActivation) else module


def _grad(p: nn.Parameter) -> torch.Tensor:
    return p.grad if p.grad is not None else torch.zeros_like(p)  # a layer the loss did not reach


def _import_class(path: str, argument: str) -> type:
    try:
        cls = pkgutil.resolve_name(path)
    except (ImportError, AttributeError, ValueError):
        cls = None
    if not isinstance(cls, type):
        raise ConfigError(f"invalid ActivationMonitor {argument} entry {path!r}; expected the import path of a class")
    return cls
