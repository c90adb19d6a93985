import math

import numpy as np
import pytest
import torch
from scipy.special import erf

from lit_activations.activations import ACTIVATIONS, LeCunTanh, create_activation, get_activation
from lit_activations.statistics import is_elementwise

# Independent references, written from each function's formula in NumPy (default parameters), for the
# built-in entries. A new registry entry needs none: the generic checks below cover it.
SELU_SCALE, SELU_ALPHA = 1.0507009873554805, 1.6732632423543772
FORMULAS = {
    "identity": lambda x: x,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "lecun_tanh": lambda x: 1.7159 * np.tanh(2 * x / 3),
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),  # slope γ = 0.01 for x < 0, so f'(x) = γ > 0
    "prelu": lambda x: np.where(x > 0, x, 0.25 * x),  # PReLU's slope starts at 0.25
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1),  # exponential, not logarithmic, for x < 0
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1)),
    "gelu": lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "mish": lambda x: x * np.tanh(np.log1p(np.exp(x))),
    "softplus": lambda x: np.log1p(np.exp(x)),
}
X = np.linspace(-8, 8, 1601)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_activation_values_match_formula(name):
    out = create_activation(name).double()(torch.tensor(X, dtype=torch.float64))
    np.testing.assert_allclose(out.detach().numpy(), FORMULAS[name](X), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_registered_activation_is_element_wise_differentiable_and_keeps_shape_and_dtype(name):
    """What every entry must satisfy, a new one too, with no formula to write (FORMULAS adds a check of values)."""
    x = torch.randn(64, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    module = create_activation(name).double()
    out = module(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        assert is_elementwise(module, x.detach(), out.detach())
    torch.testing.assert_close(module(x.detach()[:7]), out.detach()[:7], rtol=1e-12, atol=1e-12)  # sample by sample


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_max_slope_is_sup_of_autograd_derivative(name):
    x = torch.linspace(-20, 20, 400_001, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(create_activation(name).double()(x).sum(), x)
    assert slope.abs().max().item() == pytest.approx(get_activation(name).max_slope, rel=1e-4)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_call_builds_a_new_module(name):
    assert create_activation(name) is not create_activation(name)


def test_parameters_reach_the_module():
    x = torch.tensor([-2.0, 3.0])
    assert create_activation("leaky_relu", negative_slope=0.2)(x).tolist() == pytest.approx([-0.4, 3.0])
    assert create_activation("elu", alpha=2.0)(x).tolist() == pytest.approx([2 * (math.exp(-2) - 1), 3.0])


def test_import_path_builds_any_module_class():
    module = create_activation("torch.nn.Hardtanh", min_val=-2.0, max_val=2.0)
    assert isinstance(module, torch.nn.Hardtanh)
    assert module(torch.tensor([-5.0, 1.0, 5.0])).tolist() == [-2.0, 1.0, 2.0]
    assert math.isnan(get_activation("torch.nn.Hardtanh").max_slope)  # unknown: measured where needed


def test_lecun_tanh_gradient_matches_closed_form_derivative():
    x = torch.linspace(-6, 6, 1201, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(LeCunTanh()(x).sum(), x)
    t = np.tanh(2 * x.detach().numpy() / 3)
    np.testing.assert_allclose(slope.numpy(), 1.7159 * 2 / 3 * (1 - t**2), rtol=1e-12)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("relu7", {}, r"unknown activation 'relu7'; choose one of: elu, gelu, identity, leaky_relu, .*tanh"),
        ("torch.nn.NoSuchThing", {}, r"no such class to import"),
        ("math.pi", {}, r"'math.pi' is not a torch.nn.Module class"),
        ("relu", {"negative_slope": 0.1}, r"activation 'relu' does not accept the arguments \{'negative_slope'"),
    ],
)
def test_bad_activation_is_a_value_error(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_activation(name, **kwargs)


def slope(name: str, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(create_activation(name).to(x.dtype)(x).sum(), x)
    return grad


def test_what_the_source_tutorials_get_wrong_is_right_here():
    """The README's list of the tutorials' mistakes, each checked against autograd (float64 unless said)."""
    x = torch.arange(-30_000, 30_001, dtype=torch.float64) / 1000  # 0 exactly among them
    sigmoid = slope("sigmoid", x)  # its derivative lies in (0, 1/4], reaching 1/4 at 0: not the open (0, 1/4)
    assert sigmoid[x == 0].item() == 0.25 and (sigmoid[x != 0] < 0.25).all() and (sigmoid > 0).all()
    tanh = create_activation("tanh")  # its range is the open (-1, 1) ...
    assert (tanh(x[x.abs() <= 18]).abs() < 1).all()
    assert tanh(torch.tensor([9.1])).item() == 1.0  # ... though in float32 it rounds to ±1 from |x| ≈ 9
    negative = torch.tensor([-3.0, -0.5], dtype=torch.float64)
    assert slope("leaky_relu", negative).tolist() == [0.01, 0.01]  # the slope γ for x < 0, not -γ
    assert slope("relu", negative).tolist() == [0.0, 0.0]  # differentiable for x < 0 (slope 0); only 0 is a kink
    elu = create_activation("elu").double()(negative)  # the negative branch is exponential: e^x - 1
    torch.testing.assert_close(elu, torch.expm1(negative))
    assert get_activation("selu").init == "lecun_normal"  # SELU with its own init (and activation), not ReLU's
