"""The command line: LightningCLI over any LightningModule (``ActivationMLP`` by default) and any data module."""

from __future__ import annotations

import copy
import errno
import logging
import os
import pkgutil
import signal
import sys
import threading
import traceback
import warnings
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_helpers import is_overridden

from lit_activations import lock
from lit_activations.callbacks import ActivationMonitor
from lit_activations.checkpoint import PeriodicCheckpoint
from lit_activations.data import data_shape
from lit_activations.divergence import DivergenceGuard, TrainingDiverged
from lit_activations.errors import ConfigError, check_seed
from lit_activations.logger import TensorBoardRunLogger
from lit_activations.members import expand_members, member_run_dirs
from lit_activations.model import ActivationMLP
from lit_activations.names import fit_name
from lit_activations.parser import TerseArgumentParser, config_files_in_use
from lit_activations.predictions import PredictionWriter
from lit_activations.resume import (
    changed_options,
    checkpoint_file,
    flatten,
    last_checkpoint,
    option,
    refuse_changes,
    refuse_member_checkpoint,
    refuse_missing_members,
    resumable_runs,
    run_of,
    trained_configuration,
)
from lit_activations.run_summary import RunSummary

# Lightning 2.6 calls a torch API that torch 2.13 deprecates, once per run: noise, not the user's concern.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
# DDP copies a gradient into its bucket when the strides differ from the parameter's: MemberLinear's weight gradient
# comes out of baddbmm transposed. At these sizes the copy costs nothing; the warning would only alarm.
warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides", category=UserWarning)
# validate, test and predict restore a checkpoint's weights, not its callbacks' state (configs/evaluate.yaml).
warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`, callbacks used to create")
# PredictionWriter counts its rows itself: the batch indices Lightning would track for it are not needed.
warnings.filterwarnings("ignore", message="Couldn't infer the batch indices fetched from your dataloader")
# Lightning's advertisements for its cloud services ("💡 Tip: ..."), printed at every fit.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda record: "💡" not in record.getMessage())


class _HeldLogs(logging.Filter):
    """Holds back what the given loggers say until ``release``; ``drop`` forgets it.

    Lightning says "Seed set to 0" and "GPU available: …" before the classes' own checks run, so a
    refused command would print them above its one line of error. The CLI holds them from the start
    of parsing and lets them out once the classes are built.
    """

    def __init__(self, *names: str) -> None:
        super().__init__()
        self.loggers = [logging.getLogger(name) for name in names]
        self.records: list[logging.LogRecord] = []

    def hold(self) -> None:
        self.records = []
        for logger in self.loggers:
            logger.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False

    def release(self) -> None:
        records = self.drop()
        for record in records:
            logging.getLogger(record.name).handle(record)

    def drop(self) -> list[logging.LogRecord]:
        for logger in self.loggers:
            logger.removeFilter(self)
        records, self.records = self.records, []
        return records


_LIGHTNING_NEWS = _HeldLogs("lightning.fabric.utilities.seed", "lightning.pytorch.utilities.rank_zero")

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIGS / "defaults.yaml"
EVALUATION_CONFIG = CONFIGS / "evaluate.yaml"  # validate, test and predict: over defaults.yaml

# Optimizers whose update of each parameter element depends on that element's gradient history only, so
# members stacked in one tensor stay independent. LBFGS (a line search over all parameters) and the
# factored second moments of Adafactor do not.
ELEMENTWISE_OPTIMIZERS = ("SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta", "Rprop",
                          "ASGD")  # fmt: skip


# The model's sizes come from the data module (``data_shape``: what it states, or what its data show).
LINKED_FROM_DATA = {"in_features": "num_features", "num_classes": "num_classes"}
EVALUATIONS = ("validate", "test", "predict")


class ActivationCLI(LightningCLI):
    """``fit|validate|test|predict`` with the defaults of ``configs/defaults.yaml``.

    Each run is logged under ``<save_dir>/<activation>/version_<n>``: the logger's ``name`` is
    linked to ``model.activation`` so runs of one activation sit together and overlay in TensorBoard.
    A user's mistake, caught by the parser or by a class's own checks, ends in a one-line
    ``error: ...`` and exit status 2, before anything is written (``JSONARGPARSE_DEBUG=true`` shows the
    traceback instead).

    ``--members.activations`` and ``--members.seeds`` make the fit train every (activation, seed) of
    their grid side by side (``lit_activations.members``); the fit's directory then holds the
    checkpoints and ``config.yaml`` of the whole fit, and each member logs into its own run
    directory with a ``config.yaml`` of the single fit it equals.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(PeriodicCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ActivationMonitor, "monitor", subclass_mode=True, required=False)
        parser.add_lightning_class_args(DivergenceGuard, "guard", subclass_mode=True, required=False)
        parser.add_lightning_class_args(RunSummary, "summary", subclass_mode=True, required=False)
        parser.add_lightning_class_args(PredictionWriter, "predictions", subclass_mode=True, required=False)
        parser.add_argument(
            "--threads", type=int | None, default=None,
            help="torch's CPU threads for this process (default: OMP_NUM_THREADS if set, else 1; under DDP on CPU,"
            " Lightning's share of the cores per process). A step of a small network is too short for several"
            " threads: two fits side by side on 2 cores ran 10x slower with torch's default of a thread per core.",
        )  # fmt: skip
        parser.add_argument(
            "--members.activations", type=list[str | list[str] | dict[str, Any]] | None, default=None,
            help="train several members side by side: their activations, each a name, an import path, a list"
            " of them (one per hidden layer) or {name: NAME, args: {...}, seeds: [...]} (default: --model.activation)",
        )  # fmt: skip
        parser.add_argument(
            "--members.seeds", type=list[int] | None, default=None,
            help="the members' seeds, for every activation (default: --seed_everything alone)",
        )  # fmt: skip
        parser.add_argument(
            "--members.run_dir", type=str | None, default=None,
            help="each member's run directory, relative to the fit's or absolute, with {activation} and {seed}"
            " (default: {activation}/seed_{seed})",
        )  # fmt: skip
        member_grid = (
            "model.init_args.activation",
            "model.init_args.activation_args",
            "members.activations",
            "members.seeds",
        )
        parser.link_arguments(member_grid, "model.init_args.members", compute_fn=_member_dicts)
        logger = "trainer.logger.init_args"
        parser.link_arguments(
            (*member_grid, "members.run_dir", "seed_everything"), f"{logger}.members", compute_fn=_run_dirs
        )
        parser.link_arguments(
            ("model.init_args.activation", "members.activations"), f"{logger}.name", compute_fn=fit_name
        )
        parser.link_arguments("data", "model.init_args.in_features", compute_fn=_features, apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.num_classes", compute_fn=_classes, apply_on="instantiate")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback | None]) -> Trainer:
        # `--monitor=null` leaves None among the callbacks LightningCLI collects (cli.py, instantiate_trainer).
        callbacks = [c for c in callbacks if c is not None]
        # `--trainer.enable_checkpointing=false` and `--trainer.enable_progress_bar=false` also drop the
        # checkpoint and progress bar of defaults.yaml, which Lightning would otherwise reject as a contradiction.
        if config.get("enable_progress_bar") is None and not sys.stderr.isatty():
            config["enable_progress_bar"] = False  # bars are for a terminal: in a log file each redraw is a line
        unwanted = tuple(
            kind
            for kind, flag in ((ModelCheckpoint, "enable_checkpointing"), (ProgressBar, "enable_progress_bar"))
            if config.get(flag) is False
        )
        if unwanted:
            callbacks = [c for c in callbacks if not isinstance(c, unwanted)]
            listed = config.get("callbacks") or []
            listed = listed if isinstance(listed, list) else [listed]
            config["callbacks"] = [c for c in listed if not isinstance(c, unwanted)]
        return super()._instantiate_trainer(config, callbacks)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        _LIGHTNING_NEWS.hold()  # "Seed set to 0", "GPU available": said once the command is known to be right
        argv = sys.argv[1:] if args is None else args
        argv = argv if isinstance(argv, list) else []
        config_files_in_use(argv)
        if dropped := _dropped_flag(argv):  # the parser would drop these flags without a word
            parser.error(dropped)
        try:
            # The model of a checkpoint named on the command line is known before parsing, so that its own
            # options parse (the default model, ActivationMLP, would refuse those of another class).
            with_trained = _with_trained_configuration(argv)
            if with_trained is argv:
                super().parse_arguments(parser, args)
            else:  # what LightningCLI's own does with a list (which, given sys.argv too, it would warn about)
                self.config = parser.parse_args(with_trained)
            subcommand = self.config.get("subcommand")
            _fit_the_model(self._own_config())  # before finding `last`: another model's runs are named after it
            if subcommand == "fit" and self.config.fit.ckpt_path:
                self._resume_run(parser, argv)
            elif subcommand in EVALUATIONS and self.config[subcommand].ckpt_path:
                self._evaluate_checkpoint(parser, argv, subcommand)
            _fit_the_model(self._own_config())
            check_seed("seed_everything", self._own_config().seed_everything)
        except ConfigError as err:
            parser.error(str(err), err)

    def before_instantiate_classes(self) -> None:
        config = self._own_config()
        if config.threads is not None:
            os.environ["OMP_NUM_THREADS"] = str(config.threads)  # DDP's launcher then keeps it for every process
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
            _check_sharding(self.datamodule, self.trainer, self._own_config().trainer.use_distributed_sampler)
            _check_training(self.model, self.trainer)
            _check_evaluation(self.model, self.config.get("subcommand"))
            _check_writable(self.trainer.logger)
        except Exception as err:
            _LIGHTNING_NEWS.drop()
            # A value the classes' own checks refuse (not a bug in anyone's code): report like a parse error.
            # jsonargparse wraps what a subclass-mode group (--data) raises; the refusal is then its cause.
            refusal = _config_error(err)
            if refusal is not None:
                self.parser.error(str(refusal), refusal)
            root = err
            while root.__cause__ is not None:  # past jsonargparse's "Does not validate ..." wrappers
                root = root.__cause__
            if root is err:
                raise
            raise root.with_traceback(root.__traceback__) from None  # a bug in someone's code: its own traceback
        _LIGHTNING_NEWS.release()

    def after_fit(self) -> None:
        """One line to say where the run is and how to look at it."""
        logger = self.trainer.logger
        if not self.trainer.is_global_zero or not isinstance(logger, TensorBoardRunLogger):
            return
        runs = logger.member_dirs
        where = runs[0] if len(runs) == 1 else f"{len(runs)} runs under {logger.log_dir}"
        print(f"Saved {where}; to look at it: tensorboard --logdir {logger.save_dir}", flush=True)

    def _own_config(self) -> Namespace:
        """The configuration of the subcommand (all of it when the CLI runs none, ``run=False``)."""
        subcommand = self.config.get("subcommand")
        return self.config[subcommand] if subcommand else self.config

    def after_validate(self) -> None:
        self._print_metrics("val")

    def after_test(self) -> None:
        self._print_metrics("test")

    def _print_metrics(self, stage: str) -> None:
        """The evaluated metrics as a table, a row per member. Another LightningModule's metrics are those it
        logs with ``self.log``, which Lightning prints itself."""
        rows = getattr(self.model, "last_epoch_metrics", None)
        if not self.trainer.is_global_zero or not rows:
            return
        tags = sorted({tag for row in rows for tag in row if tag.startswith(f"{stage}/")})
        labels = [member.label for member in self.model.members]
        width = max(len("member"), *map(len, labels))
        ckpt = self.config[self.subcommand].ckpt_path
        lines = [f"{self.subcommand} {ckpt if ckpt else '(no checkpoint: the initial weights)'}"]
        lines.append(f"{'member':<{width}}" + "".join(f"  {tag:>10}" for tag in tags))
        lines += [f"{label:<{width}}" + "".join(f"  {row[tag]:>10.4f}" for tag in tags) for label, row in
                  zip(labels, rows, strict=True)]  # fmt: skip
        print("\n".join(lines), flush=True)

    def _evaluate_checkpoint(self, parser: LightningArgumentParser, argv: list[str], subcommand: str) -> None:
        """Evaluate a checkpoint with the model it was trained with, and its data unless the flags choose other.

        The model, data, members and seed come from the checkpoint's run or from the checkpoint itself
        (``trained_configuration``), read before the command's flags; a flag that would give the model
        another shape or other arguments is refused in one line.
        """
        ckpt_path = self.config[subcommand].ckpt_path
        checkpoint = checkpoint_file(ckpt_path)
        if checkpoint is None:
            raise ConfigError(
                f"invalid ckpt_path {ckpt_path!r} for {subcommand}; give a checkpoint file, e.g."
                " logs/relu/version_0/checkpoints/last.ckpt"
            )
        trained = trained_configuration(checkpoint)
        if not trained:
            return
        text = yaml.safe_dump(trained, sort_keys=False)
        self.config = _parsed_under(parser, argv, subcommand, text)
        saved = _parsed_under(parser, [subcommand], subcommand, text)[subcommand]
        known = set(flatten(trained))
        changed = [key for key in changed_options(saved, self.config[subcommand], ("model.", "members."))
                   if key in known]  # fmt: skip
        if changed:
            was, now = flatten(saved.as_dict()).get(changed[0]), flatten(self.config[subcommand].as_dict())[changed[0]]
            raise ConfigError(
                f"cannot {subcommand} {checkpoint} with {option(changed[0])}={now!r}: it was trained with {was!r};"
                " drop the flag (the checkpoint decides the model)"
            )

    def _parse_ckpt_path(self) -> None:
        """Nothing: the configuration of a checkpoint's run is restored in ``parse_arguments`` instead.

        Lightning's own version (``lightning/pytorch/cli.py``) parses the checkpoint's hyperparameters over
        the configuration, which resets what they do not hold (the optimizer, which ``ActivationMLP`` takes as
        an argument) to its defaults: a run of ``configs/tutorial.yaml`` would resume with lr 1e-3.
        """

    def _changes_to(self, parser: LightningArgumentParser, argv: list[str], run: Path) -> list[str]:
        """What resuming ``run`` with ``argv`` would change of its experiment (``resume.EXPERIMENT``)."""
        saved = parser.parse_args(["fit", "--config", str(run / "config.yaml")]).fit
        return changed_options(saved, _parsed_under(parser, argv, "fit", str(run / "config.yaml")).fit)

    def _resume_run(self, parser: LightningArgumentParser, argv: list[str]) -> None:
        """Continue the checkpoint's run, in its own directory and with its own configuration (``resume.py``).

        The run's ``config.yaml`` is read first and the command's flags after it, so a bare ``fit
        --ckpt_path PATH`` resumes exactly; flags that would change the experiment are refused before
        anything in the run directory is touched, and so is a run that another process is training.
        Events the interrupted run wrote after the checkpoint's step are purged from TensorBoard's view.
        ``last`` is the newest run under the logger's directory that the command's flags can continue (a
        run that stopped before its first checkpoint starts over in its own directory).
        A checkpoint outside a run directory continues training in a new one.
        """
        logger = self.config.fit.trainer.logger
        if not (isinstance(logger, Namespace) and logger.class_path.endswith(TensorBoardRunLogger.__name__)):
            return
        ckpt_path = self.config.fit.ckpt_path
        if ckpt_path == "last":
            runs = resumable_runs(logger.init_args.save_dir, logger.init_args.name)
            if not runs:
                _say(f"no run under {Path(logger.init_args.save_dir, logger.init_args.name)} to resume: a new run")
                self.config.fit.ckpt_path = None
                return
            # the newest run that this command can continue; if none can, the newest, whose refusal says why
            run = next((run for run in runs if not self._changes_to(parser, argv, run)), runs[0])
            checkpoint = last_checkpoint(run)
        else:
            checkpoint = checkpoint_file(ckpt_path)
            run = run_of(checkpoint) if checkpoint is not None else None
            if run is None:
                return
        if checkpoint is not None:
            refuse_member_checkpoint(checkpoint)
        saved = parser.parse_args(["fit", "--config", str(run / "config.yaml")]).fit
        self.config = _parsed_under(parser, argv, "fit", str(run / "config.yaml"))
        refuse_changes(run, saved, self.config.fit, checkpoint)
        if checkpoint is not None:  # (a run that starts over makes its members' directories anew)
            refuse_missing_members(run, self.config.fit.trainer.logger.init_args.get("members"))
        if rank_zero_only.rank == 0:  # (the other ranks of a DDP fit run this too, under rank 0's lock)
            try:
                stale = lock.hold(run)
            except lock.Held as held:
                raise ConfigError(f"cannot resume {run}: {held.holder} is training it; wait for it to end") from None
            if stale:
                _say(f"{run} was left by {stale}, which is gone: resuming it")
        # config.yaml keeps recording the run: what it was trained with, and only the changes the flags asked for
        record = copy.deepcopy(self.config.fit)
        record.trainer.logger, record.ckpt_path = saved.trainer.logger, saved.ckpt_path
        self.save_config_kwargs["record"] = record
        logger = self.config.fit.trainer.logger  # pointed at the run: <save_dir>/<name>/<version>
        logger.init_args.save_dir, logger.init_args.name = str(run.parent.parent), run.parent.name
        version = run.name.removeprefix("version_")
        logger.init_args.version = int(version) if version.isdigit() else run.name
        if checkpoint is None:  # stopped before its first checkpoint: all of its events are hidden
            _say(f"{run} stopped before its first checkpoint: training it again from the start, in place")
            logger.init_args.purge_step, self.config.fit.ckpt_path = 0, None
            return
        saved_state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        logger.init_args.purge_step = saved_state["global_step"] + 1
        self.config.fit.ckpt_path = str(checkpoint)
        newest = last_checkpoint(run)
        trained = torch.load(newest, map_location="cpu", weights_only=True)["epoch"] if newest else -1
        if trained > saved_state["epoch"]:  # (the refusals above came first: nothing was touched yet)
            done = saved_state["epoch"] + 1
            _say(f"resuming {run} after epoch {done} ({checkpoint.name}), though it has trained {trained + 1}:"
                 f" epochs {done + 1}-{trained + 1} are trained again, their events hidden")  # fmt: skip


class SaveRunConfigs(SaveConfigCallback):
    """LightningCLI's ``config.yaml`` of the fit, and in each member's run directory that of the single fit it equals.

    A member's file is the fit's configuration with the member's activation, arguments and seed and
    no ``members``: run as a ``fit`` command, it trains the same network. Each file is written whole
    or not at all (a temporary file renamed over it), so a process killed while writing leaves the
    run's record as it was.

    Args:
        record: what a resumed run's files say (``ActivationCLI._resume_run``): the run's own configuration
            with the changes its flags asked for, not where the resume points the logger and the checkpoint.
        **kwargs: ``SaveConfigCallback``'s.
    """

    def __init__(self, parser: LightningArgumentParser, config: Namespace, record: Namespace | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(parser, record if record is not None else config, save_to_log_dir=False, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = trainer.logger
        if not isinstance(logger, TensorBoardRunLogger):
            return
        text = self.parser.dump(self.config, skip_none=False)
        _write_whole(Path(logger.log_dir) / self.config_filename, text)
        if logger.member_runs == [logger]:
            return
        # One dump, then plain YAML per member: the parser's own dump validates the whole config each time (0.2 s).
        fit_config = yaml.safe_load(text)
        for member, directory in zip(pl_module.members, logger.member_dirs, strict=True):
            config = copy.deepcopy(fit_config)
            model = config["model"]["init_args"]
            model |= {"activation": member.activation, "activation_args": member.as_dict()["activation_args"]}
            if member.seed is not None:
                config["seed_everything"] = member.seed
            config["members"] = {"activations": None, "seeds": None, "run_dir": None}
            directory.mkdir(parents=True, exist_ok=True)
            _write_whole(directory / self.config_filename, yaml.safe_dump(config, sort_keys=False))


def _dropped_flag(argv: list[str]) -> str:
    """What the parser would drop without a word, as the message that says so; ``""`` if nothing.

    A linked option (``--model.in_features``: the data decide it), and a class's option typed before
    ``--model=...`` or ``--data=...``, which replaces the class and its options (jsonargparse reads in order).
    """
    for target, source in LINKED_FROM_DATA.items():
        given = (f"--model.{target}", f"--model.init_args.{target}")
        if any(arg == flag or arg.startswith(f"{flag}=") for arg in argv for flag in given):
            return (
                f"model.{target} is the data module's {source}, not an option of its own;"
                " choose the data instead, e.g. --data=SpiralsDataModule --data.num_classes=3"
            )
    for group in ("model", "data"):
        chosen = [i for i, arg in enumerate(argv) if arg == f"--{group}" or arg.startswith(f"--{group}=")]
        early = [arg.split("=")[0] for arg in argv[: chosen[-1]] if arg.startswith(f"--{group}.")] if chosen else []
        if early:
            return f"{early[0]} comes before --{group}=..., which replaces the {group} and its options; put it after"
    return ""


def _with_trained_configuration(argv: list[str]) -> list[str]:
    """``argv`` with what its ``--ckpt_path`` file was trained with read right after the subcommand.

    For ``fit``, the run's ``config.yaml`` (the resumed run's configuration, which the flags then change);
    for ``validate``, ``test`` and ``predict``, and a checkpoint outside a run, ``trained_configuration``.
    Unchanged without a checkpoint file on the command line.
    """
    at = next((i for i, arg in enumerate(argv) if arg in ("fit", *EVALUATIONS)), None)
    values = [b if a == "--ckpt_path" else a.partition("=")[2] for a, b in pairwise([*argv, ""])
              if a == "--ckpt_path" or a.startswith("--ckpt_path=")]  # fmt: skip
    if at is None or not values or not Path(values[-1]).is_file():
        return argv
    checkpoint = Path(values[-1])
    run = run_of(checkpoint)
    if argv[at] == "fit" and run is not None:
        config = str(run / "config.yaml")
    elif trained := trained_configuration(checkpoint):
        config = yaml.safe_dump(trained, sort_keys=False)
    else:
        return argv
    return [*argv[: at + 1], "--config", config, *argv[at + 1 :]]


def _parsed_under(parser: LightningArgumentParser, argv: list[str], subcommand: str, config: str) -> Namespace:
    """``argv`` parsed with ``config`` (a file, or YAML text) read before the command's own arguments."""
    at = argv.index(subcommand) + 1
    return parser.parse_args([*argv[:at], "--config", config, *argv[at:]])


def _write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    except OSError as err:  # (a failed write does not name its file)
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        partial.unlink(missing_ok=True)


def _say(text: str) -> None:
    """One line for the person at the terminal, from one process only."""
    if rank_zero_only.rank == 0:
        print(text, file=sys.stderr, flush=True)


def cli_main(args: ArgsType = None, **cli_kwargs: Any) -> ActivationCLI:
    """Run the CLI; ``args`` (a list of strings) replaces ``sys.argv[1:]``, as tests and scripts do.

    ``cli_kwargs`` go to ``LightningCLI``, e.g. ``trainer_defaults={"callbacks": [...]}`` from a script.
    A diverged run ends with its one-line message and exit status 1.
    """
    threading.excepthook = _quiet_about_the_disk
    try:
        return _run_cli(args, **cli_kwargs)
    except TrainingDiverged as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(1)
    except SIGTERMException:  # Lightning's stop at the next batch after SIGTERM: a SystemExit that says 0
        _say("interrupted (SIGTERM): the run is kept as far as its last checkpoint; --ckpt_path last continues it")
        sys.exit(128 + signal.SIGTERM)
    except OSError as err:  # the disk, not the code: a full disk, a file system gone read-only, a quota
        if err.errno not in DISK_FAULTS:
            raise
        where = f" {err.filename}" if err.filename else ""
        sys.stderr.write(f"error: cannot write{where}: {err.strerror}; every checkpoint written is whole\n")
        sys.exit(1)


DISK_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # what a full or read-only disk raises


def _quiet_about_the_disk(args: threading.ExceptHookArgs) -> None:
    """A thread's uncaught exception, but for a disk fault in TensorBoard's writer thread, which the main thread
    meets again and reports in one line (``cli_main``)."""
    if isinstance(args.exc_value, OSError) and args.exc_value.errno in DISK_FAULTS:
        return
    threading.__excepthook__(args)


def check_fit(args: list[str], members: list[str]) -> dict[str, Any]:
    """What ``fit ARGS`` would train, known by building its classes without training: ``compare`` checks each
    setting of a study so before any fit.

    Returns its configuration (as its ``config.yaml`` will say), its model's class name, whether the model
    trains members (an ``ActivationMLP``; ``members``, the ``--members.*`` flags of all the study's cells,
    are then built too) and its ``model.activation``. A refusal ends as ``fit``'s would: one line, exit 2.

    Raises:
        ConfigError: ``--members.activations`` among ``members`` for a model without members.
    """
    cli = _run_cli(args, run=False)
    model = cli.model
    takes_members = isinstance(model, ActivationMLP)
    if takes_members:
        _run_cli([*args, *members], run=False)
    elif any(flag.startswith("--members.activations") for flag in members):
        raise ConfigError(
            f"invalid --activations for {type(model).__name__}: the activations of members are ActivationMLP's;"
            " vary the options of a model of your own with --grid OPTION=[...]"
        )
    return {
        "config": yaml.safe_load(cli.parser.dump(cli.config, skip_none=False)),
        "model": type(model).__name__,
        "members": takes_members,
        "activation": model.hparams.activation if takes_members else None,
    }


def _run_cli(args: ArgsType, run: bool = True, **cli_kwargs: Any) -> ActivationCLI:
    """The CLI; ``run=False`` parses ``args`` (no subcommand) and builds the classes without running anything."""
    fit_defaults = {"default_config_files": [str(DEFAULT_CONFIG)]}
    evaluation_defaults = {"default_config_files": [str(DEFAULT_CONFIG), str(EVALUATION_CONFIG)]}
    defaults = {"fit": fit_defaults} | {subcommand: evaluation_defaults for subcommand in EVALUATIONS}
    # run as `python -m lit_activations`, the usage says so (not `__main__.py`)
    main = {"prog": "python -m lit_activations"} if Path(sys.argv[0]).name == "__main__.py" else {}
    return ActivationCLI(
        LightningModule,  # ActivationMLP by default (configs/defaults.yaml); --model=my_package.MyModel for another
        LightningDataModule,  # --data=MoonsDataModule, --data=DigitsDataModule, --data=my_package.MyData
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=TerseArgumentParser,
        parser_kwargs=(defaults if run else fit_defaults) | main,
        run=run,
        save_config_callback=SaveRunConfigs,
        args=args,
        auto_configure_optimizers=False,  # the model takes its optimizer and scheduler as arguments
        **cli_kwargs,
    )


def _member_dicts(activation: str, activation_args: dict | None, activations: list | None, seeds: list | None) -> Any:
    members = expand_members(activation, activation_args, activations, seeds)
    return None if members is None else [m.as_dict() for m in members]


def _run_dirs(
    activation: str,
    activation_args: dict | None,
    activations: list | None,
    seeds: list | None,
    template: str | None,
    fit_seed: int | bool,
) -> list[str] | None:
    members = expand_members(activation, activation_args, activations, seeds)
    return None if members is None else member_run_dirs(members, template, fit_seed)


def _features(data: LightningDataModule) -> int:
    return data_shape(data)[0]


def _classes(data: LightningDataModule) -> int:
    return data_shape(data)[1]


def _fit_the_model(config: Namespace) -> None:
    """Refuse what only ``ActivationMLP`` can do for another model, and name another model's runs after it.

    Raises:
        ConfigError: ``--members.*`` for a model that is not an ``ActivationMLP``.
    """
    model = config.model
    if not isinstance(model, Namespace) or _is_activation_mlp(model.class_path):
        return
    name = model.class_path.rpartition(".")[2]
    given = [f"members.{key}" for key in ("activations", "seeds", "run_dir") if config.members[key] is not None]
    if given:
        raise ConfigError(
            f"invalid {given[0]} for {name}: members are trained side by side by ActivationMLP and its subclasses;"
            f" {name} trains one network a fit (compare --seeds runs one fit per seed)"
        )
    logger = config.trainer.logger
    if isinstance(logger, Namespace) and logger.init_args.get("name") == "lightning_logs":  # the logger's default
        logger.init_args.name = name.lower()  # as an activation names ActivationMLP's runs


def _is_activation_mlp(class_path: str) -> bool:
    try:
        return issubclass(pkgutil.resolve_name(class_path), ActivationMLP)
    except (ImportError, AttributeError, ValueError, TypeError):
        return False


def _check_sharding(data: LightningDataModule | None, trainer: Trainer, use_distributed_sampler: bool) -> None:
    """Refuse a global batch that does not split over the processes, or data that nothing shards.

    Raises:
        ConfigError: a batch size the processes cannot share, or on several processes a data module that
            does not shard its own batches with Lightning's distributed sampler off.
    """
    if data is None or trainer.world_size == 1:
        return
    if getattr(data, "shards_itself", False):
        data.check_world_size(trainer.world_size)
    elif not use_distributed_sampler:
        raise ConfigError(
            f"invalid trainer.use_distributed_sampler False for {type(data).__name__} on {trainer.world_size}"
            " processes: it does not shard its own batches, so each would train on all of them; set"
            " --trainer.use_distributed_sampler=true"
        )


def _check_writable(logger: Any) -> None:
    """Refuse a logger directory this process cannot write in, before anything is written.

    Raises:
        ConfigError: the save directory is (under) a file, or cannot be written.
    """
    save_dir = getattr(logger, "save_dir", None)
    if save_dir is None:
        return
    runs = Path(save_dir, getattr(logger, "name", None) or "")  # its runs' parent: made read-only, say
    if reason := lock.unwritable(save_dir) or lock.unwritable(runs):
        raise ConfigError(f"invalid trainer.logger.save_dir {save_dir}: {reason}")


def _check_evaluation(model: LightningModule, subcommand: str | None) -> None:
    """Refuse to evaluate with a step the model does not have (Lightning would say so after a traceback).

    Raises:
        ConfigError: ``validate`` without ``validation_step``, ``test`` without ``test_step``.
    """
    step = {"validate": "validation_step", "test": "test_step"}.get(subcommand or "")
    if step and not is_overridden(step, model):
        raise ConfigError(
            f"cannot {subcommand} {type(model).__name__}: it has no {step}; give it one, or use"
            f" {'validate' if subcommand == 'test' else 'predict'}"
        )


def _check_training(model: LightningModule, trainer: Trainer) -> None:
    """Refuse, naming the option, what torch or Lightning would only reject later with a traceback (a negative
    learning rate, ``max_epochs=0``), and what would let one member's training depend on another's.

    Raises:
        ConfigError: the optimizer's or scheduler's arguments, an empty training, or in a fit of several members
            an optimizer that is not element-wise, a scheduler or callback that watches one metric, clipping by the
            global norm, or fp16 loss scaling.
    """
    if trainer.max_epochs == 0 or trainer.max_steps == 0:
        name = "max_epochs" if trainer.max_epochs == 0 else "max_steps"
        raise ConfigError(f"invalid trainer.{name} 0; expected an integer >= 1, or -1 for no limit")
    if not isinstance(model, ActivationMLP):  # another model builds its optimizer itself
        return
    optimizer = _built("model.optimizer", model.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    scheduler = _built("model.scheduler", model.scheduler, optimizer) if model.scheduler is not None else None
    k = model.num_members
    if k == 1:
        return
    name = type(optimizer).__name__
    if name not in ELEMENTWISE_OPTIMIZERS or type(optimizer).__module__.split(".")[0] != "torch":
        raise ConfigError(
            f"invalid model.optimizer {name} for {k} members: its update mixes parameters, coupling the members;"
            f" choose one of: {', '.join(ELEMENTWISE_OPTIMIZERS)}, or train one member per fit"
        )
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ConfigError(
            f"invalid model.scheduler ReduceLROnPlateau for {k} members: it watches one metric for all of them;"
            " use a schedule of the step or epoch (StepLR, CosineAnnealingLR, ...) or train one member per fit"
        )
    if trainer.gradient_clip_val and trainer.gradient_clip_algorithm != "value":  # None: Lightning clips by norm
        raise ConfigError(
            f"invalid trainer.gradient_clip_val {trainer.gradient_clip_val} for {k} members: clipping by the global"
            " norm couples them; set --trainer.gradient_clip_algorithm=value, or train one member per fit"
        )
    if trainer.precision == "16-mixed":
        raise ConfigError(
            f"invalid trainer.precision 16-mixed for {k} members: the loss scaler skips every member's step when one"
            " overflows; use bf16-mixed or 32, or train one member per fit"
        )
    for callback in trainer.callbacks:
        watched = getattr(callback, "monitor", None) if isinstance(callback, EarlyStopping | ModelCheckpoint) else None
        if watched:
            raise ConfigError(
                f"invalid trainer.callbacks {type(callback).__name__}(monitor={watched!r}) for {k} members: it"
                " watches one metric for all of them; remove it, or train one member per fit"
            )


def _config_error(err: BaseException | None) -> BaseException | None:
    """The ``ConfigError`` (or Lightning's ``MisconfigurationException``) in ``err``'s chain of causes, if any."""
    while err is not None:
        if isinstance(err, ConfigError | MisconfigurationException):
            return err
        err = err.__cause__ or err.__context__
    return None


def _built(option: str, build: Any, argument: Any) -> Any:
    """``build(argument)``, with torch's refusal of an argument (``Invalid learning rate: -1.0``) as a ConfigError."""
    try:
        return build(argument)
    except ValueError as err:
        if not type(err).__module__.startswith("lit_activations") and _from_torch(err):
            raise ConfigError(f"invalid {option}: {err}") from None
        raise


def _from_torch(err: BaseException) -> bool:
    """Whether ``err`` was raised inside torch itself, not in a user's own class."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and f"{os.sep}torch{os.sep}" in frames[-1].filename
