"""A study's cells: each setting × activation × seed, what finished before, and the fits that train them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from itertools import pairwise, product
from pathlib import Path
from typing import Any

import yaml

from lit_activations.errors import ConfigError
from lit_activations.names import activation_name, flatten, group_name, layers_name, option, setting_name

FINISHED = "finished"  # marker file in a run directory whose fit exited cleanly


@dataclass
class Cell:
    """One cell of the study: an (activation, seed) in one setting of the grid, and the run directory it logs into."""

    activation: str | list[str]  # for a model that is not an ActivationMLP, the model's run name
    seed: int
    directory: Path
    setting: dict[str, Any] = field(default_factory=dict)  # option -> value, from --grid
    members: bool = True  # an ActivationMLP's cell, trained as a member of a fit; else the model's own fit
    error: str = ""  # the failed fit's last line of output; empty if it finished
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # read back once it finished

    @property
    def group(self) -> str:
        """The table's row and the figure's panel of this cell: setting and activation."""
        return group_name(self.setting, self.activation)

    @property
    def finished(self) -> bool:
        return (self.directory / FINISHED).exists()


@dataclass(frozen=True)
class CheckedSetting:
    """What one setting's fits were checked to get, by building their classes without training
    (``lit_activations.study.checks``)."""

    config: dict[str, Any]  # the fit's configuration, as its config.yaml will record it
    model: str  # the model's class name
    members: bool  # whether the model is an ActivationMLP, which trains the cells as members
    activation: str | list[str] | None  # ActivationMLP's --model.activation: the study's activation by default


def settings_of(grid: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """The settings of ``--grid``'s (option, values) pairs: their product, as option -> value.

    >>> settings_of([("model.optimizer.lr", [0.1, 0.01]), ("data", ["MoonsDataModule"])])
    [{'model.optimizer.lr': 0.1, 'data': 'MoonsDataModule'}, {'model.optimizer.lr': 0.01, 'data': 'MoonsDataModule'}]
    >>> settings_of([])
    [{}]
    """
    return [dict(point) for point in product(*[[(option, v) for v in values] for option, values in grid])]


def cells_of(
    study_dir: Path, settings: list[dict[str, Any]], checked: dict[str, CheckedSetting],
    activations: list[str | list[str]] | None, seeds: list[int],
) -> list[Cell]:  # fmt: skip
    """Each setting × activation × seed (the configuration's activation by default); for a model that is not an
    ActivationMLP, setting × seed."""
    cells = []
    for setting in settings:
        where = study_dir / setting_name(setting)
        found = checked[setting_name(setting)]
        if not found.members:
            name = found.model.lower()
            cells += [Cell(name, s, where / name / f"seed_{s}", setting, members=False) for s in seeds]
            continue
        cells += [
            Cell(a, s, where / activation_name(a) / f"seed_{s}", setting)
            for a in activations or [found.activation]
            for s in seeds
        ]
    return cells


def refuse_stale(finished: list[Cell], checked: dict[str, CheckedSetting]) -> None:
    """Refuse a finished cell whose ``config.yaml`` differs from the configuration it would now get: a changed
    setting must not come back as an old table.

    Raises:
        ConfigError: naming the first such cell and option.
    """
    # where a fit wrote (the study's own choice, by cell) and how fast it ran: not what it trained
    ignored = ("ckpt_path", "threads", "trainer.logger.init_args.version", "trainer.logger.init_args.purge_step",
               "trainer.logger.init_args.save_dir", "trainer.logger.init_args.name")  # fmt: skip
    for cell in finished:
        asked = checked[setting_name(cell.setting)].config
        saved_file = cell.directory / "config.yaml"
        if not saved_file.is_file():
            raise ConfigError(f"{cell.directory} has no config.yaml to tell what it was trained with; use --fresh")
        expected = asked | {"seed_everything": cell.seed, "members": dict.fromkeys(("activations", "seeds", "run_dir"))}
        if cell.members:
            model = asked["model"]["init_args"] | {"activation": cell.activation, "activation_args": None}
            expected["model"] = asked["model"] | {"init_args": model}
        saved, wanted = flatten(yaml.safe_load(saved_file.read_text())), flatten(expected)
        changed = [k for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k) and k not in ignored]
        if changed:
            key = changed[0]
            more = f" (and {len(changed) - 1} more: {', '.join(map(option, changed[1:]))})" if changed[1:] else ""
            raise ConfigError(
                f"{cell.directory} was trained with {option(key)}={saved.get(key)!r}, not {wanted.get(key)!r}{more};"
                " give another --study_dir, or --fresh to train the study's runs again"
            )


def group_into_fits(cells: list[Cell], settings: list[dict[str, Any]], jobs: int, vectorize: bool) -> list[list[Cell]]:
    """The fits that train ``cells``: cells of one setting share a fit (never those of different settings), split
    evenly over the jobs; one fit per cell without ``vectorize`` or for a model without members."""
    fits = []
    for setting in settings:
        own = [cell for cell in cells if cell.setting == setting]
        together = vectorize and all(cell.members for cell in own)
        fits += split(own, max(1, jobs // len(settings)) if together else len(own))
    return fits


def split(cells: list[Cell], parts: int) -> list[list[Cell]]:
    """``cells`` in ``parts`` consecutive chunks whose sizes differ by at most one (no empty chunk).

    >>> [len(chunk) for chunk in split(list(range(7)), 3)]
    [3, 2, 2]
    """
    parts = min(parts, len(cells))
    if not parts:
        return []
    sizes = [len(cells) // parts + (i < len(cells) % parts) for i in range(parts)]
    ends = [sum(sizes[:i]) for i in range(parts + 1)]
    return [cells[a:b] for a, b in pairwise(ends)]


def fit_version(fit: list[Cell]) -> str:
    """The version (directory) of a fit of these cells: the same cells, the same directory, replaced when they
    rerun."""
    first = f"{layers_name(fit[0].activation)}-seed_{fit[0].seed}"
    if len(fit) == 1:
        return first
    digest = hashlib.sha1(json.dumps([[c.activation, c.seed] for c in fit]).encode()).hexdigest()[:8]
    return f"{first}-and-{len(fit) - 1}-more-{digest}"


def fit_arguments(fit_args: list[str], study_dir: Path, setting: dict[str, Any]) -> list[str]:
    """``fit`` with the user's arguments, the setting's options and the study's own, for a fit of the study."""
    # a string as typed (JSON's quotes would be part of it); anything else as JSON, which the parser reads as YAML
    options = [f"--{o}={v if isinstance(v, str) else json.dumps(v)}" for o, v in setting.items()]
    return ["fit", *fit_args, *options, f"--trainer.logger.init_args.save_dir={study_dir / 'fits'}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]  # fmt: skip


def where_it_trains(fit: list[Cell], study_dir: Path) -> list[str]:
    """The flags that make a fit train ``fit``'s cells into their run directories.

    Cells of an ActivationMLP are its members (``--members.*``) and the fit's own directory (config.yaml,
    checkpoints) is ``<study>/fits/<setting>/<its activation, or members>/<its version>``; the one cell of
    another model is that fit's run directory, ``<save_dir>/<name>/<version>``.
    """
    fits = study_dir / "fits" / setting_name(fit[0].setting)
    if not fit[0].members:
        (cell,) = fit
        return [f"--trainer.logger.init_args.save_dir={cell.directory.parent.parent}",
                f"--trainer.logger.init_args.name={cell.directory.parent.name}",
                f"--trainer.logger.init_args.version={cell.directory.name}",
                f"--seed_everything={cell.seed}"]  # fmt: skip
    entries: list[dict[str, Any]] = []
    for cell in fit:  # consecutive cells of one activation: one entry with their seeds
        if entries and entries[-1]["name"] == cell.activation:
            entries[-1]["seeds"].append(cell.seed)
        else:
            entries.append({"name": cell.activation, "seeds": [cell.seed]})
    runs = str(study_dir.resolve() / setting_name(fit[0].setting)).replace("{", "{{").replace("}", "}}")
    return [f"--trainer.logger.init_args.save_dir={fits}", f"--trainer.logger.init_args.version={fit_version(fit)}",
            f"--members.activations={json.dumps(entries)}",
            f"--members.run_dir={runs}/{{activation}}/seed_{{seed}}"]  # fmt: skip
