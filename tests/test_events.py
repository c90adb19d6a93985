"""``read_scalars`` gives what TensorBoard's ``EventAccumulator`` gives, on every kind of event file: the event
files are written here directly (TensorBoard's, torch's and Lightning's writers), and each is read both ways."""

import math
import random
import shutil
import struct
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer.record_writer import RecordWriter
from torch.utils.tensorboard import SummaryWriter

from lit_activations.events import masked_crc32c, read_scalars
from lit_activations.logger import write_scalars

from runs import fit


def accumulated(path: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars as TensorBoard's own reader gives them (what ``read_scalars`` did before)."""
    events = EventAccumulator(str(path), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def same_as_tensorboard(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``read_scalars(path)``, checked to be ``accumulated(path)``: the same tags in the same order, the same points
    (a NaN equal to a NaN)."""
    ours, theirs = read_scalars(path), accumulated(path)

    def comparable(scalars: dict) -> list:
        return [(tag, [(s, "nan" if math.isnan(v) else v) for s, v in points]) for tag, points in scalars.items()]

    assert comparable(ours) == comparable(theirs)
    return ours


def raw_events(path: Path, events: list[Event]) -> None:
    """An event file of exactly these events (no ``file_version`` event unless given)."""
    with open(path, "wb") as file:
        writer = RecordWriter(file)
        for event in events:
            writer.write(event.SerializeToString())


def scalar_event(step: int, **values: float) -> Event:
    return Event(step=step, summary=Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in values.items()]))


def written(run: Path, name: str, **writer_args) -> SummaryWriter:
    """A SummaryWriter whose file is to be ``run/name`` (``moved_in``): names set the order readers take files in."""
    return SummaryWriter(run.parent / f"writing_{name}", **writer_args)


def moved_in(writer: SummaryWriter, run: Path, name: str) -> None:
    writer.close()
    (file,) = Path(writer.log_dir).glob("events.out.tfevents.*")
    run.mkdir(exist_ok=True)
    file.rename(run / name)
    shutil.rmtree(writer.log_dir)


def test_the_crcs_are_tensorboards():
    """Against TensorBoard's pure-Python CRC-32C (``lit_activations.logger`` points its masked one at C code)."""
    assert pywrap_tensorflow.crc32c(b"123456789") == 0xE3069283  # CRC-32C's check value

    def masked(data: bytes) -> int:
        crc = pywrap_tensorflow.crc32c(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    rng = random.Random(0)
    for length in [*range(20), 100, 1000]:
        data = bytes(rng.randrange(256) for _ in range(length))
        assert masked_crc32c(data) == masked(data)


def test_every_kind_of_event_lightning_and_torch_write(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="", version="run")
    run = Path(logger.log_dir)
    writer = logger.experiment
    logger.log_hyperparams({"lr": 0.1, "layers": [2, 3]})  # the HParams plugin's summaries, and hp_metric -1 at 0
    for step in range(5):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "epoch": step // 2}, step=step)
        writer.add_histogram("weights", torch.randn(50), step)
        writer.add_image("picture", torch.rand(3, 8, 8), step)
    writer.add_scalar("odd", math.nan, 5)
    writer.add_scalar("odd", math.inf, 6)
    writer.add_scalars("grouped", {"a": 1.0, "b": 2.0}, 3)  # into runs of their own, under run/
    writer.add_text("note", "hello", 2)
    writer.add_audio("sound", torch.zeros(1, 100), 1, sample_rate=100)
    writer.add_pr_curve("pr", torch.tensor([0, 1, 1]), torch.tensor([0.1, 0.8, 0.6]), 4)
    writer.add_custom_scalars({"losses": {"loss": ["Multiline", ["train/loss"]]}})
    writer.add_embedding(torch.randn(4, 3), global_step=1)  # files of the projector's, under run/
    write_scalars(logger, {"described": 0.5, "plain": 0.25}, 7, descriptions={"described": "what it measures"})
    tensor = TensorProto(dtype=1, float_val=[1.5])  # DT_FLOAT: a tensor-encoded scalar, as tf.summary writes
    scalar_plugin = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"))
    writer._get_file_writer().add_summary(
        Summary(value=[Summary.Value(tag="as_tensor", tensor=tensor, metadata=scalar_plugin)]), 8
    )
    writer._get_file_writer().add_event(Event(step=9, graph_def=b""))
    logger.finalize("success")

    scalars = same_as_tensorboard(run)
    assert scalars["train/loss"] == [(s, pytest.approx(1.0 / (s + 1))) for s in range(5)]
    assert scalars["hp_metric"] == [(0, -1.0)] and scalars["described"] == [(7, 0.5)]
    assert math.isnan(scalars["odd"][0][1]) and scalars["odd"][1] == (6, math.inf)
    assert "as_tensor" not in scalars  # EventAccumulator keeps those among the tensors, not the scalars
    assert not {"weights", "picture", "note", "grouped"} & set(scalars)
    assert same_as_tensorboard(run / "grouped_a")["grouped"] == [(3, 1.0)]


def test_a_resumed_run_hides_the_points_of_the_steps_trained_again(tmp_path):
    """A fit that crashed after step 9 and resumed from a checkpoint at step 4: its second writer has
    ``purge_step=5`` and writes a ``SessionLog.START`` at 5, which hides every tag's points from 5 on."""
    run = tmp_path / "run"
    first = written(run, "events.out.tfevents.1")
    for step in range(10):
        first.add_scalar("loss", float(step), step)
        first.add_scalar("only_before", float(step), step)
        if step >= 6:
            first.add_scalar("late", float(step), step)  # all of it orphaned: the tag stays, with no point
    moved_in(first, run, "events.out.tfevents.1")
    second = written(run, "events.out.tfevents.2", purge_step=5)
    for step in range(5, 8):
        second.add_scalar("loss", 10.0 * step, step)
    moved_in(second, run, "events.out.tfevents.2")

    scalars = same_as_tensorboard(run)
    assert scalars["loss"] == [(s, float(s)) for s in range(5)] + [(s, 10.0 * s) for s in range(5, 8)]
    assert scalars["only_before"] == [(s, float(s)) for s in range(5)] and scalars["late"] == []


def test_the_files_are_read_in_the_order_of_their_names_not_of_their_writing(tmp_path):
    run = tmp_path / "run"
    resumed = written(run, "events.out.tfevents.1", purge_step=2)  # the later writer, whose file sorts first
    resumed.add_scalar("loss", 20.0, 2)
    moved_in(resumed, run, "events.out.tfevents.1")
    crashed = written(run, "events.out.tfevents.2")
    for step in range(4):
        crashed.add_scalar("loss", float(step), step)
    moved_in(crashed, run, "events.out.tfevents.2")
    assert same_as_tensorboard(run)["loss"] == [(2, 20.0)] + [(s, float(s)) for s in range(4)]


def test_an_out_of_order_step_is_kept_in_a_file_of_version_2(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        for step in (0, 1, 2, 3, 1, 2):
            writer.add_scalar("loss", float(step), step)
    assert same_as_tensorboard(tmp_path)["loss"] == [(s, float(s)) for s in (0, 1, 2, 3, 1, 2)]


@pytest.mark.parametrize("version", [None, "brain.Event:1", "not a version"])
def test_older_files_drop_a_tags_points_when_it_is_written_at_an_earlier_step(tmp_path, version):
    events = [Event(step=0, file_version=version)] if version else []
    events += [scalar_event(step, a=float(step), b=float(step)) for step in range(6)]
    events += [scalar_event(3, a=30.0), scalar_event(4, a=40.0)]  # a restarted at 3: a's 3-5 go, b's stay
    events += [Event(step=2, session_log=SessionLog(status=SessionLog.START))]  # only counted in version 2
    raw_events(tmp_path / "events.out.tfevents.1", events)
    scalars = same_as_tensorboard(tmp_path)
    assert scalars["a"] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert scalars["b"] == [(s, float(s)) for s in range(6)]
    raw_events(tmp_path / "events.out.tfevents.2", [scalar_event(1, **{"": 1.0})])  # an empty tag: every tag
    assert same_as_tensorboard(tmp_path) == {"a": [(0, 0.0)], "b": [(0, 0.0)], "": [(1, 1.0)]}


def test_random_streams_of_events_read_as_tensorboard_reads_them(tmp_path):
    rng = random.Random(1)
    for trial in range(60):
        run = tmp_path / str(trial)
        run.mkdir()
        for index in range(rng.randint(1, 3)):
            events = []
            if rng.random() < 0.7:
                events.append(Event(step=0, file_version=rng.choice(["brain.Event:2", "brain.Event:1", "x"])))
            for _ in range(rng.randint(0, 25)):
                step, kind = rng.randint(0, 12), rng.random()
                if kind < 0.6:
                    tags = rng.sample(["a", "b", "c", ""], rng.randint(1, 2))
                    events.append(scalar_event(step, **{t: rng.random() for t in tags}))
                elif kind < 0.75:
                    status = rng.choice([SessionLog.START, SessionLog.STOP, SessionLog.CHECKPOINT])
                    events.append(Event(step=step, session_log=SessionLog(status=status)))
                elif kind < 0.85:
                    histogram = Summary.Value(tag=rng.choice("ab"), histo=HistogramProto(min=0, max=1, num=1))
                    events.append(Event(step=step, summary=Summary(value=[histogram])))
                else:
                    events.append(Event(step=step, file_version=rng.choice(["brain.Event:2", "brain.Event:1"])))
            raw_events(run / f"events.out.tfevents.{index}", events)
        same_as_tensorboard(run)


def test_a_truncated_or_damaged_file_reads_as_far_as_tensorboard_reads_it(tmp_path):
    """A fit killed mid-write leaves a truncated last record; a damaged record (length, data or either CRC) ends
    its file there too. The next file (the resumed fit's) is read either way."""
    source = tmp_path / "source"
    with SummaryWriter(source) as writer:
        for step in range(6):
            writer.add_scalar("loss", float(step), step)
            writer.add_scalar("acc", step / 10, step)
    (file,) = source.glob("events.out.tfevents.*")
    data = file.read_bytes()
    run = tmp_path / "run"
    run.mkdir()
    raw_events(run / "events.out.tfevents.2", [Event(step=0, file_version="brain.Event:2"), scalar_event(9, acc=1.0)])
    first = run / "events.out.tfevents.1"

    lengths, position = [], 0
    while position < len(data):
        lengths.append(struct.unpack_from("<Q", data, position)[0])
        position += 16 + lengths[-1]
    last = len(data) - 16 - lengths[-1]
    for cut in range(last - 20, len(data)):
        first.write_bytes(data[:cut])
        scalars = same_as_tensorboard(run)
    assert [step for step, _ in scalars["acc"]] == [0, 1, 2, 3, 4, 9]  # the last record, cut, is not read

    middle = sum(16 + n for n in lengths[: len(lengths) // 2])  # a record half way through
    for offset in (0, 3, 7, 8, 11, 12, 13, 16 + lengths[len(lengths) // 2] - 1):  # length, its CRC, data, its CRC
        damaged = bytearray(data)
        damaged[middle + offset] ^= 0x10
        first.write_bytes(damaged)
        scalars = same_as_tensorboard(run)
        assert len(scalars["loss"]) < 6 and scalars["acc"][-1] == (9, 1.0)


def test_an_empty_run_a_missing_one_and_a_single_file(tmp_path):
    assert same_as_tensorboard(tmp_path) == {}
    (tmp_path / "events.out.tfevents.1").write_bytes(b"")
    for name in ("events.out.tfevents.2.profile-empty", "not_an_event_file"):
        raw_events(tmp_path / name, [scalar_event(1, not_read=0.5)])  # neither one an event file of the run
    assert same_as_tensorboard(tmp_path) == {}
    with pytest.raises(FileNotFoundError):
        read_scalars(tmp_path / "missing")
    raw_events(tmp_path / "events.out.tfevents.3", [scalar_event(1, loss=0.5)])
    assert same_as_tensorboard(tmp_path / "events.out.tfevents.3") == {"loss": [(1, 0.5)]}


def test_a_real_run_resumed_from_an_earlier_checkpoint(tmp_path):
    """The project's own run, resumed from epoch 1 after it trained 3: epochs 2 and 3 are trained again, the
    first ones' points hidden (the CLI gives the logger ``purge_step``)."""
    small = ("--data.n_samples=200", "--model.activation=tanh", "--trainer.max_epochs=3")
    run = Path(fit(*small, "--checkpoint.every_n_epochs=1", "--checkpoint.save_top_k=-1").trainer.logger.log_dir)
    fit(*small, f"--ckpt_path={run / 'checkpoints' / 'epoch=0-step=5.ckpt'}")
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    scalars = same_as_tensorboard(run)
    assert [step for step, _ in scalars["val/loss"]] == [5, 10, 15]  # once each
    assert {"saturation/net.1", "grad_norm/net.0.weight", "lr-Adam"} <= set(scalars)
