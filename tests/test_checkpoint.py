"""PeriodicCheckpoint: every n epochs, and always the trained model at the end; AtomicCheckpointIO: whole files."""

import errno
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_activations.checkpoint import AtomicCheckpointIO, PeriodicCheckpoint

from runs import fit

SMALL = ("--data.n_samples=200", "--model.activation=tanh")  # 160 training points: 5 steps per epoch


def saved(cli) -> dict[str, dict]:
    directory = Path(cli.trainer.logger.log_dir) / "checkpoints"
    return {path.name: torch.load(path, weights_only=True, map_location="cpu") for path in sorted(directory.iterdir())}


def assert_holds_the_trained_model(checkpoint: dict, cli) -> None:
    assert checkpoint["global_step"] == cli.trainer.global_step
    for name, weight in cli.model.state_dict().items():
        torch.testing.assert_close(checkpoint["state_dict"][name], weight.cpu(), rtol=0, atol=0)


def test_saves_every_n_epochs_and_after_the_last_epoch():
    cli = fit(*SMALL, "--trainer.max_epochs=3", "--checkpoint.every_n_epochs=2", "--checkpoint.save_top_k=-1")
    checkpoints = saved(cli)
    assert list(checkpoints) == ["epoch=1-step=10.ckpt", "epoch=2-step=15.ckpt", "last.ckpt"]
    assert_holds_the_trained_model(checkpoints["last.ckpt"], cli)
    assert_holds_the_trained_model(checkpoints["epoch=2-step=15.ckpt"], cli)


@pytest.mark.parametrize("stop", ["--trainer.max_epochs=3", "--trainer.max_steps=7"])
def test_the_default_every_10_epochs_still_keeps_the_final_model(stop):
    cli = fit(*SMALL, stop)
    checkpoints = saved(cli)
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints  # the final one and its last.ckpt copy
    assert_holds_the_trained_model(checkpoints["last.ckpt"], cli)


def test_each_member_gets_its_final_model_also_when_the_last_epoch_is_a_periodic_save():
    cli = fit(*SMALL, "--members.seeds=[0, 1]", "--trainer.max_epochs=2", "--checkpoint.every_n_epochs=2")
    for k, run in enumerate(cli.trainer.logger.member_dirs):
        (checkpoint,) = (run / "checkpoints").iterdir()
        assert checkpoint.name == "epoch=1-step=10.ckpt"
        state = torch.load(checkpoint, weights_only=True)["state_dict"]
        for name, weight in cli.model.member_state_dict(k).items():
            torch.testing.assert_close(state[name], weight, rtol=0, atol=0)


def test_a_checkpoint_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "weights": torch.ones(3)}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1

    def disk_fills_up(self, data):  # half of it reaches the disk, then the disk is full
        with open(self, "wb") as file:
            file.write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_fills_up)
    with pytest.raises(OSError, match="No space left on device") as error:
        io.save_checkpoint({"epoch": 2, "weights": torch.zeros(3)}, path)
    assert error.value.filename == str(path)  # named, for the one line the CLI prints
    assert torch.load(path, weights_only=True)["epoch"] == 1  # the previous checkpoint, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no part of the new one left


def test_a_fast_dev_run_writes_no_checkpoint(tmp_path):
    fit(*SMALL, "--trainer.fast_dev_run=true")
    assert not list(tmp_path.rglob("*.ckpt"))  # (Lightning's own ModelCheckpoint saves last.ckpt all the same)


def test_the_state_key_is_lightnings_own_also_after_a_setting_changes():
    # The key names the callback's state in every checkpoint: made once, it must still be ModelCheckpoint's.
    ours, lightnings = PeriodicCheckpoint(every_n_epochs=10, save_last=True), ModelCheckpoint(every_n_epochs=10)
    assert ours.state_key == lightnings.state_key.replace("ModelCheckpoint", "PeriodicCheckpoint")
    assert ours.state_key == "PeriodicCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0,"\
        " 'every_n_epochs': 10, 'train_time_interval': None}"  # fmt: skip
    ours.monitor, ours._every_n_epochs = "val/loss", 3
    assert "'monitor': 'val/loss'" in ours.state_key and "'every_n_epochs': 3" in ours.state_key
