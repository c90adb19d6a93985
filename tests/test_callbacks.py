"""ActivationMonitor on a model of the test's own, with values known in advance."""

import dataclasses
import math
import pickle
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_activations.callbacks import ActivationMonitor
from lit_activations.divergence import DivergenceGuard
from lit_activations.events import read_scalars
from lit_activations.model import ActivationMLP
from lit_activations.monitor import FitState, plan_watch
from lit_activations.stacked import MemberLinear

from runs import REPO, fit

X = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
Y = (X.norm(dim=1) < 1).float()


class Cube(nn.Module):
    """A user's own activation the monitor has never heard of: f(z) = z³, f'(z) = 3z²."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z**3


class Regressor(LightningModule):
    """Not our model: an arbitrary ``body`` trained with MSE and plain SGD."""

    def __init__(self, body: nn.Module, lr: float = 0.0, fail_in_validation: bool = False) -> None:
        super().__init__()
        self.body, self.lr, self.fail_in_validation = body, lr, fail_in_validation

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.body(x).squeeze(-1), y)

    def validation_step(self, batch, batch_idx):
        if self.fail_in_validation and not self.trainer.sanity_checking:
            raise RuntimeError("boom in validation")
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.body(x).squeeze(-1), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def linear(n_in: int, n_out: int, weight: float | torch.Tensor, bias: float | torch.Tensor) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight).expand(n_out, n_in))
        layer.bias.copy_(torch.as_tensor(bias).expand(n_out))
    return layer


def run(model: LightningModule, tmp_path, batch_size: int = 64, epochs: int = 1, log_every: int = 1, **monitor):
    monitor = ActivationMonitor(**monitor)
    trainer = Trainer(
        max_epochs=epochs, logger=TensorBoardLogger(tmp_path, name="run"), callbacks=[monitor],
        log_every_n_steps=log_every, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    loader = DataLoader(TensorDataset(X, Y), batch_size=batch_size)
    trainer.fit(model, loader, DataLoader(TensorDataset(X, Y), batch_size=16))
    return trainer, monitor


def last(scalars, tag: str) -> float:
    return scalars[tag][-1][1]


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_relu_with_bias_minus_100_is_dead_and_saturated(tmp_path):
    model = Regressor(nn.Sequential(linear(2, 4, 0.01, -100.0), nn.ReLU(), nn.Linear(4, 1)))
    trainer, _ = run(model, tmp_path)
    scalars = read_scalars(trainer.logger.log_dir)
    assert last(scalars, "saturation/body.1") == 1.0
    assert last(scalars, "dead_units/body.1") == 1.0
    assert last(scalars, "activation_mean/body.1") == 0.0 and last(scalars, "activation_std/body.1") == 0.0


@pytest.mark.parametrize("activation", [nn.Tanh, nn.Sigmoid])
def test_huge_weights_saturate_tanh_and_sigmoid(activation, tmp_path):
    model = Regressor(nn.Sequential(linear(2, 8, 1000.0, 0.0), activation(), nn.Linear(8, 1)))
    scalars = read_scalars(run(model, tmp_path)[0].logger.log_dir)
    assert last(scalars, "saturation/body.1") > 0.99


def test_identity_never_saturates_and_its_moments_are_the_preactivations(tmp_path):
    torch.manual_seed(0)  # the same draw in every run of the suite, whatever ran before in the process
    first = nn.Linear(2, 3)
    model = Regressor(nn.Sequential(first, nn.Identity(), nn.Linear(3, 1)))
    scalars = read_scalars(run(model, tmp_path)[0].logger.log_dir)
    z = (X.numpy() @ first.weight.detach().numpy().T + first.bias.detach().numpy()).astype(np.float64)
    assert last(scalars, "saturation/body.1") == 0.0 and last(scalars, "dead_units/body.1") == 0.0
    assert last(scalars, "activation_mean/body.1") == pytest.approx(z.mean(), abs=1e-6)
    assert last(scalars, "activation_std/body.1") == pytest.approx(z.std(), rel=1e-5)


def test_users_own_activation_found_by_name_pattern_uses_its_autograd_slope(tmp_path):
    first = linear(2, 4, torch.tensor([3.0, -2.0]), 0.5)
    model = Regressor(nn.Sequential(first, Cube(), nn.Linear(4, 1)))
    scalars = read_scalars(run(model, tmp_path, activation_pattern=r"body\.1", epsilon=0.05)[0].logger.log_dir)
    z = X.double().numpy() @ np.array([3.0, -2.0]) + 0.5  # every unit computes the same z
    sup = 3 * 20.0**2  # sup |3z²| on the monitor's grid [-20, 20]
    assert last(scalars, "saturation/body.1") == pytest.approx(np.mean(3 * z**2 < 0.05 * sup), abs=1e-7)


class Swish(nn.Module):
    """A user's learnable activation, f(z) = z · sigmoid(βz): a parameter, and no registry entry."""

    def __init__(self) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(1.5))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.sigmoid(self.beta * z)


def test_a_users_element_wise_modules_are_found_without_flags_and_dropout_or_norms_are_not(tmp_path):
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(2, 4), Cube(), nn.Linear(4, 4), Swish(), nn.Dropout(0.1), nn.BatchNorm1d(4),
                         nn.Softmax(dim=1), nn.Linear(4, 1))  # fmt: skip
    trainer, _ = run(Regressor(body), tmp_path, epochs=2)
    scalars = read_scalars(trainer.logger.log_dir)
    assert {tag for tag in scalars if tag.startswith("saturation/")} == {"saturation/body.1", "saturation/body.3"}
    assert len(scalars["saturation/body.1"]) == 2  # from the first probe pass on, every epoch
    z = X.double().numpy() @ body[0].weight.detach().double().numpy().T + body[0].bias.detach().double().numpy()
    # The monitor sums in float32: the mean of z³ can cancel to far below its terms, so the error scales with
    # them (at most 2e-7 of mean|z³| over 3000 random draws of the first layer).
    scale = np.mean(np.abs(z) ** 3)
    assert last(scalars, "activation_mean/body.1") == pytest.approx(np.mean(z**3), rel=1e-5, abs=2e-6 * scale)
    assert [v for _, v in scalars["activation_param/body.3.beta"]] == [1.5, 1.5]  # a learnable parameter, each epoch


def test_saturation_tags_carry_their_threshold_as_a_description(tmp_path):
    trainer, _ = run(Regressor(nn.Sequential(nn.Linear(2, 4), nn.Sigmoid(), nn.Linear(4, 1))), tmp_path, epochs=2)
    events = EventAccumulator(trainer.logger.log_dir)
    events.Reload()
    text = events.SummaryMetadata("saturation/body.1").summary_description
    assert "|f'(z)| < 0.05 x sup|f'| = 0.05 x 0.25 = 0.0125" in text
    assert "= 0.0125, for every sample" in events.SummaryMetadata("dead_units/body.1").summary_description


def test_logged_gradients_equal_a_hand_computation(tmp_path):
    # Fixed weights: the monitor's float32 norms against float64 here; some random draws cancel to 6e-5 relative.
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(2, 3), nn.Identity(), nn.Linear(3, 1))
    w1, b1, w2, b2 = (p.detach().double().numpy().copy() for p in body.parameters())
    trainer, _ = run(Regressor(body), tmp_path, batch_size=32)  # lr 0: two steps on the same weights

    x, y = X.double().numpy(), Y.double().numpy()
    expected = {}
    for step, rows in enumerate((slice(0, 32), slice(32, 64))):
        xb, yb = x[rows], y[rows]
        h = xb @ w1.T + b1
        d_out = 2 / len(xb) * ((h @ w2.T + b2)[:, 0] - yb)[:, None]  # dL/dŷ of the mean squared error
        d_h = d_out @ w2
        expected[step] = {"body.0.weight": d_h.T @ xb, "body.0.bias": d_h.sum(0),
                          "body.2.weight": d_out.T @ h, "body.2.bias": d_out.sum(0)}  # fmt: skip

    scalars = read_scalars(trainer.logger.log_dir)
    for step in (0, 1):
        for name, grad in expected[step].items():
            assert dict(scalars[f"grad_norm/{name}"])[step] == pytest.approx(np.linalg.norm(grad), rel=1e-5)
            if name.endswith(".weight"):
                assert dict(scalars[f"grad_mean_abs/{name}"])[step] == pytest.approx(np.abs(grad).mean(), rel=1e-5)
        first, last_ = (np.abs(expected[step][n]).mean() for n in ("body.0.weight", "body.2.weight"))
        assert dict(scalars["vanishing_ratio/step"])[step] == pytest.approx(math.log10(first / last_), abs=1e-5)
    assert not any(tag.startswith("grad_mean_abs") and tag.endswith(".bias") for tag in scalars)
    for name in ("body.0.weight", "body.2.weight"):
        epoch_mean = (np.abs(expected[0][name]).mean() + np.abs(expected[1][name]).mean()) / 2
        assert scalars[f"grad_mean_abs_epoch/{name}"][0][1] == pytest.approx(epoch_mean, rel=1e-5)


def test_histograms_of_preactivations_and_gradients(tmp_path):
    model = Regressor(nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)))
    trainer, _ = run(model, tmp_path, epochs=3, batch_size=16, histogram_every_n_epochs=2)
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"histograms": 0})
    events.Reload()
    assert {"preactivation/body.1", "grad/body.0.weight", "grad/body.2.bias"} <= set(events.Tags()["histograms"])
    pre = events.Histograms("preactivation/body.1")
    assert [h.step for h in pre] == [4, 12]  # epochs 0 and 2, after 4 steps each
    assert pre[0].histogram_value.num == 64 * 4  # the whole probe set, every unit


def test_each_members_histograms_are_numpys_and_go_to_its_own_run_in_one_event(tmp_path):
    values = {
        "a": torch.randn(2, 50, generator=torch.Generator().manual_seed(0)),
        "b": torch.arange(12.0).reshape(2, 6),
    }
    monitor = ActivationMonitor()
    runs = [TensorBoardLogger(tmp_path, name=f"member_{k}", version="") for k in range(2)]
    monitor._fit = FitState(loggers=[[run] for run in runs])
    monitor._histograms(types.SimpleNamespace(is_global_zero=True, global_step=7), values)
    for k, run in enumerate(runs):
        run.finalize("success")
        events = EventAccumulator(run.log_dir, size_guidance={"histograms": 0})
        events.Reload()
        for tag, tensor in values.items():
            (written,) = events.Histograms(tag)
            member = tensor[k].double().numpy()
            counts, edges = np.histogram(member, bins=30)
            histogram = written.histogram_value
            assert written.step == 7 and histogram.num == member.size
            assert (histogram.min, histogram.max) == (member.min(), member.max())
            assert histogram.sum == pytest.approx(member.sum()) and histogram.sum_squares == pytest.approx(
                (member**2).sum()
            )
            assert list(histogram.bucket) == [0, *counts] and list(histogram.bucket_limit) == pytest.approx(
                edges, rel=1e-6
            )
        (path,) = Path(run.log_dir).glob("events.out.tfevents.*")
        assert (
            sum(event.HasField("summary") for event in EventFileLoader(str(path)).Load()) == 1
        )  # both tags, one event


def test_sigmoid_gradients_vanish_and_relus_do_not():
    """The tutorial's finding, from a real short run of the tutorial configuration."""
    ratio = {}
    for activation in ("sigmoid", "relu"):
        cli = fit("--config", str(REPO / "configs" / "tutorial.yaml"), f"--model.activation={activation}",
                  "--trainer.max_epochs=3", "--trainer.enable_checkpointing=false")  # fmt: skip
        scalars = read_scalars(cli.trainer.logger.log_dir)
        first, last_ = (
            last(scalars, "grad_mean_abs_epoch/net.0.weight"),
            last(scalars, "grad_mean_abs_epoch/net.8.weight"),
        )
        ratio[activation] = math.log10(first / last_)
        assert last(scalars, "vanishing_ratio/epoch") == pytest.approx(ratio[activation], abs=1e-4)
    assert ratio["sigmoid"] < -3  # the first layer gets a thousandth of the last layer's gradient
    assert ratio["relu"] > -2 and ratio["relu"] - ratio["sigmoid"] > 1.5


def test_no_hook_stays_after_fit_validate_or_an_exception(tmp_path):
    model = Regressor(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)))
    trainer, _ = run(model, tmp_path)
    assert no_hooks_left(model)
    trainer.validate(model, DataLoader(TensorDataset(X, Y), batch_size=16))
    assert no_hooks_left(model)
    assert "saturation/body.1" in read_scalars(trainer.logger.log_dir)

    failing = Regressor(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)), fail_in_validation=True)
    seen_hooks = []
    original = failing.validation_step

    def spy(*args):
        seen_hooks.append(not no_hooks_left(failing))  # the hooks were really there while validating
        return original(*args)

    failing.validation_step = spy
    with pytest.raises(RuntimeError, match="boom in validation"):
        run(failing, tmp_path)
    assert seen_hooks == [True] and no_hooks_left(failing)


def test_no_host_sync_on_steps_that_do_not_log(tmp_path, monkeypatch):
    model = Regressor(nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)), lr=0.1)
    monitor_calls = {"quiet": 0, "logging": 0}
    original = ActivationMonitor.on_before_optimizer_step

    def guarded(self, trainer, pl_module, optimizer):
        if trainer.global_step % trainer.log_every_n_steps == 0:
            monitor_calls["logging"] += 1
            return original(self, trainer, pl_module, optimizer)
        monitor_calls["quiet"] += 1
        with monkeypatch.context() as patch:
            for method in ("item", "tolist", "cpu", "numpy", "__float__", "__bool__", "__int__"):
                patch.setattr(torch.Tensor, method, _forbidden(method))
            return original(self, trainer, pl_module, optimizer)

    monkeypatch.setattr(ActivationMonitor, "on_before_optimizer_step", guarded)
    run(model, tmp_path, batch_size=8, log_every=4, histogram_every_n_epochs=0)
    assert monitor_calls == {"quiet": 6, "logging": 2}


def _forbidden(method: str):
    def call(*args, **kwargs):
        raise AssertionError(f"Tensor.{method} (a host-device sync) on a step that does not log")

    return call


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"epsilon": 0.0}, ValueError, r"invalid ActivationMonitor epsilon 0.0; expected a number in \(0, 1\)"),
        ({"every_n_epochs": 0}, ValueError, r"invalid ActivationMonitor every_n_epochs 0; expected an integer >= 1"),
        ({"histogram_every_n_epochs": -1}, ValueError, r"histogram_every_n_epochs -1; expected an integer >= 0"),
        ({"layer_types": ["torch.nn.Linearr"]}, ValueError, r"layer_types entry 'torch.nn.Linearr'; expected the"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        ActivationMonitor(**kwargs)


def test_setup_errors_name_the_fix(tmp_path):
    trainer = Trainer(logger=False, callbacks=[ActivationMonitor()], max_epochs=1, enable_progress_bar=False)
    with pytest.raises(RuntimeError, match="Cannot use `ActivationMonitor` with a Trainer that has no logger"):
        trainer.fit(Regressor(nn.Sequential(nn.Linear(2, 1))), DataLoader(TensorDataset(X, Y), batch_size=64))
    with pytest.raises(RuntimeError, match=r"found no layer of types \['Conv2d'\] and no activation in Regressor"):
        run(Regressor(nn.Sequential(nn.Linear(2, 1))), tmp_path, layer_types=["torch.nn.Conv2d"], activation_types=[],
            detect_elementwise=False)  # fmt: skip


def test_callbacks_pickle_with_their_configuration():
    monitor = pickle.loads(pickle.dumps(ActivationMonitor(epsilon=0.1, activation_pattern=r"act\d")))
    assert monitor.epsilon == 0.1 and monitor.activation_pattern.pattern == r"act\d"
    assert isinstance(pickle.loads(pickle.dumps(DivergenceGuard())), DivergenceGuard)


# What to watch, from the model's structure alone: no Trainer, no logger, no data.


def test_plan_watch_finds_layers_activations_and_candidates_in_module_order():
    body = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3), Cube(), nn.Dropout(0.1), nn.BatchNorm1d(3),
                         nn.Softmax(dim=1), nn.Linear(3, 1))  # fmt: skip
    body[2].bias.requires_grad_(False)  # a frozen parameter is not watched
    plan = plan_watch(body, layer_types=[nn.Linear])
    assert plan.layers == {"0": body[0], "2": body[2], "7": body[7]}
    assert list(plan.params) == ["0.weight", "0.bias", "2.weight", "7.weight", "7.bias"]
    assert list(plan.weights) == ["0.weight", "2.weight", "7.weight"] and plan.weight_numels == (8, 12, 3)
    assert plan.activations == {"1": body[1]} and plan.stacked == frozenset() and plan.num_members == 1
    # leaf modules to judge on the first probe pass (Softmax fails that test); dropout and normalisation never
    assert plan.candidates == {"3": body[3], "6": body[6]}

    by_name = plan_watch(body, layer_types=[nn.Linear], activation_pattern=r"3|6", detect_elementwise=False)
    assert list(by_name.activations) == ["1", "3", "6"] and by_name.candidates == {}
    with pytest.raises(RuntimeError, match=r"found no layer of types \['Conv2d'\] and no activation in Sequential"):
        plan_watch(body, layer_types=[nn.Conv2d], activation_types=[], detect_elementwise=False)


def test_plan_watch_on_activation_mlp_watches_each_member_activation_not_its_blocks():
    model = ActivationMLP(activation="tanh", hidden_sizes=[5, 3])  # a single network: a member axis of 1
    plan = plan_watch(model, layer_types=ActivationMonitor().layer_types)  # the monitor's default layer types
    assert list(plan.layers) == ["net.0", "net.2", "net.4"]
    assert list(plan.params) == [f"net.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    assert plan.weight_numels == (10, 15, 3) and plan.num_members == 1
    assert list(plan.activations) == ["net.1", "net.3"] and plan.stacked == {"net.1", "net.3"}
    # the epoch metrics are leaf modules too; they are called through update(), never forward, so never watched
    assert list(plan.candidates) == ["train_loss", "val_loss", "val_acc", "test_loss", "test_acc"]


def test_plan_watch_on_a_model_of_members():
    members = [{"activation": "relu"}, {"activation": "prelu"}, {"activation": "relu"}]
    model = ActivationMLP(members=members, hidden_sizes=[5, 3])
    plan = plan_watch(model, layer_types=ActivationMonitor().layer_types)
    assert plan.num_members == 3
    assert list(plan.weights) == ["net.0.weight", "net.2.weight", "net.4.weight"]
    assert plan.weight_numels == (10, 15, 3)  # one member's share of each (K, out, in) weight
    assert plan.activations == {"net.1": model.net[1], "net.3": model.net[3]}  # PReLU's blocks are inside them
    assert plan.stacked == {"net.1", "net.3"} and plan.candidates == {}  # members' activations are all stacked

    mixed = nn.Sequential(MemberLinear([nn.Linear(2, 3), nn.Linear(2, 3)]), nn.ReLU(), nn.Linear(3, 1))
    with pytest.raises(RuntimeError, match=r"different numbers of members \[1, 2\] in Sequential"):
        plan_watch(mixed, layer_types=[nn.Linear, MemberLinear])


def test_a_watch_plan_is_frozen():
    plan = plan_watch(nn.Sequential(nn.Linear(2, 4), nn.ReLU()), layer_types=[nn.Linear])
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.num_members = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.activations = {}
