"""TensorBoard's event files, written faster: checksums in C, and each record written by the thread that logs it.

Two costs of TensorBoard's writer (``tensorboard.summary.writer``), which every ``SummaryWriter`` of torch and
Lightning uses, grow with the runs a fit writes (one per member):

- Every record carries a CRC-32C of its length and of its data, which TensorBoard without TensorFlow
  computes in pure Python, 87 ns a byte, when writing and again when reading
  (``tensorboard.compat.tensorflow_stub``). ``google-crc32c`` computes the same checksum in C.
- Every event file gets a thread of its own that takes each record from a queue and appends it to the
  file. A fit of 15 members has 15 such threads, and each record wakes one, which then competes with the
  training loop for the GIL: measured, the threads cost a 15-member tutorial fit about a tenth of its
  time (``benchmarks/framework_floor.py``). ``SynchronousWriter`` appends the record in the caller's thread
  instead, at once, as the thread would have a moment later.

``use_fast_writing()`` makes TensorBoard use both, in this process; the files are the same, byte for byte.
"""

from __future__ import annotations

import threading
from typing import Any

import google_crc32c
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import event_file_writer, record_writer


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C of ``data`` that TFRecord files store, as TensorBoard's own ``masked_crc32c`` gives it."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class SynchronousWriter:
    """What ``EventFileWriter`` needs of its record writer (``write``, ``flush``, ``close``), without a thread.

    TensorBoard's ``_AsyncWriter`` queues each record for a thread that appends it to the file; here
    ``write`` appends it before it returns. ``max_queue_size`` and ``flush_secs`` mean nothing then: a
    record is in the file as soon as it is logged.
    """

    def __init__(self, record_writer: Any, max_queue_size: int = 20, flush_secs: float = 120) -> None:
        self._writer = record_writer
        self._closed = False
        self._lock = threading.Lock()  # a record is written whole even if two threads log at once

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                raise OSError("Writer is closed")  # what TensorBoard's own raises
            self._writer.write(data)

    def flush(self) -> None:
        with self._lock:
            if self._closed:
                raise OSError("Writer is closed")
            self._writer.flush()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._writer.flush()
                self._writer.close()


def use_fast_writing() -> None:
    """Make TensorBoard's writer and reader use ``masked_crc32c``, and its event files ``SynchronousWriter``."""
    record_writer.masked_crc32c = masked_crc32c
    pywrap_tensorflow.masked_crc32c = masked_crc32c
    event_file_writer._AsyncWriter = SynchronousWriter  # (the name EventFileWriter builds its record writer from)
