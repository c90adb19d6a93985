"""The MLP whose hidden activation is the experiment's variable, as one network or K members at once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import pairwise
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.nn import functional as F

from lit_activations.activations import InitName, create_activation, get_activation
from lit_activations.errors import ConfigError
from lit_activations.logger import log_member_scalars
from lit_activations.members import Member
from lit_activations.metrics import MemberMean
from lit_activations.stacked import MemberActivation, stack_networks


class ActivationMLP(LightningModule):
    """Linear → act → … → Linear: a classifier whose hidden activations are the experiment's variable.

    Every hidden layer gets the same activation, or each its own (``activation`` as a list, one
    name per hidden layer). Each hidden layer gets its own activation instance, so learnable
    activations (PReLU) learn a parameter per layer.

    With ``members`` the module trains K independent networks side by side (``lit_activations.members``):
    the same shapes, init scheme, output and optimizer, each with its own activation and seed. Its
    layers hold the members on dim 0 (``lit_activations.stacked``), the loss is the sum of the
    members' own mean losses, so each member's gradient is that of a single fit, and every epoch
    metric is logged to each member's own run. One network is simply K = 1.

    Args:
        activation: a name from ``lit_activations.activations.ACTIVATIONS`` (identity, sigmoid,
            tanh, lecun_tanh, relu, relu6, leaky_relu, prelu, elu, selu, gelu, silu, mish, softplus)
            or the import path of any ``torch.nn.Module`` class, e.g. ``torch.nn.Hardtanh``; or a
            list of them, one per hidden layer, e.g. ``[relu, tanh]``.
        activation_args: keyword arguments of the activation, e.g. ``{negative_slope: 0.1}``; with a
            list of activations, a list of them (or ``null``) one per layer, or one for every layer.
        hidden_sizes: width of each hidden layer; the tutorial's network is ``[5, 5, 5, 5]``.
        init: weight initialisation of every linear layer: ``default`` keeps PyTorch's,
            ``xavier`` (uniform), ``kaiming`` (normal, ReLU gain), ``lecun_normal`` (N(0, 1/fan_in));
            non-default inits zero the biases. ``auto`` picks the activation's recommended one.
        output: for two classes, ``logit`` trains one raw output with ``BCEWithLogitsLoss``
            (numerically stable) and ``sigmoid`` puts it through a sigmoid and trains with ``BCELoss``,
            as the tutorial does; for any number of classes, ``softmax`` trains one logit per class
            with ``CrossEntropyLoss`` (which applies log-softmax itself: no ``nn.Softmax`` layer goes
            before it), and the softmax gives the probabilities.
        in_features: input size; the CLI links it to the data module's ``num_features``.
        num_classes: classes of the data; the CLI links it to the data module's ``num_classes``.
        optimizer: builds the optimizer from the parameters (default Adam, lr 1e-3).
        scheduler: optionally builds a learning-rate scheduler from the optimizer; ``ReduceLROnPlateau``
            watches ``val/loss``.
        members: the members, as ``Member.as_dict()`` entries; the CLI sets them from
            ``--members.activations`` and ``--members.seeds``. ``None``: one network of ``activation``.
    """

    def __init__(
        self,
        activation: str | list[str] = "relu",
        activation_args: dict[str, Any] | list[dict[str, Any] | None] | None = None,
        hidden_sizes: Sequence[int] = (5, 5, 5, 5),
        init: Literal["auto", "default", "xavier", "kaiming", "lecun_normal"] = "default",
        output: Literal["logit", "sigmoid", "softmax"] = "logit",
        in_features: int = 2,
        num_classes: int = 2,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        members: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        hidden_sizes = list(hidden_sizes)
        if not hidden_sizes or any(not isinstance(n, int) or n < 1 for n in hidden_sizes):
            raise ConfigError(f"invalid model.hidden_sizes {hidden_sizes!r}; expected a list of integers >= 1: [5, 5]")
        if output not in ("logit", "sigmoid", "softmax"):
            raise ConfigError(f"invalid model.output {output!r}; expected one of: logit, sigmoid, softmax")
        if num_classes < 2 or (num_classes > 2 and output != "softmax"):
            raise ConfigError(
                f"invalid model.output {output!r} for data of {num_classes} classes; expected softmax"
                " (logit and sigmoid are one output for two classes)"
            )
        if init != "auto" and init not in _WEIGHT_INITS:
            raise ConfigError(f"invalid model.init {init!r}; expected one of: auto, {', '.join(_WEIGHT_INITS)}")
        self.members = [Member(**m) for m in members] if members else [Member(activation, activation_args)]
        for member in self.members:
            _layer_activations(member, len(hidden_sizes))  # fails early: an unknown name, a list of another length
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer, self.scheduler = optimizer, scheduler

        out_features = num_classes if output == "softmax" else 1
        networks = _member_networks(self.members, in_features, hidden_sizes, out_features, init)
        self.net = stack_networks(networks, groups=[(m.activation, m.activation_args) for m in self.members])

        # Epoch means per member. The training loss of each step is kept and the metric updated once per
        # epoch: logging on every step cost 25% of a tutorial step, and a metric update 3%.
        num_members = len(self.members)
        self.train_loss, self.val_loss, self.val_acc, self.test_loss, self.test_acc = (
            MemberMean(num_members) for _ in range(5)
        )
        self._step_losses: list[tuple[torch.Tensor, int]] = []  # (per-member loss, batch size) of this epoch's steps
        self.last_epoch_metrics: list[dict[str, float]] = [{} for _ in self.members]  # each member's latest values

    @property
    def num_members(self) -> int:
        return len(self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's output per sample: (K, B), a logit or with ``output=sigmoid`` a probability of
        class 1; with ``output=softmax``, (K, B, classes) logits. A sample of several dimensions (an
        image) is taken as its ``in_features`` values in a row."""
        out = self.net(x.flatten(1))
        if self.hparams.output == "softmax":
            return out
        out = out.squeeze(-1)
        return torch.sigmoid(out) if self.hparams.output == "sigmoid" else out

    def to_probabilities(self, out: torch.Tensor) -> torch.Tensor:
        """Turn ``forward``'s output into probabilities: of class 1 (K, B), or of each class (K, B, classes)."""
        if self.hparams.output == "softmax":
            return out.softmax(-1)
        return out if self.hparams.output == "sigmoid" else torch.sigmoid(out)

    def predicted_classes(self, out: torch.Tensor) -> torch.Tensor:
        """The class each member predicts for each point, (K, B)."""
        return out.argmax(-1) if self.hparams.output == "softmax" else (self.to_probabilities(out) > 0.5).long()

    def member_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's mean loss over the batch, shape (K,)."""
        if self.hparams.output == "softmax":
            k, b, classes = out.shape
            losses = F.cross_entropy(out.reshape(k * b, classes), y.long().repeat(k), reduction="none")
            return losses.view(k, b).mean(-1)
        y = y.expand_as(out)
        if self.hparams.output == "sigmoid":
            return F.binary_cross_entropy(out, y, reduction="none").mean(-1)
        return F.binary_cross_entropy_with_logits(out, y, reduction="none").mean(-1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        losses = self.member_losses(self(x), y)
        self._step_losses.append((losses.detach(), len(x)))
        return losses.sum()  # the members' gradients stay their own: d(sum)/dθₖ = d(lossₖ)/dθₖ

    def on_train_epoch_end(self) -> None:
        if not self._step_losses:
            return
        losses, sizes = zip(*self._step_losses, strict=True)
        self._step_losses = []
        self.train_loss.update(torch.stack(losses), weight=torch.tensor(sizes, device=self.device))
        self._log_members({"train/loss": self.train_loss.compute()})
        self.train_loss.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_acc)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val", self.val_loss, self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_acc)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test", self.test_loss, self.test_acc)

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """The probability of each class per sample: (B, classes), with (K, B, classes) for K members."""
        probabilities = self.to_probabilities(self(batch[0]))
        if self.hparams.output != "softmax":  # P(class 1) alone: both classes
            probabilities = torch.stack([1 - probabilities, probabilities], dim=-1)
        return probabilities[0] if self.num_members == 1 else probabilities

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        scheduler = self.scheduler(optimizer)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):  # it needs a metric to watch
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def member_model(self, k: int) -> ActivationMLP:
        """Member ``k`` as a model of its own: the network a single fit of its activation and seed holds."""
        member = self.members[k]
        hparams = {key: value for key, value in self.hparams.items() if not key.startswith("_")}
        hparams |= {"activation": member.activation, "activation_args": member.as_dict()["activation_args"]}
        single = ActivationMLP(**hparams | {"members": None}, optimizer=self.optimizer, scheduler=self.scheduler)
        single.load_state_dict(self.member_state_dict(k))
        return single

    def member_state_dict(
        self, k: int, state_dict: Mapping[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Member ``k``'s entries of ``state_dict`` (default: this model's), keyed as in a model of one member."""
        state_dict = self.state_dict() if state_dict is None else state_dict
        member: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.net):
            prefix = f"net.{index}."
            if isinstance(layer, MemberActivation):
                own, prefix = f"{prefix}blocks.{layer.block_of(k)}.", f"{prefix}blocks.0."
                member |= {prefix + key.removeprefix(own): value for key, value in state_dict.items()
                           if key.startswith(own)}  # fmt: skip
            else:
                member |= {key: value[k : k + 1].clone() for key, value in state_dict.items() if key.startswith(prefix)}
        return member

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], loss: MemberMean, accuracy: MemberMean) -> None:
        x, y = batch
        out = self(x)
        correct = (self.predicted_classes(out) == y.long()).double().mean(-1)
        loss.update(self.member_losses(out, y), weight=len(x))
        accuracy.update(correct, weight=len(x))

    def _log_epoch_metrics(self, stage: str, loss: MemberMean, accuracy: MemberMean) -> None:
        if loss.update_count == 0:
            return
        self._log_members({f"{stage}/loss": loss.compute(), f"{stage}/acc": accuracy.compute()})
        loss.reset()
        accuracy.reset()

    def _log_members(self, values: dict[str, torch.Tensor]) -> None:
        """Write each member's values (tag -> (K,)) to its own run.

        One network's values also go to the progress bar and ``trainer.callback_metrics``, for callbacks
        that watch a metric (early stopping, a checkpoint's monitor); in a fit of several members no
        metric speaks for all of them (the CLI refuses such callbacks), and ``last_epoch_metrics`` has each.
        """
        if self.num_members == 1:
            for tag, value in values.items():
                # already the mean over every process (torchmetrics); sync_dist averages equal values, and spares
                # DDP users Lightning's warning that an epoch-level value may not have been reduced
                self.log(tag, value.reshape(()).float(), prog_bar=True, logger=False, sync_dist=True)
        if self.trainer.sanity_checking:
            return
        # (K, tags): one host sync; reshape, as torchmetrics returns a one-element result as a 0-d tensor
        columns = torch.stack([v.reshape(-1) for v in values.values()], dim=1).tolist()
        rows = [dict(zip(values, row, strict=True)) | {"epoch": self.current_epoch} for row in columns]
        for last, row in zip(self.last_epoch_metrics, rows, strict=True):
            last |= row
        log_member_scalars(self.trainer, rows, step=self.global_step)


def _member_networks(
    members: Sequence[Member], in_features: int, hidden_sizes: list[int], out_features: int, init: str
) -> list[nn.Sequential]:
    """Each member's network, drawn exactly as a single fit with its seed draws it.

    A member without a seed starts from the generator's state at this call, which is where a single
    fit's model starts after ``seed_everything``; a member with one reseeds first, as that fit's
    ``seed_everything`` would.
    """
    start = torch.get_rng_state()
    networks = []
    for member in members:
        if member.seed is None:
            torch.set_rng_state(start)
        else:
            torch.manual_seed(member.seed)
        networks.append(_network(member, in_features, hidden_sizes, out_features, init))
    return networks


def _network(member: Member, in_features: int, hidden_sizes: list[int], out_features: int, init: str) -> nn.Sequential:
    """Linear → act → … → Linear; with ``init=auto`` each linear layer gets the init of the activation after it."""
    layers: list[nn.Module] = []
    inits: list[str] = []
    for (n_in, n_out), (name, args) in zip(
        pairwise([in_features, *hidden_sizes]), _layer_activations(member, len(hidden_sizes)), strict=True
    ):
        layers += [nn.Linear(n_in, n_out), create_activation(name, **(args or {}))]
        inits.append(get_activation(name).init if init == "auto" else init)
    layers.append(nn.Linear(hidden_sizes[-1], out_features))
    inits.append(inits[-1])
    network = nn.Sequential(*layers)
    for linear, layer_init in zip((m for m in network if isinstance(m, nn.Linear)), inits, strict=True):
        _initialize(linear, layer_init)
    return network


def _layer_activations(member: Member, depth: int) -> list[tuple[str, dict[str, Any] | None]]:
    """(name, arguments) of each hidden layer's activation.

    Raises:
        ConfigError: an unknown name, or a list of names or arguments that is not one per hidden layer.
    """
    names = member.activation if isinstance(member.activation, list | tuple) else [member.activation] * depth
    args = member.activation_args
    args = list(args) if isinstance(args, list | tuple) else [args] * depth
    for option, values in (("activation", names), ("activation_args", args)):
        if len(values) != depth:
            raise ConfigError(
                f"invalid model.{option} {values!r}; expected one entry per hidden layer ({depth}), or a single one"
            )
    for name in names:
        get_activation(name)  # an unknown name: the list of names
    return list(zip(names, args, strict=True))


# Weight initialisers by name; every non-default one also zeroes the biases.
_WEIGHT_INITS: dict[InitName, Callable[[torch.Tensor], Any] | None] = {
    "default": None,  # keep what nn.Linear.reset_parameters drew
    "xavier": nn.init.xavier_uniform_,
    "kaiming": partial(nn.init.kaiming_normal_, nonlinearity="relu"),
    "lecun_normal": partial(nn.init.kaiming_normal_, nonlinearity="linear"),  # std = 1/sqrt(fan_in)
}


def _initialize(net: nn.Module, init: InitName) -> None:
    init_weight = _WEIGHT_INITS[init]
    if init_weight is None:
        return
    for module in net.modules():
        if isinstance(module, nn.Linear):
            init_weight(module.weight)
            nn.init.zeros_(module.bias)
