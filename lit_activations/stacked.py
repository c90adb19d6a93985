"""Modules that hold K members side by side on dimension 0: one op runs every member's layer.

A module with a ``num_members`` attribute keeps its members on dim 0 of its parameters and of the
tensors it takes and returns, shape (K, B, n). ``ActivationMonitor`` and ``DivergenceGuard`` read
that attribute to report each member on its own; any other module counts as one member.

``torch.func.vmap`` over stacked parameters would do the same for linear layers, but it runs one
function for every member (no mix of activations) and hides the member axis from forward hooks,
which the monitor's probe pass needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lit_activations.activations import elementwise_classes


class MemberLinear(nn.Module):
    """K linear layers: weight (K, out, in), bias (K, out); input (K, B, in), or (B, in) shared by all members.

    Member k computes exactly ``nn.Linear``'s z = x Wₖᵀ + bₖ, in one ``baddbmm`` for all of them.
    """

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    @property
    def num_members(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # the data, the same for every member
            x = x.expand(self.num_members, *x.shape)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))  # (K, B, out)

    def extra_repr(self) -> str:
        members, n_out, n_in = self.weight.shape
        return f"members={members}, in_features={n_in}, out_features={n_out}"


class MemberActivation(nn.Module):
    """The activations of K members on (K, B, n), in blocks of consecutive members.

    Each block applies one module to its members' slice. A module that might read the shape (one
    with parameters, like PReLU's per-channel slopes, or one not known to be element-wise) sees the
    slice as (members · B, n) rows, the 2-D shape a single fit gives it; a known element-wise one
    takes (K, B, n) as it is, a few ops fewer per step. Members may share a module only when it
    has no parameters or buffers (``ReLU``, ``Tanh``): a learnable activation such as PReLU gets a
    block, and so a parameter, of its own per member, or the members would be coupled.

    Args:
        blocks: (module, number of consecutive members it serves).
    """

    def __init__(self, blocks: Sequence[tuple[nn.Module, int]]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(module for module, _ in blocks)
        self.sizes = [size for _, size in blocks]
        self._as_rows = [not (_stateless(module) and isinstance(module, _ELEMENTWISE)) for module, _ in blocks]

    @property
    def num_members(self) -> int:
        return sum(self.sizes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if len(self.sizes) == 1:
            return self.block_forward(0, z)
        return torch.cat([self.block_forward(b, part) for b, part in enumerate(z.split(self.sizes))])

    def block_forward(self, block: int, z: torch.Tensor) -> torch.Tensor:
        """Block ``block``'s module on its members' slice ``z`` of the input, as ``forward`` applies it."""
        module = self.blocks[block]
        return module(z.reshape(-1, z.shape[-1])).reshape(z.shape) if self._as_rows[block] else module(z)

    def block_of(self, member: int) -> int:
        """The index of the block that serves ``member``."""
        end = 0
        for block, size in enumerate(self.sizes):
            end += size
            if member < end:
                return block
        raise IndexError(f"member {member} out of range for {self.num_members} members")


def stack_networks(networks: Sequence[nn.Sequential], groups: Sequence[object]) -> nn.Sequential:
    """One ``nn.Sequential`` of ``MemberLinear`` and ``MemberActivation`` from K networks of the same shape.

    ``groups[k]`` identifies member k's activation (equal values: the same activation and
    arguments); consecutive members of one group share a parameter-free activation module.
    """
    layers: list[nn.Module] = []
    for position, first in enumerate(networks[0]):
        modules = [network[position] for network in networks]
        if isinstance(first, nn.Linear):
            layers.append(MemberLinear(modules))
            continue
        blocks: list[tuple[nn.Module, int]] = []
        for k, module in enumerate(modules):
            if blocks and groups[k] == groups[k - 1] and _stateless(module):
                blocks[-1] = (blocks[-1][0], blocks[-1][1] + 1)
            else:
                blocks.append((module, 1))
        layers.append(MemberActivation(blocks))
    return nn.Sequential(*layers)


_ELEMENTWISE = elementwise_classes()


def _stateless(module: nn.Module) -> bool:
    return next(module.parameters(), None) is None and next(module.buffers(), None) is None
