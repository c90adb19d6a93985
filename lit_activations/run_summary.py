"""``RunSummary``: the pictures and the HParams entry of one run of ``ActivationMLP`` on a 2-D data module."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from typing_extensions import override

from lit_activations.activations import create_activation
from lit_activations.plots import activation_figure, decision_boundary_figure

FINAL_METRICS = ("val/acc", "val/loss", "train/loss")


class RunSummary(Callback):
    """Logs to TensorBoard, from rank 0:

    - ``activation/curve`` (image, once): the activation and its derivative;
    - ``decision_boundary`` (image, every ``boundary_every_n_epochs`` and after the last epoch):
      P(inner circle) over the data module's ``grid`` with the training points, so the image
      slider shows the circle forming;
    - the HParams entry at the end of fit: the model's and data's arguments, the optimizer and its
      learning rate, and ``final/val_acc``, ``final/val_loss``, ``final/train_loss``, so the HPARAMS
      tab compares activations.

    It expects the model to have ``hparams.activation`` and ``to_probabilities`` (``ActivationMLP``)
    and the data module ``grid``, ``train_points`` and ``model_inputs`` (``CirclesDataModule``).

    Args:
        boundary_every_n_epochs: epochs between two decision-boundary images; 0 turns them off.
    """

    def __init__(self, boundary_every_n_epochs: int = 25) -> None:
        if boundary_every_n_epochs < 0:
            raise ValueError(
                f"invalid RunSummary boundary_every_n_epochs {boundary_every_n_epochs!r}; expected an integer >= 0"
            )
        self.boundary_every_n_epochs = boundary_every_n_epochs

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        hp = pl_module.hparams
        figure = activation_figure(create_activation(hp.activation, **(hp.activation_args or {})), hp.activation)
        for experiment in _tensorboards(trainer):
            experiment.add_figure("activation/curve", figure, global_step=0)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        every = self.boundary_every_n_epochs
        if trainer.sanity_checking or not trainer.is_global_zero or every == 0:
            return
        last_epoch = trainer.current_epoch == trainer.max_epochs - 1
        if trainer.current_epoch % every and not last_epoch:
            return
        data = trainer.datamodule
        grid = data.grid
        with torch.no_grad():
            probabilities = pl_module.to_probabilities(pl_module(data.model_inputs(grid).to(pl_module.device))).cpu()
        points, labels = data.train_points
        title = f"{pl_module.hparams.activation}, epoch {trainer.current_epoch}"
        figure = decision_boundary_figure(grid, probabilities, points, labels, title)
        for experiment in _tensorboards(trainer):
            experiment.add_figure("decision_boundary", figure, global_step=trainer.global_step)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metrics = {f"final/{tag.replace('/', '_')}": float(trainer.callback_metrics[tag]) for tag in FINAL_METRICS
                   if tag in trainer.callback_metrics}  # fmt: skip
        params: dict[str, Any] = {**pl_module.hparams, **(trainer.datamodule.hparams if trainer.datamodule else {})}
        params.pop("in_features", None)
        if trainer.optimizers:
            optimizer = trainer.optimizers[0]
            params |= {"optimizer": type(optimizer).__name__, "lr": optimizer.defaults.get("lr")}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # at the last step (not Lightning's default 0), so a resumed run's final values come last
                logger.log_hyperparams(params, metrics, step=trainer.global_step)  # rank 0 only


def _tensorboards(trainer: Trainer) -> list[Any]:
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
