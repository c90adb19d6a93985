"""``RunSummary``: the pictures and the HParams entry of each run (the pictures where the model and data allow)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from typing_extensions import override

from lit_activations.activations import create_activation
from lit_activations.errors import ConfigError
from lit_activations.logger import member_loggers, write_image, write_note
from lit_activations.members import Member
from lit_activations.names import activation_name
from lit_activations.plots import activation_figure, decision_boundary_image, decision_regions_image

FINAL_METRICS = ("val/acc", "val/loss", "train/loss")


class RunSummary(Callback):
    """Logs to TensorBoard, from rank 0, into each member's run:

    - ``activation/curve`` (image, once): the activation and its derivative;
    - ``decision_boundary`` (image, every ``boundary_every_n_epochs`` and after the last epoch):
      P(inner circle) over the data module's ``grid``, the 0.5 contour in black and the training
      points, so the image slider shows the circle forming;
    - the HParams entry at the end of fit: the member's model and data arguments, its seed, the
      optimizer and its learning rate, and ``final/val_acc``, ``final/val_loss``,
      ``final/train_loss``, so the HPARAMS tab compares activations.

    The curve needs a model with ``members`` (``ActivationMLP``), the decision boundary a model with
    ``to_probabilities`` and a ``PlaneDataModule`` (``grid``, ``train_points``, ``model_inputs``); what
    does not apply is skipped with one line and a note in the run's TEXT tab, the rest is drawn.

    Args:
        boundary_every_n_epochs: epochs between two decision-boundary images; 0 turns them off.
    """

    def __init__(self, boundary_every_n_epochs: int = 25) -> None:
        if boundary_every_n_epochs < 0:
            raise ConfigError(
                f"invalid RunSummary boundary_every_n_epochs {boundary_every_n_epochs!r}; expected an integer >= 0"
            )
        self.boundary_every_n_epochs = boundary_every_n_epochs
        self._noted: set[str] = set()

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if not hasattr(pl_module, "members"):
            self._note(trainer, "no activation curve: the model has no `members` (ActivationMLP has)")
            return
        curves: dict[str, np.ndarray] = {}  # one figure per activation, however many members share it
        for member, loggers in zip(pl_module.members, member_loggers(trainer, len(pl_module.members)), strict=True):
            if member.name not in curves:
                curves[member.name] = _pixels(activation_figure(_distinct_activations(member), member.name))
            for experiment in _tensorboards(loggers):
                write_image(experiment, "activation/curve", curves[member.name], step=0)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        every = self.boundary_every_n_epochs
        if trainer.sanity_checking or not trainer.is_global_zero or every == 0:
            return
        last_epoch = trainer.current_epoch == trainer.max_epochs - 1
        if trainer.current_epoch % every and not last_epoch:
            return
        data = trainer.datamodule
        if not all(hasattr(data, a) for a in ("grid", "train_points", "model_inputs")):
            self._note(trainer, f"no decision boundary: the inputs of {type(data).__name__} are not points of the"
                                " plane (a PlaneDataModule's are)")  # fmt: skip
            return
        if not hasattr(pl_module, "to_probabilities"):
            self._note(trainer, f"no decision boundary: {type(pl_module).__name__} has no to_probabilities(output)")
            return
        grid = data.grid
        with torch.no_grad():
            probabilities = pl_module.to_probabilities(pl_module(data.model_inputs(grid).to(pl_module.device)))
        members = len(getattr(pl_module, "members", [None]))
        classes = getattr(data, "num_classes", 2)
        if probabilities.shape not in ((members, len(grid)), (members, len(grid), classes)):
            self._note(trainer, f"no decision boundary: an output of shape {tuple(probabilities.shape)} for"
                                f" {len(grid)} grid points is not one probability, or one per class, per member"
                                " and point")  # fmt: skip
            return
        probabilities = probabilities.cpu().numpy()  # (K, grid points[, classes])
        points, labels = (t.numpy() for t in data.train_points)
        low, high = grid.min(0).values.numpy(), grid.max(0).values.numpy()
        draw = decision_boundary_image if probabilities.ndim == 2 else decision_regions_image
        for p_member, loggers in zip(probabilities, member_loggers(trainer, len(probabilities)), strict=True):
            image = draw(p_member, points, labels, low, high)
            for experiment in _tensorboards(loggers):
                write_image(experiment, "decision_boundary", image, step=trainer.global_step)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        params: dict[str, Any] = {**pl_module.hparams, **(trainer.datamodule.hparams if trainer.datamodule else {})}
        params = {key: value for key, value in params.items() if not key.startswith("_")}  # LightningCLI's internals
        for key in ("in_features", "members"):
            params.pop(key, None)
        if trainer.datamodule is not None:
            params["dataset"] = type(trainer.datamodule).__name__
        if trainer.optimizers:
            optimizer = trainer.optimizers[0]
            params |= {"optimizer": type(optimizer).__name__, "lr": optimizer.defaults.get("lr")}
        fit_seed = int(os.environ["PL_GLOBAL_SEED"]) if "PL_GLOBAL_SEED" in os.environ else None  # seed_everything
        members = getattr(pl_module, "members", [None])  # a model of another kind: one run, the callback metrics
        finals = getattr(pl_module, "last_epoch_metrics", [{k: float(v) for k, v in trainer.callback_metrics.items()}])
        for member, last, loggers in zip(members, finals, member_loggers(trainer, len(members)), strict=True):
            member_params = dict(params)
            if member is not None:
                member_params |= {"activation": member.activation, "activation_args": member.activation_args}
            member_params["seed"] = member.seed if member is not None and member.seed is not None else fit_seed
            metrics = {f"final/{tag.replace('/', '_')}": last[tag] for tag in FINAL_METRICS if tag in last}
            for logger in loggers:
                # at the last step (not Lightning's default 0), so a resumed run's final values come last
                logger.log_hyperparams(member_params, metrics or None, step=trainer.global_step)

    def _note(self, trainer: Trainer, text: str) -> None:
        """Say once, in the terminal and in each run's TEXT tab, what was not drawn and why."""
        if text in self._noted:
            return
        self._noted.add(text)
        write_note(trainer, "notes/run_summary", f"RunSummary: {text}")


def _distinct_activations(member: Member) -> dict[str, torch.nn.Module]:
    """A module of each different activation of a member (one, or one per layer when they differ)."""
    names = member.activation if isinstance(member.activation, list | tuple) else [member.activation]
    args = member.activation_args
    args = args if isinstance(args, list | tuple) else [args] * len(names)
    return {
        activation_name(name) + (f" {dict(a)}" if a else ""): create_activation(name, **(a or {}))
        for name, a in zip(names, args, strict=True)
    }


def _pixels(figure) -> np.ndarray:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _tensorboards(loggers: list[Logger]) -> list[Any]:
    return [logger.experiment for logger in loggers if isinstance(logger, TensorBoardLogger)]
