"""Using the project as a template: a new activation, dataset and model, each one file outside the package.

Each test writes the file the README's "Make it yours" shows into a temporary directory, puts that
directory on the import path as a user's own project would be, and runs the real command line.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lit_activations.cli import cli_main
from lit_activations.events import read_scalars
from lit_activations.model import ActivationMLP

from runs import QUIET, fit

SHORT = ("--data.n_samples=200", "--trainer.max_epochs=2")


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [name for name in sys.modules if name.startswith("my_")]:  # another test's my_model, say
        monkeypatch.delitem(sys.modules, name)
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


WINE = """
    from sklearn.datasets import load_wine
    from lit_activations.data import ArrayDataModule, stratified_splits


    class WineDataModule(ArrayDataModule):
        '''scikit-learn's wines: 13 measurements of 178 wines from 3 cultivars.'''

        num_features, num_classes = 13, 3

        def load(self):
            x, y = load_wine(return_X_y=True)
            return stratified_splits(x, y, val_fraction=0.2, test_fraction=0.2, seed=self.hparams.seed)
"""


@pytest.mark.slow
def test_data_not_in_the_plane_trains_members_and_a_members_checkpoint_alone_validates_and_predicts(user_dir):
    write(user_dir, "my_wine", WINE)
    cli = fit("--data=my_wine.WineDataModule", "--data.standardize=true", "--model.output=softmax",
              "--model.hidden_sizes=[16, 16]", "--members.activations=[relu, tanh]", "--model.optimizer.lr=0.01",
              "--trainer.max_epochs=30")  # fmt: skip
    assert (cli.model.hparams.in_features, cli.model.hparams.num_classes) == (13, 3)  # from the data module
    tanh_run = cli.trainer.logger.member_dirs[1]
    scalars = read_scalars(tanh_run)
    assert {"saturation/net.1", "dead_units/net.3", "grad_norm/net.0.weight"} <= set(scalars)
    assert all(read_scalars(run)["val/acc"][-1][1] > 0.9 for run in cli.trainer.logger.member_dirs)  # chance: 0.4
    (checkpoint,) = (tanh_run / "checkpoints").glob("*.ckpt")

    def command(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "lit_activations", *args], capture_output=True, text=True,
                                cwd=user_dir, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    model = ActivationMLP.load_from_checkpoint(checkpoint, map_location="cpu")
    x_val, y_val = cli.datamodule._splits["val"].tensors
    with torch.no_grad():
        accuracy = (model(x_val)[0].argmax(-1) == y_val).float().mean().item()
    validated = command("validate", f"--ckpt_path={checkpoint}").strip().splitlines()
    assert validated[-2].split() == ["member", "val/acc", "val/loss"] and validated[-1].split()[0] == "tanh"
    assert float(validated[-1].split()[1]) == pytest.approx(accuracy, abs=1e-4)

    predicted = command("predict", f"--ckpt_path={checkpoint}").strip().splitlines()[-1]
    assert predicted.endswith(f"for 36 samples to {tanh_run / 'predictions.csv'}")
    table = np.loadtxt(tanh_run / "predictions.csv", delimiter=",", skiprows=1)
    x_test = cli.datamodule._splits["test"].tensors[0]
    with torch.no_grad():
        probabilities = model(x_test)[0].softmax(-1).numpy()
    np.testing.assert_allclose(table[:, 1:14], x_test.numpy(), rtol=1e-6)  # index, the 13 inputs, 3 probabilities
    np.testing.assert_allclose(table[:, 14:], probabilities, rtol=1e-5, atol=1e-7)


RESIDUAL = """
    import torch
    from lightning.pytorch import LightningModule
    from torch import nn
    from torch.nn import functional as F


    class ResidualMLP(LightningModule):
        '''An input layer, then blocks h + tanh(W h): a model of one's own, monitored layer by layer all the same.'''

        def __init__(self, width: int = 16, blocks: int = 4, lr: float = 0.01, in_features: int = 2,
                     num_classes: int = 2):
            super().__init__()
            self.save_hyperparameters()
            self.inp = nn.Linear(in_features, width)
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(blocks))
            self.out = nn.Linear(width, num_classes)

        def forward(self, x):
            h = self.inp(x)
            for block in self.blocks:
                h = h + block(h)
            return self.out(h)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y.long())
            self.log("train/loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.log("val/loss", F.cross_entropy(logits, y.long()))
            self.log("val/acc", (logits.argmax(-1) == y).float().mean())

        def predict_step(self, batch, batch_idx):
            return self(batch[0]).softmax(-1)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
"""


def test_a_lightning_module_of_ones_own_is_sized_by_the_data_monitored_validated_and_predicted(user_dir, capsys):
    write(user_dir, "my_wine", WINE)
    write(user_dir, "my_model", RESIDUAL)
    cli = fit("--model=my_model.ResidualMLP", "--model.blocks=3", "--data=my_wine.WineDataModule",
              "--data.standardize=true", "--trainer.max_epochs=10")  # fmt: skip
    assert (cli.model.hparams.in_features, cli.model.hparams.num_classes) == (13, 3)  # linked from the data
    run = Path(cli.trainer.logger.log_dir)
    assert run.as_posix() == "logs/residualmlp/version_0"  # named after the class
    scalars = read_scalars(run)
    assert {f"saturation/blocks.{i}.1" for i in range(3)} | {"grad_norm/blocks.2.0.weight", "val/acc"} <= set(scalars)
    assert not any("no activation module" in line for line in capsys.readouterr().err.splitlines())
    checkpoint = run / "checkpoints" / "last.ckpt"

    cli_main(["validate", *QUIET, f"--ckpt_path={checkpoint}", "--model.blocks=3"])  # its own option, as trained
    assert "val/acc" in capsys.readouterr().out  # Lightning's own table of what the model logs
    for command, refusal in (
        (["validate", "--model.width=8"], "with model.width=8: it was trained with 16; drop the flag"),
        (["test"], "error: cannot test ResidualMLP: it has no test_step; give it one, or use validate"),
    ):
        with pytest.raises(SystemExit):
            cli_main([command[0], *QUIET, f"--ckpt_path={checkpoint}", *command[1:]])
        assert refusal in capsys.readouterr().err
    cli_main(["predict", *QUIET, f"--ckpt_path={checkpoint}"])
    table = np.loadtxt(run / "predictions.csv", delimiter=",", skiprows=1)
    assert table.shape == (36, 1 + 13 + 3)
    np.testing.assert_allclose(table[:, 14:].sum(1), 1, rtol=1e-5)


def test_a_model_calling_its_activation_as_a_function_is_told_what_the_monitor_cannot_see(tmp_path, capsys):
    cli = fit("--model=functional_mlp.FunctionalMLP", "--data.n_samples=200", "--trainer.max_epochs=2")
    note = capsys.readouterr().err
    assert "ActivationMonitor: no activation module in FunctionalMLP (one called as a function, such as F.relu" in note
    run = cli.trainer.logger.log_dir
    scalars = read_scalars(run)
    assert {"grad_norm/hidden.weight", "grad_norm/deeper.weight", "vanishing_ratio/epoch", "val/acc"} <= set(scalars)
    assert not any(tag.startswith(("saturation/", "dead_units/")) for tag in scalars)
    events = EventAccumulator(run, size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors("notes/activation_monitor/text_summary")
    assert (
        b"make each activation a module (nn.ReLU() in __init__, called in forward)" in text.tensor_proto.string_val[0]
    )
