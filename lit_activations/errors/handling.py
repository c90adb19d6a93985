"""How a command ends when something goes wrong: a user's mistake in one line, a bug with its traceback.

The command line's rule (``lit_activations.errors``): a ``ConfigError`` (or Lightning's
``MisconfigurationException``) anywhere in an exception's chain is a user's mistake, reported in one
line with exit status 2; a diverged run, a stop by SIGTERM and a full or read-only disk are one line
each too; any other exception is a bug, raised again with its own traceback.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_activations.divergence import TrainingDiverged
from lit_activations.errors import ConfigError

DISK_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # what a full or read-only disk raises
T = TypeVar("T")


def refusal_in(err: BaseException | None) -> BaseException | None:
    """The ``ConfigError`` (or Lightning's ``MisconfigurationException``) in ``err``'s chain of causes, if any."""
    while err is not None:
        if isinstance(err, ConfigError | MisconfigurationException):
            return err
        err = err.__cause__ or err.__context__
    return None


def refuse_or_raise(err: BaseException, refuse: Callable[[BaseException], NoReturn]) -> NoReturn:
    """``refuse`` a user's mistake found in ``err``'s chain (the parser's one-line error); else raise the exception
    at the root of the chain with its own traceback, past jsonargparse's "Does not validate" wrappers: a bug in
    someone's code shows the line at fault."""
    if (refusal := refusal_in(err)) is not None:
        refuse(refusal)
    root = err
    while root.__cause__ is not None:
        root = root.__cause__
    if root is err:
        raise err
    raise root.with_traceback(root.__traceback__) from None


def built_by_torch(option: str, class_path: str | None, build: Callable[[], T]) -> T:
    """``build()``, with a ``ValueError`` of one of torch's own classes (``Invalid learning rate: -1.0``) as a
    ``ConfigError`` naming ``option``: torch refuses a value that way. A user's own class (``class_path`` outside
    torch) that raises one keeps its traceback; it can raise ``ConfigError`` for the one-line treatment.
    """
    try:
        return build()
    except ValueError as err:
        if isinstance(err, ConfigError) or not (class_path or "").startswith("torch."):
            raise
        raise ConfigError(f"invalid {option}: {err}") from None


@contextlib.contextmanager
def one_line_endings() -> Iterator[None]:
    """A run that diverged, was stopped (SIGTERM) or met a full or read-only disk ends with one line: exit 1,
    143 or 1. Anything else passes through."""
    try:
        yield
    except TrainingDiverged as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(1)
    except SIGTERMException:  # Lightning's stop at the next batch after SIGTERM: a SystemExit that says 0
        say("interrupted (SIGTERM): the run is kept as far as its last checkpoint; --ckpt_path last continues it")
        sys.exit(128 + signal.SIGTERM)
    except OSError as err:  # the disk, not the code: a full disk, a file system gone read-only, a quota
        if err.errno not in DISK_FAULTS:
            raise
        where = f" {err.filename}" if err.filename else ""
        sys.stderr.write(f"error: cannot write{where}: {err.strerror}; every checkpoint written is whole\n")
        sys.exit(1)


def quiet_about_the_disk(args: threading.ExceptHookArgs) -> None:
    """A thread's uncaught exception, but for a disk fault in TensorBoard's writer thread, which the main thread
    meets again and reports in one line (``one_line_endings``)."""
    if isinstance(args.exc_value, OSError) and args.exc_value.errno in DISK_FAULTS:
        return
    threading.__excepthook__(args)


def say(text: str) -> None:
    """One line for the person at the terminal, from one process only."""
    if rank_zero_only.rank == 0:
        print(text, file=sys.stderr, flush=True)
