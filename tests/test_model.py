import math

import pytest
import torch
from torch import nn

from lit_activations.model import ActivationMLP


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_default_network_is_the_tutorials():
    model = ActivationMLP(activation="tanh")
    assert [(m.in_features, m.out_features) for m in linears(model)] == [(2, 5), (5, 5), (5, 5), (5, 5), (5, 1)]
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 4
    assert model(torch.zeros(7, 2)).shape == (7,)


def test_prelu_learns_one_slope_per_layer():
    model = ActivationMLP(activation="prelu", hidden_sizes=[4, 4, 4])
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 3 and len({id(m.weight) for m in prelus}) == 3
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    x = torch.randn(64, 2)
    nn.functional.binary_cross_entropy_with_logits(model(x), (x.norm(dim=1) > 1).float()).backward()
    optimizer.step()
    slopes = [m.weight.item() for m in prelus]
    assert len(set(slopes)) == 3 and all(s != 0.25 for s in slopes)


def test_activation_args_reach_every_layer():
    model = ActivationMLP(activation="leaky_relu", activation_args={"negative_slope": 0.2})
    assert [m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)] == [0.2] * 4


def test_user_activation_by_import_path():
    model = ActivationMLP(activation="torch.nn.Hardtanh", activation_args={"min_val": -2.0})
    assert sum(isinstance(m, nn.Hardtanh) for m in model.modules()) == 4


@pytest.mark.parametrize(
    ("init", "std"),
    [
        ("lecun_normal", lambda fan_in, fan_out: 1 / math.sqrt(fan_in)),
        ("kaiming", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
        ("xavier", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
    ],
)
def test_init_draws_with_the_documented_spread(init, std):
    torch.manual_seed(0)
    model = ActivationMLP(activation="selu", hidden_sizes=[400, 300], init=init, in_features=500)
    for layer in linears(model)[:2]:
        fan_out, fan_in = layer.weight.shape
        assert layer.weight.std().item() == pytest.approx(std(fan_in, fan_out), rel=0.02)
        assert torch.count_nonzero(layer.bias) == 0


def test_auto_init_uses_the_activations_recommendation():
    torch.manual_seed(0)
    selu = ActivationMLP(activation="selu", hidden_sizes=[300], init="auto", in_features=500)
    assert linears(selu)[0].weight.std().item() == pytest.approx(1 / math.sqrt(500), rel=0.02)


def test_default_init_is_pytorchs():
    torch.manual_seed(1)
    model = ActivationMLP(activation="relu")
    torch.manual_seed(1)
    reference = nn.Linear(2, 5)
    assert torch.equal(linears(model)[0].weight, reference.weight)


def test_sigmoid_output_gives_probabilities_and_bce():
    model = ActivationMLP(output="sigmoid")
    out = model(torch.randn(50, 2) * 10)
    assert isinstance(model.loss_fn, nn.BCELoss) and ((out > 0) & (out < 1)).all()
    assert torch.equal(model.to_probabilities(out), out)
    logit_model = ActivationMLP()
    assert isinstance(logit_model.loss_fn, nn.BCEWithLogitsLoss)
    logits = torch.tensor([0.0, 2.0])
    assert torch.allclose(logit_model.to_probabilities(logits), torch.sigmoid(logits))


def test_optimizer_and_scheduler_are_injected():
    model = ActivationMLP(
        optimizer=lambda params: torch.optim.SGD(params, lr=0.5),
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3),
    )
    config = model.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.SGD) and config["optimizer"].defaults["lr"] == 0.5
    assert isinstance(config["lr_scheduler"], torch.optim.lr_scheduler.StepLR)
    assert isinstance(ActivationMLP().configure_optimizers(), torch.optim.Adam)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "relu7"}, r"unknown activation 'relu7'; choose one of: elu, gelu, identity"),
        ({"hidden_sizes": []}, r"invalid model.hidden_sizes \[\]; expected a non-empty list of integers >= 1"),
        ({"hidden_sizes": [5, 0]}, r"invalid model.hidden_sizes \[5, 0\]"),
        ({"init": "orthogonal"}, r"invalid model.init 'orthogonal'; expected one of: auto, default, xavier"),
        ({"output": "softmax"}, r"invalid model.output 'softmax'; expected one of: logit, sigmoid"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ActivationMLP(**kwargs)
