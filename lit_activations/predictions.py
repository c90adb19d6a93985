"""``PredictionWriter``: what ``predict`` returns, written to a CSV file, one row per sample (and member)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from typing_extensions import override

from lit_activations.resume import run_of

MAX_INPUT_COLUMNS = 64  # a sample with more values (an image, say) is written by its index alone


class PredictionWriter(BasePredictionWriter):
    """Writes the predictions of ``predict`` to a CSV file and prints where.

    Columns: ``member`` (in a fit of several members: its activation and seed), ``index`` (the
    sample's position in the data module's predict set), ``x_0``, ``x_1``, … (the inputs as the model
    sees them, when a sample has at most 64 values), then the prediction: ``p_0`` … ``p_<C-1>`` for
    an output of C values per sample (``ActivationMLP``: the probability of each class), or
    ``output`` for one value per sample.

    On several devices each process writes its own share to a file of its own, with ``.rank<r>``
    before the suffix.

    Args:
        path: the CSV file. Default: ``predictions.csv`` in the run directory of the checkpoint given
            with ``--ckpt_path`` (in the working directory without one). An existing file is never
            replaced: the next free name is taken (``predictions-1.csv``, …).
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.path = path
        self._rows: list[list[Any]] = []
        self._columns: list[str] = []
        self._samples = 0

    @override
    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows, self._columns, self._samples = [], [], 0

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not isinstance(prediction, torch.Tensor):
            raise TypeError(
                f"PredictionWriter writes tensors; {type(pl_module).__name__}.predict_step returned"
                f" {type(prediction).__name__}; give --predictions=null to keep predictions in memory only"
            )
        inputs = batch[0] if isinstance(batch, list | tuple) else batch
        members = getattr(pl_module, "members", [])
        labels = [m.label for m in members] if len(members) > 1 else [None]
        outputs = prediction if labels != [None] else prediction.unsqueeze(0)  # (members, B[, C])
        first, self._samples = self._samples, self._samples + len(inputs)
        values = inputs.reshape(len(inputs), -1)
        with_inputs = isinstance(inputs, torch.Tensor) and values.shape[1] <= MAX_INPUT_COLUMNS
        if not self._columns:
            width = outputs.shape[2] if outputs.dim() == 3 else 0
            self._columns = (
                (["member"] if labels != [None] else [])
                + ["index"]
                + ([f"x_{i}" for i in range(values.shape[1])] if with_inputs else [])
                + ([f"p_{c}" for c in range(width)] if width else ["output"])
            )
        rows_in = values.tolist() if with_inputs else [[] for _ in range(len(inputs))]
        for label, output in zip(labels, outputs.reshape(len(labels), len(inputs), -1).tolist(), strict=True):
            for i, (row_in, row_out) in enumerate(zip(rows_in, output, strict=True)):
                self._rows.append(([label] if label is not None else []) + [first + i, *row_in, *row_out])

    @override
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        file, written = _open_new(self._target(trainer))
        with file:
            writer = csv.writer(file)
            writer.writerow(self._columns)
            writer.writerows(self._rows)
        source = f" of {trainer.ckpt_path}" if trainer.ckpt_path else ""
        print(f"Saved the predictions{source} for {self._samples} samples to {written}", flush=True)
        self._rows = []

    def _target(self, trainer: Trainer) -> Path:
        if self.path is not None:
            path = Path(self.path)
        else:
            run = run_of(Path(trainer.ckpt_path)) if trainer.ckpt_path else None
            path = (run if run is not None else Path()) / "predictions.csv"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        return path


def _open_new(path: Path) -> tuple[TextIO, Path]:
    """The first of ``path``, ``<stem>-1<suffix>``, ``<stem>-2<suffix>``, … that does not exist, created and opened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        candidate = path if n == 0 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            return open(candidate, "x", newline=""), candidate  # the caller closes it
        except FileExistsError:
            n += 1
