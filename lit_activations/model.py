"""The MLP whose hidden activation is the experiment's variable, as one network or K members at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lit_activations.errors import ConfigError
from lit_activations.heads import HEADS
from lit_activations.logger import log_member_scalars
from lit_activations.members import Member
from lit_activations.metrics import MemberMean
from lit_activations.networks import INITS, layer_activations, member_networks
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

    The networks are drawn by ``lit_activations.networks`` (each member exactly as a single fit with its
    seed draws it) and the output head is looked up once in ``lit_activations.heads.HEADS``
    (``self.head``): ``forward``, ``to_probabilities``, ``predicted_classes``, ``member_losses`` and
    ``predict_step`` ask it.

    Logging, in a subclass too. In a fit of members each member has a run of its own
    (``TensorBoardRunLogger(members=...)``), and:

    * ``self.log(tag, value)`` writes one value to **every** member's run: Lightning hands it to the
      logger's ``log_metrics``, which writes it to each member's run. Use it for what all members share
      (a learning rate, a schedule's value); it takes one number, never a value per member.
    * ``self.log_members({tag: values})`` writes ``values[k]`` to member k's run: anything that is a
      member's own (a loss, an accuracy, a norm) goes this way, as the model's own metrics do.

    With one network both write to its one run; ``log_members`` also feeds the progress bar and
    ``trainer.callback_metrics``.

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
            ``critical`` draws W ~ N(0, σ_w²/fan_in) and b ~ N(0, σ_b²) at the activation's edge of chaos
            (``lit_activations.theory.critical_point``), each layer for the activation after it.
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
        members: the members, a list of ``Member.as_dict()`` entries; the CLI sets them from
            ``--members.activations`` and ``--members.seeds``. ``None``: one network of ``activation``.
            (Typed ``Any``: jsonargparse 4 deep-copies a typed list once per entry to check it, 14 s for 300
            members; ``Member(**entry)`` checks each entry here instead.)
    """

    def __init__(
        self,
        activation: str | list[str] = "relu",
        activation_args: dict[str, Any] | list[dict[str, Any] | None] | None = None,
        hidden_sizes: Sequence[int] = (5, 5, 5, 5),
        init: Literal["auto", "default", "xavier", "kaiming", "lecun_normal", "critical"] = "default",
        output: Literal["logit", "sigmoid", "softmax"] = "logit",
        in_features: int = 2,
        num_classes: int = 2,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        members: Any = None,  # a list of Member.as_dict() entries (Any: see Args)
    ) -> None:
        super().__init__()
        hidden_sizes = list(hidden_sizes)
        if not hidden_sizes or any(not isinstance(n, int) or n < 1 for n in hidden_sizes):
            raise ConfigError(f"invalid model.hidden_sizes {hidden_sizes!r}; expected a list of integers >= 1: [5, 5]")
        if output not in HEADS:
            raise ConfigError(f"invalid model.output {output!r}; expected one of: {', '.join(HEADS)}")
        self.head = HEADS[output]
        if num_classes < 2 or (num_classes > 2 and not self.head.per_class):
            raise ConfigError(
                f"invalid model.output {output!r} for data of {num_classes} classes; expected softmax"
                " (logit and sigmoid are one output for two classes)"
            )
        if init not in INITS:
            raise ConfigError(f"invalid model.init {init!r}; expected one of: {', '.join(INITS)}")
        self.members = [Member(**m) for m in members] if members else [Member(activation, activation_args)]
        for member in self.members:
            layer_activations(member, len(hidden_sizes))  # fails early: an unknown name, a list of another length
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer, self.scheduler = optimizer, scheduler

        networks = member_networks(self.members, in_features, hidden_sizes, self.head.out_features(num_classes), init)
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
        return self.head.output(self.net(x.flatten(1)))

    def to_probabilities(self, out: torch.Tensor) -> torch.Tensor:
        """Turn ``forward``'s output into probabilities: of class 1 (K, B), or of each class (K, B, classes)."""
        return self.head.probabilities(out)

    def predicted_classes(self, out: torch.Tensor) -> torch.Tensor:
        """The class each member predicts for each point, (K, B)."""
        return self.head.classes(out)

    def member_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's mean loss over the batch, shape (K,); the training loss is their sum."""
        return self.head.losses(out, y)

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
        self.log_members({"train/loss": self.train_loss.compute()})
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
        probabilities = self.head.each_class(self.to_probabilities(self(batch[0])))
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

    def log_members(self, values: Mapping[str, torch.Tensor]) -> None:
        """Write each member's own value of each tag to its own run: ``values[tag][k]`` to member k's.

        The per-member counterpart of ``self.log``, which writes one value to every member's run (see the
        class docstring). Meant for epoch-end hooks, as the model logs its losses and accuracies; each
        call is one host sync and one event per run.

        Args:
            values: tag -> a tensor of K values, member k's at index k (a 0-d tensor for one network,
                as torchmetrics computes it, is fine). They are written at ``self.global_step`` with
                the tag ``epoch`` (``self.current_epoch``) beside them, and kept in
                ``last_epoch_metrics[k]``. (``self.log`` in an epoch-end hook lands one step earlier:
                Lightning writes an epoch's values at the step of its last batch, ``global_step - 1``.)

        One network's values also go to the progress bar and ``trainer.callback_metrics``, for callbacks
        that watch a metric (early stopping, a checkpoint's monitor); in a fit of several members no
        metric speaks for all of them (the CLI refuses such callbacks), and ``last_epoch_metrics`` has each.
        Nothing reaches the runs or ``last_epoch_metrics`` during the sanity check.

        Raises:
            ValueError: a tensor that is not one value per member.
        """
        for tag, value in values.items():
            if value.numel() != self.num_members:
                raise ValueError(
                    f"log_members: {tag!r} holds {value.numel()} value(s); expected one per member"
                    f" ({self.num_members}); self.log writes a value that all members share"
                )
        if not values:
            return
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

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], loss: MemberMean, accuracy: MemberMean) -> None:
        x, y = batch
        out = self(x)
        correct = (self.predicted_classes(out) == y.long()).double().mean(-1)
        loss.update(self.member_losses(out, y), weight=len(x))
        accuracy.update(correct, weight=len(x))

    def _log_epoch_metrics(self, stage: str, loss: MemberMean, accuracy: MemberMean) -> None:
        if loss.update_count == 0:
            return
        self.log_members({f"{stage}/loss": loss.compute(), f"{stage}/acc": accuracy.compute()})
        loss.reset()
        accuracy.reset()
