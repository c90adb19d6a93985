"""The command line: LightningCLI over ``ActivationMLP`` and ``CirclesDataModule``."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from lit_activations.callbacks import ActivationMonitor
from lit_activations.data import CirclesDataModule
from lit_activations.model import ActivationMLP

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
        parser.add_lightning_class_args(ActivationMonitor, "monitor", subclass_mode=True, required=False)
        parser.link_arguments("data.num_features", "model.in_features", apply_on="instantiate")
        parser.link_arguments("model.activation", "trainer.logger.init_args.name", compute_fn=run_name)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback | None]) -> Trainer:
        # `--monitor=null` leaves None among the callbacks LightningCLI collects (cli.py, instantiate_trainer).
        return super()._instantiate_trainer(config, [c for c in callbacks if c is not None])

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, MisconfigurationException) as err:
            # The classes validate their arguments in __init__; report like a parse error.
            self.parser.error(str(err), err)


class TerseArgumentParser(LightningArgumentParser):
    """Reports an error in one line instead of the whole usage text above it."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or _debug_mode():
            super().error(message, ex)
        sys.stderr.write(f"error: {' '.join(message.split())} (see --help)\n")
        sys.exit(2)


def run_name(activation: str) -> str:
    """The run directory name of an activation: its registry name, or the class name of an import path."""
    return activation.rpartition(".")[2].lower() if "." in activation else activation


def cli_main(args: ArgsType = None, **cli_kwargs: Any) -> ActivationCLI:
    """Run the CLI; ``args`` (a list of strings) replaces ``sys.argv[1:]``, as tests and scripts do.

    ``cli_kwargs`` go to ``LightningCLI``, e.g. ``trainer_defaults={"callbacks": [...]}`` from a script.
    """
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


def _debug_mode() -> bool:
    return bool(os.environ.get("JSONARGPARSE_DEBUG"))  # jsonargparse's documented switch for tracebacks
