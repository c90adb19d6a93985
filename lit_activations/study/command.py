"""``compare_main``: the study command, in four steps: ``parse`` → ``plan`` → ``run`` → ``report``.

Nothing is written before ``plan`` has checked every fit and locked the study directory; see
``lit_activations.study`` for what a study is.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from lit_activations import lock
from lit_activations.errors import SEEDS, ConfigError
from lit_activations.study.cells import Cell, CheckedSetting, cells_of, group_into_fits, refuse_stale, settings_of
from lit_activations.study.checks import UserCodeFailed, check_settings
from lit_activations.study.fits import Progress, run_fits
from lit_activations.study.launcher import Launcher
from lit_activations.study.local import LocalLauncher, process_context
from lit_activations.study.report import write_report

# What the fork server imports besides a fit's modules: the targets of the study's own processes.
_PRELOAD = ["lit_activations.study.checks", "lit_activations.study.report"]


@dataclass
class Study:
    """What ``plan`` decided, before any fit ran: the cells, their fits' configurations and where the fits run."""

    directory: Path
    fit_args: list[str]  # the arguments every fit gets
    settings: list[dict[str, Any]]  # the grid's settings (one, {}, without --grid)
    checked: dict[str, CheckedSetting]  # each setting's fit, built without training, by setting name
    cells: list[Cell]
    launcher: Launcher
    context: multiprocessing.context.BaseContext  # the local processes (checks, reading the runs)
    jobs: int  # fits at a time
    vectorize: bool
    fresh: bool


def compare_main(argv: list[str]) -> int:
    """``python -m lit_activations compare ARGV``: the exit status (0; 1 if a cell failed; 2 for a user's mistake;
    128 + the signal that stopped it)."""
    args, fit_args = parse(argv)
    handlers = {signum: signal.signal(signum, _stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    started = time.monotonic()
    try:
        study = plan(args, fit_args)
        try:
            run(study)
        finally:
            study.launcher.close()
        runs = len(study.cells)
        print(f"{runs} run{'s' * (runs != 1)} in {time.monotonic() - started:.1f} s", flush=True)
        report(study)
        return 1 if any(cell.error for cell in study.cells) else 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except UserCodeFailed as err:
        print(err, file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM, SIGHUP; while fitting, run_fits has stopped the fits first
        kept = f"the finished runs are kept in {args.study_dir}" if args.study_dir.exists() else "nothing was written"
        with contextlib.suppress(OSError):  # (a closed terminal, after SIGHUP)
            print(f"interrupted: {kept}; the same command trains the others", file=sys.stderr, flush=True)
        return 128 + getattr(stop, "signum", signal.SIGINT)
    finally:
        lock.release(args.study_dir)  # (the end of the process would release it too)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The study's own options, and the rest: the arguments of every fit. A mistake exits 2 with one line."""
    parser = _OneLineParser(
        prog="python -m lit_activations compare",
        description="Fit every activation with every seed, then write a table and a figure of the study.",
        epilog="Any other argument is passed to each fit, e.g. --config configs/tutorial.yaml --trainer.max_epochs=50.",
    )
    parser.add_argument(
        "--activations", type=_activation_list,
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
    return args, fit_args


def plan(args: argparse.Namespace, fit_args: list[str]) -> Study:
    """Check every fit of the study, take its directory and choose where the fits run; nothing else is written.

    Raises:
        ConfigError: what the fits would refuse, a finished run trained otherwise, a cluster that cannot run them.
        UserCodeFailed: the user's own code failed while a fit was being built.
    """
    if reason := lock.unwritable(args.study_dir):  # before the checks, which would name the fits' own directory
        raise ConfigError(f"invalid --study_dir {args.study_dir}: {reason}")
    if args.launcher == "ray":
        _check_ray(args.ray_address)
    context = process_context(_PRELOAD)  # the server starts importing Lightning (5 s) while this process goes on
    settings = settings_of([pair for grid in args.grid for pair in grid])
    checked = check_settings(fit_args, args.study_dir, settings, args.activations, args.seeds, context)
    cells = cells_of(args.study_dir, settings, checked, args.activations, args.seeds)
    for cell in cells:  # each cell's directory, whose parents may have been made read-only
        if reason := lock.unwritable(cell.directory):
            raise ConfigError(f"cannot write the run {cell.directory}: {reason}")
    if any(found.config["trainer"].get("fast_dev_run") for found in checked.values()):
        raise ConfigError("invalid trainer.fast_dev_run for compare: such a fit writes no run to tabulate; give"
                          " --trainer.max_epochs=1 --trainer.limit_train_batches=1 for a quick study")  # fmt: skip
    _hold(args.study_dir)  # from here on this study writes in it; nothing before wrote anything
    finished_before = [] if args.fresh else [cell for cell in cells if cell.finished]
    refuse_stale(finished_before, checked)
    launcher: Launcher = LocalLauncher(context, args.study_dir)
    if args.launcher == "ray" and len(finished_before) < len(cells):  # (none is "finished before" with --fresh)
        from lit_activations.study.ray_cluster import RayLauncher  # Ray starts (10 s) only when a fit is to run

        # before --fresh removes anything: a cluster that cannot take the study leaves the old runs as they were
        launcher = RayLauncher(args.ray_address, args.study_dir, [found.config for found in checked.values()])
    return Study(args.study_dir, fit_args, settings, checked, cells, launcher, context,
                 jobs=args.jobs or launcher.default_jobs, vectorize=args.vectorize, fresh=args.fresh)  # fmt: skip


def run(study: Study) -> None:
    """Train the cells that have not finished before (all of them with ``--fresh``, whose old runs go first)."""
    if study.fresh:
        shutil.rmtree(study.directory / "fits", ignore_errors=True)
        for cell in study.cells:
            shutil.rmtree(cell.directory, ignore_errors=True)
    progress = Progress(len(study.cells))
    pending = []
    for cell in study.cells:
        if cell.finished:
            progress.report([cell], "skipped (finished before)")
        else:
            pending.append(cell)
    run_fits(
        group_into_fits(pending, study.settings, study.jobs, study.vectorize), study.launcher, progress,
        fit_args=study.fit_args, study_dir=study.directory, jobs=study.jobs,
        configs={name: found.config for name, found in study.checked.items()},
    )  # fmt: skip


def report(study: Study) -> None:
    """The table, the CSV and the figure of the study's runs (``lit_activations.study.report``)."""
    write_report(study.cells, study.directory)


def _check_ray(address: str | None) -> None:
    """Refuse ``--launcher ray`` without Ray installed, or with a cluster address where nothing answers.

    Raises:
        ConfigError: naming what to install or the address.
    """
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--launcher ray needs Ray, an optional extra: pip install -e '.[ray]'")
    from lit_activations.study.ray_cluster import unreachable

    # `auto` is where RAY_ADDRESS points, if it is set
    if error := unreachable(os.environ.get("RAY_ADDRESS") if address == "auto" else address):
        raise ConfigError(error)


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


class _OneLineParser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line (its usage goes with ``--help``), as the fits' are."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a closed terminal): the study stops as on Ctrl-C, with its fits."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def _activation_list(text: str) -> list[str | list[str]]:
    """``--activations``: comma-separated names; ``relu+tanh`` is one per hidden layer."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated activation names, e.g. sigmoid,tanh,relu")
    return [name.split("+") if "+" in name else name for name in dict.fromkeys(names)]


def _grid(text: str) -> list[tuple[str, list[Any]]]:
    """``--grid``: ``OPTION=[V1, V2, ...]`` (YAML values), or a YAML file mapping options to lists of values."""
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
