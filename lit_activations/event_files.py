"""TensorBoard's event files, written faster: checksums in C, and each record written by the thread that logs it.

Two costs of TensorBoard's writer (``tensorboard.summary.writer``), which every ``SummaryWriter`` of torch and
Lightning uses, grow with the runs a fit writes (one per member):

- Every record carries a CRC-32C of its length and of its data, which TensorBoard without TensorFlow
  computes in pure Python, 87 ns a byte, when writing and again when reading
  (``tensorboard.compat.tensorflow_stub``). ``google-crc32c`` computes the same checksum in C.
- Every event file gets a thread of its own that takes each record from a queue and appends it to the
  file (opening and closing the file each time). A fit of 15 members has 15 such threads, and each record
  wakes one, which then competes with the training loop for the GIL: measured, the threads cost a
  15-member tutorial fit about a tenth of its time (``benchmarks/framework_floor.py``), and a fit of 1,000
  members would start 1,000 of them. ``SynchronousWriter`` collects the records in the caller's thread
  and appends them in one write at most a second after the first of them, and at every flush and close.

``use_fast_writing()`` makes TensorBoard use both, in this process; the files are the same, byte for byte.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from typing import Any

from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import event_file_writer, record_writer

from lit_activations.events import masked_crc32c


class SynchronousWriter:
    """What ``EventFileWriter`` needs of its record writer (``write``, ``flush``, ``close``), without a thread.

    TensorBoard's ``_AsyncWriter`` queues each record for a thread that appends it to the file. Here a
    record waits in memory until a write, flush or close finds the oldest one waiting for ``WRITE_OUT_SECS``
    or more, then all of them are appended at once; at the interpreter's exit, every writer's waiting
    records are (a writer nobody closed loses nothing). ``max_queue_size`` and ``flush_secs``
    (TensorBoard's own settings) are not used.
    """

    WRITE_OUT_SECS = 1.0

    def __init__(self, record_writer: Any, max_queue_size: int = 20, flush_secs: float = 120) -> None:
        self._writer = record_writer
        self._waiting: list[bytes] = []
        self._since = 0.0  # when the oldest waiting record came
        self._closed = False
        self._lock = threading.Lock()  # records stay whole and in order if two threads log at once
        _open_writers.add(self)

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                raise OSError("Writer is closed")  # what TensorBoard's own raises
            if not self._waiting:
                self._since = time.monotonic()
            self._waiting.append(data)
            if time.monotonic() - self._since >= self.WRITE_OUT_SECS:
                self._write_out()

    def flush(self) -> None:
        with self._lock:
            if self._closed:
                raise OSError("Writer is closed")
            self._write_out()
            self._writer.flush()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._write_out()
                self._writer.flush()
                self._writer.close()

    def _write_out(self) -> None:
        """The waiting records, framed by TensorBoard's ``RecordWriter``, in one append to the file."""
        if self._waiting:
            framed = _Collected()
            framing = record_writer.RecordWriter(framed)
            for data in self._waiting:
                framing.write(data)
            self._waiting = []
            file = self._writer._writer  # RecordWriter's file: TensorBoard's GFile
            try:
                file.write(b"".join(framed.parts))
            except OSError as err:  # (a failed write does not name its file: a full disk should say which)
                raise OSError(err.errno, err.strerror, getattr(file, "filename", None)) from err


_open_writers: weakref.WeakSet[SynchronousWriter] = weakref.WeakSet()


@atexit.register
def _write_out_at_exit() -> None:
    for writer in list(_open_writers):
        with writer._lock:
            if not writer._closed:
                writer._write_out()


class _Collected:
    """A file-like object that keeps what is written to it, for ``RecordWriter`` to frame records into."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)


def use_fast_writing() -> None:
    """Make TensorBoard's writer and reader use ``masked_crc32c``, and its event files ``SynchronousWriter``."""
    record_writer.masked_crc32c = masked_crc32c
    pywrap_tensorflow.masked_crc32c = masked_crc32c
    event_file_writer._AsyncWriter = SynchronousWriter  # (the name EventFileWriter builds its record writer from)
