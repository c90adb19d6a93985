"""The local launcher: each fit in a process of this machine, forked from a server that has imported Lightning.

The server ("forkserver") imports Lightning once (5 s), so a fit starts in a fraction of a second.
Every process it forks (a fit, a check) ends with the study that asked for it, even one killed
outright (``with_the_study``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lit_activations import lock
from lit_activations.study.launcher import fit_process

# Loaded once by the server the fits are forked from: what a fit imports, and this module (the processes' target).
_FIT_MODULES = ["lit_activations.study.local", "lit_activations.cli", "sklearn.datasets", "sklearn.model_selection"]
STOP_GRACE = 30  # seconds a fit has to stop after the study stops it, before it is killed


class LocalLauncher:
    """Each fit in a process of this machine, forked from the server that has imported Lightning, helping to hold
    the study directory ``study_dir`` (``lit_activations.lock.join``) while it runs."""

    def __init__(self, context: multiprocessing.context.BaseContext, study_dir: Path | None = None) -> None:
        self.context, self.study_dir = context, study_dir
        self.cpus = self.default_jobs = os.cpu_count() or 1
        self._running: set[multiprocessing.process.BaseProcess] = set()
        self._stopping = 0.0  # when interrupt() came

    def run(
        self, arguments: list[str], threads: int, config: dict[str, Any] | None, log: Path
    ) -> tuple[int | None, list[str]]:
        if self._stopping:
            return None, ["error: interrupted before it started"]
        log.parent.mkdir(parents=True, exist_ok=True)
        study = (os.getpid(), self.study_dir)
        process = self.context.Process(target=with_the_study, args=(fit_process, study, arguments, threads, log))
        process.start()
        self._running.add(process)
        if self._stopping:  # interrupt() came between start and add
            self._stop(process)
        while process.is_alive():  # a fit that has not stopped a while after being told to is killed
            process.join(timeout=1)
            if self._stopping and time.monotonic() - self._stopping > STOP_GRACE:
                process.kill()
        self._running.discard(process)
        return process.exitcode, log.read_text(errors="replace").strip().splitlines() if log.exists() else []

    def interrupt(self) -> None:
        self._stopping = time.monotonic()
        for process in list(self._running):
            self._stop(process)

    @staticmethod
    def _stop(process: multiprocessing.process.BaseProcess) -> None:
        """SIGTERM: Lightning stops the fit at its next batch (its SIGTERM handling), closes the event files and
        exits. Not SIGINT: a KeyboardInterrupt can strike inside the event writer's queue and leave its thread
        waiting for ever; the fits ignore the terminal's Ctrl-C, which this process turns into this."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)

    def close(self) -> None:
        pass  # the fork server ends with this process


def with_the_study(target: Callable[..., None], study: tuple[int, Path | None], *args: Any) -> None:
    """Run ``target(*args)`` in a process that ends with the study ``study``: (its process id, the study directory
    for a fit, which holds it as the study's helper, or ``None``).

    A watcher stops this process with SIGTERM (Lightning's graceful stop, in a fit) once the study's own process
    is gone, however it went (``kill -9`` included), and kills it if that takes longer than ``STOP_GRACE``. Like the
    fork server, the process ignores Ctrl-C: the study's own process stops it (``LocalLauncher.interrupt``).
    """
    study_pid, study_dir = study
    if study_dir is not None:
        lock.join(study_dir)  # until this fit ends, no other study takes the directory, even if this one died
    threading.Thread(target=_end_with, args=(study_pid,), daemon=True).start()
    target(*args)


def _end_with(study_pid: int) -> None:
    """The watcher of ``with_the_study``: checks every second that the study's own process lives."""
    while _alive(study_pid):
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE)
    os._exit(143)


def process_context(preload: list[str]) -> multiprocessing.context.BaseContext:
    """Fork from a server that has imported Lightning and the modules ``preload`` (what the caller's own processes
    run); where there is none (Windows), start fresh interpreters.

    The server ignores Ctrl-C, which a terminal sends to every process of the study: it would otherwise die
    with a traceback of its own while importing; so do the fits and checks forked from it, which the study
    stops itself. Its socket lies in a directory of this study's (``scratch``), unless the temporary
    directory's path is too long for a socket's.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*_FIT_MODULES, *preload])
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the server, which this process starts
    directory = scratch()
    before = tempfile.tempdir
    if len(str(directory)) <= 70:  # a socket's path has at most 107 bytes; under it come pymp-…/listener-…
        tempfile.tempdir = str(directory)  # where multiprocessing puts the server's socket
    try:
        multiprocessing.forkserver.ensure_running()  # start it now, not at the first fit
    finally:
        signal.signal(signal.SIGINT, handler)
        tempfile.tempdir = before
    return context


def scratch() -> Path:
    """A temporary directory for this study's process, removed when it exits; those of studies that died
    (``kill -9``: no exit handler runs) are removed by the next study."""
    prefix = "lit_activations-study-"
    for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        pid = stale.name.removeprefix(prefix)
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    directory = Path(tempfile.gettempdir()) / f"{prefix}{os.getpid()}"
    directory.mkdir(exist_ok=True)
    # after multiprocessing has removed its own directory in it (finalizers of lower priority run later)
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(directory,), kwargs={"ignore_errors": True},
                                  exitpriority=-101)  # fmt: skip
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
