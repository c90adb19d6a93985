"""``EpochLearningRate``: Lightning's LearningRateMonitor, logging each epoch's rate with the epoch's metrics."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from typing_extensions import override


class EpochLearningRate(LearningRateMonitor):
    """Logs ``lr-<optimizer>`` (and the momentum, if asked) at the end of each training epoch.

    Lightning's monitor logs an epoch's rate when the epoch starts, at the step where the previous
    epoch's metrics are. A run resumed after dying in mid-epoch would then log that rate twice: on
    resume, TensorBoard hides the dead run's events from the checkpoint's step + 1 on (the events
    at the checkpoint's step are the checkpointed epoch's own), which leaves the first copy. Logged
    at the end, with the epoch's other metrics, it is hidden or kept with them. The rate is still read
    when the epoch starts (an epoch-interval scheduler steps before the epoch's end hooks), so it is
    the one the epoch trained with. The arguments are ``LearningRateMonitor``'s;
    ``logging_interval="step"`` behaves as there.
    """

    @override
    def on_train_batch_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if self.logging_interval == "step" or self.logging_interval is None:  # (per epoch: nothing to do per step)
            super().on_train_batch_start(trainer, *args, **kwargs)

    @override
    def on_train_epoch_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if self.logging_interval != "step":
            self._epoch_rates = self._extract_stats(trainer, "epoch" if self.logging_interval is None else "any")

    @override
    def on_train_epoch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        rates, self._epoch_rates = getattr(self, "_epoch_rates", {}), {}
        if rates:
            for logger in trainer.loggers:
                logger.log_metrics(rates, step=trainer.global_step)
