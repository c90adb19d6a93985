import math
import typing

import pytest
import torch
from torch import nn

from lit_activations.heads import HEADS
from lit_activations.members import Member
from lit_activations.model import ActivationMLP
from lit_activations.stacked import MemberActivation, MemberLinear


def linears(model: nn.Module) -> list[MemberLinear]:
    return [m for m in model.modules() if isinstance(m, MemberLinear)]


def members(*specs: tuple) -> list[dict]:
    return [Member(*spec).as_dict() for spec in specs]


def test_default_network_is_the_tutorials():
    model = ActivationMLP(activation="tanh")
    assert [tuple(m.weight.shape) for m in linears(model)] == [(1, 5, 2), (1, 5, 5), (1, 5, 5), (1, 5, 5), (1, 1, 5)]
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 4
    assert model(torch.zeros(7, 2)).shape == (1, 7)


def test_prelu_learns_one_slope_per_layer():
    model = ActivationMLP(activation="prelu", hidden_sizes=[4, 4, 4])
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 3 and len({id(m.weight) for m in prelus}) == 3
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    x = torch.randn(64, 2)
    model.member_losses(model(x), (x.norm(dim=1) > 1).float()).sum().backward()
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
        _, fan_out, fan_in = layer.weight.shape
        assert layer.weight.std().item() == pytest.approx(std(fan_in, fan_out), rel=0.02)
        assert torch.count_nonzero(layer.bias) == 0


def test_auto_init_uses_each_members_recommendation():
    torch.manual_seed(0)
    model = ActivationMLP(hidden_sizes=[300], init="auto", in_features=500, members=members(("selu",), ("relu",)))
    first = linears(model)[0].weight
    assert first[0].std().item() == pytest.approx(1 / math.sqrt(500), rel=0.02)  # SELU: LeCun normal
    assert first[1].std().item() == pytest.approx(math.sqrt(2 / 500), rel=0.02)  # ReLU: Kaiming


def test_default_init_is_pytorchs():
    torch.manual_seed(1)
    model = ActivationMLP(activation="relu")
    torch.manual_seed(1)
    reference = nn.Linear(2, 5)
    assert torch.equal(linears(model)[0].weight[0], reference.weight)


def test_each_member_starts_exactly_as_a_single_model_with_its_seed():
    specs = [("relu", None, 3), ("sigmoid", None, 4), ("leaky_relu", {"negative_slope": 0.2}, 3), ("prelu", None, 5)]
    torch.manual_seed(99)  # the fit's own seed plays no part for members with seeds
    model = ActivationMLP(init="auto", members=members(*specs))
    for k, (activation, args, seed) in enumerate(specs):
        torch.manual_seed(seed)
        single = ActivationMLP(activation=activation, activation_args=args, init="auto")
        assert model.member_state_dict(k).keys() == single.state_dict().keys()
        for name, value in model.member_state_dict(k).items():
            assert torch.equal(value, single.state_dict()[name]), (activation, name)


def test_members_without_a_seed_start_from_the_fits_seed():
    torch.manual_seed(7)
    model = ActivationMLP(members=members(("relu",), ("tanh",)))
    torch.manual_seed(7)
    single = ActivationMLP(activation="tanh")
    assert torch.equal(linears(model)[0].weight[1], linears(single)[0].weight[0])


def test_members_gradients_are_their_own_single_models_gradients():
    specs = [("relu", None, 0), ("tanh", None, 1), ("prelu", None, 2)]
    model = ActivationMLP(output="sigmoid", members=members(*specs))
    generator = torch.Generator().manual_seed(0)  # the same batch in every run of the suite
    x, y = torch.randn(32, 2, generator=generator), (torch.rand(32, generator=generator) > 0.5).float()
    model.member_losses(model(x), y).sum().backward()
    for k in range(len(specs)):
        single = model.member_model(k)
        single.member_losses(single(x), y).sum().backward()
        grads = model.member_state_dict(k, {name: p.grad for name, p in model.named_parameters()})
        for name, p in single.named_parameters():
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-7)


def test_parameter_free_activations_are_shared_by_a_block_and_learnable_ones_are_not():
    model = ActivationMLP(members=members(("relu", None, 0), ("relu", None, 1), ("prelu", None, 0), ("prelu", None, 1)))
    activation = model.net[1]
    assert isinstance(activation, MemberActivation) and activation.sizes == [2, 1, 1]
    assert [activation.block_of(k) for k in range(4)] == [0, 0, 1, 2]


def test_member_model_predicts_what_the_member_predicts():
    model = ActivationMLP(members=members(("relu", None, 0), ("elu", {"alpha": 0.5}, 1)))
    x = torch.randn(20, 2)
    single = model.member_model(1)
    assert single.hparams.activation == "elu" and single.hparams.activation_args == {"alpha": 0.5}
    torch.testing.assert_close(single(x)[0], model(x)[1])


def test_sigmoid_output_gives_probabilities_and_bce():
    model = ActivationMLP(output="sigmoid")
    x, y = torch.randn(50, 2) * 10, (torch.rand(50) > 0.5).float()
    out = model(x)
    assert ((out > 0) & (out < 1)).all() and torch.equal(model.to_probabilities(out), out)
    torch.testing.assert_close(model.member_losses(out, y), nn.BCELoss()(out[0], y).reshape(1))
    logit_model = ActivationMLP()
    logits = logit_model(x)
    torch.testing.assert_close(logit_model.to_probabilities(logits), torch.sigmoid(logits))
    torch.testing.assert_close(logit_model.member_losses(logits, y), nn.BCEWithLogitsLoss()(logits[0], y).reshape(1))


def test_softmax_head_trains_logits_with_cross_entropy_and_gives_probabilities():
    torch.manual_seed(0)
    model = ActivationMLP(output="softmax", num_classes=3, members=members(("relu", None, 0), ("tanh", None, 1)))
    x, y = torch.randn(8, 2), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]).float()
    logits = model(x)
    assert logits.shape == (2, 8, 3) and not any(isinstance(m, nn.Softmax) for m in model.modules())
    for k in range(2):  # each member's loss is CrossEntropyLoss of its own logits: no softmax before it
        assert model.member_losses(logits, y)[k].item() == pytest.approx(
            nn.CrossEntropyLoss()(logits[k], y.long()).item()
        )
    probabilities = model.to_probabilities(logits)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(2, 8))
    torch.testing.assert_close(model.predicted_classes(logits), logits.argmax(-1))


def test_every_output_choice_has_its_head_in_the_table():
    choices = typing.get_args(typing.get_type_hints(ActivationMLP.__init__)["output"])
    assert set(choices) == set(HEADS) and all(HEADS[name].name == name for name in HEADS)
    for name in choices:
        model = ActivationMLP(output=name, num_classes=3 if HEADS[name].per_class else 2)
        assert model.head is HEADS[name] and model.net[-1].weight.shape[1] == (3 if HEADS[name].per_class else 1)


def test_log_members_takes_one_value_per_member():
    model = ActivationMLP(members=members(("relu", None, 0), ("tanh", None, 1)))
    with pytest.raises(ValueError, match=r"log_members: 'train/x' holds 1 value\(s\); expected one per member \(2\)"):
        model.log_members({"train/x": torch.tensor(1.0)})


def test_predict_gives_each_classs_probability_for_one_network_or_each_member():
    x = torch.randn(6, 2)
    logit_model = ActivationMLP()
    p_inner = torch.sigmoid(logit_model(x))[0]
    torch.testing.assert_close(logit_model.predict_step((x,), 0), torch.stack([1 - p_inner, p_inner], 1))
    model = ActivationMLP(output="softmax", num_classes=3, members=members(("relu", None, 0), ("tanh", None, 1)))
    probabilities = model.predict_step((x,), 0)
    assert probabilities.shape == (2, 6, 3)
    torch.testing.assert_close(probabilities, model(x).softmax(-1))


def test_a_sample_of_several_dimensions_is_its_values_in_a_row():
    model = ActivationMLP(in_features=64, num_classes=10, output="softmax")
    images = torch.randn(5, 8, 8)  # 8 x 8 pixels, as an image data module would give them
    torch.testing.assert_close(model(images), model(images.reshape(5, 64)))


def test_one_activation_per_hidden_layer():
    torch.manual_seed(0)
    model = ActivationMLP(activation=["relu", "tanh", "leaky_relu"], hidden_sizes=[4, 4, 4], init="auto",
                          activation_args=[None, None, {"negative_slope": 0.3}])  # fmt: skip
    kinds = [type(m.blocks[0]) for m in model.net if isinstance(m, MemberActivation)]
    assert kinds == [nn.ReLU, nn.Tanh, nn.LeakyReLU] and model.net[5].blocks[0].negative_slope == 0.3
    first, second = (m.weight[0] for m in linears(model)[:2])
    assert first.std().item() > second.std().item()  # Kaiming for the ReLU layer, Xavier for tanh's (fan-in 2 vs 4)
    assert Member(["relu", "tanh"], seed=0).label == "relu+tanh/seed_0"


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
        ({"members": [{"activation": "tanh7"}]}, r"unknown activation 'tanh7'; choose one of: elu, gelu, identity"),
        ({"hidden_sizes": []}, r"invalid model.hidden_sizes \[\]; expected a list of integers >= 1: \[5, 5\]"),
        ({"hidden_sizes": [5, 0]}, r"invalid model.hidden_sizes \[5, 0\]"),
        ({"init": "orthogonal"}, r"invalid model.init 'orthogonal'; expected one of: auto, default, xavier"),
        ({"output": "tanh"}, r"invalid model.output 'tanh'; expected one of: logit, sigmoid, softmax"),
        ({"num_classes": 3}, r"invalid model.output 'logit' for data of 3 classes; expected softmax"),
        (
            {"activation": ["relu", "tanh"]},
            r"invalid model.activation \['relu', 'tanh'\]; expected one entry per hidden",
        ),
        ({"activation": ["relu", "relu7", "relu", "relu"]}, r"unknown activation 'relu7'"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ActivationMLP(**kwargs)
