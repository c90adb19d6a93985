"""The study's fits run a few at a time through a launcher; a failed fit of several cells is retried cell by cell."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_activations.names import setting_name
from lit_activations.study.cells import FINISHED, Cell, fit_arguments, fit_version, where_it_trains
from lit_activations.study.launcher import Launcher


@dataclass
class Progress:
    """One line per cell as its fit ends."""

    total: int
    done: int = 0

    def report(self, cells: list[Cell], status: str) -> None:
        together = f" ({len(cells)} runs in one fit)" if len(cells) > 1 else ""
        for cell in cells:
            self.done += 1
            log = cell.directory / "error.log"
            outcome = f"failed: {cell.error}, {status} (all of it: {log})" if cell.error else status
            print(f"[{self.done}/{self.total}] {cell.group} seed {cell.seed}: {outcome}{together}", flush=True)


def run_fits(
    fits: list[list[Cell]], launcher: Launcher, progress: Progress, *, fit_args: list[str], study_dir: Path,
    jobs: int, configs: dict[str, dict[str, Any]],
) -> None:  # fmt: skip
    """Train ``fits`` (lists of cells), ``jobs`` at a time; a failed fit of several cells is retried cell by cell.

    ``configs`` are the fits' resolved configurations by setting name, for the launcher. Ctrl-C (a
    ``KeyboardInterrupt``) stops the running fits through the launcher and cancels the queued ones.
    """
    threads = max(1, launcher.cpus // jobs)  # no oversubscription of the cores
    stopping = threading.Event()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running: dict[Future, list[Cell]] = {}

        def train_unless_stopping(fit: list[Cell], config: dict[str, Any]) -> float:
            """``train``, unless Ctrl-C came: a fit the pool had already taken from its queue starts no process."""
            return 0.0 if stopping.is_set() else train(fit, fit_args, study_dir, threads, launcher, config)

        def submit(fit: list[Cell]) -> None:
            running[pool.submit(train_unless_stopping, fit, configs.get(setting_name(fit[0].setting), {}))] = fit

        try:
            for fit in fits:
                submit(fit)
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    fit, seconds = running.pop(future), future.result()
                    if len(fit) > 1 and any(cell.error for cell in fit):  # alone, a bad cell fails without the others
                        for cell in fit:
                            cell.error = ""
                            submit([cell])
                    else:
                        progress.report(fit, f"ok, {seconds:.1f} s" if not fit[0].error else f"{seconds:.1f} s")
        except KeyboardInterrupt:  # else leaving the pool would wait for every fit, queued ones too, to end on its own
            stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            launcher.interrupt()
            raise


def train(
    fit: list[Cell], fit_args: list[str], study_dir: Path, threads: int, launcher: Launcher, config: dict[str, Any]
) -> float:
    """Train ``fit``'s cells as the members of one fit (or a cell of a model without members as its own fit), in a
    process of its own from ``launcher``; return its wall time.

    A failed fit leaves its last line of output as each cell's ``error``, and all of it in the cell's ``error.log``.
    """
    fits = study_dir / "fits" / setting_name(fit[0].setting)
    version = fit_version(fit)
    for directory in (*fits.glob(f"*/{version}"), *(cell.directory for cell in fit)):
        shutil.rmtree(directory, ignore_errors=True)  # what an unfinished earlier attempt left (its log is replaced)
    started = time.monotonic()
    arguments = [*fit_arguments(fit_args, study_dir, fit[0].setting), *where_it_trains(fit, study_dir)]
    exitcode, lines = launcher.run(arguments, threads, config, fits / f"{version}.log")
    for cell in fit:
        if exitcode == 0:
            (cell.directory / FINISHED).touch()
            continue
        if exitcode is not None and exitcode < 0:  # killed: its last line says nothing about why
            cell.error = f"error: the fit's process was killed (signal {-exitcode})"
        else:
            cell.error = lines[-1] if lines else f"exit status {exitcode}"
        cell.directory.mkdir(parents=True, exist_ok=True)
        (cell.directory / "error.log").write_text("\n".join(lines) + "\n")
    return time.monotonic() - started
