"""The argument parser of the CLI: a user's mistake in one line, naming the config file it comes from."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import re
import sys
from contextvars import ContextVar
from itertools import pairwise
from pathlib import Path
from typing import Any, NoReturn

import yaml
from lightning.pytorch.cli import LightningArgumentParser


class TerseArgumentParser(LightningArgumentParser):
    """Reports an error in one line, naming the config file it comes from, instead of the usage text.

    Options are never abbreviated: argparse would take ``--trainer.max_epoch`` for ``--trainer.max_epochs``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or _debug_mode():
            super().error(message, ex)
        message = " ".join(message.split())
        message = _unimportable_class(message) or _plain(message)
        unknown = re.match(r"unrecognized arguments: (--[\w.]+)", message)
        if unknown:
            options = [o for parser in self._subparsers_and_self() for o in parser._option_string_actions]
            close = difflib.get_close_matches(unknown.group(1), options, n=1)
            message += f"; did you mean {close[0]}?" if close else ""
        sys.stderr.write(f"error: {_name_config_file(message, _CONFIG_FILES.get())}{message} (see --help)\n")
        sys.exit(2)

    def _subparsers_and_self(self) -> list[LightningArgumentParser]:
        subcommands = getattr(self, "_subcommands_action", None)
        return [self, *(subcommands.choices.values() if subcommands else [])]


def _plain(message: str) -> str:
    """jsonargparse's message, without what only its internals explain.

    >>> _plain("Call to compute_fn of link 'f(a) --> b' with args (1,) failed: invalid members.seeds []")
    'invalid members.seeds []'
    >>> _plain("Parser key \\"data\\": Does not validate against any of the Union subtypes Subtypes: [...] Errors: -"
    ...        " Problem with given class_path 'pkg.CirclesDataModule': Option 'nois' is not accepted - Expected a"
    ...        " <class 'NoneType'> Given value type: <class 'str'>")
    "Option 'data.nois' is not accepted by CirclesDataModule"
    >>> _plain("Parser key \\"model.hidden_sizes\\": Expected a <class 'collections.abc.Sequence'>. Got value: 5,5")
    'Parser key "model.hidden_sizes": expected a list in brackets, e.g. [5, 5]. Got value: 5,5'
    >>> _plain("Parser key \\"members.seeds\\": Does not validate against any of the Union subtypes Subtypes:"
    ...        " [list[int], <class 'NoneType'>] Errors: - Expected a <class 'int'>. Got value: a - Expected a <class"
    ...        " 'NoneType'>"
    ...        " Given value type: <class 'list'> Given value: ['a']")
    "invalid members.seeds ['a']; expected a list of integers, e.g. [0, 1, 2]"
    """
    message = re.sub(r"^Call to compute_fn of link '.*?' with args \(.*\) failed: ", "", message)
    union = re.search(
        r"Parser key \"([\w.]+)\": Does not validate against any of the Union subtypes.*?"
        r"Problem with given class_path '[\w.]*?(\w+)': (.*?)(?: - Expected a <class 'NoneType'>.*)?$",
        message,
    )
    if union:
        group, cls, reason = union.groups()
        reason = re.sub(r'Parser key "([\w.]+)"', lambda m: f'Parser key "{group}.{m.group(1)}"', reason)
        message = re.sub(r"Option '([\w.]+)' is not accepted", rf"Option '{group}.\1' is not accepted by {cls}", reason)
    optional = re.match(
        r'Parser key "([\w.]+)": Does not validate against any of the Union subtypes Subtypes: \[.*?,'
        r" <class 'NoneType'>\] Errors: - .*? Given value: (.*)$",
        message,
    )
    if optional and optional.group(1) in _EXPECTED:  # an optional list, given something else: what it takes
        key, value = optional.groups()
        return f"invalid {key} {value}; expected {_EXPECTED[key]}"
    unknown_class = re.match(r'Parser key "([\w.]+)": - Expected a path but (\S+) either not accessible', message)
    if unknown_class:
        key, name = unknown_class.groups()
        message = f'Parser key "{key}": no class {name!r} to import; give a class of torch or its import path'
    return re.sub(
        r"Expected a <class 'collections\.abc\.Sequence'>|Expected a <class 'list'>",
        "expected a list in brackets, e.g. [5, 5]",
        message,
    )


# What the options whose type is an optional list take, for the messages about a value of another type.
_EXPECTED = {
    "members.seeds": "a list of integers, e.g. [0, 1, 2]",
    "members.activations": "a list of activations, e.g. [relu, tanh] or [relu, {name: leaky_relu, args: {...}}]",
}

# What --model and --data take, for the messages about a class that is not one.
_BASES = {
    "model": ("LightningModule", "my_package.MyModel", "ActivationMLP"),
    "data": ("LightningDataModule", "my_package.MyData", "MoonsDataModule"),
}


def _unimportable_class(message: str) -> str | None:
    """For a ``--model`` or ``--data`` class that cannot be used, what is wrong with it in one line; ``None`` for
    other messages.

    A module of the user's that fails while being imported is a bug in their code, not a typing mistake: it is
    imported again here, so that its own exception and traceback come out.
    """
    given = re.match(r'Parser key "(model|data)": - Expected a path but (\S+) either not accessible', message)
    if not given:
        return None
    key, path = given.groups()
    base, example, ours = _BASES[key]
    path_of = f"the import path of a {base} subclass, e.g. --{key}={example}"
    accepted = f"give {path_of}"
    if re.search(r"Import path does not correspond to a subclass of", message):
        return f"invalid {key} {path!r}: it is not a {base}; {accepted}"
    module, _, name = path.rpartition(".")
    if not module:
        return f"invalid {key} {path!r}: no such class; give one of lit_activations (e.g. --{key}={ours}) or {path_of}"
    try:
        found = bool(module) and importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that does not exist
        found = False
    if not found:
        return f"invalid {key} {path!r}: no module named {module or path!r} on the Python path; {accepted}"
    importlib.import_module(module)  # raises the user's own error, if importing their module fails
    return f"invalid {key} {path!r}: module {module} has no class {name}; {accepted}"


# The --config files of the command being parsed, so that an error can name the file it comes from.
_CONFIG_FILES: ContextVar[tuple[str, ...]] = ContextVar("config_files", default=())


def config_files_in_use(argv: list[str]) -> None:
    """Note the ``--config`` files of the command about to be parsed, for ``TerseArgumentParser``'s errors."""
    files = []
    for flag, value in pairwise([*argv, None]):
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
    key = re.search(r"option '([\w.]+)'|Parser key \"([\w.]+)\"|^invalid ([\w.]+) ", message, re.IGNORECASE)
    if key:
        for path, content in reversed(contents.items()):  # the last file to set a key is the one that counts
            if next(filter(None, key.groups())) in _dotted_keys(content):
                return f"in {path}: "
    value = re.match(r"unknown activation '([^']+)'", message)  # the registry's message names a value, not a key
    if value:
        for path, content in reversed(contents.items()):
            if value.group(1) in _values(content):
                return f"in {path}: "
    return ""


def _values(content: object) -> set[str]:
    """Every string value in a config file's content, at any depth."""
    if isinstance(content, dict):
        return {v for value in content.values() for v in _values(value)}
    if isinstance(content, list):
        return {v for value in content for v in _values(value)}
    return {content} if isinstance(content, str) else set()


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
    # jsonargparse's documented switch for tracebacks, read as jsonargparse reads it (true or false: 1 is an error)
    return os.environ.get("JSONARGPARSE_DEBUG", "").lower() == "true"
