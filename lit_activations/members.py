"""Members: the independent networks one fit trains side by side, one per (activation, its arguments, seed).

A study's cells that differ only in activation and seed share the data, the hidden sizes, the
init scheme, the output and the optimizer settings, so one fit can train them all at once: one
Lightning step then does the work of K fits (see ``lit_activations.stacked``). Each member is
still its own experiment: its initial weights are those of a single fit with its seed, its loss is
its own mean loss, and it logs into its own run directory.

``--members.activations`` and ``--members.seeds`` give the grid; an entry of the activations can
carry its own ``args`` and ``seeds``:

>>> [m.name for m in expand_members("relu", None, ["tanh", {"name": "leaky_relu", "args": {"negative_slope": 0.2}}],
...                                 [0, 1])]
['tanh', 'tanh', 'leaky_relu-negative_slope=0.2', 'leaky_relu-negative_slope=0.2']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lit_activations.errors import ConfigError, check_seed
from lit_activations.names import member_label, member_name

DEFAULT_RUN_DIR = "{activation}/seed_{seed}"
# Optimizers whose update of each parameter element depends on that element's gradient history only, so
# members stacked in one tensor stay independent. LBFGS (a line search over all parameters) and the
# factored second moments of Adafactor do not.
ELEMENTWISE_OPTIMIZERS = ("SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta", "Rprop",
                          "ASGD")  # fmt: skip
_ENTRY_KEYS = ("name", "args", "seeds")


@dataclass(frozen=True)
class Member:
    """One network of a fit.

    Attributes:
        activation: a registered name or the import path of an ``nn.Module`` class, or a list of them
            (one per hidden layer).
        activation_args: the activation's keyword arguments (a list of them with a list of activations).
        seed: the seed of its initialisation; ``None`` takes the fit's own (``seed_everything``).
    """

    activation: str | list[str]
    activation_args: Mapping[str, Any] | list[Mapping[str, Any] | None] | None = None
    seed: int | None = None

    @property
    def name(self) -> str:
        """The activation and its arguments as a directory name, e.g. ``leaky_relu-negative_slope=0.2``
        (``lit_activations.names.member_name``)."""
        return member_name(self.activation, self.activation_args)

    @property
    def label(self) -> str:
        """Name and seed, for messages: ``tanh/seed_3``."""
        return member_label(self.name, self.seed)

    def as_dict(self) -> dict[str, Any]:
        """Plain data, as the model's hyperparameters and checkpoints keep it."""
        args = self.activation_args
        if isinstance(args, list | tuple):
            args = [dict(a) if a else None for a in args]
        activation = list(self.activation) if isinstance(self.activation, list | tuple) else self.activation
        return asdict(self) | {
            "activation": activation,
            "activation_args": dict(args) if isinstance(args, Mapping) and args else (args or None),
        }


def expand_members(
    activation: str,
    activation_args: Mapping[str, Any] | None,
    activations: Sequence[str | list[str] | Mapping[str, Any]] | None,
    seeds: Sequence[int] | None,
) -> list[Member] | None:
    """The members of ``--members.activations`` × ``--members.seeds``, or ``None`` when neither is given.

    Without ``activations`` every member has ``activation`` (``--model.activation``) and its
    ``activation_args``; without ``seeds`` every member takes the fit's own seed. An entry of
    ``activations`` is a name, a list of names (one per hidden layer) or ``{name: ..., args: {...},
    seeds: [...]}``, whose ``seeds`` replace the common ones for that activation.

    Raises:
        ValueError: an empty list, an entry of another shape, or the same member twice.
    """
    if activations is None and seeds is None:
        return None
    if activations is not None and not activations:
        raise ConfigError("invalid members.activations []; expected a non-empty list of activations")
    if seeds is not None and not seeds:
        raise ConfigError("invalid members.seeds []; expected a non-empty list of integers")
    members = []
    for entry in activations if activations is not None else [{"name": activation, "args": activation_args}]:
        name, args, entry_seeds = _entry(entry)
        for seed in entry_seeds or seeds or [None]:
            check_seed("members.seeds", seed)
            members.append(Member(name, args, seed))
    seen = set()
    for member in members:
        if member.label in seen:
            raise ConfigError(f"invalid members: {member.label} appears twice; each (activation, seed) once")
        seen.add(member.label)
    return members


def member_run_dirs(members: Sequence[Member], template: str | None = None, fit_seed: object = None) -> list[str]:
    """Each member's run directory from ``template`` (``{activation}``, ``{seed}``), relative to the fit's.

    The default is ``{activation}/seed_{seed}``; a member without a seed of its own has the fit's (``fit_seed``,
    ``--seed_everything``), and without an integer one there the default is ``{activation}``.

    >>> member_run_dirs([Member("relu", seed=0), Member("tanh", seed=0)])
    ['relu/seed_0', 'tanh/seed_0']
    >>> member_run_dirs([Member("relu"), Member("tanh")], fit_seed=3)
    ['relu/seed_3', 'tanh/seed_3']

    Raises:
        ValueError: ``{seed}`` without seeds, another placeholder, or one directory for two members.
    """
    fit_seed = fit_seed if isinstance(fit_seed, int) and not isinstance(fit_seed, bool) else None
    seeds = [member.seed if member.seed is not None else fit_seed for member in members]
    if template is None:
        template = "{activation}" if None in seeds else DEFAULT_RUN_DIR
    dirs = []
    for member, seed in zip(members, seeds, strict=True):
        if "{seed}" in template and seed is None:
            raise ConfigError(f"invalid members.run_dir {template!r}: it uses {{seed}} but members.seeds is not set")
        try:
            dirs.append(template.format(activation=member.name, seed=seed))
        except (KeyError, IndexError, ValueError):
            raise ConfigError(
                f"invalid members.run_dir {template!r}; expected a path with the placeholders"
                " {activation} and {seed}"
            ) from None
    if len(set(dirs)) < len(dirs):
        raise ConfigError(f"invalid members.run_dir {template!r}: it gives several members the same directory")
    return dirs


def _entry(entry: str | list[str] | Mapping[str, Any]) -> tuple[Any, Any, list[int] | None]:
    if isinstance(entry, str) or _is_name_list(entry):
        return list(entry) if _is_name_list(entry) else entry, None, None
    if (
        not isinstance(entry, Mapping)
        or not (isinstance(entry.get("name"), str) or _is_name_list(entry.get("name")))
        or set(entry) - set(_ENTRY_KEYS)
    ):
        raise ConfigError(
            f"invalid members.activations entry {entry!r}; expected a name or"
            " {name: NAME, args: {...}, seeds: [...]}"
        )
    return entry["name"], entry.get("args") or None, list(entry["seeds"]) if entry.get("seeds") else None


def _is_name_list(value: object) -> bool:
    """Whether ``value`` is a list of activation names, one per hidden layer."""
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, str) for v in value)


def refuse_coupling(members: int, optimizer: Any, scheduler: Any, trainer: Any) -> None:
    """Refuse, for a fit of several ``members``, what would let one member's training depend on another's.

    Args:
        members: how many members the fit trains side by side.
        optimizer, scheduler: what the model's ``configure_optimizers`` will build (``scheduler`` may be ``None``).
        trainer: the fit's ``lightning.pytorch.Trainer``.

    Raises:
        ConfigError: an optimizer that is not element-wise, a scheduler or callback that watches one metric,
            clipping by the global norm, or fp16 loss scaling.
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint  # (this module is Lightning-free else)
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    if members == 1:
        return
    name = type(optimizer).__name__
    if name not in ELEMENTWISE_OPTIMIZERS or type(optimizer).__module__.split(".")[0] != "torch":
        raise ConfigError(
            f"invalid model.optimizer {name} for {members} members: its update mixes parameters, coupling the"
            f" members; choose one of: {', '.join(ELEMENTWISE_OPTIMIZERS)}, or train one member per fit"
        )
    if isinstance(scheduler, ReduceLROnPlateau):
        raise ConfigError(
            f"invalid model.scheduler ReduceLROnPlateau for {members} members: it watches one metric for all of"
            " them; use a schedule of the step or epoch (StepLR, CosineAnnealingLR, ...) or train one member per fit"
        )
    if trainer.gradient_clip_val and trainer.gradient_clip_algorithm != "value":  # None: Lightning clips by norm
        raise ConfigError(
            f"invalid trainer.gradient_clip_val {trainer.gradient_clip_val} for {members} members: clipping by the"
            " global norm couples them; set --trainer.gradient_clip_algorithm=value, or train one member per fit"
        )
    if trainer.precision == "16-mixed":
        raise ConfigError(
            f"invalid trainer.precision 16-mixed for {members} members: the loss scaler skips every member's step"
            " when one overflows; use bf16-mixed or 32, or train one member per fit"
        )
    for callback in trainer.callbacks:
        watched = getattr(callback, "monitor", None) if isinstance(callback, EarlyStopping | ModelCheckpoint) else None
        if watched:
            raise ConfigError(
                f"invalid trainer.callbacks {type(callback).__name__}(monitor={watched!r}) for {members} members:"
                " it watches one metric for all of them; remove it, or train one member per fit"
            )
