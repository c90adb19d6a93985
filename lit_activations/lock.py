"""One writer per directory: a lock that the process writing a run (or a study) holds while it lives.

The lock is an ``flock`` on a ``.lock`` file inside the directory. The operating system drops it
when its process ends, however it ends (``kill -9`` included), so a held lock means a live writer
and a free one means that whoever wrote the directory is gone. Where ``fcntl`` does not exist
(Windows) every lock is granted: the directory is then unguarded, as it was without this module.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
_HELD: dict[Path, int] = {}  # directory -> the open file that holds its lock, for this process


def hold(directory: str | Path) -> bool:
    """Lock ``directory`` for this process until ``release`` or the process ends; ``False`` if another process
    holds it. Holding it already is holding it (a resumed run is locked first by the CLI, then by its logger)."""
    key = Path(directory).resolve()
    if key in _HELD or fcntl is None:
        return True
    key.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return False
    _HELD[key] = descriptor
    return True


def release(directory: str | Path) -> None:
    """Give up this process's lock on ``directory``, if it holds one."""
    descriptor = _HELD.pop(Path(directory).resolve(), None)
    if descriptor is not None:
        os.close(descriptor)


def held_elsewhere(directory: str | Path) -> bool:
    """Whether another live process holds ``directory``'s lock (a directory without a lock file is free)."""
    key = Path(directory).resolve()
    if key in _HELD or fcntl is None or not (key / LOCK_FILE).exists():
        return False
    if not hold(key):
        return True
    release(key)
    return False
