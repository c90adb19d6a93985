"""The MLP whose hidden activation is the experiment's variable."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy

from lit_activations.activations import InitName, create_activation, get_activation


class ActivationMLP(LightningModule):
    """Linear → act → … → Linear(·, 1): a binary classifier with one activation in every hidden layer.

    Each hidden layer gets its own activation instance, so learnable activations (PReLU) learn a
    parameter per layer.

    Args:
        activation: a name from ``lit_activations.activations.ACTIVATIONS`` (identity, sigmoid,
            tanh, lecun_tanh, relu, relu6, leaky_relu, prelu, elu, selu, gelu, silu, mish, softplus)
            or the import path of any ``torch.nn.Module`` class, e.g. ``torch.nn.Hardtanh``.
        activation_args: keyword arguments of the activation, e.g. ``{negative_slope: 0.1}``.
        hidden_sizes: width of each hidden layer; the tutorial's network is ``[5, 5, 5, 5]``.
        init: weight initialisation of every linear layer: ``default`` keeps PyTorch's,
            ``xavier`` (uniform), ``kaiming`` (normal, ReLU gain), ``lecun_normal`` (N(0, 1/fan_in));
            non-default inits zero the biases. ``auto`` picks the activation's recommended one.
        output: ``logit`` trains the raw output with ``BCEWithLogitsLoss`` (numerically stable);
            ``sigmoid`` ends the network in a sigmoid trained with ``BCELoss``, as the tutorial does.
        in_features: input size; the CLI links it to the data module's ``num_features``.
        optimizer: builds the optimizer from the parameters (default Adam, lr 1e-3).
        scheduler: optionally builds a learning-rate scheduler from the optimizer.
    """

    def __init__(
        self,
        activation: str = "relu",
        activation_args: dict[str, Any] | None = None,
        hidden_sizes: Sequence[int] = (5, 5, 5, 5),
        init: Literal["auto", "default", "xavier", "kaiming", "lecun_normal"] = "default",
        output: Literal["logit", "sigmoid"] = "logit",
        in_features: int = 2,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        spec = get_activation(activation)  # fails early, with the list of names, on an unknown one
        hidden_sizes = list(hidden_sizes)
        if not hidden_sizes or any(not isinstance(n, int) or n < 1 for n in hidden_sizes):
            raise ValueError(f"invalid model.hidden_sizes {hidden_sizes!r}; expected a non-empty list of integers >= 1")
        if output not in ("logit", "sigmoid"):
            raise ValueError(f"invalid model.output {output!r}; expected one of: logit, sigmoid")
        init_name = spec.init if init == "auto" else init
        if init_name not in _WEIGHT_INITS:
            raise ValueError(f"invalid model.init {init!r}; expected one of: auto, {', '.join(_WEIGHT_INITS)}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer, self.scheduler = optimizer, scheduler

        layers: list[nn.Module] = []
        for n_in, n_out in pairwise([in_features, *hidden_sizes]):
            layers += [nn.Linear(n_in, n_out), create_activation(activation, **(activation_args or {}))]
        layers.append(nn.Linear(hidden_sizes[-1], 1))
        if output == "sigmoid":
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)
        _initialize(self.net, init_name)

        self.loss_fn = nn.BCELoss() if output == "sigmoid" else nn.BCEWithLogitsLoss()
        # The epoch's mean training loss. Each step's loss is kept and the metric updated once per epoch:
        # self.log on every step cost 25% of a tutorial step, and MeanMetric.update 3%.
        self.train_loss = MeanMetric()
        self._epoch_losses: list[tuple[torch.Tensor, int]] = []  # (loss, batch size) of this epoch's steps
        self.val_acc = BinaryAccuracy()
        self.test_acc = BinaryAccuracy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output per point, shape (B,): a logit, or a probability with ``output=sigmoid``."""
        return self.net(x).squeeze(-1)

    def to_probabilities(self, out: torch.Tensor) -> torch.Tensor:
        """Turn ``forward``'s output into P(inner circle)."""
        return out if self.hparams.output == "sigmoid" else torch.sigmoid(out)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self._epoch_losses.append((loss.detach(), len(x)))
        return loss

    def on_train_epoch_end(self) -> None:
        if not self._epoch_losses:
            return
        losses, sizes = zip(*self._epoch_losses, strict=True)
        self._epoch_losses = []
        self.train_loss.update(torch.stack(losses), weight=torch.tensor(sizes, device=self.device))
        self.log("train/loss", self.train_loss, prog_bar=True)  # torchmetrics reduces across ranks and resets

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.to_probabilities(self(batch[0]))

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler(optimizer)}

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, accuracy: BinaryAccuracy) -> None:
        x, y = batch
        out = self(x)
        accuracy(self.to_probabilities(out), y)
        self.log(f"{stage}/loss", self.loss_fn(out, y), prog_bar=True, batch_size=len(x), sync_dist=True)
        self.log(f"{stage}/acc", accuracy, prog_bar=True, batch_size=len(x))


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
