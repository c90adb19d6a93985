"""``PeriodicCheckpoint``: Lightning's ModelCheckpoint, every n epochs and always after the last one.

Also each member's own checkpoint at the end of a fit of several members (``member_checkpoint``), and
``AtomicCheckpointIO``, which writes a checkpoint whole or not at all.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from lit_activations.logger import TensorBoardRunLogger


class PeriodicCheckpoint(ModelCheckpoint):
    """Saves every ``every_n_epochs`` epochs and after the last one, whatever the epoch count.

    An epoch of the tutorial takes about 40 ms and a checkpoint about 2.5 ms to write, so saving
    ``last.ckpt`` and ``epoch=…ckpt`` after every epoch would cost an eighth of the run. But
    Lightning's ``ModelCheckpoint`` with ``every_n_epochs`` saves at the end of training only if it
    never saved before (``callbacks/model_checkpoint.py``, ``on_train_end``): a 15-epoch run with
    ``every_n_epochs=10`` would keep the weights of epoch 10. This subclass also saves after the
    last epoch (named like the periodic saves), or when training stops early (``max_steps``,
    ``max_time``, a callback's stop), so ``last.ckpt`` always holds the trained model.

    In a fit of several members, the fit's checkpoints hold every member (and resume the whole
    fit); after the final save each member's run directory also gets its own model, as an
    ordinary single-network checkpoint that ``validate``, ``test``, ``predict`` and
    ``ActivationMLP.load_from_checkpoint`` take (``member_checkpoint``).
    The arguments are ``ModelCheckpoint``'s.
    """

    @property
    @override
    def state_key(self) -> str:
        # ModelCheckpoint's key is the repr of a dict of its settings, and Lightning makes it for every hook of every
        # callback it calls, to name the call for the profiler (trainer/call.py, _call_callback_hooks): about 1 µs, 6
        # times a step, 1% of a tutorial step. The same key, made again only when a setting changes.
        settings = (self.monitor, self.mode, self._every_n_train_steps, self._every_n_epochs, self._train_time_interval)
        made = getattr(self, "_state_key_made", None)
        if made is None or made[0] != settings:
            made = self._state_key_made = (settings, super().state_key)
        return made[1]

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.max_epochs is not None and trainer.current_epoch + 1 == trainer.max_epochs:
            self._save_unless_saved(trainer)

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any) -> None:
        # Lightning's decides after every batch whether a save by steps or by time is due; with neither set (this
        # template's saves are per epoch) none ever is, and the deciding cost 1% of a tutorial step.
        if self._every_n_train_steps >= 1 or self._train_time_interval is not None:
            super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run:  # no checkpoint at all: Lightning's own would still save last.ckpt here
            return
        self._save_unless_saved(trainer)  # training stopped before max_epochs
        self._save_members(trainer)
        super().on_train_end(trainer, pl_module)

    def _save_unless_saved(self, trainer: Trainer) -> None:
        # The private steps ModelCheckpoint.on_train_epoch_end takes; skipped when this step was saved already.
        if not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)

    def _save_members(self, trainer: Trainer) -> None:
        """Each member's final model into its run directory, from the fit's last checkpoint."""
        logger, saved = trainer.logger, self.last_model_path or self.best_model_path
        if not trainer.is_global_zero or not saved or not isinstance(logger, TensorBoardRunLogger):
            return
        if logger.member_runs == [logger]:
            return
        checkpoint = torch.load(saved, map_location="cpu", weights_only=False)  # the file this callback just wrote
        name = Path(self.best_model_path).name if self.best_model_path else "final.ckpt"  # never last.ckpt: no resume
        for k, directory in enumerate(logger.member_dirs):
            (directory / "checkpoints").mkdir(parents=True, exist_ok=True)
            member = member_checkpoint(checkpoint, trainer.lightning_module, k)
            torch.save(member | {"member_of": str(Path(saved).resolve())}, directory / "checkpoints" / name)


def member_checkpoint(checkpoint: dict[str, Any], model: LightningModule, k: int) -> dict[str, Any]:
    """Member ``k`` of a fit's ``checkpoint`` as the checkpoint of a single network of its activation and seed.

    It holds the member's weights and hyperparameters (and the fit's epoch, step and data), not the
    optimizer's state: it is for evaluating the member (``validate``, ``test``, ``predict``), not
    for resuming it; the fit's own checkpoint resumes every member.
    """
    member = model.members[k]
    hyper_parameters = checkpoint["hyper_parameters"] | {
        "activation": member.activation,
        "activation_args": member.as_dict()["activation_args"],
        "members": None,
    }
    dropped = ("optimizer_states", "lr_schedulers", "loops", "callbacks")
    return {key: value for key, value in checkpoint.items() if key not in dropped} | {
        "state_dict": model.member_state_dict(k, checkpoint["state_dict"]),
        "hyper_parameters": hyper_parameters,
    }


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` of a checkpoint, into a file beside it that is then renamed over it.

    A reader, or a resume, finds the previous checkpoint or the new one, whole, whatever stops the write
    (a full disk, ``kill -9``). Lightning's own writes a temporary file in the system's temporary
    directory and moves it, which copies rather than renames when that is another file system, and
    leaves the temporary file behind when its process is killed. Remote paths (``s3://…``) are
    Lightning's to write.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        content = io.BytesIO()
        torch.save(checkpoint, content)  # (into a file, torch reports a full disk as a RuntimeError of its stream)
        try:
            partial.write_bytes(content.getbuffer())
            os.replace(partial, path)
        except OSError as err:  # (a failed write does not name its file)
            raise OSError(err.errno, err.strerror, str(path)) from err
        finally:
            partial.unlink(missing_ok=True)
