"""One writer per directory: a lock that the process writing a run (or a study) holds while it lives.

The lock is an ``flock`` on a ``.lock`` file inside the directory, which holds the holder's host
and process id. The operating system drops the lock when its process ends, however it ends
(``kill -9`` included), so a held lock means a live writer and a free one means that whoever wrote
the directory is gone: a lock file that still names a holder when it is taken was left by a
process that died (``hold`` returns it, for one line to say so), unless the processes that worked
for it (``join``: a study's fits) still live. Where ``fcntl`` does not exist (Windows) every lock
is granted: the directory is then unguarded.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
HELPERS_FILE = ".lock.helpers"  # locked shared by the processes working for the holder (``join``)
_HELD: dict[Path, int] = {}  # directory -> the open file that holds its lock, for this process
_JOINED: dict[Path, int] = {}  # directory -> the open file of its helpers' lock, for this process


class Held(Exception):
    """Another live process holds the lock; ``holder`` says which (``pid 1234 on host``)."""

    def __init__(self, directory: Path, holder: str) -> None:
        super().__init__(f"{directory} is held by {holder}")
        self.directory, self.holder = directory, holder


def hold(directory: str | Path) -> str:
    """Lock ``directory`` for this process until ``release`` or the process ends.

    Holding it already is holding it (a resumed run is locked first by the CLI, then by its logger).

    Returns:
        The holder a dead process left in the lock file (``pid 1234 on host``), or ``""``.

    Raises:
        Held: another live process holds it.
    """
    key = Path(directory).resolve()
    if key in _HELD or fcntl is None:
        return ""
    key.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read(descriptor)
        os.close(descriptor)
        raise Held(Path(directory), holder or "another process") from None
    stale = _read(descriptor)
    if stale and _helpers_alive(key):  # its holder is gone, but not yet the processes that worked for it
        os.close(descriptor)
        raise Held(Path(directory), f"the processes of {stale}, which is gone, still ending") from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
    _HELD[key] = descriptor
    return stale


def join(directory: str | Path) -> None:
    """Hold ``directory`` for the rest of this process as a helper of the process that holds it (a study's fits
    for the study): while a helper lives, ``hold`` refuses the directory to others even if its holder is gone."""
    key = Path(directory).resolve()
    if fcntl is None or key in _JOINED:
        return
    key.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(key / HELPERS_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(descriptor, fcntl.LOCK_SH)  # shared: many helpers; never held exclusively for long
    _JOINED[key] = descriptor


def release(directory: str | Path) -> None:
    """Give up this process's lock on ``directory``, if it holds one, and clear the holder from its file."""
    descriptor = _HELD.pop(Path(directory).resolve(), None)
    if descriptor is not None:
        os.ftruncate(descriptor, 0)
        os.close(descriptor)


def unwritable(directory: str | Path) -> str:
    """Why this process could not write in ``directory`` (made if missing), or ``""``: tried, not assumed.

    Nothing is left behind: the nearest existing directory gets a temporary file, removed at once. (Root
    writes where permissions say no one may, but not on a read-only file system: only a try tells.)
    """
    existing = Path(directory)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        return f"cannot write in {existing}: {err.strerror}"
    return ""


def _helpers_alive(key: Path) -> bool:
    """Whether a helper (``join``) holds ``key``: its file cannot be locked exclusively for a moment."""
    if not (key / HELPERS_FILE).exists():
        return False
    descriptor = os.open(key / HELPERS_FILE, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)  # (and with it the moment's lock)
    return False


def _read(descriptor: int) -> str:
    return os.pread(descriptor, 200, 0).decode(errors="replace").strip()
