"""Reading a run's scalars back from its TensorBoard event files, as TensorBoard's ``EventAccumulator`` reads them.

Hand-written because TensorBoard's Python reader checks the CRC of every record in pure Python, byte by byte
(0.15 s for a tutorial run of 0.8 MB here, 4.5 s for a study of 30 one after the other), and builds an object
per point. Here the records are framed in Python, their CRCs checked in C (google-crc32c) and each one parsed by
TensorBoard's own ``Event`` protobuf (upb, in C): about 20 ms a run. What comes out is what ``EventAccumulator``
gives, which ``tests/test_events.py`` checks against it on every kind of event file this project and Lightning write.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
from tensorboard.compat.proto.event_pb2 import Event, SessionLog

Scalars = dict[str, list[tuple[int, float]]]

_HEADER = struct.Struct("<QI")  # a record's length, and the masked CRC of its 8 bytes
_CRC = struct.Struct("<I")
_START = SessionLog.START


def read_scalars(run_dir: str | Path) -> Scalars:
    """Every scalar of a run: tag -> [(step, value), ...] in the order written, all points kept; exactly what
    ``EventAccumulator(run_dir, size_guidance={"scalars": 0})`` gives (``Scalars(tag)`` for ``Tags()["scalars"]``).

    As there: the run's event files in the order of their names (a resumed run adds one), each read up to its
    first truncated or corrupt record (a fit killed mid-write); the points a restart orphans are dropped
    (``purge_orphaned_data``): at a ``SessionLog.START`` event (what ``SummaryWriter(purge_step=...)`` writes
    on resume), every tag's points at or after its step; until a ``file_version`` of 2 or more is seen (torch's
    and TensorBoard's writers write one first), those of a tag written again at an earlier step. Scalars are
    ``simple_value`` summaries only: ``EventAccumulator`` leaves tensor-encoded ones (``tensorboard.summary.v2``)
    among the tensors, and so does this.

    Raises:
        FileNotFoundError: no such directory (``EventAccumulator``: ``DirectoryDeletedError``).
    """
    scalars: Scalars = {}
    file_version: float | None = None
    most_recent_step = -1  # for the out-of-order purge, before any file_version of 2
    for path in event_files(run_dir):
        for record in _records(path):
            event = Event.FromString(record)
            what = event.WhichOneof("what")
            if what == "file_version":
                file_version = _parse_file_version(event.file_version)
            # EventAccumulator._MaybePurgeOrphanedData
            if file_version and file_version >= 2:
                if what == "session_log" and event.session_log.status == _START:
                    _purge(scalars, event.step, None)
            elif what == "summary" and event.step < most_recent_step:
                for value in event.summary.value:
                    _purge(scalars, event.step, value.tag)
            else:
                most_recent_step = event.step
            if what == "summary":
                step = event.step
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        scalars.setdefault(value.tag, []).append((step, value.simple_value))
    return scalars


def event_files(run_dir: str | Path) -> list[str]:
    """The event files ``EventAccumulator`` reads for ``run_dir``, in its order: the path itself if its name is an
    event file's, else the event files directly in it, by name (``io_wrapper.IsSummaryEventsFile``); a
    directory named like one is left out here, where TensorBoard would fail on it."""
    path = str(run_dir)
    if _is_summary_events_file(path):
        return [path]
    return sorted(
        full
        for name in os.listdir(path)
        if _is_summary_events_file(full := os.path.join(path, name)) and os.path.isfile(full)
    )


def _is_summary_events_file(path: str) -> bool:
    return "tfevents" in os.path.basename(path) and not path.endswith(".profile-empty")


def _parse_file_version(file_version: str) -> float:
    """``event_util.ParseFileVersion``: "brain.Event:2" -> 2.0; -1 for one it cannot read."""
    try:
        return float(file_version.split("brain.Event:")[-1])
    except ValueError:
        return -1


def _purge(scalars: Scalars, step: int, tag: str | None) -> None:
    """Drop the points at or after ``step``: of ``tag``, or of every tag for ``None`` or "" (as
    ``Reservoir.FilterItems`` does for a falsy key). A tag left with no point stays, as it does there."""
    for name in [tag] if tag else list(scalars):
        points = scalars.get(name)
        if points and any(s >= step for s, _ in points):
            scalars[name] = [(s, v) for s, v in points if s < step]


def _records(path: str) -> Iterator[bytes]:
    """The records of a TFRecord file, up to the first one TensorBoard's reader stops at: a truncated one (a
    writer killed mid-record) or one whose length or data fails its CRC.

    A record: uint64 length, masked CRC-32C of those 8 bytes, data, masked CRC-32C of the data. CRC policy: both
    are checked, as TensorBoard's reader checks them, so that a damaged record ends its file here as it does
    there (a damaged length would otherwise send the framing astray, damaged data give wrong values); in C, by
    google-crc32c (which this project's writer uses too: ``lit_activations.event_files``), 1 µs a record.
    """
    with open(path, "rb") as file:
        data = file.read()
    position, size = 0, len(data)
    while position + 12 <= size:
        length, length_crc = _HEADER.unpack_from(data, position)
        end = position + 12 + length
        if masked_crc32c(data[position : position + 8]) != length_crc or end + 4 > size:
            return
        record = data[position + 12 : end]
        if masked_crc32c(record) != _CRC.unpack_from(data, end)[0]:
            return
        yield record
        position = end + 4


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C of ``data`` that TFRecord files store, as TensorBoard's own ``masked_crc32c`` gives it
    (``lit_activations.event_files`` gives TensorBoard's writer this one)."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
