"""``SignalTheory``: what mean-field theory predicts for the monitored quantities, logged beside them.

At the start of training, and on every epoch the ``ActivationMonitor`` measures the probe set, each
run gets ``theory/<tag>/<activation>`` for the monitor's ``activation_mean``, ``activation_std``,
``saturation`` and ``dead_units``, with ``theory/q/<activation>`` (the pre-activation variance),
``theory/chi/<activation>`` (the factor by which a layer scales the back-propagated signal's second
moment) and ``theory/vanishing_ratio``, all computed by ``lit_activations.theory`` from the
weights' current per-layer second moments, the data's second moment and the network's widths. While
the weights are random, prediction and measurement agree; where training moves the weights away
from that regime, they part. TensorBoard's CUSTOM SCALARS tab shows each measured tag and its
prediction in one chart.

Predictions need the network's path: an ``nn.Sequential`` of linear layers and element-wise
activations holding every linear layer of the model (``find_chain``), as ``ActivationMLP`` is. Any
other model gets the measurements only, and one line saying so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from typing_extensions import override

from lit_activations import theory
from lit_activations.callbacks import ActivationMonitor
from lit_activations.errors import ConfigError
from lit_activations.logger import member_loggers, write_note, write_scalars
from lit_activations.stacked import MemberActivation, MemberLinear

# The monitor's tags that have a prediction, and the prediction's own (per hidden activation).
PREDICTED = ("activation_mean", "activation_std", "saturation", "dead_units")
PER_LAYER = (*PREDICTED, "q", "chi")


@dataclass(frozen=True)
class Chain:
    """A network as theory sees it: linear layers with an element-wise activation between each two.

    ``linears[i]`` feeds ``activations[i]``; the last linear layer is the output. Names are the
    modules' qualified names, as the monitor's tags use them.
    """

    linears: tuple[tuple[str, nn.Module], ...]
    activations: tuple[tuple[str, nn.Module], ...]
    num_members: int

    def layers(self, member: int, wrap: Callable[[nn.Module], Any] = lambda module: module) -> list[theory.LayerSpec]:
        """Member ``member``'s layers with the variances its weights have now; ``wrap`` gives each activation
        module to the theory (e.g. a cached ``theory.Elementwise``)."""
        return self.networks(wrap, [member])[0]

    def networks(
        self, wrap: Callable[[nn.Module], Any] = lambda module: module, members: Sequence[int] | None = None
    ) -> list[list[theory.LayerSpec]]:
        """``layers`` of each of ``members`` (None: all), each linear layer's variances measured for all members at
        once (a ``MemberLinear``'s weight holds them all)."""
        variances = []
        for _, linear in self.linears:
            sw2, sb2 = theory.measured_variances(linear.weight, linear.bias)  # (K,), or 0-d for an nn.Linear
            variances.append((sw2.reshape(-1).tolist(), sb2.reshape(-1).tolist()))
        networks = []
        for member in range(self.num_members) if members is None else members:
            specs = []
            for i, ((_, linear), (sw2, sb2)) in enumerate(zip(self.linears, variances, strict=True)):
                n_out, n_in = linear.weight.shape[-2:]
                phi = wrap(_member_activation(self.activations[i][1], member)) if i < len(self.activations) else None
                specs.append(theory.LayerSpec(n_in, n_out, sw2[member], sb2[member], phi))
            networks.append(specs)
        return networks


def find_chain(model: nn.Module) -> Chain | None:
    """The ``nn.Sequential`` in ``model`` that alternates linear layers (``nn.Linear``, ``MemberLinear``) and other
    modules, starts and ends with a linear layer, holds every linear layer of the model and whose widths connect;
    ``None`` if there is none (a residual network, say: its signal does not follow one path)."""
    every_linear = {id(m) for m in model.modules() if isinstance(m, nn.Linear | MemberLinear)}
    for prefix, module in model.named_modules():
        if not isinstance(module, nn.Sequential) or len(module) < 3 or len(module) % 2 == 0:
            continue
        children = [(f"{prefix}.{name}" if prefix else name, child) for name, child in module.named_children()]
        linears, activations = children[0::2], children[1::2]
        if not all(isinstance(m, nn.Linear | MemberLinear) for _, m in linears):
            continue
        if any(isinstance(m, nn.Linear | MemberLinear | nn.Sequential) for _, m in activations):
            continue
        if {id(m) for _, m in linears} != every_linear:
            continue
        shapes = [_member_parameters(m, 0)[0].shape for _, m in linears]  # (out, in)
        if any(before[0] != after[1] for before, after in pairwise(shapes)):
            continue
        members = {getattr(m, "num_members", 1) for _, m in children}
        if len(members) == 1:
            return Chain(tuple(linears), tuple(activations), members.pop())
    return None


class SignalTheory(Callback):
    """Logs mean-field theory's predictions beside the monitor's measurements (``theory/...`` tags).

    It takes ε from the ``ActivationMonitor`` of the same Trainer (without one, 0.05), and predicts on
    every ``every_n_epochs``-th epoch that the monitor measures (its own ``every_n_epochs``, or every
    epoch without one). Predictions use ``theory.FIT_RULE`` (within 1e-5 of the exact rule) and leave out
    the fixed points, which ``python -m lit_activations theory`` prints. See the module's docstring and
    the README's "What theory predicts" for the tags and what they mean.

    Args:
        every_n_epochs: predict on every n-th of the monitor's epochs (the start of training always): a
            prediction costs about 3 ms for the tutorial's network and 13 ms for its study's 15 members on a CPU
            core, against about 30 and 45 ms for their epochs; every 25th (with the decision-boundary images)
            gives 13 points over the tutorial's 300 epochs and keeps the theory well within 2% of its fits
            (``benchmarks/theory_cost.py``). A short experiment predicts more often
            (``configs/experiments/selu_deep.yaml``: every epoch).
    """

    def __init__(self, every_n_epochs: int = 25) -> None:
        if every_n_epochs < 1:
            raise ConfigError(f"invalid theory every_n_epochs {every_n_epochs!r}; expected an integer >= 1")
        self.every_n_epochs = every_n_epochs
        self._chain: Chain | None = None
        self._inputs: tuple[float, float, int] | None = None  # second moment, correlation, global batch size
        self._epsilon, self._monitor_every, self._probe_samples = 0.05, 1, 200
        self._wrapped: dict[int, theory.Elementwise] = {}  # parameter-free activations, wrapped once per fit
        self._shared: dict[Any, theory.Elementwise] = {}  # the same, by configuration (``_wrap``)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._chain, self._inputs, self._wrapped, self._shared = None, None, {}, {}
        if stage != "fit" or not trainer.loggers:
            return
        chain = find_chain(pl_module)
        if chain is None:
            write_note(
                trainer,
                "theory",
                f"theory: {type(pl_module).__name__} is not one nn.Sequential of linear layers and element-wise"
                " activations, so nothing predicts its measurements; its runs get the measurements only",
            )
            return
        self._chain = chain
        monitor = next((c for c in trainer.callbacks if isinstance(c, ActivationMonitor)), None)
        if monitor is not None:
            self._epsilon, self._monitor_every = monitor.epsilon, monitor.every_n_epochs

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._chain is None:
            return
        self._probe_samples = _probe_samples(trainer) or self._probe_samples
        for logger_list in member_loggers(trainer, self._chain.num_members):
            for logger in logger_list:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_custom_scalars(_layout(self._chain))

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._chain is None or self._inputs is not None:
            return
        x = batch[0] if isinstance(batch, Sequence) else None
        if not isinstance(x, torch.Tensor):
            write_note(trainer, "theory", "theory: the training batch is not (inputs, ...): nothing predicted")
            self._chain = None
            return
        self._inputs = (*input_moments(x), len(x) * trainer.world_size)
        self._log(trainer)

    @override
    def state_dict(self) -> dict[str, Any]:
        """The inputs' moments, in the checkpoint: a resumed fit predicts from the same ones, and does not log its
        start again."""
        return {"inputs": self._inputs}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        inputs = state_dict.get("inputs")
        self._inputs = tuple(inputs) if inputs is not None else None

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._chain is None or self._inputs is None or trainer.sanity_checking:
            return
        if trainer.current_epoch % (self._monitor_every * self.every_n_epochs):
            return
        self._log(trainer)

    def predictions(self) -> list[dict[str, float]]:
        """Each member's tags and predicted values from its weights as they are now."""
        assert self._chain is not None and self._inputs is not None
        moment, correlation, batch_size = self._inputs
        networks = self._chain.networks(self._wrap)
        predictions = theory.predict_members(
            networks, moment, correlation, batch_size, self._epsilon, self._probe_samples, rule=theory.FIT_RULE
        )  # all members together, layer by layer
        return [tags_of(prediction, [name for name, _ in self._chain.activations]) for prediction in predictions]

    def _wrap(self, module: nn.Module) -> theory.Elementwise:
        """The activation for the theory: as its parameters are now if it has any; else wrapped once per fit, torch.nn's
        own modules once per configuration (their repr holds all of it): every layer's and member's nn.ReLU() is one
        activation, whose one-time costs (kinks, sup|φ'|, small-slope sets) are paid once and whose nodes go in one
        call."""
        if id(module) in self._wrapped:
            return self._wrapped[id(module)]
        if next(module.parameters(), None) is not None:
            return theory.as_elementwise(module)
        stateless = type(module).__module__.startswith("torch.nn.") and next(module.buffers(), None) is None
        key = (type(module), repr(module)) if stateless else id(module)
        if key not in self._shared:
            self._shared[key] = theory.as_elementwise(module)
        self._wrapped[id(module)] = self._shared[key]
        return self._wrapped[id(module)]

    def _log(self, trainer: Trainer) -> None:
        with torch.no_grad():
            rows = self.predictions()
        for loggers, row in zip(member_loggers(trainer, len(rows)), rows, strict=True):
            for logger in loggers:
                write_scalars(logger, row, trainer.global_step)


def tags_of(prediction: theory.Prediction, activations: Sequence[str]) -> dict[str, float]:
    """A prediction as the ``theory/...`` tags of one run; non-finite values are left out."""
    row = {f"theory/{key}/{name}": float(getattr(prediction, key)[i])
           for key in PER_LAYER for i, name in enumerate(activations)}  # fmt: skip
    row["theory/vanishing_ratio"] = float(prediction.vanishing_ratio)
    return {tag: value for tag, value in row.items() if math.isfinite(value)}


def input_moments(x: torch.Tensor) -> tuple[float, float]:
    """The inputs' mean second moment per feature, and the mean correlation between two different samples'
    inputs (x·x'/n over the second moment), from one batch."""
    x = x.detach().flatten(1).double()
    second = float(x.pow(2).mean())
    b, n = x.shape
    if b < 2 or second == 0:
        return second, 0.0
    gram = x @ x.T / n
    off_diagonal = (gram.sum() - gram.diagonal().sum()) / (b * (b - 1))
    return second, float(off_diagonal) / second


def _layout(chain: Chain) -> dict[str, dict[str, list[Any]]]:
    """TensorBoard's custom-scalars layout: each measured tag with its prediction in one chart."""
    charts: dict[str, list[Any]] = {}
    for key in PREDICTED:
        for name, _ in chain.activations:
            charts[f"{key}/{name}"] = ["Multiline", [rf"^{re.escape(f'{key}/{name}')}$",
                                                     rf"^{re.escape(f'theory/{key}/{name}')}$"]]  # fmt: skip
    charts["vanishing_ratio"] = ["Multiline", [r"^vanishing_ratio/epoch$", r"^theory/vanishing_ratio$"]]
    return {"measured and predicted": charts}


def _member_parameters(linear: nn.Module, member: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Member ``member``'s weight (out, in) and bias of a linear layer."""
    if isinstance(linear, MemberLinear):
        return linear.weight[member].detach(), linear.bias[member].detach()
    return linear.weight.detach(), None if linear.bias is None else linear.bias.detach()


def _member_activation(module: nn.Module, member: int) -> nn.Module:
    return module.blocks[module.block_of(member)] if isinstance(module, MemberActivation) else module


def _probe_samples(trainer: Trainer) -> int:
    """The samples of the probe set (the validation data), where its loaders say; 0 if they do not."""
    loaders = trainer.val_dataloaders
    loaders = loaders if isinstance(loaders, Sequence) else [loaders] if loaders is not None else []
    try:
        return sum(len(loader.dataset) for loader in loaders)
    except (TypeError, AttributeError):
        return 0
