"""A run's checkpoints: which one ``--ckpt_path`` means, the run it belongs to, what it was trained with,
and what may not change when it is resumed or evaluated; and the configuration such a command runs with.

A resumed fit continues its own run directory with the configuration the run was trained with
(its ``config.yaml``), so ``fit --ckpt_path PATH`` alone continues exactly where it stopped. Flags
given with it may raise the number of epochs or change where and how it runs, but not the
experiment: a different model, data, members or seed would log a different run's curves into
this one. Those are refused with one line before the run directory is touched. ``validate``,
``test`` and ``predict`` take the model of a checkpoint the same way (``trained_configuration``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.utilities import rank_zero_only

from lit_activations import lock
from lit_activations.errors import ConfigError
from lit_activations.errors.handling import say
from lit_activations.names import flatten, option

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


def _member_entry(member: Mapping[str, Any]) -> dict[str, Any]:
    """A member of a checkpoint's hyperparameters as an entry of ``--members.activations``."""
    entry = {"name": member["activation"], "args": member.get("activation_args")}
    return entry | ({"seeds": [member["seed"]]} if member.get("seed") is not None else {})


def _trained_without_checkpoints(run: Path) -> bool:
    trainer = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("trainer") or {}
    return trainer.get("enable_checkpointing") is False


def _last_written(run: Path) -> float:
    return max((p.stat().st_mtime for p in run.rglob("*") if p.is_file()), default=0.0)


def with_trained_configuration(argv: list[str], subcommands: tuple[str, ...]) -> list[str]:
    """``argv`` with what its ``--ckpt_path`` file was trained with read right after the subcommand.

    For ``fit``, the run's ``config.yaml`` (the resumed run's configuration, which the flags then change);
    for ``validate``, ``test`` and ``predict``, and a checkpoint outside a run, ``trained_configuration``.
    Unchanged without a checkpoint file on the command line. The CLI reads it before parsing, so that
    the options of a checkpoint's own model class parse.
    """
    at = next((i for i, arg in enumerate(argv) if arg in subcommands), None)
    values = [b if a == "--ckpt_path" else a.partition("=")[2] for a, b in pairwise([*argv, ""])
              if a == "--ckpt_path" or a.startswith("--ckpt_path=")]  # fmt: skip
    if at is None or not values or not Path(values[-1]).is_file():
        return argv
    checkpoint = Path(values[-1])
    run = run_of(checkpoint)
    if argv[at] == "fit" and run is not None:
        config = str(run / "config.yaml")
    elif trained := trained_configuration(checkpoint):
        config = yaml.safe_dump(trained, sort_keys=False)
    else:
        return argv
    return [*argv[: at + 1], "--config", config, *argv[at + 1 :]]


def resume_run(parser: ArgumentParser, argv: list[str], config: Namespace) -> tuple[Namespace, Namespace | None]:
    """The configuration that continues the fit's checkpoint's run, in its own directory and with its own
    configuration, and what its ``config.yaml`` keeps recording (``None``: ``config`` is not a resume of a run).

    The run's ``config.yaml`` is read first and the command's flags after it, so a bare ``fit
    --ckpt_path PATH`` resumes exactly; flags that would change the experiment are refused before
    anything in the run directory is touched, and so is a run that another process is training.
    Events the interrupted run wrote after the checkpoint's step are purged from TensorBoard's view.
    ``last`` is the newest run under the logger's directory that the command's flags can continue (a
    run that stopped before its first checkpoint starts over in its own directory).
    A checkpoint outside a run directory continues training in a new one.

    Raises:
        ConfigError: a change of the experiment, a member's checkpoint, a member's run gone, a run in use.
    """
    logger = config.fit.trainer.logger
    if not (isinstance(logger, Namespace) and logger.class_path.endswith("TensorBoardRunLogger")):
        return config, None
    ckpt_path = config.fit.ckpt_path
    if ckpt_path == "last":
        runs = resumable_runs(logger.init_args.save_dir, logger.init_args.name)
        if not runs:
            say(f"no run under {Path(logger.init_args.save_dir, logger.init_args.name)} to resume: a new run")
            config.fit.ckpt_path = None
            return config, None
        # the newest run that this command can continue; if none can, the newest, whose refusal says why
        run = next((run for run in runs if not _changes_to(parser, argv, run)), runs[0])
        checkpoint = last_checkpoint(run)
    else:
        checkpoint = checkpoint_file(ckpt_path)
        run = run_of(checkpoint) if checkpoint is not None else None
        if run is None:
            return config, None
    if checkpoint is not None:
        refuse_member_checkpoint(checkpoint)
    saved = parser.parse_args(["fit", "--config", str(run / "config.yaml")]).fit
    config = parsed_under(parser, argv, "fit", str(run / "config.yaml"))
    refuse_changes(run, saved, config.fit, checkpoint)
    if checkpoint is not None:  # (a run that starts over makes its members' directories anew)
        refuse_missing_members(run, config.fit.trainer.logger.init_args.get("members"))
    if rank_zero_only.rank == 0:  # (the other ranks of a DDP fit run this too, under rank 0's lock)
        try:
            stale = lock.hold(run)
        except lock.Held as held:
            raise ConfigError(f"cannot resume {run}: {held.holder} is training it; wait for it to end") from None
        if stale:
            say(f"{run} was left by {stale}, which is gone: resuming it")
    # config.yaml keeps recording the run: what it was trained with, and only the changes the flags asked for
    record = copy.deepcopy(config.fit)
    record.trainer.logger, record.ckpt_path = saved.trainer.logger, saved.ckpt_path
    logger = config.fit.trainer.logger  # pointed at the run: <save_dir>/<name>/<version>
    logger.init_args.save_dir, logger.init_args.name = str(run.parent.parent), run.parent.name
    version = run.name.removeprefix("version_")
    logger.init_args.version = int(version) if version.isdigit() else run.name
    if checkpoint is None:  # stopped before its first checkpoint: all of its events are hidden
        say(f"{run} stopped before its first checkpoint: training it again from the start, in place")
        logger.init_args.purge_step, config.fit.ckpt_path = 0, None
        return config, record
    saved_state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    logger.init_args.purge_step = saved_state["global_step"] + 1
    config.fit.ckpt_path = str(checkpoint)
    newest = last_checkpoint(run)
    trained = torch.load(newest, map_location="cpu", weights_only=True)["epoch"] if newest else -1
    if trained > saved_state["epoch"]:  # (the refusals above came first: nothing was touched yet)
        done = saved_state["epoch"] + 1
        say(f"resuming {run} after epoch {done} ({checkpoint.name}), though it has trained {trained + 1}:"
            f" epochs {done + 1}-{trained + 1} are trained again, their events hidden")  # fmt: skip
    return config, record


def evaluation_configuration(parser: ArgumentParser, argv: list[str], config: Namespace, subcommand: str) -> Namespace:
    """The configuration that evaluates a checkpoint with the model it was trained with, and its data unless the
    flags choose other.

    The model, data, members and seed come from the checkpoint's run or from the checkpoint itself
    (``trained_configuration``), read before the command's flags.

    Raises:
        ConfigError: not a checkpoint file, or a flag that would give the model another shape or other arguments.
    """
    ckpt_path = config[subcommand].ckpt_path
    checkpoint = checkpoint_file(ckpt_path)
    if checkpoint is None:
        raise ConfigError(
            f"invalid ckpt_path {ckpt_path!r} for {subcommand}; give a checkpoint file, e.g."
            " logs/relu/version_0/checkpoints/last.ckpt"
        )
    trained = trained_configuration(checkpoint)
    if not trained:
        return config
    text = yaml.safe_dump(trained, sort_keys=False)
    config = parsed_under(parser, argv, subcommand, text)
    saved = parsed_under(parser, [subcommand], subcommand, text)[subcommand]
    known = set(flatten(trained))
    changed = [key for key in changed_options(saved, config[subcommand], ("model.", "members.")) if key in known]
    if changed:
        was, now = flatten(saved.as_dict()).get(changed[0]), flatten(config[subcommand].as_dict())[changed[0]]
        raise ConfigError(
            f"cannot {subcommand} {checkpoint} with {option(changed[0])}={now!r}: it was trained with {was!r};"
            " drop the flag (the checkpoint decides the model)"
        )
    return config


def parsed_under(parser: ArgumentParser, argv: list[str], subcommand: str, config: str) -> Namespace:
    """``argv`` parsed with ``config`` (a file, or YAML text) read before the command's own arguments."""
    at = argv.index(subcommand) + 1
    return parser.parse_args([*argv[:at], "--config", config, *argv[at:]])


def _changes_to(parser: ArgumentParser, argv: list[str], run: Path) -> list[str]:
    """What resuming ``run`` with ``argv`` would change of its experiment (``EXPERIMENT``)."""
    saved = parser.parse_args(["fit", "--config", str(run / "config.yaml")]).fit
    return changed_options(saved, parsed_under(parser, argv, "fit", str(run / "config.yaml")).fit)
