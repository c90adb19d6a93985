"""Each setting's fit checked before any fit runs: its classes built as ``fit`` builds them, without training.

A study with a typing mistake, an unknown activation or a value a class refuses stops with the
fit's own one-line error before anything is written; a bug in the user's own code (their model's
``__init__``, say) stops it with that code's traceback. Each check runs in a process forked from
the local launcher's server, which has imported Lightning; the study's own process never does.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from lit_activations.errors import ConfigError
from lit_activations.names import setting_name
from lit_activations.study.cells import CheckedSetting, fit_arguments
from lit_activations.study.local import with_the_study


class UserCodeFailed(Exception):
    """Checking the study's fits met a bug in the user's own code (their model's ``__init__``, say); the message is
    its traceback."""


def check_settings(
    fit_args: list[str], study_dir: Path, settings: list[dict[str, Any]],
    activations: list[str | list[str]] | None, seeds: list[int], context: multiprocessing.context.BaseContext,
) -> dict[str, CheckedSetting]:  # fmt: skip
    """Each setting's fit checked as ``fit`` checks it, every activation and seed of the study included, by
    setting name.

    Raises:
        ConfigError: the fit's own one-line error for arguments, an activation or a value it refuses.
        UserCodeFailed: the user's own code failed while being built.
    """
    members = [f"--members.seeds={json.dumps(seeds)}"]
    if activations:
        members.append(f"--members.activations={json.dumps(activations)}")
    checked = {}
    for setting in settings:
        arguments = fit_arguments(fit_args, study_dir, setting)[1:]  # the fit's flags, without `fit`
        receiver, sender = context.Pipe(duplex=False)  # (a pipe, not a file: nothing left if the study is killed)
        study = (os.getpid(), None)  # (a check writes nothing: it holds no directory)
        process = context.Process(target=with_the_study, args=(check_process, study, arguments, members, sender))
        process.start()
        sender.close()
        try:
            outcome, result = receiver.recv()
        except EOFError:  # the process died before it could answer
            outcome, result = "refused", f"the check of the fit's arguments ended with exit status {process.exitcode}"
        process.join()
        if outcome == "refused":
            raise ConfigError(result.removeprefix("error: ").removesuffix(" (see --help)"))
        if outcome == "failed":
            raise UserCodeFailed(result)
        checked[setting_name(setting)] = CheckedSetting(**result)
    return checked


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
