"""Every claim of the experiments in configs/experiments/, at a reduced size, asserted from the event files.

Each test runs its experiment's configuration with fewer points and epochs (the members of one fit
where the experiment's command runs a study) and checks the direction the claim states.
"""

import csv
import statistics

import pytest
import torch
import yaml

from lit_activations.cli import cli_main
from lit_activations.events import read_scalars
from lit_activations.study.command import compare_main

from runs import CONFIGS, REPO, fit

EXPERIMENTS = REPO / "configs" / "experiments"
SMALL = ("--data.n_samples=400", "--summary=null")


def member_scalars(*args: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Run a fit of members; each member's scalars by its run's name (``relu/seed_0``)."""
    cli = fit(*SMALL, *args)
    logger = cli.trainer.logger
    return {d.relative_to(logger.log_dir).as_posix(): read_scalars(d) for d in logger.member_dirs}


def final(scalars: dict, tag: str) -> float:
    return scalars[tag][-1][1]


def mean_over(runs: dict, prefix: str, stat: str) -> float:
    """``stat`` of every hidden layer of every run whose name starts with ``prefix``, averaged."""
    return statistics.fmean(
        final(s, tag) for name, s in runs.items() if name.startswith(prefix) for tag in s if tag.startswith(f"{stat}/")
    )


def test_a_softmax_head_learns_three_spirals():
    runs = member_scalars("--config", str(EXPERIMENTS / "softmax_spirals.yaml"), "--members.activations=[relu]",
                          "--members.seeds=[0]", "--trainer.max_epochs=8")  # fmt: skip
    assert final(runs["relu/seed_0"], "val/acc") > 0.6  # chance is 1/3


def test_a_network_mixes_relu_and_tanh_layer_by_layer():
    cli = fit(*SMALL, "--config", str(EXPERIMENTS / "mixed_layers.yaml"), "--trainer.max_epochs=4")
    assert cli.trainer.logger.log_dir.endswith("relu+tanh/version_0")
    scalars = read_scalars(cli.trainer.logger.log_dir)
    assert final(scalars, "activation_mean/net.1") > 0 and final(scalars, "dead_units/net.1") >= 0  # ReLU: f >= 0
    assert abs(final(scalars, "activation_mean/net.3")) < 1 and final(scalars, "activation_std/net.3") < 1  # tanh


def test_relu_units_die_at_a_large_learning_rate_and_leaky_and_prelu_units_do_not():
    runs = member_scalars("--config", str(EXPERIMENTS / "dying_relu.yaml"), "--trainer.max_epochs=10",
                          "--members.activations=[relu, leaky_relu, prelu]", "--members.seeds=[0, 1]")  # fmt: skip
    dead = {a: mean_over(runs, f"{a}/", "dead_units") for a in ("relu", "leaky_relu", "prelu")}
    assert dead["relu"] > 0.2 and dead["relu"] - max(dead["leaky_relu"], dead["prelu"]) > 0.15, dead
    assert "activation_param/net.1.weight" in runs["prelu/seed_0"]  # PReLU's learned slope, logged


def test_more_relu_units_die_at_a_larger_learning_rate():
    config = ("--config", str(EXPERIMENTS / "relu_learning_rate.yaml"), "--trainer.max_epochs=10")
    dead = {}
    for lr in (0.001, 0.1):
        runs = member_scalars(*config, f"--model.optimizer.lr={lr}", "--members.activations=[relu, tanh]",
                              "--members.seeds=[0, 1, 2]")  # fmt: skip
        dead[lr] = mean_over(runs, "relu/", "dead_units")
        assert mean_over(runs, "tanh/", "dead_units") < 0.1  # tanh has no region of zero slope
    assert dead[0.1] - dead[0.001] > 0.1, dead


@pytest.mark.parametrize(("init", "activations"), [("lecun_normal", "[selu]"), ("default", "[relu, tanh]")])
def test_selu_keeps_unit_variance_through_sixteen_layers_and_relu_and_tanh_do_not(init, activations):
    runs = member_scalars("--config", str(EXPERIMENTS / "selu_deep.yaml"), f"--model.init={init}",
                          f"--members.activations={activations}", "--members.seeds=[0, 1, 2]",
                          "--trainer.max_epochs=1")  # fmt: skip
    for name, scalars in runs.items():
        std = final(scalars, "activation_std/net.31")  # the sixteenth hidden layer
        assert (0.8 <= std <= 1.2) == name.startswith("selu"), (name, std)


@pytest.mark.slow
def test_sigmoids_first_layers_get_less_gradient_the_deeper_the_network_and_relus_do_not(tmp_path, capsys):
    """Through the study's command at the top of the YAML, with its --grid over the depth, at a reduced size."""
    config = str(EXPERIMENTS / "depth_vanishing.yaml")
    grid = "model.hidden_sizes=[[16, 16], [16, 16, 16, 16, 16, 16, 16, 16]]"
    study_args = ["--config", config, "--activations", "sigmoid,relu", "--seeds", "0,1", "--grid", grid, *SMALL,
                  "--trainer.max_epochs=5"]  # fmt: skip
    assert compare_main(study_args) == 0  # in this process: `python -m` would add 5 s of imports
    study = tmp_path / "logs" / "study"
    assert "| setting | activation |" in (study / "results.md").read_text()
    rows = {(row["setting"], row["activation"]): row for row in csv.DictReader((study / "results.csv").open())}
    ratio = {}
    for depth in (2, 8):
        setting = "hidden_sizes=[" + ",".join(["16"] * depth) + "]"  # the run directories are named after it
        for activation in ("sigmoid", "relu"):
            ratio[depth, activation] = float(rows[setting, activation]["vanishing_ratio"])
            seeds = [read_scalars(study / setting / activation / f"seed_{s}") for s in (0, 1)]
            expected = statistics.fmean(final(scalars, "vanishing_ratio/epoch") for scalars in seeds)
            assert ratio[depth, activation] == pytest.approx(expected)
    assert ratio[8, "sigmoid"] <= ratio[2, "sigmoid"] - 1, ratio  # at least a decade less at depth 8
    assert abs(ratio[8, "relu"] - ratio[2, "relu"]) < 1, ratio
    assert compare_main(study_args) == 0  # the same study again: every run of every setting finished before
    assert capsys.readouterr().out.count("skipped (finished before)") == 8


def test_off_the_plane_sigmoid_still_lags_and_relu_and_tanh_read_digits():
    cli = fit("--config", str(EXPERIMENTS / "digits.yaml"), "--summary=null", "--trainer.max_epochs=10",
              "--members.activations=[sigmoid, tanh, relu]", "--members.seeds=[0, 1]")  # fmt: skip
    logger = cli.trainer.logger
    runs = {d.relative_to(logger.log_dir).as_posix(): read_scalars(d) for d in logger.member_dirs}
    accuracy = {a: statistics.fmean(final(s, "val/acc") for n, s in runs.items() if n.startswith(f"{a}/"))
                for a in ("sigmoid", "tanh", "relu")}  # fmt: skip
    assert min(accuracy["tanh"], accuracy["relu"]) > 0.9 and accuracy["sigmoid"] < accuracy["relu"] - 0.2, accuracy
    ratio = {a: statistics.fmean(final(s, "vanishing_ratio/epoch") for n, s in runs.items() if n.startswith(f"{a}/"))
             for a in ("sigmoid", "relu")}  # fmt: skip
    assert ratio["sigmoid"] < ratio["relu"], ratio  # less gradient reaches sigmoid's first layer


def test_elu_keeps_mean_activations_nearer_zero_than_relu():
    runs = member_scalars("--config", str(EXPERIMENTS / "elu_means.yaml"), "--trainer.max_epochs=5",
                          "--members.activations=[elu, relu]", "--members.seeds=[0, 1]")  # fmt: skip
    means = {a: statistics.fmean(abs(final(s, f"activation_mean/net.{i}")) for n, s in runs.items()
                                 if n.startswith(f"{a}/") for i in (1, 3, 5, 7)) for a in ("elu", "relu")}  # fmt: skip
    assert means["elu"] < means["relu"] / 2, means


# Every config but the presets of several processes or a GPU, which tests/test_distributed.py and tests/test_gpu.py run.
ONE_PROCESS = [config for config in CONFIGS if config.name not in ("ddp_cpu.yaml", "gpu.yaml")]


@pytest.mark.parametrize("config", ONE_PROCESS, ids=lambda p: p.relative_to(REPO / "configs").as_posix())
def test_every_config_runs_a_short_epoch(config):
    cli = fit("--config", str(config), "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--summary=null")
    assert cli.trainer.global_step == 2 and torch.isfinite(torch.tensor(cli.model.last_epoch_metrics[0]["val/loss"]))


@pytest.mark.parametrize("config", [c for c in CONFIGS if c not in ONE_PROCESS], ids=lambda p: p.name)
def test_the_presets_of_several_processes_or_a_gpu_parse_here_too(config, capsys):
    """They train in tests/test_distributed.py and (with CUDA) tests/test_gpu.py; here, without either, they parse."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["strategy"] == yaml.safe_load(config.read_text())["trainer"]["strategy"]
