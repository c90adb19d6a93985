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
    it, and the output layer that of the last hidden layer.
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
    for linear, layer_init in zip((m for m in net if isinstance(m, nn.Linear)), inits, strict=True):
        initialize(linear, layer_init)
    return net


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
