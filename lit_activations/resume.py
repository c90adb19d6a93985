"""Resuming a run: which checkpoint ``--ckpt_path`` means, the run it belongs to, and what may not change.

A resumed fit continues its own run directory with the configuration the run was trained with
(its ``config.yaml``), so ``fit --ckpt_path PATH`` alone continues exactly where it stopped. Flags
given with it may raise the number of epochs or change where and how it runs, but not the
experiment: a different model, data, members or seed would log a different run's curves into
this one. Those are refused with one line before the run directory is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace

from lit_activations.errors import ConfigError

# What defines the experiment a run holds: changing one of these on resume is refused.
EXPERIMENT = ("seed_everything", "model.", "data.", "members.", "trainer.precision", "trainer.accumulate_grad_batches",
              "trainer.gradient_clip_val", "trainer.gradient_clip_algorithm")  # fmt: skip


def checkpoint_to_resume(ckpt_path: str, save_dir: str | Path, name: str) -> Path | None:
    """The file ``--ckpt_path`` names: ``last`` is the newest ``last.ckpt`` among the runs under ``save_dir/name``.

    ``None`` for ``last`` with no run to resume (Lightning then starts afresh, with a warning) and for
    Lightning's other special values.

    Raises:
        ConfigError: a path that is not a file.
    """
    if ckpt_path == "last":
        candidates = list((Path(save_dir) / name).glob("version_*/checkpoints/last*.ckpt"))
        return max(candidates, key=lambda path: path.stat().st_mtime) if candidates else None
    if ckpt_path in ("best", "hpc", "registry"):
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"invalid ckpt_path {ckpt_path!r}: no such file; give a checkpoint file or 'last'")
    return path


def run_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint was saved in (``<run>/checkpoints/…``, with its ``config.yaml``), if any.

    Raises:
        ConfigError: the checkpoint of one member of a fit, which holds no optimizer state to resume.
    """
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if "member_of" in saved:
        raise ConfigError(
            f"invalid ckpt_path {str(checkpoint)!r}: it holds one member's model, for validate, test and predict;"
            f" resume the whole fit from {saved['member_of']}"
        )
    run = checkpoint.parent.parent if len(checkpoint.parts) >= 3 else checkpoint.resolve().parent.parent
    return run if checkpoint.parent.name == "checkpoints" and (run / "config.yaml").is_file() else None


def refuse_changes(run: Path, saved: Namespace, resumed: Namespace, checkpoint: Path) -> None:
    """Raise if resuming ``run`` with the ``resumed`` configuration would change its experiment or train nothing.

    Raises:
        ConfigError: an option of ``EXPERIMENT`` that differs from the run's ``saved`` configuration, or a
            ``trainer.max_epochs`` that the checkpoint has already reached.
    """
    before, after = flatten(saved.as_dict()), flatten(resumed.as_dict())
    keys = sorted(set(before) | set(after))
    changed = [key for key in keys if key.startswith(EXPERIMENT) and before.get(key) != after.get(key)]
    if changed:
        key, more = (
            changed[0],
            f" (and {len(changed) - 1} more: {', '.join(map(option, changed[1:]))})" if changed[1:] else "",
        )
        raise ConfigError(
            f"cannot resume {run} with {option(key)}={after.get(key)!r}: it was trained with {before.get(key)!r}{more};"
            " drop the flag to continue the run as it was, or leave out --ckpt_path to start a new run"
        )
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
