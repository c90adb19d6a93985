import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lit_activations.activations import ACTIVATIONS
from lit_activations.callbacks import ActivationMonitor
from lit_activations.cli import cli_main
from lit_activations.data import CirclesDataModule
from lit_activations.events import read_scalars
from lit_activations.model import ActivationMLP
from lit_activations.profiler import HookProfiler

from runs import CONFIGS, QUIET, REPO, fit


def accuracy_on(split: str, checkpoint: Path, data: CirclesDataModule) -> float:
    """Accuracy of a checkpoint on a split, computed here without Lightning's loops or torchmetrics."""
    model = ActivationMLP.load_from_checkpoint(checkpoint, map_location="cpu")
    x, y = data._splits[split].tensors
    with torch.no_grad():
        return ((model.to_probabilities(model(x)) > 0.5).float() == y).float().mean().item()


@pytest.mark.slow
def test_fit_command_writes_a_run_with_config_and_validation_accuracy(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lit_activations", "fit", "--model.activation=tanh", "--trainer.max_epochs=2"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # for people: where the run is, and no progress bars or advertisements in output that is not a terminal
    assert (
        result.stdout.strip().splitlines()[-1] == "Saved logs/tanh/version_0; to look at it: tensorboard --logdir logs"
    )
    assert "it/s]" not in result.stdout + result.stderr and "Tip" not in result.stdout + result.stderr
    run = tmp_path / "logs" / "tanh" / "version_0"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["seed_everything"] == 0 and config["model"]["init_args"]["activation"] == "tanh"
    scalars = read_scalars(run)
    val_acc = scalars["val/acc"]
    assert len(val_acc) == 2
    assert {"saturation/net.1", "dead_units/net.7", "grad_norm/net.0.weight", "vanishing_ratio/epoch"} <= set(scalars)
    assert [value for _, value in scalars["lr-Adam"]] == pytest.approx([1e-3, 1e-3])  # LearningRateMonitor, per epoch
    (checkpoint,) = (run / "checkpoints").glob("epoch=*.ckpt")
    data = CirclesDataModule(**config["data"]["init_args"])
    data.setup("fit")
    assert val_acc[-1][1] == pytest.approx(accuracy_on("val", checkpoint, data), abs=1e-6)


def test_a_softmax_head_on_three_spirals_through_the_cli(tmp_path):
    cli = fit("--data=SpiralsDataModule", "--model.output=softmax", "--model.hidden_sizes=[16, 16]",
              "--model.optimizer.lr=0.02", "--trainer.max_epochs=6", "--data.grid_size=10")  # fmt: skip
    assert cli.model.hparams.num_classes == 3  # linked from the data
    run = cli.trainer.logger.log_dir
    x, y = cli.datamodule._splits["val"].tensors
    model = cli.model.cpu()
    with torch.no_grad():
        accuracy = (model(x)[0].argmax(-1) == y.long()).float().mean().item()
    assert read_scalars(run)["val/acc"][-1][1] == pytest.approx(accuracy, abs=1e-6) and accuracy > 0.5  # chance: 1/3
    (checkpoint,) = Path(run, "checkpoints").glob("epoch=*.ckpt")
    predicted = cli_main(["predict", *QUIET, f"--ckpt_path={checkpoint}", "--data.grid_size=10"])
    probabilities = predicted.trainer.predict_loop.predictions[0]
    assert probabilities.shape == (100, 3)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(100))


def test_same_command_twice_makes_a_new_version(tmp_path):
    for _ in range(2):
        fit("--model.activation=relu6", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2")
    runs = sorted(p.name for p in (tmp_path / "logs" / "relu6").iterdir())
    assert runs == ["version_0", "version_1"]
    assert all((tmp_path / "logs" / "relu6" / r / "config.yaml").exists() for r in runs)


def test_monitor_is_configurable_and_can_be_turned_off(tmp_path):
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    cli = fit("--model.activation=elu", "--monitor.epsilon=0.2", *short)
    (monitor,) = [c for c in cli.trainer.callbacks if isinstance(c, ActivationMonitor)]
    assert monitor.epsilon == 0.2
    cli = fit("--model.activation=elu", "--monitor=null", *short)
    assert not any(isinstance(c, ActivationMonitor) for c in cli.trainer.callbacks)
    assert not any(tag.startswith("grad_norm/") for tag in read_scalars(cli.trainer.logger.log_dir))


def test_the_default_profiler_records_nothing_and_simple_profiles_every_hook(tmp_path):
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    cli = fit(*short)
    assert type(cli.trainer.profiler) is HookProfiler
    with cli.trainer.profiler.profile("anything") as entered:
        assert entered is None
    cli = fit("--trainer.profiler=simple", *short)
    recorded = cli.trainer.profiler.recorded_durations
    assert len(recorded["[Callback]ActivationMonitor.on_before_optimizer_step"]) == 2  # one a training step
    assert len(recorded["[Strategy]SingleDeviceStrategy.training_step"]) == 2


def test_import_path_activation_runs_under_its_class_name(tmp_path):
    fit("--model.activation=torch.nn.Hardtanh", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1")
    assert (tmp_path / "logs" / "hardtanh" / "version_0" / "config.yaml").exists()


def printed_metrics(output: str) -> dict[str, dict[str, float]]:
    """The table validate and test print: member -> tag -> value."""
    lines = output.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["member"])
    tags = lines[header].split()[1:]
    return {row.split()[0]: dict(zip(tags, map(float, row.split()[1:]), strict=True)) for row in lines[header + 1 :]}


def test_validate_test_and_predict_answer_from_the_checkpoint_alone_and_write_nothing_else(tmp_path, capsys):
    cli = fit("--model.activation=relu", "--data.grid_size=10", "--data.noise=0.2", "--trainer.max_epochs=3")
    run = Path(cli.trainer.logger.log_dir)
    checkpoint = cli.trainer.checkpoint_callback.best_model_path
    data = cli.datamodule
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    capsys.readouterr()

    for subcommand, split in (("validate", "val"), ("test", "test")):
        cli_main([subcommand, *QUIET, f"--ckpt_path={checkpoint}"])  # no other flag: the run says the rest
        (row,) = printed_metrics(capsys.readouterr().out).values()
        assert row[f"{split}/acc"] == pytest.approx(accuracy_on(split, checkpoint, data), abs=1e-4)
    moved = tmp_path / "elsewhere" / "model.ckpt"  # out of its run: the checkpoint's hyperparameters say it all
    moved.parent.mkdir()
    moved.write_bytes(Path(checkpoint).read_bytes())
    cli_main(["validate", *QUIET, f"--ckpt_path={moved}"])  # (its data's noise, 0.2, is not the default)
    (row,) = printed_metrics(capsys.readouterr().out).values()
    assert row["val/acc"] == pytest.approx(accuracy_on("val", checkpoint, data), abs=1e-4)
    moved.unlink()
    moved.parent.rmdir()

    cli_main(["predict", *QUIET, f"--ckpt_path={checkpoint}"])
    assert capsys.readouterr().out.strip().endswith(f"for 100 samples to {run / 'predictions.csv'}")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == sorted(
        [*before, run / "predictions.csv"]
    )  # no new run, nothing but the file asked for
    table = np.loadtxt(run / "predictions.csv", delimiter=",", skiprows=1)
    model = ActivationMLP.load_from_checkpoint(checkpoint, map_location="cpu")
    (grid,) = data._splits["predict"].tensors
    with torch.no_grad():
        p_inner = model.to_probabilities(model(grid))[0]
    np.testing.assert_array_equal(table[:, 0], np.arange(100))
    np.testing.assert_allclose(table[:, 1:3], grid.numpy(), rtol=1e-6)
    np.testing.assert_allclose(table[:, 3:], torch.stack([1 - p_inner, p_inner], 1).numpy(), rtol=1e-5, atol=1e-7)
    cli_main(["predict", *QUIET, f"--ckpt_path={checkpoint}"])  # a second time: a new file, the first one kept
    assert (run / "predictions-1.csv").read_bytes() == (run / "predictions.csv").read_bytes()


def test_an_evaluation_refuses_a_flag_that_changes_the_checkpoints_model(tmp_path, capsys):
    checkpoint = fit(
        "--model.activation=tanh", "--trainer.max_epochs=1", "--data.n_samples=200"
    ).trainer.checkpoint_callback.best_model_path
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["validate", f"--ckpt_path={checkpoint}", "--model.hidden_sizes=[8]"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: cannot validate {checkpoint} with model.hidden_sizes=[8]: it was trained with [5, 5, 5, 5];"
        " drop the flag (the checkpoint decides the model) (see --help)"
    )


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_passes_print_config(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seed_everything"] == 0
    assert printed["trainer"]["logger"]["init_args"]["save_dir"] == "logs"


def test_configs_stack_and_flags_override_them(capsys):
    tutorial = str(REPO / "configs" / "tutorial.yaml")
    args = ["--config", tutorial, "--data.batch_size=64", "--model.activation=leaky_relu"]
    with pytest.raises(SystemExit):
        cli_main(["fit", *args, "--model.activation_args={negative_slope: 0.2}", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    model = printed["model"]["init_args"]
    assert printed["trainer"]["max_epochs"] == 300 and model["output"] == "sigmoid"
    assert model["optimizer"]["init_args"]["lr"] == 1e-4
    assert printed["data"]["init_args"]["batch_size"] == 64
    assert model["activation_args"] == {"negative_slope": 0.2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.activation=relu7"], "unknown activation 'relu7'; choose one of: elu, gelu, identity, leaky_relu"),
        (["--model.hidden_sizes=[]"], "invalid model.hidden_sizes []; expected a list of integers >= 1: [5, 5]"),
        (["--model.hidden_sizes=[5, -1]"], "invalid model.hidden_sizes [5, -1]"),
        (["--data.noise=-0.5"], "invalid data.noise -0.5; expected a number >= 0"),
        (["--data.factor=1.2"], "invalid data.factor 1.2; expected a number in (0, 1)"),
        (["--data.val_fraction=1"], "invalid data.val_fraction 1.0; expected 0 (validate on the training points)"),
        (["--data.val_fraction=0.0001"], "invalid data.val_fraction 0.0001"),
        (["--data.batch_size=0"], "invalid data.batch_size 0; expected an integer >= 1"),
        (["--data.batch_size=many"], "Parser key \"data.batch_size\": Expected a <class 'int'>. Got value: many"),
        (["--config=missing.yaml"], 'Parser key "config": File does not exist'),
        (["--model.init=orthogonal"], 'Parser key "model.init"'),
        (
            ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp", "--data.batch_size=33"],
            "invalid data.batch_size 33; expected a multiple of the number of processes (2)",
        ),
        (["--data.batch_size=900"], "invalid data.batch_size 900; expected at most the 800 training points"),
        (["--model.optimizer.lr=-0.1"], "invalid model.optimizer: Invalid learning rate: -0.1"),
        (["--model.optimizer.betas=[1.5, 0.9]"], "invalid model.optimizer: Invalid beta parameter at index 0: 1.5"),
        (["--model.optimizer=SGD", "--model.optimizer.lr=0.1", "--model.optimizer.momentum=-1"], "Invalid momentum"),
        (["--model.scheduler=StepLRR"], "Parser key \"model.scheduler\": no class 'StepLRR' to import"),
        (["--trainer.max_epochs=0"], "invalid trainer.max_epochs 0; expected an integer >= 1, or -1 for no limit"),
        (["--trainer.max_steps=0"], "invalid trainer.max_steps 0; expected an integer >= 1, or -1 for no limit"),
        (
            ["--trainer.max_epoch=5"],
            "unrecognized arguments: --trainer.max_epoch=5; did you mean --trainer.max_epochs?",
        ),
        (["--model.hidden_sizes=5,5"], 'Parser key "model.hidden_sizes": expected a list in brackets, e.g. [5, 5]'),
        (["--data=MoonsDataModule", "--data.factor=0.3"], "Option 'data.factor' is not accepted by MoonsDataModule"),
        (["--data=SpiralsOfDoom"], "invalid data 'SpiralsOfDoom': no such class; give one of lit_activations (e.g."),
        (["--data=PlaneDataModule"], "invalid data PlaneDataModule: it draws no points; choose CirclesDataModule,"),
        (["--data=ArrayDataModule"], "invalid data ArrayDataModule: it loads no data; choose DigitsDataModule or a"),
        (
            ["--model.num_classes=3"],
            "model.num_classes is the data module's num_classes, not an option of its own;"
            " choose the data instead, e.g. --data=SpiralsDataModule --data.num_classes=3",
        ),
        (["--model.init_args.in_features", "3"], "model.in_features is the data module's num_features, not an option"),
        (
            ["--model=no_such_package.MyModel"],
            "invalid model 'no_such_package.MyModel': no module named 'no_such_package' on the Python path; give the"
            " import path of a LightningModule subclass, e.g. --model=my_package.MyModel",
        ),
        (
            ["--model=lit_activations.model.MLP"],
            "invalid model 'lit_activations.model.MLP': module"
            " lit_activations.model has no class MLP; give the import path",
        ),
        (["--model=torch.nn.Linear"], "invalid model 'torch.nn.Linear': it is not a LightningModule; give"),
        (
            ["--data=torch.nn.Linear"],
            "invalid data 'torch.nn.Linear': it is not a LightningDataModule; give the import"
            " path of a LightningDataModule subclass, e.g. --data=my_package.MyData",
        ),
        (["--ckpt_path=best"], "invalid ckpt_path 'best' for validate; give a checkpoint file, e.g."),
        (
            ["--data.factor=0.3", "--data=MoonsDataModule"],
            "--data.factor comes before --data=..., which replaces the data and its options; put it after",
        ),
        (["--model.hidden_sizes=[8]", "--model", "ActivationMLP"], "--model.hidden_sizes comes before --model=..."),
        (["--seed_everything=-1"], "invalid seed_everything -1; expected an integer from 0 to 4294967295"),
        (["--members.seeds=[0, 4294967296]"], "invalid members.seeds 4294967296; expected an integer from 0 to"),
        (["--data.seed=-3"], "invalid data.seed -3; expected an integer from 0 to 4294967295"),
        (
            ["--trainer.logger.init_args.save_dir=a_file/logs"],
            "invalid trainer.logger.save_dir a_file/logs: a_file is a file, not a directory",
        ),
        (
            ["--model=functional_mlp.FunctionalMLP", "--members.seeds=[0, 1]"],
            "invalid members.seeds for FunctionalMLP: members are trained side by side by ActivationMLP and its"
            " subclasses; FunctionalMLP trains one network a fit (compare --seeds runs one fit per seed)",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path, capsys):
    """Every value a user can mistype: one line naming the option and what it accepts, exit 2, no run directory."""
    (tmp_path / "a_file").touch()
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["validate", *QUIET, *args]) if args[0].startswith("--ckpt_path") else fit(*args)
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_bad_input_from_the_shell_has_no_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JSONARGPARSE_DEBUG"}
    result = subprocess.run(
        [sys.executable, "-m", "lit_activations", "fit", "--model.activation=swish7"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()  # not even Lightning's "Seed set to 0" above it
    assert line.startswith("error: unknown activation 'swish7'; choose one of:")
    assert not (tmp_path / "logs").exists()


def test_help_lists_every_registered_activation_and_each_datasets_options(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--members.activations" in help_text and "--threads" in help_text and "--model.help" in help_text
    with pytest.raises(SystemExit):
        cli_main(["fit", "--model.help", "ActivationMLP"])
    model_help = " ".join(capsys.readouterr().out.split())
    assert all(name in model_help for name in ACTIVATIONS) and "--model.hidden_sizes" in model_help
    for data, option in (("CirclesDataModule", "--data.factor"), ("MoonsDataModule", "--data.noise")):
        with pytest.raises(SystemExit):
            cli_main(["fit", "--data.help", data])
        data_help = capsys.readouterr().out
        assert option in data_help and "--data.val_fraction" in data_help


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("trainer:\n  max_epochs: [3\n", "in broken.yaml: invalid YAML at line 3, column 1: Problems parsing config"),
        ("trainer:\n  max_epoch: 3\n", "in broken.yaml: Subcommand 'fit' does not accept option 'trainer.max_epoch'"),
        ("data:\n  batch_size: abc\n", "in broken.yaml: Parser key \"data.batch_size\": Expected a <class 'int'>"),
        (
            "model:\n  optimizer:\n    class_path: torch.optim.SGD\n    init_args:\n      lr: fast\n",
            'in broken.yaml: Parser key "model.optimizer"',
        ),
        ("model:\n  foo: 1\n", "in broken.yaml: Option 'model.foo' is not accepted by ActivationMLP"),
        ("model:\n  init_args:\n    activation: relu7\n", "in broken.yaml: unknown activation 'relu7'; choose"),
        ("model:\n  hidden_sizes: [5, -1]\n", "in broken.yaml: invalid model.hidden_sizes [5, -1]; expected"),
    ],
)
def test_bad_config_file_names_the_file_and_key(content, message, tmp_path, capsys):
    (tmp_path / "broken.yaml").write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        fit("--config", str(REPO / "configs" / "tutorial.yaml"), "--config", "broken.yaml")
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line
    assert not (tmp_path / "logs").exists()


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_fit_takes_one_cpu_thread_unless_told_otherwise(monkeypatch, torch_threads):
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0"]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    fit(*short)
    assert torch.get_num_threads() == 1  # not one per core: small steps on shared cores
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    fit(*short)
    assert torch.get_num_threads() == 2
    fit(*short, "--threads=1")
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"  # DDP's processes take it too


@pytest.mark.parametrize(
    ("module", "flags", "error"),
    [
        ("class Broken(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n        1 / 0\n",
         ["--model.activation=user_activation.Broken"], ZeroDivisionError),
        ("import not_installed_anywhere\n", ["--model.activation=user_import.Anything"], ModuleNotFoundError),
        ("class Broken(PlaneDataModule):\n    def draw(self, n_samples, seed):\n        return undefined_name\n",
         ["--data=user_data.Broken"], NameError),
        ("import not_installed_anywhere\n", ["--model=user_model.MyModel"], ModuleNotFoundError),
    ],
)  # fmt: skip
def test_a_bug_in_the_users_own_code_keeps_its_traceback(module, flags, error, tmp_path, monkeypatch):
    name = flags[0].split("=")[1].split(".")[0]  # a module of its own per case: Python keeps imported modules
    (tmp_path / f"{name}.py").write_text("import torch\nfrom lit_activations.data import PlaneDataModule\n" + module)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(error):  # not a SystemExit with one line: the user needs the line at fault
        fit(*flags, "--trainer.max_epochs=1")


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_every_checkpoint_stays_whole(tmp_path):
    """On a 400 kB file system of its own (a mount namespace, as root): the checkpoints fill it at some epoch."""
    small = tmp_path / "small"
    small.mkdir()
    fit_there = (
        f"mount -t tmpfs -o size=400k tmpfs {small} && cd {small} && {sys.executable} -m lit_activations fit"
        " --model.activation=tanh --model.hidden_sizes=[64,64] --data.n_samples=200 --trainer.max_epochs=100000"
        " --checkpoint.every_n_epochs=1 --trainer.enable_progress_bar=false --trainer.enable_model_summary=false"
        f'; echo status $?; {sys.executable} -c \'import torch; print("epoch", torch.load("logs/tanh/version_0/'
        'checkpoints/last.ckpt", weights_only=True)["epoch"])\'; ls -A logs/tanh/version_0/checkpoints'
    )
    result = subprocess.run(["unshare", "--mount", "sh", "-c", fit_there], capture_output=True, text=True, timeout=300)
    assert re.fullmatch(
        r"error: cannot write \S+: No space left on device; every checkpoint written is whole",
        result.stderr.strip().splitlines()[-1],
    ), result.stderr
    lines = result.stdout.strip().splitlines()
    status = lines.index("status 1")  # the fit's exit status
    assert lines[status + 1].startswith("epoch ") and int(lines[status + 1].split()[1]) > 10  # last.ckpt loads: whole
    assert not [name for name in lines[status + 2 :] if name.endswith(".partial")]  # nothing half-written left
