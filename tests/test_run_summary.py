"""The pictures and the HParams entry of a fit, read back with TensorBoard's own reader and server."""

import contextlib
import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter

from lit_activations.data import CirclesDataModule
from lit_activations.events import read_scalars
from lit_activations.logger import write_image
from lit_activations.members import Member
from lit_activations.run_summary import RunSummary

from runs import fit

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One short fit shared by the tests below: 3 epochs, a decision boundary every 2."""
    logs = tmp_path_factory.mktemp("summary")
    cli = fit("--model.activation=tanh", "--data.n_samples=200", "--trainer.max_epochs=3",
              "--summary.boundary_every_n_epochs=2", f"--trainer.logger.init_args.save_dir={logs}")  # fmt: skip
    return cli.trainer.logger.log_dir


def test_fit_logs_the_activation_curve_and_decision_boundaries(run_dir):
    events = EventAccumulator(run_dir, size_guidance={"images": 0})
    events.Reload()
    (curve,) = events.Images("activation/curve")
    boundaries = events.Images("decision_boundary")
    assert curve.encoded_image_string.startswith(PNG) and curve.width > 100
    assert [b.step for b in boundaries] == [5, 15]  # after epochs 0 and 2 (the last), 5 steps per epoch
    assert all(b.encoded_image_string.startswith(PNG) for b in boundaries)


def test_fit_logs_hparams_with_the_final_metrics(run_dir):
    events = EventAccumulator(run_dir)
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["activation"].string_value == "tanh"
    assert start.hparams["batch_size"].number_value == 32 and start.hparams["optimizer"].string_value == "Adam"
    assert start.hparams["seed"].number_value == 0 and start.hparams["dataset"].string_value == "CirclesDataModule"
    assert not any(key.startswith("_") for key in start.hparams)  # nothing of LightningCLI's internals
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"final/val_acc", "final/val_loss", "final/train_loss"}
    scalars = read_scalars(run_dir)
    assert scalars["final/val_acc"] == [(15, pytest.approx(scalars["val/acc"][-1][1]))]  # at the last step


class ThreeProbabilities(torch.nn.Module):
    """A user's model with three probabilities per point: nothing RunSummary knows how to draw."""

    members = (Member("relu"),)
    device = torch.device("cpu")

    def forward(self, x):
        return torch.rand(1, len(x), 3)

    def to_probabilities(self, out):
        return out


def test_an_output_it_cannot_draw_is_skipped_with_a_note_not_a_crash(tmp_path):
    data = CirclesDataModule(grid_size=10)
    data.setup("fit")
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, current_epoch=0, max_epochs=1,
                              global_step=7, datamodule=data, loggers=[logger])  # fmt: skip
    summary = RunSummary()
    for _ in range(2):  # noted once
        summary.on_validation_epoch_end(trainer, ThreeProbabilities())
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert "decision_boundary" not in events.Tags()["images"]
    (note,) = events.Tensors("notes/run_summary/text_summary")
    assert b"no decision boundary: an output of shape (1, 100, 3)" in note.tensor_proto.string_val[0]


@pytest.mark.slow
def test_a_real_tensorboard_server_lists_the_run_and_its_tags(run_dir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logdir = str(run_dir).rsplit("/tanh/", 1)[0]
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/data"

    def get(path: str):
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return json.load(response)

    try:
        deadline, runs = time.monotonic() + 90, []
        while "tanh/version_0" not in runs and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # not listening yet
                runs = get("/runs")
            time.sleep(0.5)
        assert "tanh/version_0" in runs
        scalar_tags = get("/plugin/scalars/tags")["tanh/version_0"]
        assert {"val/acc", "saturation/net.1", "final/val_acc"} <= set(scalar_tags)
        assert {"activation/curve", "decision_boundary"} <= set(get("/plugin/images/tags")["tanh/version_0"])
        assert get("/plugins_listing")["hparams"]["enabled"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_images_are_written_pixel_for_pixel_as_add_image_writes_them(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    ours, theirs = SummaryWriter(tmp_path / "ours"), SummaryWriter(tmp_path / "theirs")
    write_image(ours, "picture", image, step=7)
    theirs.add_image("picture", image, global_step=7, dataformats="HWC")
    ours.close()
    theirs.close()
    decoded = []
    for run in ("ours", "theirs"):
        events = EventAccumulator(str(tmp_path / run), size_guidance={"images": 0})
        events.Reload()
        (written,) = events.Images("picture")
        assert (written.step, written.width, written.height) == (7, 40, 30)
        decoded.append(np.asarray(Image.open(io.BytesIO(written.encoded_image_string))))
    assert decoded[0].shape == (30, 40, 3) and np.array_equal(decoded[0], image) and np.array_equal(*decoded)
