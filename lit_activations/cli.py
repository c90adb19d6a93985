"""The command line: LightningCLI over any LightningModule (``ActivationMLP`` by default) and any data module."""

from __future__ import annotations

import copy
import logging
import os
import pkgutil
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.model_helpers import is_overridden

from lit_activations import lock
from lit_activations.callbacks import ActivationMonitor
from lit_activations.checkpoint import PeriodicCheckpoint
from lit_activations.data import data_shape
from lit_activations.divergence import DivergenceGuard
from lit_activations.errors import ConfigError, check_seed
from lit_activations.errors.handling import built_by_torch, one_line_endings, quiet_about_the_disk, refuse_or_raise
from lit_activations.logger import TensorBoardRunLogger
from lit_activations.members import expand_members, member_run_dirs, refuse_coupling
from lit_activations.model import ActivationMLP
from lit_activations.names import fit_name
from lit_activations.parser import TerseArgumentParser, config_files_in_use
from lit_activations.predictions import PredictionWriter
from lit_activations.resume import evaluation_configuration, resume_run, with_trained_configuration
from lit_activations.run_summary import RunSummary
from lit_activations.signal_theory import SignalTheory

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
        parser.add_lightning_class_args(SignalTheory, "theory", subclass_mode=True, required=False)
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
        """The Trainer without the callbacks its flags turn off. (Lightning's private method: the only point
        between collecting the callbacks and building the Trainer, which rejects a contradiction outright.)"""
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
            with_trained = with_trained_configuration(argv, ("fit", *EVALUATIONS))
            if with_trained is argv:
                super().parse_arguments(parser, args)
            else:  # what LightningCLI's own does with a list (which, given sys.argv too, it would warn about)
                self.config = parser.parse_args(with_trained)
            subcommand = self.config.get("subcommand")
            _fit_the_model(self._own_config())  # before finding `last`: another model's runs are named after it
            if subcommand == "fit" and self.config.fit.ckpt_path:
                self.config, record = resume_run(parser, argv, self.config)
                if record is not None:  # config.yaml keeps recording the run, not where the resume points
                    self.save_config_kwargs["record"] = record
            elif subcommand in EVALUATIONS and self.config[subcommand].ckpt_path:
                self.config = evaluation_configuration(parser, argv, self.config, subcommand)
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
            _check_training(self.model, self.trainer, self._own_config().model)
            _check_evaluation(self.model, self.config.get("subcommand"))
            _check_writable(self.trainer.logger)
        except Exception as err:
            _LIGHTNING_NEWS.drop()
            # A value the classes' own checks refuse (jsonargparse wraps what a subclass-mode group such as --data
            # raises: the refusal is then its cause) is reported like a parse error; a bug keeps its traceback.
            refuse_or_raise(err, lambda refusal: self.parser.error(str(refusal), refusal))
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

    def _parse_ckpt_path(self) -> None:
        """Nothing: the configuration of a checkpoint's run is restored in ``parse_arguments`` instead.

        Lightning's own version (``lightning/pytorch/cli.py``) parses the checkpoint's hyperparameters over
        the configuration, which resets what they do not hold (the optimizer, which ``ActivationMLP`` takes as
        an argument) to its defaults: a run of ``configs/tutorial.yaml`` would resume with lr 1e-3.
        """


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


def cli_main(args: ArgsType = None, **cli_kwargs: Any) -> ActivationCLI:
    """Run the CLI; ``args`` (a list of strings) replaces ``sys.argv[1:]``, as tests and scripts do.

    ``cli_kwargs`` go to ``LightningCLI``, e.g. ``trainer_defaults={"callbacks": [...]}`` from a script.
    A diverged run ends with its one-line message and exit status 1.
    """
    threading.excepthook = quiet_about_the_disk
    with one_line_endings():
        cli = run_cli(args, **cli_kwargs)
    leave_process_group()
    return cli


def leave_process_group() -> None:
    """Once every process of a distributed run is done, leave its process group (a barrier, then
    ``destroy_process_group``). Lightning destroys it at exit for NCCL only (``fabric/utilities/distributed.py``);
    a gloo group left to the interpreter's teardown now and then aborted a node whose peer had already gone
    ("terminate called without an active exception", exit -6)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def check_fit(args: list[str], members: list[str]) -> dict[str, Any]:
    """What ``fit ARGS`` would train, known by building its classes without training: ``compare`` checks each
    setting of a study so before any fit.

    Returns its configuration (as its ``config.yaml`` will say), its model's class name, whether the model
    trains members (an ``ActivationMLP``; ``members``, the ``--members.*`` flags of all the study's cells,
    are then built too) and its ``model.activation``. A refusal ends as ``fit``'s would: one line, exit 2.

    Raises:
        ConfigError: ``--members.activations`` among ``members`` for a model without members.
    """
    cli = run_cli(args, run=False)
    model = cli.model
    takes_members = isinstance(model, ActivationMLP)
    if takes_members:
        run_cli([*args, *members], run=False)
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


def run_cli(args: ArgsType, run: bool = True, **cli_kwargs: Any) -> ActivationCLI:
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


def _check_training(model: LightningModule, trainer: Trainer, model_config: Any) -> None:
    """Refuse, naming the option, what torch or Lightning would only reject later with a traceback (a negative
    learning rate, ``max_epochs=0``), and what would couple the members of a fit (``members.refuse_coupling``).

    Raises:
        ConfigError: the optimizer's or scheduler's arguments, an empty training, or what couples members.
    """
    if trainer.max_epochs == 0 or trainer.max_steps == 0:
        name = "max_epochs" if trainer.max_epochs == 0 else "max_steps"
        raise ConfigError(f"invalid trainer.{name} 0; expected an integer >= 1, or -1 for no limit")
    if not isinstance(model, ActivationMLP):  # another model builds its optimizer itself
        return
    parameters = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = built_by_torch("model.optimizer", _class_path(model_config, "optimizer"),
                               lambda: model.optimizer(parameters))  # fmt: skip
    scheduler = None
    if model.scheduler is not None:
        scheduler = built_by_torch("model.scheduler", _class_path(model_config, "scheduler"),
                                   lambda: model.scheduler(optimizer))  # fmt: skip
    refuse_coupling(model.num_members, optimizer, scheduler, trainer)


def _class_path(model_config: Any, option: str) -> str | None:
    """The class path of the model's ``option`` (its optimizer, its scheduler) as configured, if it has one."""
    init_args = model_config.get("init_args") if isinstance(model_config, Namespace) else None
    value = init_args.get(option) if isinstance(init_args, Namespace) else None
    return value.get("class_path") if isinstance(value, Namespace) else None
