"""On a CUDA machine: the GPU preset trains, and the monitor never syncs on steps that do not log."""

import subprocess
import sys

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_activations.callbacks import ActivationMonitor
from lit_activations.cli import cli_main
from lit_activations.events import read_scalars

from runs import QUIET, REPO

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_gpu_preset_trains_and_logs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lit_activations", "fit", "--config", str(REPO / "configs" / "gpu.yaml"),
         "--model.activation=relu", "--trainer.max_epochs=3", *QUIET],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    scalars = read_scalars(tmp_path / "logs" / "relu" / "version_0")
    assert len(scalars["val/acc"]) == 3
    assert {"saturation/net.1", "grad_norm/net.0.weight", "vanishing_ratio/epoch"} <= set(scalars)


def test_fp16_loss_scaling_is_refused_for_members(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--trainer.accelerator=gpu", "--trainer.precision=16-mixed", "--members.seeds=[0, 1]", *QUIET])
    assert exit_info.value.code == 2
    assert "invalid trainer.precision 16-mixed for 2 members" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_monitor_makes_no_cuda_sync_on_quiet_steps(tmp_path, monkeypatch):
    original = ActivationMonitor.on_before_optimizer_step
    quiet_steps = []

    def guarded(self, trainer, pl_module, optimizer):
        if trainer.global_step % trainer.log_every_n_steps == 0:
            return original(self, trainer, pl_module, optimizer)
        quiet_steps.append(trainer.global_step)
        torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
        try:
            return original(self, trainer, pl_module, optimizer)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(ActivationMonitor, "on_before_optimizer_step", guarded)
    from test_callbacks import Regressor, X, Y  # the same model of the tests' own

    model = Regressor(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)), lr=0.1)
    trainer = Trainer(
        accelerator="gpu", devices=1, max_epochs=2, log_every_n_steps=4, logger=TensorBoardLogger(tmp_path),
        callbacks=[ActivationMonitor()], enable_checkpointing=False, enable_progress_bar=False,
    )  # fmt: skip
    trainer.fit(model, DataLoader(TensorDataset(X, Y), batch_size=8), DataLoader(TensorDataset(X, Y), batch_size=64))
    assert len(quiet_steps) == 12  # 16 steps, 4 of them logging
