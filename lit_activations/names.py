"""What runs, members, fits and settings are called: in directory names, tables and messages.

One home for every label, so a run's directory, its row in a study's table and the member named in
an error say the same thing. Plain strings only: the study's own process imports this without torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def activation_name(activation: str | Sequence[str]) -> str:
    """The run name of an activation: its registry name, or the class name of an import path, lower-cased;
    one per hidden layer joined by ``+``.

    >>> activation_name("torch.nn.Hardtanh"), activation_name(["relu", "tanh"])
    ('hardtanh', 'relu+tanh')
    """
    if not isinstance(activation, str):
        return "+".join(map(activation_name, activation))
    return activation.rpartition(".")[2].lower() if "." in activation else activation


def member_name(activation: str | Sequence[str], activation_args: object = None) -> str:
    """An activation and its arguments as a directory name; per-layer arguments numbered by layer.

    >>> member_name("leaky_relu", {"negative_slope": 0.2}), member_name(["relu", "elu"], [None, {"alpha": 2}])
    ('leaky_relu-negative_slope=0.2', 'relu+elu-1.alpha=2')
    """
    args = activation_args
    if isinstance(args, list | tuple):
        args = {} if not any(args) else {f"{i}.{k}": v for i, a in enumerate(args) for k, v in (a or {}).items()}
    text = ",".join(f"{key}={value}" for key, value in sorted((args or {}).items()))
    return activation_name(activation) + (f"-{text}" if text else "")


def member_label(name: str, seed: int | None) -> str:
    """A member's name and seed, for messages and tables: ``tanh/seed_3``."""
    return name if seed is None else f"{name}/seed_{seed}"


def fit_name(activation: str | list[str], activations: Sequence[str | list[str] | Mapping[str, Any]] | None) -> str:
    """The directory name of a fit under ``save_dir``: its activation's, or ``members`` when they differ.

    ``activations`` are ``--members.activations`` entries (``lit_activations.members``; they are checked there).

    >>> fit_name("relu", None), fit_name("relu", ["tanh"]), fit_name("relu", ["tanh", {"name": "relu"}])
    ('relu', 'tanh', 'members')
    """
    entries = [entry.get("name") if isinstance(entry, Mapping) else entry for entry in activations or [activation]]
    names = {activation_name(e) for e in entries if isinstance(e, str | list | tuple)}
    return names.pop() if len(names) == 1 else "members"


def setting_name(setting: Mapping[str, Any]) -> str:
    """A setting of a study's grid as a directory name: each option's last part and its value.

    >>> setting_name({"model.optimizer.lr": 0.01, "model.hidden_sizes": [5, 5], "data": "pkg.MoonsDataModule"})
    'lr=0.01-hidden_sizes=[5,5]-data=MoonsDataModule'
    """

    def compact(value: Any) -> str:
        text = json.dumps(value, separators=(",", ":")).strip('"')
        return text.rpartition(".")[2] if isinstance(value, str) else text

    return "-".join(f"{option.rpartition('.')[2]}={compact(value)}" for option, value in setting.items())


def layers_name(activation: str | Sequence[str]) -> str:
    """An activation as the user typed it, one per hidden layer joined by ``+``: a study's row.

    >>> layers_name("torch.nn.Hardtanh"), layers_name(["relu", "tanh"])
    ('torch.nn.Hardtanh', 'relu+tanh')
    """
    return activation if isinstance(activation, str) else "+".join(activation)


def group_name(setting: Mapping[str, Any], activation: str | Sequence[str]) -> str:
    """A study's row and figure panel: the setting and the activation, e.g. ``lr=0.01 relu``."""
    return " ".join(filter(None, [setting_name(setting), layers_name(activation)]))


def option(key: str) -> str:
    """A configuration key as the flag a user types: ``model.init_args.activation`` is ``model.activation``.

    >>> option("data.init_args.noise")
    'data.noise'
    """
    return key.replace(".init_args.", ".")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A configuration's options by their dotted keys: ``{"a": {"b": 1}}`` as ``{"a.b": 1}``; ``init_args``
    levels are kept in the keys (``option`` drops them).

    >>> flatten({"model": {"hidden_sizes": [5, 5], "output": "logit"}, "seed_everything": 3})
    {'model.hidden_sizes': [5, 5], 'model.output': 'logit', 'seed_everything': 3}
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
