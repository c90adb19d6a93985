"""Two CPU processes with DDP (gloo), through the real command line."""

import subprocess
import sys

import pytest
import torch

from lit_activations.events import read_scalars
from lit_activations.study.command import compare_main

from runs import QUIET, REPO, fit

TUTORIAL, DDP_CPU = str(REPO / "configs" / "tutorial.yaml"), str(REPO / "configs" / "ddp_cpu.yaml")


@pytest.mark.slow
@pytest.mark.ddp
def test_two_processes_train_log_and_measure_like_one_for_every_member(tmp_path):
    members = ("--members.activations=[relu, tanh]", "--members.seeds=[0, 1]")
    args = ["--config", TUTORIAL, *members, "--trainer.max_epochs=2", *QUIET]
    result = subprocess.run(
        [sys.executable, "-m", "lit_activations", "fit", *args, "--config", DDP_CPU],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    fit_dir = tmp_path / "logs" / "members" / "version_0"
    assert sorted(p.name for p in (tmp_path / "logs" / "members").iterdir()) == ["version_0"]
    assert (fit_dir / "config.yaml").exists() and not list(fit_dir.glob("events.out.tfevents.*"))

    single = fit(*args)  # 1 process x batch 32 against 2 processes x 16: the same batches, in the same order
    ddp_weights = torch.load(fit_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]
    model = single.model.cpu()
    for name, weight in model.state_dict().items():
        torch.testing.assert_close(ddp_weights[name], weight, rtol=0, atol=1e-5)

    x, y = single.datamodule._splits["val"].tensors
    with torch.no_grad():
        whole_set_accuracy = ((model(x) > 0.5).float() == y).float().mean(1).tolist()  # sigmoid output
    for k, one_run in enumerate(single.trainer.logger.member_dirs):
        ddp_run = fit_dir / one_run.relative_to(single.trainer.logger.log_dir)
        assert len(list(ddp_run.glob("events.out.tfevents.*"))) == 1 and (ddp_run / "config.yaml").exists()
        ddp, one = read_scalars(ddp_run), read_scalars(one_run)
        assert ddp["val/acc"][-1][1] == pytest.approx(whole_set_accuracy[k], abs=1e-6)
        for tag in ("saturation/net.1", "dead_units/net.5", "activation_mean/net.3", "activation_std/net.7"):
            assert ddp[tag][-1][1] == pytest.approx(one[tag][-1][1], abs=1e-5), tag  # counts reduced over ranks


@pytest.mark.slow
@pytest.mark.ddp
def test_compare_launches_a_ddp_fit_from_its_forked_process(tmp_path, capsys):
    args = ["--data.n_samples=200", "--trainer.max_epochs=2"]
    assert compare_main(["--activations", "tanh", *args, "--config", DDP_CPU]) == 0
    assert "[1/1] tanh seed 0: ok" in capsys.readouterr().out
    ddp = read_scalars(tmp_path / "logs" / "study" / "tanh" / "seed_0")
    one = read_scalars(fit("--model.activation=tanh", *args).trainer.logger.log_dir)
    assert ddp["val/loss"][-1][1] == pytest.approx(one["val/loss"][-1][1], abs=1e-5)  # both ranks took part
