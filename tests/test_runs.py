"""Runs that must keep their results and logs intact: repeated, resumed, concurrent, diverged, interrupted."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_lock import HOLD_IN_ANOTHER_PROCESS

from lit_activations.events import read_scalars

from runs import QUIET, REPO, assert_same_curves, fit

SMALL = ("--data.n_samples=200", "--model.activation=tanh")  # 160 training points: 5 steps per epoch


def run_dirs(tmp_path: Path, activation: str = "tanh") -> list[str]:
    return sorted(p.name for p in (tmp_path / "logs" / activation).iterdir())


def test_same_seed_gives_bit_identical_metrics_and_another_seed_does_not(tmp_path):
    runs = [fit(*SMALL, "--trainer.max_epochs=3", f"--seed_everything={seed}") for seed in (5, 5, 6)]
    first, again, other = (read_scalars(cli.trainer.logger.log_dir) for cli in runs)
    assert first == again  # every tag, step and value
    assert first["val/loss"] != other["val/loss"]
    config = yaml.safe_load((Path(runs[0].trainer.logger.log_dir) / "config.yaml").read_text())
    assert config["seed_everything"] == 5


def test_resume_from_last_continues_the_same_run_with_the_same_metrics(tmp_path):
    uninterrupted = read_scalars(fit(*SMALL, "--trainer.max_epochs=4").trainer.logger.log_dir)
    first_half = fit(*SMALL, "--trainer.max_epochs=2").trainer.logger.log_dir
    resumed = fit(*SMALL, "--trainer.max_epochs=4", "--ckpt_path=last")
    assert resumed.trainer.logger.log_dir == first_half and resumed.trainer.current_epoch == 4
    assert run_dirs(tmp_path) == ["version_0", "version_1"]
    resumed_scalars = read_scalars(first_half)
    # the first half's own final/ entries stay at its last step; the resumed run's come after them
    assert_same_curves(resumed_scalars, uninterrupted)
    assert resumed_scalars["final/val_acc"][-1] == uninterrupted["final/val_acc"][-1]


def test_a_diverging_run_stops_with_one_line_and_readable_files(tmp_path, capsys):
    diverges_in_epoch_1 = (
        "--model.optimizer=SGD", "--model.optimizer.lr=0.1",
        "--model.scheduler=StepLR", "--model.scheduler.step_size=1", "--model.scheduler.gamma=1e12",
        "--checkpoint.every_n_epochs=1",  # a checkpoint before the divergence, to check it stays finite
    )  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        fit(*SMALL, "--model.activation=identity", *diverges_in_epoch_1, "--trainer.max_epochs=5")
    assert exit_info.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error: training diverged at step ")
    assert "the gradient of net.0.weight is not finite" in message
    step = int(message.split("at step ")[1].split(":")[0])
    assert step >= 5  # in epoch 1, after the first checkpoint

    run = tmp_path / "logs" / "identity" / "version_0"
    assert len(read_scalars(run)["val/acc"]) == 1  # epoch 0's validation, read back
    weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.slow
def test_concurrent_runs_never_share_a_run_directory(tmp_path):
    command = [sys.executable, "-m", "lit_activations", "fit", *SMALL, "--trainer.max_epochs=1", *QUIET]
    processes = [subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    assert run_dirs(tmp_path) == ["version_0", "version_1", "version_2"]
    for run in (tmp_path / "logs" / "tanh").iterdir():
        assert len(list(run.glob("events.out.tfevents.*"))) == 1 and (run / "config.yaml").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_a_stopped_fit_leaves_readable_events_and_a_resumable_checkpoint(tmp_path, signum):
    command = [sys.executable, "-m", "lit_activations", "fit", *SMALL, "--trainer.max_epochs=100000", *QUIET]
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "logs" / "tanh" / "version_0"
    checkpoint = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # well into a later epoch
    process.send_signal(signum)
    process.wait(timeout=60)
    said = process.stderr.read()
    if signum == signal.SIGINT:
        assert "KeyboardInterrupt" in said  # Lightning's graceful shutdown, not a crash mid-write
    else:  # Lightning stops at the next batch and exits 0: a scheduler must see it did not finish
        assert process.returncode == 143 and said.strip().splitlines()[-1] == (
            "interrupted (SIGTERM): the run is kept as far as its last checkpoint; --ckpt_path last continues it"
        )

    assert len(read_scalars(run)["val/acc"]) >= 1
    saved_epoch = torch.load(checkpoint, weights_only=True)["epoch"]
    resumed = fit(*SMALL, f"--ckpt_path={checkpoint}", f"--trainer.max_epochs={saved_epoch + 3}")
    assert Path(resumed.trainer.logger.log_dir).resolve() == run and resumed.trainer.current_epoch == saved_epoch + 3
    assert run_dirs(tmp_path) == ["version_0"]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A 2-epoch run with options of its own (tanh, [4, 4], 200 points, noise 0.2), to be resumed."""
    logs = tmp_path_factory.mktemp("resume")
    args = ("--model.activation=tanh", "--model.hidden_sizes=[4, 4]", "--data.n_samples=200", "--data.noise=0.2")
    cli = fit(*args, f"--trainer.logger.init_args.save_dir={logs}", "--trainer.max_epochs=2")
    return Path(cli.trainer.logger.log_dir), args


def test_a_bare_resume_continues_the_run_with_its_own_configuration(stopped_run, tmp_path):
    run, args = stopped_run
    copy = tmp_path / "tanh" / "version_0"
    shutil.copytree(run, copy)  # the module's run stays as it was for the tests of refused resumes
    resumed = fit(f"--ckpt_path={copy / 'checkpoints' / 'last.ckpt'}", "--trainer.max_epochs=4")  # no other flag
    assert Path(resumed.trainer.logger.log_dir) == copy and resumed.trainer.current_epoch == 4
    hp = resumed.model.hparams
    assert (hp.activation, hp.hidden_sizes, resumed.datamodule.hparams.noise) == ("tanh", [4, 4], 0.2)
    uninterrupted = fit(*args, "--trainer.max_epochs=4", f"--trainer.logger.init_args.save_dir={tmp_path / 'u'}")
    assert_same_curves(read_scalars(copy), read_scalars(uninterrupted.trainer.logger.log_dir))
    assert yaml.safe_load((copy / "config.yaml").read_text())["trainer"]["max_epochs"] == 4


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model.activation=relu"], "with model.activation='relu': it was trained with 'tanh'; drop the flag"),
        (["--model.hidden_sizes=[8]"], "with model.hidden_sizes=[8]: it was trained with [4, 4]"),
        (["--data.noise=0.3"], "with data.noise=0.3: it was trained with 0.2"),
        (["--members.seeds=[0, 1]"], "with members.seeds=[0, 1]: it was trained with None"),
        (["--seed_everything=7"], "with seed_everything=7: it was trained with 0"),
        (["--trainer.max_epochs=1"], "invalid trainer.max_epochs 1 to resume"),
        (["--trainer.max_epochs=2"], "it has trained 2 epochs; give more than 2"),
    ],
)
def test_a_refused_resume_is_one_line_and_leaves_the_run_byte_identical(stopped_run, flags, message, capsys):
    run, _ = stopped_run
    before = snapshot(run)
    with pytest.raises(SystemExit) as exit_info:
        fit(f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", *flags)
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        last_line.startswith(f"error: cannot resume {run}" if "with" in message else "error: ") and message in last_line
    )
    assert snapshot(run) == before


def test_a_members_own_checkpoint_or_a_missing_file_is_no_checkpoint_to_resume(tmp_path, capsys):
    cli = fit(*SMALL, "--members.seeds=[0, 1]", "--trainer.max_epochs=1")
    (member,) = (cli.trainer.logger.member_dirs[0] / "checkpoints").iterdir()
    for path, message in ((member, "it holds one member's model"), (tmp_path / "nope.ckpt", "no such file")):
        with pytest.raises(SystemExit):
            fit(f"--ckpt_path={path}", "--trainer.max_epochs=3")
        assert message in capsys.readouterr().err


TUTORIAL = str(REPO / "configs" / "tutorial.yaml")


@pytest.mark.parametrize("members", [(), ("--members.activations=[relu, tanh]", "--members.seeds=[0, 1]")],
                         ids=["one run", "members"])  # fmt: skip
def test_a_resume_with_a_config_file_keeps_the_runs_record_and_every_later_resume_is_accepted(tmp_path, members):
    command = ("--config", TUTORIAL, "--data.n_samples=200", *members)  # the tutorial's Adam: lr 1e-4, fused
    fit_dir = Path(fit(*command, "--trainer.max_epochs=2").trainer.logger.log_dir)
    records = sorted(fit_dir.rglob("config.yaml"))
    assert len(records) == (5 if members else 1)
    before = {path: path.read_text() for path in records}
    for epochs in (4, 6):
        resumed = fit(*command, f"--trainer.max_epochs={epochs}", "--ckpt_path=last")
        assert Path(resumed.trainer.logger.log_dir) == fit_dir and resumed.trainer.current_epoch == epochs
        optimizer = resumed.trainer.optimizers[0]
        assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["fused"] is True
        for path, text in before.items():  # byte for byte, but for the one option the command changed
            assert path.read_text() == text.replace("max_epochs: 2\n", f"max_epochs: {epochs}\n")


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_runs_killed_at_any_moment_resume_to_what_an_uninterrupted_fit_logs(tmp_path):
    """kill -9 before the first checkpoint, after one, and during a resume: each later resume is accepted, the
    records stay byte-identical and the logged curves end as those of a fit never interrupted."""
    command = ("--config", TUTORIAL, "--members.activations=[relu, tanh]", "--checkpoint.every_n_epochs=5",
               "--trainer.max_epochs=40", "--summary=null")  # fmt: skip
    fit_dir = tmp_path / "logs" / "members" / "version_0"
    members = [fit_dir / "relu" / "seed_0", fit_dir / "tanh" / "seed_0"]

    def start(*extra: str) -> subprocess.Popen:
        argv = [sys.executable, "-m", "lit_activations", "fit", *QUIET, *command, *extra]
        return subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def events() -> list[Path]:
        return sorted(p for run in members for p in run.glob("events.out.tfevents.*"))

    first = start()  # killed as soon as it trains: before its first checkpoint
    wait_for(lambda: len(events()) == 2 and all((run / "config.yaml").exists() for run in members))
    first.kill()
    first.wait()
    records = {path: path.read_text() for path in fit_dir.rglob("config.yaml")}
    assert len(records) == 3

    again = start("--ckpt_path=last")  # starts over in place, killed after a checkpoint
    wait_for(lambda: (fit_dir / "checkpoints" / "last.ckpt").exists())
    again.kill()
    assert "stopped before its first checkpoint: training it again from the start, in place" in again.stderr.read()
    seen = len(events())
    during = start("--ckpt_path=last")  # killed during its resume, once it has written its events
    wait_for(lambda: len(events()) > seen)
    during.kill()
    during.wait()
    finished = start("--ckpt_path=last")
    assert finished.wait(timeout=300) == 0, finished.stderr.read()

    assert sorted(p.name for p in fit_dir.parent.iterdir()) == ["version_0"]
    assert {path: path.read_text() for path in fit_dir.rglob("config.yaml")} == records
    uninterrupted = fit(*command, f"--trainer.logger.init_args.save_dir={tmp_path / 'once'}")
    for run, reference in zip(members, uninterrupted.trainer.logger.member_dirs, strict=True):
        assert_same_curves(read_scalars(run), read_scalars(reference))


def test_last_resumes_the_newest_run_that_the_command_can_continue(tmp_path, capsys):
    first = fit(*SMALL, "--trainer.max_epochs=1")  # version_0: 200 points
    fit("--data.n_samples=300", "--model.activation=tanh", "--trainer.max_epochs=1")  # version_1, newer: 300 points
    resumed = fit(*SMALL, "--trainer.max_epochs=2", "--ckpt_path=last")  # the flags say 200 points: version_0
    assert resumed.trainer.logger.log_dir == first.trainer.logger.log_dir and resumed.trainer.current_epoch == 2
    with pytest.raises(SystemExit):  # no run has 250 points: the newest one's refusal says why
        fit("--data.n_samples=250", "--model.activation=tanh", "--trainer.max_epochs=3", "--ckpt_path=last")
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(
            f"error: cannot resume {Path('logs/tanh/version_0')} with data.n_samples=250: it was trained with 200;"
        )
    )  # version_0, resumed last, is now the newest


def test_a_run_another_process_trains_is_not_resumed_and_one_left_by_a_dead_process_is(stopped_run, capsys):
    run, _ = stopped_run
    holder = subprocess.Popen([sys.executable, "-c", HOLD_IN_ANOTHER_PROCESS, str(run)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"  # as a fit of this run would hold it
    before = snapshot(run)
    with pytest.raises(SystemExit) as exit_info:
        fit(f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "--trainer.max_epochs=3")
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: cannot resume {run}: pid {holder.pid} on {os.uname().nodename} is training it; wait for it to end"
        " (see --help)"
    )
    assert snapshot(run) == before
    holder.kill()  # kill -9: the lock file still names it
    holder.wait()
    copy = run.parent / "copy_of_version_0"
    shutil.copytree(run, copy)
    fit(f"--ckpt_path={copy / 'checkpoints' / 'last.ckpt'}", "--trainer.max_epochs=3")
    assert f"{copy} was left by pid {holder.pid} on {os.uname().nodename}, which is gone: resuming it" in (
        capsys.readouterr().err
    )


def test_a_run_resumes_from_any_directory_and_when_copied_with_its_own_last_checkpoint(tmp_path, monkeypatch):
    args = ("--model.activation=tanh", "--data.n_samples=200")
    uninterrupted = read_scalars(fit(*args, "--trainer.max_epochs=6", "--trainer.logger.init_args.save_dir=u")
                                 .trainer.logger.log_dir)  # fmt: skip
    run = Path(fit(*args, "--trainer.max_epochs=3").trainer.logger.log_dir).resolve()
    copied = tmp_path / "elsewhere" / "version_0"
    shutil.copytree(run, copied)
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")  # checkpoints name their directory as seen from where the fit ran
    for directory in (run, copied):
        resumed = fit(f"--ckpt_path={directory / 'checkpoints' / 'last.ckpt'}", "--trainer.max_epochs=6")
        assert Path(resumed.trainer.logger.log_dir) == directory and resumed.trainer.current_epoch == 6
        assert sorted(p.name for p in (directory / "checkpoints").iterdir()) == [
            "epoch=2-step=15.ckpt",
            "epoch=5-step=30.ckpt",
            "last.ckpt",
        ]  # fmt: skip  (no last-v1.ckpt)
        assert torch.load(directory / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 5
        ours = read_scalars(directory)
        assert_same_curves(ours, uninterrupted)


def test_resuming_from_an_older_checkpoint_says_what_is_trained_again(tmp_path, capsys):
    every_second = ("--checkpoint.every_n_epochs=2", "--checkpoint.save_top_k=-1")  # all of them kept
    run = Path(fit(*SMALL, "--trainer.max_epochs=4", *every_second).trainer.logger.log_dir)
    capsys.readouterr()
    fit(f"--ckpt_path={run / 'checkpoints' / 'epoch=1-step=10.ckpt'}", "--trainer.max_epochs=5")
    assert (
        f"resuming {run} after epoch 2 (epoch=1-step=10.ckpt), though it has trained 4: epochs 3-4 are trained"
        " again, their events hidden"
    ) in capsys.readouterr().err


def test_a_fit_whose_member_directory_is_gone_is_not_resumed(tmp_path, capsys):
    cli = fit(*SMALL, "--members.seeds=[0, 1]", "--trainer.max_epochs=1")
    shutil.rmtree(cli.trainer.logger.member_dirs[1])
    with pytest.raises(SystemExit):
        fit(*SMALL, "--members.seeds=[0, 1]", "--trainer.max_epochs=2", "--ckpt_path=last")
    fit_dir = Path(cli.trainer.logger.log_dir)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: cannot resume {fit_dir}: its member's run directory {fit_dir / 'tanh' / 'seed_1'} is missing; put it"
        " back, or leave out --ckpt_path to train a new fit (see --help)"
    )
