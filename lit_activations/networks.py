"""Drawing and initialising the networks of ``ActivationMLP``: plain ``nn.Sequential`` MLPs, one per member.

Kept apart from the LightningModule (no Lightning here) because what a network *is* is the
experiment's fixed point: a member of a fit must start from exactly the weights a single fit of its
activation and seed draws, so the order of the random draws below is part of the results.
``lit_activations.stacked`` then puts the members' networks side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from lit_activations import theory
from lit_activations.activations import InitName, create_activation, get_activation
from lit_activations.errors import ConfigError
from lit_activations.members import Member

# Weight initialisers by name (``--model.init``); every non-default one also zeroes the biases.
WEIGHT_INITS: dict[InitName, Callable[[torch.Tensor], Any] | None] = {
    "default": None,  # keep what nn.Linear.reset_parameters drew
    "xavier": nn.init.xavier_uniform_,
    "kaiming": partial(nn.init.kaiming_normal_, nonlinearity="relu"),
    "lecun_normal": partial(nn.init.kaiming_normal_, nonlinearity="linear"),  # std = 1/sqrt(fan_in)
}
# On the edge of chaos of each layer's activation: W ~ N(0, σ_w²/fan_in), b ~ N(0, σ_b²) at
# ``theory.critical_point``'s (σ_w², σ_b²), where a layer keeps the back-propagated signal's size (χ₁ = 1).
CRITICAL = "critical"
INITS = ("auto", *WEIGHT_INITS, CRITICAL)  # every value of --model.init


def member_networks(
    members: Sequence[Member], in_features: int, hidden_sizes: list[int], out_features: int, init: str
) -> list[nn.Sequential]:
    """Each member's network, drawn exactly as a single fit with its seed draws it.

    A member without a seed starts from the generator's state at this call, which is where a single
    fit's model starts after ``seed_everything``; a member with one reseeds first, as that fit's
    ``seed_everything`` would.
    """
    start = torch.get_rng_state()
    networks = []
    for member in members:
        if member.seed is None:
            torch.set_rng_state(start)
        else:
            torch.manual_seed(member.seed)
        networks.append(network(member, in_features, hidden_sizes, out_features, init))
    return networks


def network(member: Member, in_features: int, hidden_sizes: list[int], out_features: int, init: str) -> nn.Sequential:
    """Linear → act → … → Linear of one member, from the generator's current state.

    Each hidden layer gets an activation instance of its own (a learnable one, PReLU, learns a parameter
    per layer). With ``init=auto`` each linear layer gets the recommended init of the activation after
    it, and the output layer that of the last hidden layer; so with ``init=critical``, whose variances
    are those of the activation's critical point.

    Raises:
        ConfigError: ``init=critical`` for an activation that has no critical point.
    """
    layers: list[nn.Module] = []
    inits: list[str] = []
    for (n_in, n_out), (name, args) in zip(
        pairwise([in_features, *hidden_sizes]), layer_activations(member, len(hidden_sizes)), strict=True
    ):
        layers += [nn.Linear(n_in, n_out), create_activation(name, **(args or {}))]
        inits.append(get_activation(name).init if init == "auto" else init)
    layers.append(nn.Linear(hidden_sizes[-1], out_features))
    inits.append(inits[-1])
    net = nn.Sequential(*layers)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    if init == CRITICAL:
        points = [critical_variances(name, args) for name, args in layer_activations(member, len(hidden_sizes))]
        for linear, (sw2, sb2) in zip(linears, [*points, points[-1]], strict=True):
            nn.init.normal_(linear.weight, std=(sw2 / linear.in_features) ** 0.5)
            nn.init.normal_(linear.bias, std=sb2**0.5)
        return net
    for linear, layer_init in zip(linears, inits, strict=True):
        initialize(linear, layer_init)
    return net


_CRITICAL_POINTS: dict[str, tuple[float, float]] = {}  # by activation and arguments: each is a root search


def critical_variances(name: str, args: dict[str, Any] | None) -> tuple[float, float]:
    """(σ_w², σ_b²) of the activation's critical point (``theory.critical_point``).

    Raises:
        ConfigError: the activation has none.
    """
    key = f"{name} {sorted((args or {}).items())}"
    if key not in _CRITICAL_POINTS:
        point = theory.critical_point(create_activation(name, **(args or {})))
        if point is None:
            raise ConfigError(
                f"invalid model.init critical for activation {name!r}: no weight and bias variances keep its"
                " back-propagated signal level (χ₁ = 1); choose another init: auto, default, xavier, kaiming,"
                " lecun_normal"
            )
        _CRITICAL_POINTS[key] = point
    return _CRITICAL_POINTS[key]


def layer_activations(member: Member, depth: int) -> list[tuple[str, dict[str, Any] | None]]:
    """(name, arguments) of each of ``depth`` hidden layers' activation: a member's one activation (and
    arguments) for every layer, or its list of them, one per layer.

    The model calls it before drawing anything, so that a bad configuration fails before any work.

    Raises:
        ConfigError: an unknown name, or a list of names or arguments that is not one per hidden layer.
    """
    names = member.activation if isinstance(member.activation, list | tuple) else [member.activation] * depth
    args = member.activation_args
    args = list(args) if isinstance(args, list | tuple) else [args] * depth
    for option, values in (("activation", names), ("activation_args", args)):
        if len(values) != depth:
            raise ConfigError(
                f"invalid model.{option} {values!r}; expected one entry per hidden layer ({depth}), or a single one"
            )
    for name in names:
        get_activation(name)  # an unknown name: the list of names
    return list(zip(names, args, strict=True))


def initialize(net: nn.Module, init: InitName) -> None:
    """Redraw the weights of every ``nn.Linear`` in ``net`` with ``WEIGHT_INITS[init]`` and zero their biases;
    ``default`` leaves PyTorch's draw as it is (and draws nothing, so the generator's state is unchanged)."""
    init_weight = WEIGHT_INITS[init]
    if init_weight is None:
        return
    for module in net.modules():
        if isinstance(module, nn.Linear):
            init_weight(module.weight)
            nn.init.zeros_(module.bias)
