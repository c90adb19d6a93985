"""``PeriodicCheckpoint``: Lightning's ModelCheckpoint, every n epochs and always after the last one."""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override


class PeriodicCheckpoint(ModelCheckpoint):
    """Saves every ``every_n_epochs`` epochs and after the last one, whatever the epoch count.

    An epoch of the tutorial takes about 40 ms and a checkpoint about 2.5 ms to write, so saving
    ``last.ckpt`` and ``epoch=…ckpt`` after every epoch would cost an eighth of the run. But
    Lightning's ``ModelCheckpoint`` with ``every_n_epochs`` saves at the end of training only if it
    never saved before (``callbacks/model_checkpoint.py``, ``on_train_end``): a 15-epoch run with
    ``every_n_epochs=10`` would keep the weights of epoch 10. This subclass also saves after the
    last epoch (named like the periodic saves), or when training stops early (``max_steps``,
    ``max_time``, a callback's stop), so ``last.ckpt`` always holds the trained model.
    The arguments are ``ModelCheckpoint``'s.
    """

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.max_epochs is not None and trainer.current_epoch + 1 == trainer.max_epochs:
            self._save_unless_saved(trainer)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save_unless_saved(trainer)  # training stopped before max_epochs
        super().on_train_end(trainer, pl_module)

    def _save_unless_saved(self, trainer: Trainer) -> None:
        # The private steps ModelCheckpoint.on_train_epoch_end takes; skipped when this step was saved already.
        if not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
