"""DivergenceGuard on gradients set by hand: which parameter it names, and that finite ones pass."""

import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lit_activations.divergence import DivergenceGuard, TrainingDiverged


def guarded_step(gradients: dict[str, float]) -> None:
    """One on_before_optimizer_step of the guard over a model whose gradients are filled with these values."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    trainer = SimpleNamespace(precision="32-true", global_step=41)
    guard = DivergenceGuard()
    guard.setup(trainer, model, "fit")
    for name, p in model.named_parameters():
        p.grad = torch.full_like(p, gradients.get(name, 0.5))
    guard.on_before_backward(trainer, model, torch.tensor(0.25))
    guard.on_before_optimizer_step(trainer, model, None)


def test_finite_gradients_pass():
    guarded_step({"0.weight": 3e38, "1.bias": -1e-30})


@pytest.mark.parametrize(
    ("gradients", "message"),
    [
        ({"1.weight": math.nan}, "at step 41: the gradient of 1.weight is not finite; loss = 0.25"),
        ({"0.bias": -math.inf, "1.bias": math.nan}, "the gradient of 0.bias is not finite (and of 1 more parameters)"),
    ],
)
def test_names_the_first_parameter_with_a_non_finite_gradient(gradients, message):
    with pytest.raises(TrainingDiverged, match=re.escape(message)):
        guarded_step(gradients)


def test_the_check_leaves_every_gradient_bit_as_it_was_and_sees_each_dtype():
    """The check runs torch's GradScaler kernel, which multiplies the gradients by 1 in place: nothing may change
    (signed zeros, subnormals, the largest floats), and a gradient of another dtype is checked too."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1).double())
    trainer = SimpleNamespace(precision="32-true", global_step=7)
    guard = DivergenceGuard()
    guard.setup(trainer, model, "fit")
    special = torch.tensor([-0.0, 1e-45, 3.4e38, -3.4e38, 0.1])
    for p in model.parameters():
        p.grad = torch.cat([special.to(p.dtype), torch.randn(p.numel(), dtype=p.dtype)])[: p.numel()].reshape(p.shape)
    before = [p.grad.clone() for p in model.parameters()]
    guard.on_before_optimizer_step(trainer, model, None)
    for p, grad in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.grad.view(torch.int64 if p.dtype == torch.float64 else torch.int32),
                           grad.view(torch.int64 if p.dtype == torch.float64 else torch.int32))  # fmt: skip
    model[1].bias.grad[0] = math.inf  # in the float64 group only
    with pytest.raises(TrainingDiverged, match=re.escape("the gradient of 1.bias is not finite")):
        guard.on_before_optimizer_step(trainer, model, None)
