"""Using the project as a template: a new activation, dataset and model, each one file outside the package.

Each test writes the file the README's "Make it yours" shows into a temporary directory, puts that
directory on the import path as a user's own project would be, and runs the real command line.
"""

import textwrap
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lit_activations.events import read_scalars

from runs import fit

SHORT = ("--data.n_samples=200", "--trainer.max_epochs=2")


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def write(directory, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


def test_a_new_activation_in_a_file_of_its_own_is_monitored_with_no_flag(user_dir):
    write(user_dir, "my_activation", """
        import torch
        from torch import nn


        class SquarePlus(nn.Module):
            '''f(x) = (x + sqrt(x² + b)) / 2: a smooth ReLU (So, 2021).'''

            def __init__(self, b: float = 4.0):
                super().__init__()
                self.b = b

            def forward(self, x):
                return (x + torch.sqrt(x * x + self.b)) / 2
    """)  # fmt: skip
    cli = fit("--model.activation=my_activation.SquarePlus", "--model.activation_args={b: 1.0}", *SHORT)
    run = cli.trainer.logger.log_dir
    assert run.endswith("squareplus/version_0")
    scalars = read_scalars(run)
    assert {"saturation/net.1", "dead_units/net.7", "activation_mean/net.3"} <= set(scalars)
    events = EventAccumulator(run, size_guidance={"images": 0})
    events.Reload()
    assert "activation/curve" in events.Tags()["images"]


def test_a_new_dataset_in_a_file_of_its_own_is_one_method(user_dir):
    write(user_dir, "my_data", """
        import numpy as np
        from lit_activations.data import PlaneDataModule


        class RingsDataModule(PlaneDataModule):
            '''Two rings of radius 1 and 1 + gap, class 1 outside.'''

            def __init__(self, gap: float = 1.0, **kwargs):
                super().__init__(**kwargs)

            def draw(self, n_samples, seed):
                rng = np.random.default_rng(seed)
                y = rng.integers(0, 2, n_samples)
                angle = rng.uniform(0, 2 * np.pi, n_samples)
                radius = 1 + self.hparams.gap * y + rng.normal(0, 0.05, n_samples)
                return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1), y
    """)  # fmt: skip
    cli = fit("--data=my_data.RingsDataModule", "--data.gap=0.5", "--model.activation=tanh", *SHORT)
    assert cli.datamodule.hparams.gap == 0.5 and len(cli.datamodule._splits["train"]) == 160
    run = cli.trainer.logger.log_dir
    assert len(read_scalars(run)["val/acc"]) == 2
    config = yaml.safe_load(Path(run, "config.yaml").read_text())
    assert config["data"]["class_path"] == "my_data.RingsDataModule" and config["data"]["init_args"]["gap"] == 0.5
    events = EventAccumulator(run)
    events.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["dataset"].string_value == "RingsDataModule"


def test_a_new_model_in_a_file_of_its_own_keeps_members_monitoring_and_the_cli(user_dir):
    write(user_dir, "my_model", """
        from torch.nn import functional as F
        from lit_activations.model import ActivationMLP


        class SmoothedMLP(ActivationMLP):
            '''ActivationMLP trained on labels smoothed towards 1/2 by `smoothing`.'''

            def __init__(self, smoothing: float = 0.1, **kwargs):
                super().__init__(**kwargs)
                self.smoothing = smoothing

            def member_losses(self, out, y):
                return super().member_losses(out, y * (1 - self.smoothing) + self.smoothing / 2)
    """)  # fmt: skip
    cli = fit("--model=my_model.SmoothedMLP", "--model.smoothing=0.2", "--members.activations=[tanh, relu]", *SHORT)
    assert type(cli.model).__name__ == "SmoothedMLP" and cli.model.smoothing == 0.2 and cli.model.num_members == 2
    for run in cli.trainer.logger.member_dirs:
        scalars = read_scalars(run)
        assert {"train/loss", "saturation/net.1", "grad_norm/net.0.weight"} <= set(scalars)
        assert yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]["smoothing"] == 0.2
