"""``ActivationMonitor``: per-layer gradients, saturation, dead units and activation statistics in TensorBoard.

The callback decides when to measure and writes what it measured; ``lit_activations.monitor`` finds
what to watch (``plan_watch``) and holds what is accumulated in between.
"""

from __future__ import annotations

import functools
import pkgutil
import re
from collections.abc import Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from tensorboard.compat.proto.summary_pb2 import HistogramProto
from torch import nn
from typing_extensions import override

from lit_activations import statistics as stats
from lit_activations.errors import ConfigError
from lit_activations.logger import member_loggers, write_histograms, write_note, write_scalars
from lit_activations.monitor import FitState, GradientEpoch, ProbePass, Tally, default_activation_types, plan_watch
from lit_activations.stacked import MemberActivation


class ActivationMonitor(Callback):
    """Logs how gradients and activations behave, layer by layer, for any LightningModule.

    What to watch comes from the model's structure alone (``lit_activations.monitor.plan_watch``):
    weight layers by type, activations by type or by a regular expression on module names, and
    with ``detect_elementwise`` any other leaf module the first probe pass shows to act element by
    element; never from a model's attribute names. Gradients are read just before each optimizer
    step; activations in a pass over the validation set (the probe set) with forward hooks attached
    for that pass only. The tags, what each means and when it is written, how DDP and a model of
    several members are handled: README.md, section "What is monitored".

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
        RuntimeError: at setup, the Trainer has no logger, the model has no layer to watch, or its watched
            layers hold different numbers of members.

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
            default_activation_types()
            if activation_types is None
            else tuple(_import_class(path, "activation_types") for path in activation_types)
        )
        self.activation_pattern = re.compile(activation_pattern) if activation_pattern else None
        self.detect_elementwise = detect_elementwise
        self._fit = FitState()  # replaced at every setup
        self._epoch: GradientEpoch | None = None  # the training epoch's gradient sums
        self._probe: ProbePass | None = None  # the probe pass under way, with its hooks

    # Lightning's hooks: when to measure.

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.loggers:
            raise RuntimeError("Cannot use `ActivationMonitor` with a Trainer that has no logger: set trainer.logger.")
        plan = plan_watch(
            pl_module,
            layer_types=self.layer_types,
            activation_types=self.activation_types,
            activation_pattern=self.activation_pattern,
            detect_elementwise=self.detect_elementwise,
        )
        self._fit = FitState(plan=plan, loggers=member_loggers(trainer, plan.num_members))
        self._epoch = self._probe = None

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._fit.plan.params and not self._fit.activations and not self._fit.candidates:
            self._note_unseen_activations(trainer, pl_module)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        plan = self._fit.plan
        if plan.params:
            self._epoch = GradientEpoch(plan.num_members, histograms_due=self._histogram_epoch(trainer))

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """After AMP unscaling, gradient accumulation and DDP's all-reduce: the gradients the step applies."""
        plan, epoch = self._fit.plan, self._epoch
        if not plan.params or epoch is None:
            return
        with torch.no_grad():  # a fifth cheaper on this hot path
            weight_grads = [_grad(w) for w in plan.weights.values()]
            epoch.add(weight_grads)  # stays on the device: no host sync on steps that do not log
            logging = trainer.global_step % trainer.log_every_n_steps == 0
            if not (logging or epoch.histograms_due):
                return
            grads = {name: _grad(p) for name, p in plan.params.items()}
            if logging:
                self._log_gradients(trainer, grads, stats.gradient_norms(weight_grads, 1, plan.num_members))
        if epoch.histograms_due:
            epoch.histograms_due = False
            members = plan.num_members
            self._histograms(trainer, {f"grad/{name}": grad.reshape(members, -1) for name, grad in grads.items()})

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = self._epoch
        if not self._fit.plan.weights or epoch is None or not epoch.steps:
            return
        self._log_epoch_gradients(trainer, epoch)
        self._log_activation_parameters(trainer)

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        if self._fit.activations or self._fit.candidates:
            self._probe = ProbePass(self._fit, self.epsilon, keep_rows=self._histogram_epoch(trainer))

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        probe = self._probe
        if probe is None:
            return
        self._remove_hooks()
        if not self._fit.activations and not self._fit.candidates:  # the leaf modules tried were not activations
            self._note_unseen_activations(trainer, pl_module)
        tallies = {name: t for name, t in probe.tallies.items() if t.small is not None}
        if tallies:
            self._log_probe(trainer, tallies)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._remove_hooks()  # Lightning calls on_exception, not teardown, when fit raises

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove_hooks()

    # What is measured, turned into each member's rows of tags.

    def _log_gradients(self, trainer: Trainer, grads: dict[str, torch.Tensor], l1_norms: torch.Tensor) -> None:
        """This step's ``grad_norm/``, ``grad_mean_abs/`` and ``vanishing_ratio/step``."""
        l2_norms = stats.gradient_norms(list(grads.values()), 2, self._fit.plan.num_members)
        norm_tags, mean_tags = _tags("grad_norm", tuple(grads)), _tags("grad_mean_abs", tuple(self._fit.plan.weights))
        rows = []
        for values in torch.cat([l2_norms, l1_norms]).T.tolist():  # (K, params + weights): one host sync
            mean_abs = self._mean_abs(values[len(grads) :])
            row = dict(zip(norm_tags, values, strict=False))
            row.update(zip(mean_tags, mean_abs, strict=True))
            rows.append(row | _vanishing(mean_abs, "step"))
        self._log(trainer, rows)

    def _log_epoch_gradients(self, trainer: Trainer, epoch: GradientEpoch) -> None:
        """The epoch's ``grad_mean_abs_epoch/`` and ``vanishing_ratio/epoch``, from every step's ‖∇W‖₁."""
        tags = _tags("grad_mean_abs_epoch", tuple(self._fit.plan.weights))
        rows = []
        for l1_means in (epoch.l1_sums() / epoch.steps).T.tolist():  # (K, weights): one host sync
            mean_abs = self._mean_abs(l1_means)
            rows.append(dict(zip(tags, mean_abs, strict=True)) | _vanishing(mean_abs, "epoch"))
        self._log(trainer, rows)

    def _mean_abs(self, l1_norms: list[float]) -> list[float]:
        """Each watched weight's mean |grad| from its ‖∇W‖₁, in the plan's order."""
        return [stats.mean_abs(l1, n) for n, l1 in zip(self._fit.plan.weight_numels, l1_norms, strict=True)]

    def _log_probe(self, trainer: Trainer, tallies: dict[str, Tally]) -> None:
        """The probe pass's statistics per module and member, and its pre-activation histograms."""
        fit, k_members = self._fit, self._fit.plan.num_members
        # One all-reduce for every layer's counts, so the fractions describe the whole probe set, then one host sync.
        reduced = trainer.strategy.reduce(torch.cat([t.packed().flatten() for t in tallies.values()]), reduce_op="sum")
        rows: list[dict[str, float]] = [{} for _ in range(k_members)]
        descriptions: list[dict[str, str]] = [{} for _ in range(k_members)]
        histograms = {f"preactivation/{name}": torch.cat(t.rows, dim=1) for name, t in tallies.items() if t.rows}
        host, start = reduced.tolist(), 0
        for name, tally in tallies.items():
            width, tags = tally.small.shape[1] + 4, _tags(name, Tally.STATISTICS, suffix=True)
            for row in rows:  # member k's row of this layer: host[start : start + width]
                row.update(zip(tags, Tally.statistics(host[start : start + width]), strict=True))
                start += width
            if name not in fit.described:  # TensorBoard keeps a tag's first description
                fit.described.add(name)
                for described, threshold in zip(descriptions, fit.thresholds[name].tolist(), strict=True):
                    described |= self._describe(name, threshold)
        self._histograms(trainer, histograms)
        self._log(trainer, rows, descriptions)

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

    def _log_activation_parameters(self, trainer: Trainer) -> None:
        """Each member's learnable activation parameters: scalars when small, histograms otherwise."""
        if not any(next(module.parameters(), None) is not None for module in self._fit.activations.values()):
            return  # (asking each member's block of each module for its parameters cost 0.2 ms an epoch at 15)
        k_members = self._fit.plan.num_members
        rows: list[dict[str, float]] = [{} for _ in range(k_members)]
        large: dict[str, list[torch.Tensor]] = {}  # tag -> each member's values, for histograms
        for name, module in self._fit.activations.items():
            for k, row in enumerate(rows):
                for pname, p in _owner(module, k).named_parameters():  # member k's own (its block's, if stacked)
                    tag, values = f"activation_param/{name}.{pname}", p.detach().flatten()
                    if values.numel() > 16:
                        large.setdefault(tag, []).append(values)
                    elif values.numel() == 1:
                        row[tag] = values.item()
                    else:
                        row |= {f"{tag}/{i}": v for i, v in enumerate(values.tolist())}
        # members with different activations: no histogram of a mix
        self._histograms(trainer, {tag: torch.stack(v) for tag, v in large.items() if len(v) == k_members})
        if any(rows):
            self._log(trainer, rows)

    def _note_unseen_activations(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Say, once a fit, why the activation tags are missing and how to get them."""
        if self._fit.unseen_noted:
            return
        self._fit.unseen_noted = True
        write_note(
            trainer,
            "notes/activation_monitor",
            f"ActivationMonitor: no activation module in {type(pl_module).__name__} (one called as a function, such"
            " as F.relu in forward, has no module to hook), so its runs get no saturation/, dead_units/,"
            " activation_mean/ or activation_std/ tags; make each activation a module (nn.ReLU() in __init__, called"
            " in forward)",
        )

    # Writing: each member's rows to its own run.

    def _histogram_epoch(self, trainer: Trainer) -> bool:
        every = self.histogram_every_n_epochs
        return every > 0 and trainer.current_epoch % every == 0

    def _log(
        self, trainer: Trainer, rows: list[dict[str, float]], descriptions: list[dict[str, str]] | None = None
    ) -> None:
        """Row k (and its tags' descriptions) to member k's loggers."""
        descriptions = descriptions or [{} for _ in rows]
        for loggers, metrics, described in zip(self._fit.loggers, rows, descriptions, strict=True):
            for logger in loggers:
                write_scalars(logger, metrics, trainer.global_step, described)  # loggers write on rank 0 only

    def _histograms(self, trainer: Trainer, values: dict[str, torch.Tensor]) -> None:
        """For each tag, one histogram per member of its values (K, ...), with 30 bins over the member's range.

        Computed for every member at once (``stats.histograms``), with one host sync for all tags, and
        written as one event per member holding every tag: TensorBoard's ``add_histogram`` on each member's
        values took 0.8 ms, which a fit of many members pays K times per tag.
        """
        if not trainer.is_global_zero or not values:
            return
        parts = []  # per tag and member: 30 counts, 31 edges, Σx, Σx², min, max, as float64 (counts stay exact)
        for tensor in values.values():
            tensor = tensor.detach().reshape(len(tensor), -1)
            counts, edges = stats.histograms(tensor, bins=30)
            double = tensor.double()
            moments = torch.stack([double.sum(1), double.square().sum(1), tensor.amin(1), tensor.amax(1)], dim=1)
            parts.append(torch.cat([counts.double(), edges.double(), moments.double()], dim=1))
        host = torch.stack(parts).tolist()  # (tags, K, 65): one host sync for every tag
        sizes = {tag: tensor[0].numel() for tag, tensor in values.items()}
        for k, loggers in enumerate(self._fit.loggers):
            histograms = {}
            for (tag, num), row in zip(sizes.items(), host, strict=True):
                counts, edges, (total, squares, low, high) = row[k][:30], row[k][30:61], row[k][61:]
                # TensorBoard reads each bucket's right limit: a first empty bucket carries the left edge
                histograms[tag] = HistogramProto(
                    min=low, max=high, num=num, sum=total, sum_squares=squares, bucket_limit=edges,
                    bucket=[0, *counts],
                )  # fmt: skip
            for logger in loggers:
                write_histograms(logger, histograms, trainer.global_step)

    def _remove_hooks(self) -> None:
        if self._probe is not None:
            self._probe.stop()
            self._probe = None


def _vanishing(mean_abs: list[float], when: str) -> dict[str, float]:
    """``vanishing_ratio/<when>`` from the weights' mean|grad|, in module order: the layer nearest the input first."""
    if not mean_abs:
        return {}
    return {f"vanishing_ratio/{when}": stats.vanishing_ratio(mean_abs[0], mean_abs[-1])}


@functools.cache
def _tags(prefix: str, names: tuple[str, ...], suffix: bool = False) -> tuple[str, ...]:
    """``prefix/name`` for each name (``name/prefix`` with ``suffix``), made once: a fit of K members writes each K
    times an epoch."""
    return tuple(f"{name}/{prefix}" if suffix else f"{prefix}/{name}" for name in names)


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
