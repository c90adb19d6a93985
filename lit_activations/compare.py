"""``python -m lit_activations compare``: the activation study, many runs -> one table and one figure.

A study's cells are its (activation, seed) pairs; each cell is an ordinary run in its own directory
``<study_dir>/<activation>/seed_<s>``. By default the cells are trained as members of as few fits as
``--jobs`` allows (``lit_activations.members``): one fit per job, the cells split evenly, so a
Lightning step does the work of many runs. ``--vectorize=false`` runs one fit per cell instead.
Either way each fit is an ordinary ``fit`` through the same command line, in a process of its
own, forked from a server that has imported Lightning once (multiprocessing's "forkserver"), so
it starts in a fraction of a second instead of the 5 s of a new interpreter; with ``--launcher ray``
each fit is a Ray task instead (``lit_activations.ray_launcher``), and nothing else changes. The
fits' own directories (``config.yaml``, the checkpoints that resume them) are under
``<study_dir>/fits``.

The seed is ``--seed_everything`` of the cell's single fit (initialisation); the data stay those of
``--data.seed``. Every other argument goes to each fit unchanged, e.g. ``--config
configs/tutorial.yaml``. Afterwards the runs are read back from their event files into
``results.md``, ``results.csv`` and ``comparison.png`` in the study directory. A fit that fails is
retried one cell per fit, so a failing cell is reported on its own and the others go on. A cell
that finished before is not run again if its ``config.yaml`` is what the cell would now be trained
with; a changed setting is a one-line error naming it (``--fresh`` trains the cells again).

One study writes in a study directory at a time (``lit_activations.lock``). Ctrl-C, SIGTERM and SIGHUP
stop the study and its fits; a fit also ends when the study's own process is killed outright.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import importlib
import importlib.util
import io
import json
import math
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import pairwise, product
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn, Protocol

import numpy as np
import yaml

from lit_activations import lock
from lit_activations.errors import SEEDS, ConfigError

# Loaded once by the server the fits are forked from: what a fit imports, this module (the processes' target) and
# the event reader. This module imports torch, TensorBoard and matplotlib only once the server is starting.
_PRELOAD = ["lit_activations.compare", "lit_activations.cli", "lit_activations.events", "sklearn.datasets",
            "sklearn.model_selection"]  # fmt: skip

FINISHED = "finished"  # marker file in a run directory whose fit exited cleanly
STOP_GRACE = 30  # seconds a fit has to stop after the study stops it, before it is killed
COLUMNS = ("setting", "activation", "runs", "failed", "val_acc_mean", "val_acc_std", "epochs_to_90",
           "seeds_reaching_90", "vanishing_ratio", "saturation", "dead_units", "error")  # fmt: skip


@dataclass
class Run:
    """One cell of the study: an (activation, seed) in one setting of the grid, and the run directory it logs into."""

    activation: str | list[str]  # for a model that is not an ActivationMLP, the model's run name
    seed: int
    directory: Path
    setting: dict[str, Any] = field(default_factory=dict)  # option -> value, from --grid
    members: bool = True  # an ActivationMLP's cell, trained as a member of a fit; else the model's own fit
    error: str = ""  # the failed fit's last line of output; empty if it finished
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # read back once it finished

    @property
    def group(self) -> str:
        """What the table's row and the figure's panel of this cell are called: setting and activation."""
        return " ".join(filter(None, [setting_name(self.setting), "+".join(_listed(self.activation))]))


class _OneLineParser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line (its usage goes with ``--help``), as the fits' are."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def compare_main(argv: list[str]) -> int:
    parser = _OneLineParser(
        prog="python -m lit_activations compare",
        description="Fit every activation with every seed, then write a table and a figure of the study.",
        epilog="Any other argument is passed to each fit, e.g. --config configs/tutorial.yaml --trainer.max_epochs=50.",
    )
    parser.add_argument(
        "--activations", type=_names,
        help="comma-separated, e.g. sigmoid,tanh,relu; one per hidden layer joined by +: relu+tanh (default: the"
        " configuration's --model.activation; for a model of your own, which has no members, leave it out)",
    )  # fmt: skip
    parser.add_argument("--seeds", default=[0], type=_seeds, help="comma-separated integers (default: 0)")
    parser.add_argument(
        "--jobs", type=_positive, help="fits at a time (default: the cores, or with --launcher ray the cluster's CPUs)"
    )
    parser.add_argument(
        "--vectorize", default=True, type=_boolean,
        help="train the cells as members of one fit per job (default: true); false: one fit per cell",
    )  # fmt: skip
    parser.add_argument(
        "--grid", action="append", default=[], type=_grid, metavar="OPTION=[V1, ...] | FILE.yaml",
        help="also vary a fit option, e.g. 'model.optimizer.lr=[0.001, 0.01]' or 'data=[CirclesDataModule,"
        " MoonsDataModule]'; repeat it for a product, or give a YAML file mapping options to lists",
    )  # fmt: skip
    parser.add_argument("--study_dir", default=Path("logs/study"), type=Path, help="default: logs/study")
    parser.add_argument(
        "--launcher", default="local", choices=["local", "ray"],
        help="where the fits run: processes on this machine (default), or Ray tasks (pip install -e '.[ray]')",
    )  # fmt: skip
    parser.add_argument(
        "--ray_address", metavar="ADDRESS",
        help="with --launcher ray: the cluster to join (auto: the one `ray start` began here); default: a local Ray",
    )  # fmt: skip
    parser.add_argument(
        "--fresh", action="store_true",
        help="train the requested runs again, replacing what the study directory holds for them",
    )  # fmt: skip
    args, fit_args = parser.parse_known_args(argv)
    if any(arg.startswith("--members") for arg in fit_args):
        parser.error("--members.* is compare's own choice: give the cells with --activations and --seeds")
    if args.ray_address and args.launcher != "ray":
        parser.error("--ray_address is for --launcher ray")
    handlers = {signum: signal.signal(signum, _stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _study(args, fit_args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except UserCodeFailed as err:
        print(err, file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM, SIGHUP; while fitting, _run_fits has stopped the fits first
        kept = f"the finished runs are kept in {args.study_dir}" if args.study_dir.exists() else "nothing was written"
        with contextlib.suppress(OSError):  # (a closed terminal, after SIGHUP)
            print(f"interrupted: {kept}; the same command trains the others", file=sys.stderr, flush=True)
        return 128 + getattr(stop, "signum", signal.SIGINT)
    finally:
        lock.release(args.study_dir)  # (the end of the process would release it too)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


class UserCodeFailed(Exception):
    """Checking the study's fits met a bug in the user's own code (their model's ``__init__``, say); the message is
    its traceback."""


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a closed terminal): the study stops as on Ctrl-C, with its fits."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def _study(args: argparse.Namespace, fit_args: list[str]) -> int:
    """The study: check every fit's configuration, skip what finished before, run the rest, tabulate.

    Raises:
        ConfigError: what the fits would refuse, a finished run trained otherwise, a cluster that cannot run them.
    """
    started = time.monotonic()
    if reason := lock.unwritable(args.study_dir):  # before the checks, which would name the fits' own directory
        raise ConfigError(f"invalid --study_dir {args.study_dir}: {reason}")
    if args.launcher == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ConfigError("--launcher ray needs Ray, an optional extra: pip install -e '.[ray]'")
        from lit_activations.ray_launcher import unreachable

        # `auto` is where RAY_ADDRESS points, if it is set
        address = os.environ.get("RAY_ADDRESS") if args.ray_address == "auto" else args.ray_address
        if error := unreachable(address):
            raise ConfigError(error)
    context = _process_context()  # the server starts importing Lightning (5 s) while this process goes on
    settings = [dict(point) for point in product(*[[(k, v) for v in values] for k, values in _merged(args.grid)])]
    requested = _requested(fit_args, args, context, settings)
    runs = _cells(args, settings, requested)
    for run in runs:  # each cell's directory, whose parents may have been made read-only
        if reason := lock.unwritable(run.directory):
            raise ConfigError(f"cannot write the run {run.directory}: {reason}")
    if any(checked.config["trainer"].get("fast_dev_run") for checked in requested.values()):
        raise ConfigError("invalid trainer.fast_dev_run for compare: such a fit writes no run to tabulate; give"
                          " --trainer.max_epochs=1 --trainer.limit_train_batches=1 for a quick study")  # fmt: skip
    _hold(args.study_dir)  # from here on this study writes in it; nothing before wrote anything
    finished_before = [] if args.fresh else [run for run in runs if (run.directory / FINISHED).exists()]
    if error := _stale(finished_before, requested):
        raise ConfigError(error)
    launcher: Launcher = LocalLauncher(context, args.study_dir)
    if args.launcher == "ray" and len(finished_before) < len(runs):  # (none is "finished before" with --fresh)
        from lit_activations.ray_launcher import RayLauncher  # Ray starts (10 s) only when there is a fit to run

        # before --fresh removes anything: a cluster that cannot take the study leaves the old runs as they were
        launcher = RayLauncher(args.ray_address, args.study_dir, {name: c.config for name, c in requested.items()})
    if args.fresh:
        shutil.rmtree(args.study_dir / "fits", ignore_errors=True)
        for run in runs:
            shutil.rmtree(run.directory, ignore_errors=True)
    progress = _Progress(len(runs))
    pending = []
    for run in runs:
        if (run.directory / FINISHED).exists():
            progress.report([run], "skipped (finished before)")
        else:
            pending.append(run)
    args.jobs = args.jobs or launcher.default_jobs
    fits = []
    for point in settings:  # cells of one setting share a fit; cells of different settings never do
        cells = [run for run in pending if run.setting == point]
        vectorize = args.vectorize and all(run.members for run in cells)
        fits += _split(cells, max(1, args.jobs // len(settings)) if vectorize else len(cells))
    try:
        _run_fits(fits, args, fit_args, launcher, progress)
    finally:
        launcher.close()
    print(f"{len(runs)} run{'s' * (len(runs) != 1)} in {time.monotonic() - started:.1f} s", flush=True)
    _tabulate(runs, args.study_dir, context)
    return 1 if any(run.error for run in runs) else 0


def _hold(study_dir: Path) -> None:
    """Lock the study directory for this study (``lit_activations.lock``), saying so if a killed one left it.

    Raises:
        ConfigError: another live study holds it, or it cannot be a directory this process writes in.
    """
    try:
        stale = lock.hold(study_dir)
    except lock.Held as held:
        raise ConfigError(
            f"{study_dir} is in use by another study ({held.holder}); wait for it to end, or give another --study_dir"
        ) from None
    except OSError as err:
        raise ConfigError(f"invalid --study_dir {study_dir}: {err.strerror} ({err.filename})") from None
    if stale:
        print(f"{study_dir} was left by a study that is gone ({stale}): taking it over", file=sys.stderr, flush=True)


def _cells(args: argparse.Namespace, settings: list[dict[str, Any]], requested: dict[str, _Checked]) -> list[Run]:
    """The study's cells: each setting × activation × seed; for a model that is not an ActivationMLP, setting × seed."""
    from lit_activations.members import activation_name  # imports torch

    runs = []
    for point in settings:
        checked = requested[setting_name(point)]
        if not checked.members:
            name = checked.model.lower()
            runs += [Run(name, s, args.study_dir.joinpath(setting_name(point), name, f"seed_{s}"), point, members=False)
                     for s in args.seeds]  # fmt: skip
            continue
        activations = args.activations or [checked.activation]
        runs += [
            Run(a, s, args.study_dir.joinpath(setting_name(point), activation_name(a), f"seed_{s}"), point)
            for a in activations
            for s in args.seeds
        ]
    return runs


def _tabulate(runs: list[Run], study_dir: Path, context: multiprocessing.context.BaseContext) -> None:
    """Read the finished runs back and write ``results.md``, ``results.csv`` and ``comparison.png``."""
    finished = [run for run in runs if not run.error]
    with context.Pool(min(os.cpu_count() or 1, max(1, len(finished)))) as pool:  # 0.3 s a run: on every core
        for run, scalars in zip(finished, pool.map(read_scalars, [r.directory for r in finished]), strict=True):
            run.scalars = scalars  # once: the table and the figure both use them

    study_dir.mkdir(parents=True, exist_ok=True)  # even if no fit got as far as its run directory
    groups = list(dict.fromkeys(run.group for run in runs))
    rows = [_summarise(group, [r for r in runs if r.group == group]) for group in groups]
    table = _markdown(rows)
    (study_dir / "results.md").write_text(table)
    with open(study_dir / "results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    curves = {g: c for g in groups if (c := _curves([r for r in runs if r.group == g and not r.error]))}
    if curves:
        layers = sorted(
            {tag for c in curves.values() for tag in c if tag.startswith("grad_mean_abs_epoch/")}, key=_natural
        )
        from lit_activations.plots import study_figure  # matplotlib, only now

        study_figure(curves, layers).savefig(study_dir / "comparison.png")
    print(table, flush=True)
    figure = f", figure {study_dir / 'comparison.png'}" if curves else ""
    print(f"Table {study_dir / 'results.md'}, CSV {study_dir / 'results.csv'}{figure};"
          f" to look at the runs: tensorboard --logdir {study_dir}", flush=True)  # fmt: skip


@dataclass
class _Progress:
    """One line per run as its fit ends."""

    total: int
    done: int = 0

    def report(self, runs: list[Run], status: str) -> None:
        together = f" ({len(runs)} runs in one fit)" if len(runs) > 1 else ""
        for run in runs:
            self.done += 1
            log = run.directory / "error.log"
            outcome = f"failed: {run.error}, {status} (all of it: {log})" if run.error else status
            print(f"[{self.done}/{self.total}] {run.group} seed {run.seed}: {outcome}{together}", flush=True)


def _run_fits(
    fits: list[list[Run]], args: argparse.Namespace, fit_args: list[str], launcher: Launcher, progress: _Progress
) -> None:
    """Run ``fits`` (lists of cells), ``args.jobs`` at a time; a failed fit of several cells is retried cell by cell."""
    threads = max(1, launcher.cpus // args.jobs)  # no oversubscription of the cores
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        running: dict[Future, list[Run]] = {}

        def submit(cells: list[Run]) -> None:
            running[pool.submit(_fit, cells, fit_args, args.study_dir, threads, launcher)] = cells

        try:
            for cells in fits:
                submit(cells)
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    cells, seconds = running.pop(future), future.result()
                    if len(cells) > 1 and any(run.error for run in cells):  # alone, a bad cell fails without the others
                        for cell in cells:
                            cell.error = ""
                            submit([cell])
                    else:
                        progress.report(cells, f"ok, {seconds:.1f} s" if not cells[0].error else f"{seconds:.1f} s")
        except KeyboardInterrupt:  # else leaving the pool would wait for every fit, queued ones too, to end on its own
            pool.shutdown(wait=False, cancel_futures=True)
            launcher.interrupt()
            raise


def _split(runs: list[Run], parts: int) -> list[list[Run]]:
    """``runs`` in ``parts`` consecutive chunks whose sizes differ by at most one (no empty chunk)."""
    parts = min(parts, len(runs))
    sizes = [len(runs) // parts + (i < len(runs) % parts) for i in range(parts)]
    return [runs[a:b] for a, b in pairwise(np.cumsum([0, *sizes]))]


def _fit(runs: list[Run], fit_args: list[str], study_dir: Path, threads: int, launcher: Launcher) -> float:
    """Train ``runs`` as the members of one fit (or a cell of a model without members as its own fit), in a process
    of its own from ``launcher``; return its wall time.

    A failed fit leaves its last line of output as each run's ``error``, and all of it in the run's ``error.log``.
    """
    fits = study_dir / "fits" / setting_name(runs[0].setting)
    version = _fit_version(runs)
    for directory in (*fits.glob(f"*/{version}"), *(run.directory for run in runs)):
        shutil.rmtree(directory, ignore_errors=True)  # what an unfinished earlier attempt left (its log is replaced)
    if runs[0].members:
        entries: list[dict[str, object]] = []
        for run in runs:  # consecutive cells of one activation: one entry with their seeds
            if entries and entries[-1]["name"] == run.activation:
                entries[-1]["seeds"].append(run.seed)
            else:
                entries.append({"name": run.activation, "seeds": [run.seed]})
        cells = str(study_dir.resolve().joinpath(setting_name(runs[0].setting))).replace("{", "{{").replace("}", "}}")
        own = [f"--members.activations={json.dumps(entries)}",
               f"--members.run_dir={cells}/{{activation}}/seed_{{seed}}"]  # fmt: skip
        # the fit's own directory (config.yaml, checkpoints): <fits>/<its activation, or members>/<its cells>
        where = [f"--trainer.logger.init_args.save_dir={fits}", f"--trainer.logger.init_args.version={version}"]
    else:  # one cell, in its run directory: <save_dir>/<name>/<version>
        (run,) = runs
        own = [f"--seed_everything={run.seed}"]
        where = [f"--trainer.logger.init_args.save_dir={run.directory.parent.parent}",
                 f"--trainer.logger.init_args.name={run.directory.parent.name}",
                 f"--trainer.logger.init_args.version={run.directory.name}"]  # fmt: skip
    started = time.monotonic()
    arguments = [*_fit_arguments(fit_args, study_dir, runs[0].setting), *where, *own]
    exitcode, lines = launcher.run(arguments, threads, runs[0].setting, fits / f"{version}.log")
    for run in runs:
        if exitcode == 0:
            (run.directory / FINISHED).touch()
            continue
        if exitcode is not None and exitcode < 0:  # killed: its last line says nothing about why
            run.error = f"error: the fit's process was killed (signal {-exitcode})"
        else:
            run.error = lines[-1] if lines else f"exit status {exitcode}"
        run.directory.mkdir(parents=True, exist_ok=True)
        (run.directory / "error.log").write_text("\n".join(lines) + "\n")
    return time.monotonic() - started


def _fit_version(runs: list[Run]) -> str:
    """The version (directory) of a fit of ``runs``: the same cells, the same directory, replaced when they rerun."""
    first = f"{'+'.join(_listed(runs[0].activation))}-seed_{runs[0].seed}"
    if len(runs) == 1:
        return first
    digest = hashlib.sha1(json.dumps([[r.activation, r.seed] for r in runs]).encode()).hexdigest()[:8]
    return f"{first}-and-{len(runs) - 1}-more-{digest}"


def _fit_arguments(fit_args: list[str], study_dir: Path, setting: dict[str, Any]) -> list[str]:
    """``fit`` with the user's arguments, the setting's options and the study's own, for a fit of the study."""
    # a string as typed (JSON's quotes would be part of it); anything else as JSON, which the parser reads as YAML
    options = [f"--{o}={v if isinstance(v, str) else json.dumps(v)}" for o, v in setting.items()]
    return ["fit", *fit_args, *options, f"--trainer.logger.init_args.save_dir={study_dir / 'fits'}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]  # fmt: skip


class Launcher(Protocol):
    """Where a study's fits run. The study (its cells, run directories, skipping and table) is the same for all."""

    cpus: int  # the cores the fits share
    default_jobs: int  # fits at a time unless --jobs says

    def run(
        self, arguments: list[str], threads: int, setting: dict[str, Any], log: Path
    ) -> tuple[int | None, list[str]]:
        """``python -m lit_activations ARGUMENTS`` with ``threads`` threads, its output into the file ``log``: its exit
        status and output lines."""
        ...

    def interrupt(self) -> None:
        """Stop the running fits (Ctrl-C): their runs stay unfinished, for the next run of the study."""

    def close(self) -> None:
        """Let go of what the fits ran on."""


class LocalLauncher:
    """Each fit in a process of this machine, forked from the server that has imported Lightning, helping to hold
    the study directory ``study_dir`` (``lit_activations.lock.join``) while it runs."""

    def __init__(self, context: multiprocessing.context.BaseContext, study_dir: Path | None = None) -> None:
        self.context, self.study_dir = context, study_dir
        self.cpus = self.default_jobs = os.cpu_count() or 1
        self._running: set[multiprocessing.process.BaseProcess] = set()
        self._stopping = 0.0  # when interrupt() came

    def run(
        self, arguments: list[str], threads: int, setting: dict[str, Any] | None, log: Path
    ) -> tuple[int | None, list[str]]:
        if self._stopping:
            return None, ["error: interrupted before it started"]
        log.parent.mkdir(parents=True, exist_ok=True)
        study = (os.getpid(), self.study_dir)
        process = self.context.Process(target=_with_the_study, args=(fit_process, study, arguments, threads, log))
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


@dataclass(frozen=True)
class _Checked:
    """What one setting's fits were checked to get, by building their classes without training."""

    config: dict[str, Any]  # the fit's configuration, as its config.yaml will record it
    model: str  # the model's class name
    members: bool  # whether the model is an ActivationMLP, which trains the cells as members
    activation: str | list[str] | None  # ActivationMLP's --model.activation: the study's activation by default


def _requested(
    fit_args: list[str], args: argparse.Namespace, context: multiprocessing.context.BaseContext,
    settings: list[dict[str, Any]],
) -> dict[str, _Checked]:  # fmt: skip
    """Each setting's fits checked as ``fit`` checks them, every activation and seed of the study included, by
    setting name.

    Raises:
        ConfigError: the fit's own one-line error for arguments, an activation or a value it refuses.
    """
    members = [f"--members.seeds={json.dumps(args.seeds)}"]
    if args.activations:
        members.append(f"--members.activations={json.dumps(args.activations)}")
    checked = {}
    for setting in settings:
        arguments = _fit_arguments(fit_args, args.study_dir, setting)[1:]  # the fit's flags, without `fit`
        receiver, sender = context.Pipe(duplex=False)  # (a pipe, not a file: nothing left if the study is killed)
        study = (os.getpid(), None)  # (a check writes nothing: it holds no directory)
        process = context.Process(target=_with_the_study, args=(check_process, study, arguments, members, sender))
        process.start()
        sender.close()
        try:
            outcome, result = receiver.recv()
        except EOFError:  # the process died before it could answer
            outcome, result = "refused", f"the check of the fit's arguments ended with exit status {process.exitcode}"
        process.join()
        if outcome == "refused":
            raise ConfigError(result.removeprefix("error: ").removesuffix(" (see --help)"))
        if outcome == "failed":  # a bug in the user's own code (their model's __init__, say): its traceback
            raise UserCodeFailed(result)
        checked[setting_name(setting)] = _Checked(**result)
    return checked


def _stale(runs: list[Run], requested: dict[str, _Checked]) -> str:
    """The first finished run whose ``config.yaml`` differs from the configuration its cell would now get, as a
    one-line error; or ``""`` (a changed setting must not come back as an old table)."""
    from lit_activations.resume import flatten, option

    # where a fit wrote (the study's own choice, by cell) and how fast it ran: not what it trained
    ignored = ("ckpt_path", "threads", "trainer.logger.init_args.version", "trainer.logger.init_args.purge_step",
               "trainer.logger.init_args.save_dir", "trainer.logger.init_args.name")  # fmt: skip
    for run in runs:
        asked = requested[setting_name(run.setting)].config
        saved_file = run.directory / "config.yaml"
        if not saved_file.is_file():
            return f"{run.directory} has no config.yaml to tell what it was trained with; use --fresh"
        expected = asked | {
            "seed_everything": run.seed,
            "members": dict.fromkeys(("activations", "seeds", "run_dir")),
        }
        if run.members:
            model = asked["model"]["init_args"] | {"activation": run.activation, "activation_args": None}
            expected["model"] = asked["model"] | {"init_args": model}
        saved, wanted = flatten(yaml.safe_load(saved_file.read_text())), flatten(expected)
        changed = [k for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k) and k not in ignored]
        if changed:
            key = changed[0]
            more = f" (and {len(changed) - 1} more: {', '.join(map(option, changed[1:]))})" if changed[1:] else ""
            was, now = saved.get(key), wanted.get(key)
            return (
                f"{run.directory} was trained with {option(key)}={was!r}, not {now!r}{more};"
                " give another --study_dir, or --fresh to train the study's runs again"
            )
    return ""


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``lit_activations.events.read_scalars``, imported in the process that reads (TensorBoard: 1 s)."""
    from lit_activations.events import read_scalars as read

    return read(run_dir)


def check_process(arguments: list[str], members: list[str], sender: Connection) -> None:
    """The body of a check's process: ``lit_activations.cli.check_fit``, and what came of it through ``sender``:
    ``("checked", result)``, ``("refused", its one-line error)`` or ``("failed", a traceback)``."""
    from lit_activations.cli import check_fit

    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())  # Lightning's and C libraries' output: not the study's
    os.dup2(null, sys.stderr.fileno())
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            checked = check_fit(arguments, members)
    except ConfigError as err:
        sender.send(("refused", f"error: {err}"))
    except SystemExit:  # the parser's one-line error, written to stderr
        lines = said.getvalue().strip().splitlines()
        sender.send(("refused", lines[-1] if lines else "error: the fit's arguments were refused"))
    except Exception:
        sender.send(("failed", traceback.format_exc()))
    else:
        sender.send(("checked", checked))


def _with_the_study(target: Callable[..., None], study: tuple[int, Path | None], *args: Any) -> None:
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
    """The watcher of ``_with_the_study``: checks every second that the study's own process lives."""
    while _alive(study_pid):
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE)
    os._exit(143)


def fit_process(arguments: list[str], threads: int, output: Path) -> None:
    """The body of a fit's process: ``python -m lit_activations ARGUMENTS``, its output into ``output``.

    Also the body of a Ray task (``lit_activations.ray_launcher``), which runs in a worker process of its own.
    """
    from lit_activations.cli import cli_main  # here, not at the top: the study's own process needs no Lightning

    _output_to(output)
    # To Lightning this process is `python -m lit_activations ARGUMENTS`: its DDP launcher starts the other
    # ranks as `python -m <__main__'s module> <sys.argv[1:]>` (multiprocessing's spawn sets __main__ the same way).
    sys.modules["__main__"] = importlib.import_module("lit_activations.__main__")
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


def _process_context() -> multiprocessing.context.BaseContext:
    """Fork from a server that has imported Lightning; where there is none (Windows), start fresh interpreters.

    The server ignores Ctrl-C, which a terminal sends to every process of the study: it would otherwise die
    with a traceback of its own while importing; so do the fits and checks forked from it, which the study
    stops itself. Its socket lies in a directory of this study's (``_scratch``), unless the temporary
    directory's path is too long for a socket's.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the server, which this process starts
    scratch = _scratch()
    before = tempfile.tempdir
    if len(str(scratch)) <= 70:  # a socket's path has at most 107 bytes; under it come pymp-…/listener-…
        tempfile.tempdir = str(scratch)  # where multiprocessing puts the server's socket
    try:
        multiprocessing.forkserver.ensure_running()  # start it now, not at the first fit
    finally:
        signal.signal(signal.SIGINT, handler)
        tempfile.tempdir = before
    return context


def _scratch() -> Path:
    """A temporary directory for this study's process, removed when it exits; those of studies that died
    (``kill -9``: no exit handler runs) are removed by the next study."""
    prefix = "lit_activations-study-"
    for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        pid = stale.name.removeprefix(prefix)
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    scratch = Path(tempfile.gettempdir()) / f"{prefix}{os.getpid()}"
    scratch.mkdir(exist_ok=True)
    # after multiprocessing has removed its own directory in it (finalizers of lower priority run later)
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(scratch,), kwargs={"ignore_errors": True},
                                  exitpriority=-101)  # fmt: skip
    return scratch


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _summarise(group: str, runs: list[Run]) -> dict[str, object]:
    finished = [r for r in runs if not r.error]
    row: dict[str, object] = {
        "setting": setting_name(runs[0].setting),
        "activation": "+".join(_listed(runs[0].activation)),
    }
    row |= {"runs": len(runs), "failed": len(runs) - len(finished)}
    row["error"] = _brief(next((r.error for r in runs if r.error), ""))
    if not finished:
        return row
    scalars = [r.scalars for r in finished]
    final_acc = [_last(s, "val/acc") for s in scalars]
    row["val_acc_mean"] = _finite_mean(final_acc)
    finite = [acc for acc in final_acc if math.isfinite(acc)]
    row["val_acc_std"] = statistics.stdev(finite) if len(finite) > 1 else 0.0 if finite else math.nan
    reached = [
        next((epoch + 1 for epoch, (_, acc) in enumerate(s.get("val/acc", [])) if acc >= 0.9), None) for s in scalars
    ]
    epochs = [e for e in reached if e is not None]
    row["epochs_to_90"] = statistics.fmean(epochs) if epochs else ""  # over the seeds that got there
    row["seeds_reaching_90"] = len(epochs)
    # each over the seeds where it is finite: one seed's dead gradients (a ratio of 0) hide none of the others'
    row["vanishing_ratio"] = _finite_mean([_last(s, "vanishing_ratio/epoch") for s in scalars])
    for stat in ("saturation", "dead_units"):
        row[stat] = _finite_mean([_hidden_mean(s, stat) for s in scalars])
    return row


def _last(scalars: dict[str, list[tuple[int, float]]], tag: str) -> float:
    """A tag's last value, NaN for a tag the run did not log (a model of your own may log other tags)."""
    return scalars[tag][-1][1] if scalars.get(tag) else math.nan


def _finite_mean(values: list[float]) -> float:
    """The mean of the finite values, NaN if there is none."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def _brief(error: str, width: int = 100) -> str:
    """A failed run's error for the table: its first ``width`` characters (the run's ``error.log`` has all)."""
    return error if len(error) <= width else error[: width - 1] + "…"


def _hidden_mean(scalars: dict[str, list[tuple[int, float]]], stat: str) -> float:
    """The last value of ``stat`` averaged over the hidden activations (the only ones the monitor finds in the MLP)."""
    tags = [t for t in scalars if t.startswith(f"{stat}/")]
    return statistics.fmean(scalars[t][-1][1] for t in tags) if tags else math.nan


def _curves(runs: list[Run]) -> dict[str, np.ndarray]:
    """Per-epoch series of the finished runs, stacked as (seeds, epochs) and cut to the shortest run."""
    if not runs:
        return {}
    scalars = [r.scalars for r in runs]
    tags = [t for t in scalars[0] if t in ("val/loss", "val/acc") or t.startswith("grad_mean_abs_epoch/")]
    curves = {}
    for tag in tags:
        series = [[v for _, v in s[tag]] for s in scalars if tag in s]
        length = min(len(v) for v in series)
        curves[tag] = np.array([v[:length] for v in series])
    return curves


def _markdown(rows: list[dict[str, object]]) -> str:
    """The table; a ``setting`` column first when the study has a grid."""
    gridded = any(row["setting"] for row in rows)
    columns = [*(["setting"] if gridded else []), "activation", "final val acc (mean ± std)", "epochs to 90%",
               "log10 vanishing ratio", "saturation", "dead units", "runs"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for row in rows:
        first = (f"{row['setting']} | " if gridded else "") + f"{row['activation']}"
        if "val_acc_mean" not in row:
            lines.append(f"| {first} | failed: {row['error']} | | | | | 0/{row['runs']} |")
            continue
        reaching, total = row["seeds_reaching_90"], row["runs"] - row["failed"]
        if reaching:
            epochs = f"{row['epochs_to_90']:.0f}" + (f" ({reaching}/{total} seeds)" if reaching < total else "")
        else:
            epochs = "never"
        ran = f"{row['runs'] - row['failed']}/{row['runs']}" + (f" ({row['error']})" if row["failed"] else "")
        lines.append(
            f"| {first} | {_shown(row['val_acc_mean'], 3)} ± {_shown(row['val_acc_std'], 3)} | {epochs} |"
            f" {_shown(row['vanishing_ratio'])} | {_shown(row['saturation'])} | {_shown(row['dead_units'])} | {ran} |"
        )
    return "\n".join(lines) + "\n"


def _shown(value: float, digits: int = 2) -> str:
    """A number of the table; ``-`` for one no run measured (NaN)."""
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def _natural(tag: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", tag)]


def setting_name(setting: dict[str, Any]) -> str:
    """A setting of the grid as a directory name: each option's last part and its value.

    >>> setting_name({"model.optimizer.lr": 0.01, "model.hidden_sizes": [5, 5], "data": "pkg.MoonsDataModule"})
    'lr=0.01-hidden_sizes=[5,5]-data=MoonsDataModule'
    """

    def compact(value: Any) -> str:
        text = json.dumps(value, separators=(",", ":")).strip('"')
        return text.rpartition(".")[2] if isinstance(value, str) else text

    return "-".join(f"{option.rpartition('.')[2]}={compact(value)}" for option, value in setting.items())


def _listed(activation: str | list[str]) -> list[str]:
    return [activation] if isinstance(activation, str) else list(activation)


def _names(text: str) -> list[str | list[str]]:
    """Comma-separated activations; ``relu+tanh`` is one per hidden layer."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated activation names, e.g. sigmoid,tanh,relu")
    return [name.split("+") if "+" in name else name for name in dict.fromkeys(names)]


def _grid(text: str) -> list[tuple[str, list[Any]]]:
    """``OPTION=[V1, V2, ...]`` (YAML values), or a YAML file mapping options to lists of values."""
    option, equals, values = text.partition("=")
    if not equals and Path(text).suffix in (".yaml", ".yml"):
        try:
            content = yaml.safe_load(Path(text).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise argparse.ArgumentTypeError(f"cannot read the grid file {text}: {err}") from None
        if not isinstance(content, dict):
            raise argparse.ArgumentTypeError(f"expected {text} to map options to lists of values")
        return [pair for key, value in content.items() for pair in _grid(f"{key}={json.dumps(value)}")]
    try:
        parsed = yaml.safe_load(values) if equals else None
    except yaml.YAMLError:
        parsed = None
    if not option.strip() or option.startswith("-") or not isinstance(parsed, list) or not parsed:
        raise argparse.ArgumentTypeError(
            f"expected OPTION=[VALUE, ...], e.g. model.optimizer.lr=[0.001, 0.01]; got {text!r}"
        )
    return [(option.strip(), parsed)]


def _merged(grids: list[list[tuple[str, list[Any]]]]) -> list[tuple[str, list[Any]]]:
    return [pair for grid in grids for pair in grid]


def _seeds(text: str) -> list[int]:
    try:
        seeds = list(dict.fromkeys(int(seed) for seed in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not all(SEEDS[0] <= seed <= SEEDS[1] for seed in seeds):
        raise argparse.ArgumentTypeError(f"expected integers from {SEEDS[0]} to {SEEDS[1]}, got {text!r}")
    return seeds


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)
