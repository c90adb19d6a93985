"""The command line: LightningCLI over ``ActivationMLP`` and ``CirclesDataModule``."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from lit_activations.activations import run_name
from lit_activations.callbacks import ActivationMonitor
from lit_activations.checkpoint import PeriodicCheckpoint
from lit_activations.data import CirclesDataModule
from lit_activations.divergence import DivergenceGuard, TrainingDiverged
from lit_activations.logger import TensorBoardRunLogger
from lit_activations.model import ActivationMLP
from lit_activations.parser import TerseArgumentParser, config_files_in_use
from lit_activations.run_summary import RunSummary

# Lightning 2.6 calls a torch API that torch 2.13 deprecates, once per run: noise, not the user's concern.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "defaults.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class ActivationCLI(LightningCLI):
    """``fit|validate|test|predict`` with the defaults of ``configs/defaults.yaml``.

    Each run is logged under ``<save_dir>/<activation>/version_<n>``: the logger's ``name`` is
    linked to ``model.activation`` so runs of one activation sit together and overlay in TensorBoard.
    A user's mistake, caught by the parser or by a class's own checks, ends in a one-line
    ``error: ...`` and exit status 2, before anything is written (``JSONARGPARSE_DEBUG=1`` shows the
    traceback instead).
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(PeriodicCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ActivationMonitor, "monitor", subclass_mode=True, required=False)
        parser.add_lightning_class_args(DivergenceGuard, "guard", subclass_mode=True, required=False)
        parser.add_lightning_class_args(RunSummary, "summary", subclass_mode=True, required=False)
        parser.link_arguments("data.num_features", "model.in_features", apply_on="instantiate")
        parser.link_arguments("model.activation", "trainer.logger.init_args.name", compute_fn=run_name)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback | None]) -> Trainer:
        # `--monitor=null` leaves None among the callbacks LightningCLI collects (cli.py, instantiate_trainer).
        callbacks = [c for c in callbacks if c is not None]
        # `--trainer.enable_checkpointing=false` and `--trainer.enable_progress_bar=false` also drop the
        # checkpoint and progress bar of defaults.yaml, which Lightning would otherwise reject as a contradiction.
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
        argv = sys.argv[1:] if args is None else args
        config_files_in_use(argv if isinstance(argv, list) else [])
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit" and self.config.fit.ckpt_path:
            self._resume_in_place(self.config.fit)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
            if isinstance(self.datamodule, CirclesDataModule):
                self.datamodule.check_world_size(self.trainer.world_size)
        except (ValueError, TypeError, MisconfigurationException) as err:
            # The classes validate their arguments in __init__; report like a parse error.
            self.parser.error(str(err), err)

    def _resume_in_place(self, config: Namespace) -> None:
        """Point the logger at the run directory of the checkpoint, so a resumed run continues its own logs.

        ``--ckpt_path last`` takes the newest ``last.ckpt`` among this activation's runs; a path inside
        ``<save_dir>/<activation>/version_<n>/checkpoints/`` continues ``version_<n>``. Events that the
        interrupted run wrote after the checkpoint's step are purged from TensorBoard's view.
        """
        logger = config.trainer.logger
        if not (isinstance(logger, Namespace) and logger.class_path.endswith(TensorBoardRunLogger.__name__)):
            return
        runs = Path(logger.init_args.save_dir) / logger.init_args.name
        if config.ckpt_path == "last":
            candidates = list(runs.glob("version_*/checkpoints/last*.ckpt"))
            if not candidates:
                return  # Lightning warns that there is nothing to resume and starts afresh
            checkpoint = max(candidates, key=lambda path: path.stat().st_mtime)
        else:
            checkpoint = Path(config.ckpt_path)
            if checkpoint.parent.name != "checkpoints" or checkpoint.parents[2].resolve() != runs.resolve():
                return  # a checkpoint from elsewhere: continue training in a new run directory
        run_dir = checkpoint.parents[1]
        version = run_dir.name.removeprefix("version_")
        logger.init_args.version = int(version) if version.isdigit() else run_dir.name
        step = torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]
        logger.init_args.purge_step = step + 1
        self.save_config_kwargs["overwrite"] = True  # the run's config.yaml now records the resuming command


def cli_main(args: ArgsType = None, **cli_kwargs: Any) -> ActivationCLI:
    """Run the CLI; ``args`` (a list of strings) replaces ``sys.argv[1:]``, as tests and scripts do.

    ``cli_kwargs`` go to ``LightningCLI``, e.g. ``trainer_defaults={"callbacks": [...]}`` from a script.
    A diverged run ends with its one-line message and exit status 1.
    """
    try:
        return _run_cli(args, **cli_kwargs)
    except TrainingDiverged as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(1)


def _run_cli(args: ArgsType, **cli_kwargs: Any) -> ActivationCLI:
    defaults = {"default_config_files": [str(DEFAULT_CONFIG)]}
    return ActivationCLI(
        ActivationMLP,
        CirclesDataModule,
        parser_class=TerseArgumentParser,
        parser_kwargs={subcommand: defaults for subcommand in SUBCOMMANDS},
        args=args,
        auto_configure_optimizers=False,  # the model takes its optimizer and scheduler as arguments
        **cli_kwargs,
    )
