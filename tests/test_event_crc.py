"""Event files' checksums computed in C (``lit_activations.event_crc``) are TensorBoard's own."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import torch
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import record_writer
from torch.utils.tensorboard import SummaryWriter

import lit_activations.logger  # noqa: F401  (importing it switches the checksums over)
from lit_activations.event_crc import masked_crc32c


def _pure_python_masked_crc(data: bytes) -> int:
    """TensorBoard's masked CRC-32C, from its pure-Python ``crc32c`` (which is left alone)."""
    x = pywrap_tensorflow.u32(pywrap_tensorflow.crc32c(data))
    return pywrap_tensorflow.u32(((x >> 15) | pywrap_tensorflow.u32(x << 17)) + 0xA282EAD8)


def test_the_same_checksum_as_tensorboards_for_any_bytes() -> None:
    rng = random.Random(0)
    for length in [0, 1, 7, 8, 63, 1000, 4099]:
        data = bytes(rng.randrange(256) for _ in range(length))
        assert masked_crc32c(data) == _pure_python_masked_crc(data)
    assert masked_crc32c(bytearray(b"abc")) == _pure_python_masked_crc(b"abc")


def test_tensorboards_writer_and_reader_use_it_and_every_record_checks(tmp_path: Path) -> None:
    assert record_writer.masked_crc32c is masked_crc32c
    assert pywrap_tensorflow.masked_crc32c is masked_crc32c
    writer = SummaryWriter(tmp_path)
    for step in range(5):
        writer.add_scalars("loss", {"a": step * 0.5, "b": -step}, step)
        writer.add_histogram("weights", torch.arange(50) * 0.1, step)
    writer.close()
    records = 0
    for path in tmp_path.rglob("events.out.tfevents.*"):
        data = path.read_bytes()
        while data:  # TFRecord: length, its masked CRC, the record, its masked CRC; checked by the pure-Python CRC
            (length,) = struct.unpack("<Q", data[:8])
            assert struct.unpack("<I", data[8:12])[0] == _pure_python_masked_crc(data[:8])
            record, data = data[12 : 12 + length], data[12 + length :]
            assert struct.unpack("<I", data[:4])[0] == _pure_python_masked_crc(record)
            data, records = data[4:], records + 1
    assert records >= 10 + 1  # the file-version record and every summary
