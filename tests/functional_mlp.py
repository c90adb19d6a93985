"""A LightningModule of a user's own, not an ActivationMLP: its activation is a function call, not a module."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.nn import functional as F


class FunctionalMLP(LightningModule):
    """Two hidden layers of ``width`` units with ``F.relu`` in ``forward``; one logit, for two classes."""

    def __init__(self, width: int = 16, lr: float = 0.01, in_features: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.hidden = nn.Linear(in_features, width)
        self.deeper = nn.Linear(width, width)
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.deeper(F.relu(self.hidden(x))))).squeeze(-1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.binary_cross_entropy_with_logits(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.binary_cross_entropy_with_logits(logits, y))
        self.log("val/acc", ((logits > 0).float() == y).float().mean())

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return torch.sigmoid(self(batch[0]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
