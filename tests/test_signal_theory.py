"""Theory beside measurement in a fit: the ``theory/...`` tags, their layout, the critical init and the command."""

import subprocess
import sys

import pytest
import torch
from lightning.pytorch import seed_everything
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from lit_activations import theory
from lit_activations.events import read_scalars
from lit_activations.model import ActivationMLP
from lit_activations.signal_theory import find_chain, input_moments, tags_of

from runs import fit


class Step(torch.nn.Module):
    """A step: its slope is 0 wherever it has one, so no variances keep a signal going back through it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).to(x.dtype)


SMALL = ("--data.n_samples=200", "--data.shuffle=false", "--summary=null", "--trainer.max_epochs=2")


def test_the_theory_tags_of_a_fit_are_the_theory_of_its_initial_weights_and_first_batch(tmp_path):
    """At step 0, each member's theory/... tags equal ``theory.predict`` on the network the fit starts from (drawn
    again here from the same seeds) and the fit's first batch; measured and predicted share a custom-scalars chart."""
    cli = fit(*SMALL, "--members.activations=[relu, tanh]", "--members.seeds=[0, 1]",
              "--model.hidden_sizes=[8, 8]")  # fmt: skip
    model, logger = cli.model, cli.trainer.logger
    seed_everything(0)
    start = ActivationMLP(**{k: v for k, v in model.hparams.items() if not k.startswith("_")})
    chain = find_chain(start)
    x = next(iter(cli.datamodule.train_dataloader()))[0]
    moment, correlation = input_moments(x)
    activations = [name for name, _ in chain.activations]
    assert activations == ["net.1", "net.3"]
    for k, run in enumerate(logger.member_dirs):
        probe = len(cli.datamodule._splits["val"])
        prediction = theory.predict(chain.layers(k), moment, correlation, len(x), 0.05, probe, rule=theory.FIT_RULE)
        expected = tags_of(prediction, activations)
        scalars = read_scalars(run)
        logged = {tag: values[0] for tag, values in scalars.items() if tag.startswith("theory/")}
        assert set(logged) == set(expected) and {step for step, _ in logged.values()} == {0}
        for tag, value in expected.items():
            assert logged[tag][1] == pytest.approx(value, rel=1e-5, abs=1e-7), tag
        assert len(scalars["theory/vanishing_ratio"]) == 2  # the start, and epoch 0 (then every 25th)
        events = EventAccumulator(str(run))
        events.Reload()
        layout = layout_pb2.Layout.FromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
        charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
        assert charts["activation_std/net.3"] == [r"^activation_std/net\.3$", r"^theory/activation_std/net\.3$"]
        assert len(charts) == 4 * 2 + 1  # the four predicted statistics per activation, and the vanishing ratio


def test_a_model_that_is_not_one_chain_gets_measurements_and_one_line(capsys):
    cli = fit(*SMALL, "--model=functional_mlp.FunctionalMLP")
    assert not [t for t in read_scalars(cli.trainer.logger.log_dir) if t.startswith("theory/")]
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("theory:")]
    assert said == ["theory: FunctionalMLP is not one nn.Sequential of linear layers and element-wise activations,"
                    " so nothing predicts its measurements; its runs get the measurements only"]  # fmt: skip


def test_theory_off_with_one_option():
    cli = fit(*SMALL, "--theory=null")
    assert not [t for t in read_scalars(cli.trainer.logger.log_dir) if t.startswith("theory/")]


def test_the_critical_init_draws_each_members_own_point_and_refuses_an_activation_without_one(capsys):
    torch.manual_seed(0)
    model = ActivationMLP(hidden_sizes=[512, 512], init="critical",
                          members=[{"activation": "tanh", "seed": 0}, {"activation": "relu", "seed": 0}])  # fmt: skip
    for k, name in enumerate(("tanh", "relu")):
        sw2, sb2 = theory.critical_point(torch.nn.Tanh() if name == "tanh" else torch.nn.ReLU())
        weight, bias = model.net[2].weight[k].detach(), model.net[2].bias[k].detach()
        assert float(weight.pow(2).mean() * 512) == pytest.approx(sw2, rel=0.02)
        assert float(bias.pow(2).mean()) == pytest.approx(sb2, abs=0.02 + 0.15 * sb2)
    with pytest.raises(SystemExit) as ended:
        fit("--model.init=critical", "--model.activation=test_signal_theory.Step")
    assert ended.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(
            "error: invalid model.init critical for activation 'test_signal_theory.Step': no weight and bias variances"
        )
    )


@pytest.mark.slow
def test_the_theory_command_prints_a_table_and_draws_the_phase_diagram(tmp_path):
    figure = tmp_path / "phase.png"
    done = subprocess.run([sys.executable, "-m", "lit_activations", "theory", "--model.activation=tanh",
                           "--model.hidden_sizes=[16, 16, 16]", f"--figure={figure}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[2:5]] == ["net.1", "net.3", "net.5"]
    assert lines[5].startswith("vanishing_ratio (log10 mean|∇W| first / last): ")
    assert figure.stat().st_size > 10_000 and not (tmp_path / "logs").exists()
    refused = subprocess.run([sys.executable, "-m", "lit_activations", "theory", "--model.activation=relu7"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert refused.returncode == 2 and refused.stderr.startswith("error: unknown activation 'relu7'")
    assert len(refused.stderr.strip().splitlines()) == 1
