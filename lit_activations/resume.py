"""A run's checkpoints: which one ``--ckpt_path`` means, the run it belongs to, what it was trained with,
and what may not change when it is resumed or evaluated.

A resumed fit continues its own run directory with the configuration the run was trained with
(its ``config.yaml``), so ``fit --ckpt_path PATH`` alone continues exactly where it stopped. Flags
given with it may raise the number of epochs or change where and how it runs, but not the
experiment: a different model, data, members or seed would log a different run's curves into
this one. Those are refused with one line before the run directory is touched. ``validate``,
``test`` and ``predict`` take the model of a checkpoint the same way (``trained_configuration``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace

from lit_activations.errors import ConfigError

# The model's arguments that the data decide (the CLI links them from the data module).
DATA_SIZED = ("in_features", "num_classes")
# Values the CLI computes from other options (``--members.*``): a change shows in those.
DERIVED = ("model.init_args.members",)
# What defines the experiment a run holds: changing one of these on resume is refused.
EXPERIMENT = ("seed_everything", "model.", "data.", "members.", "trainer.precision", "trainer.accumulate_grad_batches",
              "trainer.gradient_clip_val", "trainer.gradient_clip_algorithm")  # fmt: skip


def resumable_runs(save_dir: str | Path, name: str) -> list[Path]:
    """The runs under ``save_dir/name`` that ``--ckpt_path last`` may continue, the one written to last first.

    A run counts if it has its ``config.yaml`` and either a checkpoint or, trained with checkpoints on,
    none yet (it stopped before its first and starts over in place).
    """
    runs = []
    for run in Path(save_dir, name).glob("version_*"):
        if not (run / "config.yaml").is_file():
            continue
        if last_checkpoint(run) is None and _trained_without_checkpoints(run):
            continue  # a finished run, not a stopped one
        runs.append(run)
    return sorted(runs, key=_last_written, reverse=True)


def last_checkpoint(run: Path) -> Path | None:
    """The checkpoint a run continues from: its newest ``last*.ckpt`` (else newest checkpoint) that loads.

    A checkpoint cut short (its process killed while writing it) is passed over for the one before.
    """
    files = sorted((run / "checkpoints").glob("*.ckpt"), key=lambda p: (p.name.startswith("last"), p.stat().st_mtime))
    for path in reversed(files):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # torch raises RuntimeError, EOFError or UnpicklingError for a cut file
            continue
        return path
    return None


def checkpoint_file(ckpt_path: str) -> Path | None:
    """The file ``--ckpt_path`` names; ``None`` for Lightning's special values other than ``last``.

    Raises:
        ConfigError: a path that is not a file.
    """
    if ckpt_path in ("best", "hpc", "registry"):
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"invalid ckpt_path {ckpt_path!r}: no such file; give a checkpoint file or 'last'")
    return path


def run_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint was saved in (``<run>/checkpoints/…``, with its ``config.yaml``), if any."""
    run = checkpoint.parent.parent if len(checkpoint.parts) >= 3 else checkpoint.resolve().parent.parent
    return run if checkpoint.parent.name == "checkpoints" and (run / "config.yaml").is_file() else None


def refuse_member_checkpoint(checkpoint: Path) -> None:
    """Raise for the checkpoint of one member of a fit, which holds no optimizer state to resume.

    Raises:
        ConfigError: a member's checkpoint.
    """
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if "member_of" in saved:
        raise ConfigError(
            f"invalid ckpt_path {str(checkpoint)!r}: it holds one member's model, for validate, test and predict;"
            f" resume the whole fit from {saved['member_of']}"
        )


def trained_configuration(checkpoint: Path) -> dict[str, Any]:
    """What a checkpoint's network was trained with, as configuration: its model, data, members and seed.

    From the ``config.yaml`` of the run it was saved in (a member's checkpoint lies in the member's own
    run, whose ``config.yaml`` is that of the single fit it equals); a checkpoint outside a run
    directory tells what its hyperparameters hold (the model's, and the data's if its data module
    saved them). The sizes the data decide (``in_features``, ``num_classes``) are left to the data.
    """
    run = run_of(checkpoint)
    if run is not None:
        saved = yaml.safe_load((run / "config.yaml").read_text()) or {}
        return {key: saved[key] for key in ("seed_everything", "model", "data", "members") if key in saved}
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    trained: dict[str, Any] = {}
    model = dict(stored.get("hyper_parameters") or {})
    if model:
        class_path, members = model.pop("_class_path", None), model.pop("members", None)
        init_args = {k: v for k, v in model.items() if not k.startswith("_") and k not in DATA_SIZED}
        trained["model"] = {"init_args": init_args} | ({"class_path": class_path} if class_path else {})
        if members:
            trained["members"] = {"activations": [_member_entry(m) for m in members]}
    data = dict(stored.get("datamodule_hyper_parameters") or {})
    if "_class_path" in data:
        trained["data"] = {"class_path": data.pop("_class_path"),
                           "init_args": {k: v for k, v in data.items() if not k.startswith("_")}}  # fmt: skip
    return trained


def refuse_missing_members(run: Path, member_dirs: list[str] | None) -> None:
    """Raise if a member's run directory of a fit is gone: resumed, it would hold only the resumed epochs under a
    complete-looking ``config.yaml``.

    Raises:
        ConfigError: the first member run directory (relative to ``run``, or absolute) that does not exist.
    """
    for directory in member_dirs or []:
        if not (run / directory).is_dir():  # (an absolute directory stays itself)
            raise ConfigError(
                f"cannot resume {run}: its member's run directory {run / directory} is missing; put it back, or"
                " leave out --ckpt_path to train a new fit"
            )


def changed_options(saved: Namespace, given: Namespace, keys: tuple[str, ...] = EXPERIMENT) -> list[str]:
    """The options under ``keys`` whose values differ between two configurations, as flattened keys."""
    before, after = flatten(saved.as_dict()), flatten(given.as_dict())
    every = sorted(set(before) | set(after))
    return [k for k in every if k.startswith(keys) and k not in DERIVED and before.get(k) != after.get(k)]


def refuse_changes(run: Path, saved: Namespace, resumed: Namespace, checkpoint: Path | None) -> None:
    """Raise if resuming ``run`` with the ``resumed`` configuration would change its experiment or train nothing.

    Raises:
        ConfigError: an option of ``EXPERIMENT`` that differs from the run's ``saved`` configuration, or a
            ``trainer.max_epochs`` that the checkpoint has already reached.
    """
    changed = changed_options(saved, resumed)
    if changed:
        before, after = flatten(saved.as_dict()), flatten(resumed.as_dict())
        key, more = (
            changed[0],
            f" (and {len(changed) - 1} more: {', '.join(map(option, changed[1:]))})" if changed[1:] else "",
        )
        raise ConfigError(
            f"cannot resume {run} with {option(key)}={after.get(key)!r}: it was trained with {before.get(key)!r}{more};"
            " drop the flag to continue the run as it was, or leave out --ckpt_path to start a new run"
        )
    if checkpoint is None:  # it starts over
        return
    trained = torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"] + 1
    max_epochs = resumed.trainer.max_epochs
    if max_epochs is not None and max_epochs != -1 and max_epochs <= trained:
        raise ConfigError(
            f"invalid trainer.max_epochs {max_epochs} to resume {run}: it has trained {trained} epochs;"
            f" give more than {trained}"
        )


def option(key: str) -> str:
    """A configuration key as the flag a user types: ``model.init_args.activation`` is ``model.activation``.

    >>> option("data.init_args.noise")
    'data.noise'
    """
    return key.replace(".init_args.", ".")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``; ``init_args`` levels are kept in the keys.

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


def _member_entry(member: Mapping[str, Any]) -> dict[str, Any]:
    """A member of a checkpoint's hyperparameters as an entry of ``--members.activations``."""
    entry = {"name": member["activation"], "args": member.get("activation_args")}
    return entry | ({"seeds": [member["seed"]]} if member.get("seed") is not None else {})


def _trained_without_checkpoints(run: Path) -> bool:
    trainer = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("trainer") or {}
    return trainer.get("enable_checkpointing") is False


def _last_written(run: Path) -> float:
    return max((p.stat().st_mtime for p in run.rglob("*") if p.is_file()), default=0.0)
