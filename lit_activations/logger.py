"""``TensorBoardRunLogger``: Lightning's TensorBoardLogger, safe for runs started at the same moment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


class TensorBoardRunLogger(TensorBoardLogger):
    """A TensorBoardLogger that claims each new ``version_<n>`` directory with an atomic ``mkdir``.

    Lightning picks the next version by listing the existing ones, so two runs started together can
    both pick ``version_3`` and write into one directory. Here the first to create it wins and the
    other moves on to ``version_4``. The directory is claimed when the run first needs it, never
    before (a command that fails its checks leaves nothing behind).

    Args:
        save_dir, name, version: as for ``TensorBoardLogger``.
        purge_step: hide the events at or after this step already in the run directory (set by the
            CLI on resume, so a crashed epoch's partial curves do not double the resumed ones).
        **kwargs: the other arguments of ``TensorBoardLogger``.
    """

    def __init__(
        self,
        save_dir: str | Path,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        purge_step: int | None = None,
        **kwargs: Any,
    ) -> None:
        if purge_step is not None:
            kwargs["purge_step"] = purge_step  # passed on to torch's SummaryWriter
        super().__init__(save_dir, name=name, version=version, **kwargs)

    def _get_next_version(self) -> int:
        version = super()._get_next_version()
        if rank_zero_only.rank != 0:  # only rank 0 writes; the others receive its directory by broadcast
            return version
        runs = Path(self.root_dir)
        runs.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                (runs / f"version_{version}").mkdir()
                return version
            except FileExistsError:
                version += 1
