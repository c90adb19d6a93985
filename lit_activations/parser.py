"""The argument parser of the CLI: a user's mistake in one line, naming the config file it comes from."""

from __future__ import annotations

import os
import re
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import NoReturn

import yaml
from lightning.pytorch.cli import LightningArgumentParser


class TerseArgumentParser(LightningArgumentParser):
    """Reports an error in one line, naming the config file it comes from, instead of the usage text."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or _debug_mode():
            super().error(message, ex)
        message = " ".join(message.split())
        sys.stderr.write(f"error: {_name_config_file(message, _CONFIG_FILES.get())}{message} (see --help)\n")
        sys.exit(2)


# The --config files of the command being parsed, so that an error can name the file it comes from.
_CONFIG_FILES: ContextVar[tuple[str, ...]] = ContextVar("config_files", default=())


def config_files_in_use(argv: list[str]) -> None:
    """Note the ``--config`` files of the command about to be parsed, for ``TerseArgumentParser``'s errors."""
    files = []
    for flag, value in zip(argv, [*argv[1:], None], strict=True):
        if flag in ("-c", "--config") and value is not None:
            files.append(value)
        elif flag.startswith("--config="):
            files.append(flag.removeprefix("--config="))
    _CONFIG_FILES.set(tuple(files))


def _name_config_file(message: str, files: tuple[str, ...]) -> str:
    """``"in FILE: "`` for the config file an error message is about, or ``""`` if none can be told."""
    contents = {}
    for path in files:
        try:
            contents[path] = yaml.safe_load(Path(path).read_text())
        except OSError:
            continue
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            return (
                f"in {path}: invalid YAML"
                + (f" at line {mark.line + 1}, column {mark.column + 1}" if mark else "")
                + ": "
            )
    key = re.search(r"option '([\w.]+)'|Parser key \"([\w.]+)\"", message)
    if key:
        for path, content in reversed(contents.items()):  # the last file to set a key is the one that counts
            if (key.group(1) or key.group(2)) in _dotted_keys(content):
                return f"in {path}: "
    return ""


def _dotted_keys(content: object, prefix: str = "") -> set[str]:
    if not isinstance(content, dict):
        return set()
    keys = set()
    for name, value in content.items():
        dotted = f"{prefix}{name}"
        keys |= {dotted, *_dotted_keys(value, prefix=f"{dotted}.")}
        if name == "init_args":  # jsonargparse also names `model.optimizer.init_args.lr` as `model.optimizer.lr`
            keys |= _dotted_keys(value, prefix=prefix)
    return keys


def _debug_mode() -> bool:
    return bool(os.environ.get("JSONARGPARSE_DEBUG"))  # jsonargparse's documented switch for tracebacks
