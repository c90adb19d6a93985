"""Activation registry: a name maps to how to build the module and the facts about it.

``get_activation`` returns the spec (factory and facts), ``create_activation`` a fresh module.
Names not in the registry are read as an import path to any ``torch.nn.Module`` class, so a
user's own activation works without editing this file.

Adding an activation is one line in ``ACTIVATIONS``. ``LeCunTanh`` below is the worked example
of writing one from its formula.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.modules import activation as torch_activations

from lit_activations.errors import ConfigError

InitName = Literal["default", "xavier", "kaiming", "lecun_normal"]


@dataclass(frozen=True)
class ActivationSpec:
    """What the registry knows about one activation.

    Attributes:
        factory: class (or callable) that returns a new module; keyword arguments are its parameters.
        init: the weight initialisation that suits it (used by ``init="auto"``).
        max_slope: sup |f'(x)| with the default parameters; the scale against which a slope counts
            as "small" when measuring saturation.
    """

    factory: Callable[..., nn.Module]
    init: InitName
    max_slope: float


class LeCunTanh(nn.Module):
    """LeCun's scaled tanh, f(x) = 1.7159 · tanh(2x/3) (LeCun et al., "Efficient BackProp", 1998).

    Written from its formula as the example of adding an activation; autograd derives the gradient,
    f'(x) = 1.7159 · 2/3 · (1 - tanh²(2x/3)), which the tests check against this closed form.
    The constants make f(±1) ≈ ±1, so unit-variance inputs keep roughly unit variance.

    >>> LeCunTanh()(torch.tensor([0.0, 1.0]))
    tensor([0.0000, 1.0000])
    """

    scale = 1.7159
    stretch = 2.0 / 3.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(self.stretch * x)


_SELU_MAX_SLOPE = 1.0507009873554805 * 1.6732632423543772  # scale · alpha, the slope just left of 0

ACTIVATIONS: Mapping[str, ActivationSpec] = {
    "identity": ActivationSpec(nn.Identity, "default", 1.0),  # the linear, no-activation baseline
    "sigmoid": ActivationSpec(nn.Sigmoid, "xavier", 0.25),
    "tanh": ActivationSpec(nn.Tanh, "xavier", 1.0),
    "lecun_tanh": ActivationSpec(LeCunTanh, "lecun_normal", LeCunTanh.scale * LeCunTanh.stretch),
    "relu": ActivationSpec(nn.ReLU, "kaiming", 1.0),
    "relu6": ActivationSpec(nn.ReLU6, "kaiming", 1.0),
    "leaky_relu": ActivationSpec(nn.LeakyReLU, "kaiming", 1.0),
    "prelu": ActivationSpec(nn.PReLU, "kaiming", 1.0),
    "elu": ActivationSpec(nn.ELU, "kaiming", 1.0),
    "selu": ActivationSpec(nn.SELU, "lecun_normal", _SELU_MAX_SLOPE),
    "gelu": ActivationSpec(nn.GELU, "kaiming", 1.1289),
    "silu": ActivationSpec(nn.SiLU, "kaiming", 1.0998),
    "mish": ActivationSpec(nn.Mish, "kaiming", 1.0885),
    "softplus": ActivationSpec(nn.Softplus, "kaiming", 1.0),
}


def get_activation(name: str) -> ActivationSpec:
    """Return the spec of a registered name, or of an ``nn.Module`` class given by import path.

    An imported class has no known facts: it gets PyTorch's default init and ``max_slope`` NaN
    (measure it numerically where needed).

    Raises:
        ValueError: the name is neither registered nor an importable ``nn.Module`` class.
    """
    if name in ACTIVATIONS:
        return ACTIVATIONS[name]
    if "." in name:
        cls = _import_module_class(name)
        return ActivationSpec(cls, "default", math.nan)
    raise ConfigError(
        f"unknown activation {name!r}; choose one of: {', '.join(sorted(ACTIVATIONS))},"
        " or give the import path of a torch.nn.Module class (e.g. torch.nn.Hardtanh)"
    )


def create_activation(name: str, **kwargs: Any) -> nn.Module:
    """Build a new activation module; ``kwargs`` are its parameters (e.g. ``negative_slope``).

    Raises:
        ConfigError: unknown name, or parameters the activation does not accept. An error raised by
            the activation's own ``__init__`` is not caught: it is a bug to see, not a typing mistake.
    """
    factory = get_activation(name).factory
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as err:  # an unexpected keyword: say which activation and what it got
        raise ConfigError(f"activation {name!r} does not accept the arguments {kwargs}: {err}") from None
    except ValueError:  # no signature to read (a builtin): let the call itself complain
        pass
    return factory(**kwargs)


# Activations of torch.nn that are not element-wise: a slope per element is not defined for these.
NOT_ELEMENTWISE = (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d, nn.MultiheadAttention, nn.GLU)


def elementwise_classes() -> tuple[type[nn.Module], ...]:
    """Every element-wise activation class of ``torch.nn`` and of the registry, ``nn.Identity`` included.

    >>> nn.Tanh in elementwise_classes() and nn.Softmax not in elementwise_classes()
    True
    """
    torch_classes = [
        cls
        for cls in vars(torch_activations).values()
        if isinstance(cls, type)
        and issubclass(cls, nn.Module)
        and cls.__module__ == torch_activations.__name__
        and not issubclass(cls, NOT_ELEMENTWISE)
    ]
    registry_classes = [spec.factory for spec in ACTIVATIONS.values() if isinstance(spec.factory, type)]
    return tuple(dict.fromkeys([*torch_classes, *registry_classes]))


def _import_module_class(path: str) -> type[nn.Module]:
    """The class at ``path``; a module that exists but fails to import raises its own error (the user's bug)."""
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is None or not (module_name == err.name or module_name.startswith(f"{err.name}.")):
            raise  # the module is there but imports something that is not
        module = None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(
            f"unknown activation {path!r}: no such class to import; choose one of:"
            f" {', '.join(sorted(ACTIVATIONS))}, or the import path of a torch.nn.Module class"
        )
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"activation {path!r} is not a torch.nn.Module class")
    return cls
