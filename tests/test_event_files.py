"""Event files written faster (``lit_activations.event_files``) are TensorBoard's own, byte for byte in format."""

from __future__ import annotations

import random
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import event_file_writer, record_writer
from torch.utils.tensorboard import SummaryWriter

import lit_activations.logger  # noqa: F401  (importing it switches TensorBoard's writer over)
from lit_activations.event_files import SynchronousWriter
from lit_activations.events import masked_crc32c


def _pure_python_masked_crc(data: bytes) -> int:
    """TensorBoard's masked CRC-32C, from its pure-Python ``crc32c`` (which is left alone)."""
    x = pywrap_tensorflow.u32(pywrap_tensorflow.crc32c(data))
    return pywrap_tensorflow.u32(((x >> 15) | pywrap_tensorflow.u32(x << 17)) + 0xA282EAD8)


def _records(path: Path) -> list[bytes]:
    """The records of an event file, each checksum checked by TensorBoard's pure-Python CRC."""
    data, records = path.read_bytes(), []
    while data:  # TFRecord: length, its masked CRC, the record, its masked CRC
        (length,) = struct.unpack("<Q", data[:8])
        assert struct.unpack("<I", data[8:12])[0] == _pure_python_masked_crc(data[:8])
        record, data = data[12 : 12 + length], data[12 + length :]
        assert struct.unpack("<I", data[:4])[0] == _pure_python_masked_crc(record)
        records.append(record)
        data = data[4:]
    return records


def test_the_same_checksum_as_tensorboards_for_any_bytes() -> None:
    rng = random.Random(0)
    for length in [0, 1, 7, 8, 63, 1000, 4099]:
        data = bytes(rng.randrange(256) for _ in range(length))
        assert masked_crc32c(data) == _pure_python_masked_crc(data)
    assert masked_crc32c(bytearray(b"abc")) == _pure_python_masked_crc(b"abc")


def test_records_reach_the_file_within_a_second_or_at_a_flush_with_no_thread(tmp_path: Path, monkeypatch) -> None:
    assert record_writer.masked_crc32c is masked_crc32c and pywrap_tensorflow.masked_crc32c is masked_crc32c
    assert event_file_writer._AsyncWriter is SynchronousWriter
    threads = threading.active_count()
    writer = SummaryWriter(tmp_path)
    assert threading.active_count() == threads  # TensorBoard's own starts a writer thread per file
    (path,) = tmp_path.glob("events.out.tfevents.*")
    writer.add_scalar("loss", 0.0, 0)
    writer.add_histogram("weights", torch.arange(50) * 0.1, 0)
    assert len(_records(path)) == 1  # the file-version record, which EventFileWriter flushes; the others wait
    writer.flush()
    assert len(_records(path)) == 3  # the file-version record, the scalar and the histogram
    monkeypatch.setattr(SynchronousWriter, "WRITE_OUT_SECS", 0.0)  # as if a second had passed since each record
    for step in range(1, 5):
        writer.add_scalar("loss", step * 0.5, step)
        writer.add_histogram("weights", torch.arange(50) * 0.1, step)
        assert len(_records(path)) == 1 + 2 * (step + 1)
    monkeypatch.undo()
    writer.add_scalar("loss", 5.0, 5)
    writer.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})  # keep every one
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(s, s * 0.5) for s in range(5)] + [(5, 5.0)]
    assert [e.histogram_value.num for e in events.Histograms("weights")] == [50] * 5


@pytest.mark.slow
def test_a_writer_nobody_closes_loses_nothing_at_exit(tmp_path: Path) -> None:
    script = (
        "import sys; import lit_activations.logger; from torch.utils.tensorboard import SummaryWriter;"
        " writer = SummaryWriter(sys.argv[1]); [writer.add_scalar('loss', s * 0.5, s) for s in range(3)]"
    )  # and exits, the writer neither flushed nor closed
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=120)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(0, 0.0), (1, 0.5), (2, 1.0)]
