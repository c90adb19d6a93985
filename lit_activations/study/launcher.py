"""Where a study's fits run (``Launcher``), and the body of a fit's process that every launcher runs.

A launcher is given a fit's command line, its thread count, its resolved configuration and a log
file; it knows nothing of cells, settings or tables.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from pathlib import Path
from typing import Any, Protocol


class Launcher(Protocol):
    """Where a study's fits run. The study (its cells, run directories, skipping and table) is the same for all."""

    cpus: int  # the cores the fits share
    default_jobs: int  # fits at a time unless --jobs says

    def run(
        self, arguments: list[str], threads: int, config: dict[str, Any], log: Path
    ) -> tuple[int | None, list[str]]:
        """``python -m lit_activations ARGUMENTS`` with ``threads`` threads, its output into the file ``log``: its exit
        status and output lines. ``config`` is the fit's resolved configuration (what its trainer holds)."""
        ...

    def interrupt(self) -> None:
        """Stop the running fits (Ctrl-C): their runs stay unfinished, for the next run of the study."""

    def close(self) -> None:
        """Let go of what the fits ran on."""


def fit_process(arguments: list[str], threads: int, output: Path) -> None:
    """The body of a fit's process: ``python -m lit_activations ARGUMENTS``, its output into ``output``.

    The body of a local fit's process and of a Ray task alike, each a process of its own.
    """
    from lit_activations.cli import cli_main  # here, not at the top: the study's own process needs no Lightning

    _output_to(output)
    # To Lightning this process is `python -m lit_activations ARGUMENTS`: its DDP launcher starts the other ranks as
    # `python -m <__main__.__spec__.name> <sys.argv[1:]>` (lightning/fabric/strategies/launchers/
    # subprocess_script.py), and multiprocessing's spawn reads the same spec: a module that says so is enough.
    main = types.ModuleType("__main__")
    main.__spec__ = importlib.machinery.ModuleSpec("lit_activations.__main__", None)
    sys.modules["__main__"] = main
    sys.argv = ["lit_activations", *arguments]
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the fit's --threads default
    cli_main()


def _output_to(output: Path) -> None:
    """This process's stdout and stderr into the file ``output``, C libraries' output too.

    Without the file's directory, the study that asked for this process has been stopped (Ctrl-C) and removed
    it: the process ends at once, silently.
    """
    try:
        file = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except FileNotFoundError:
        os._exit(130)
    os.dup2(file, sys.stdout.fileno())  # multiprocessing flushes both at exit
    os.dup2(file, sys.stderr.fileno())
