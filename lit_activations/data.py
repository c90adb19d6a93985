"""The data: ``PlaneDataModule``, a classification problem in the plane, and its datasets (circles, moons)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Sampler, TensorDataset

from lit_activations.errors import ConfigError


class PlaneDataModule(LightningDataModule):
    """A classification problem in the plane, drawn once and held in memory: subclasses write ``draw``.

    ``draw(n_samples, seed)`` returns the points (n_samples, 2) and their classes (n_samples,); the
    base class splits them, stratified, into training and validation, draws an independent test set
    of the same size, standardises, batches (a batch is a single indexing of the tensors, no
    per-sample collate; validation and test run in one batch each) and builds the grid over the
    plane that ``predict`` and the decision-boundary images use.

    ``batch_size`` is the global batch. On several devices each rank takes its slice of every
    global batch (the data module shards itself, so set ``use_distributed_sampler=False``: Lightning's
    DistributedSampler would reshuffle and re-batch), which keeps the batch order, and so the
    experiment, the same whatever the device count.

    Args:
        n_samples: points drawn for training and validation together.
        val_fraction: share of the points held out for validation, stratified by class. ``0`` trains
            on all points and validates on those same points, as the tutorial does.
        batch_size: training batch size over all devices together; must divide by their number.
        shuffle: reshuffle the training set each epoch (seeded by ``seed`` and the epoch); ``False``
            keeps the fixed order of the tutorial.
        standardize: scale inputs to zero mean and unit variance, with statistics of the training split.
        seed: seed of the data draw and split, apart from the global seed that drives initialisation.
        grid_size: points per side of the grid over the input plane used by ``predict``.

    Example, a new dataset in one class (``--data=my_package.RingsDataModule --data.radius=2``)::

        class RingsDataModule(PlaneDataModule):
            def __init__(self, radius: float = 1.0, **kwargs):
                super().__init__(**kwargs)  # the base class's options stay options of the command line
                self.radius = radius

            def draw(self, n_samples, seed):
                ...  # return points (n_samples, 2) and classes (n_samples,)
    """

    num_features = 2  # x and y of a point; linked to the model's input size by the CLI
    num_classes = 2  # linked to the model's number of classes; a subclass with more sets its own

    def __init__(
        self,
        n_samples: int = 1000,
        val_fraction: float = 0.2,
        batch_size: int = 32,
        shuffle: bool = True,
        standardize: bool = False,
        seed: int = 0,
        grid_size: int = 100,
    ) -> None:
        super().__init__()
        if type(self).draw is PlaneDataModule.draw:  # the base class, or a subclass that draws nothing
            raise ConfigError(
                f"invalid data {type(self).__name__}: it draws no points; choose CirclesDataModule, MoonsDataModule,"
                " SpiralsDataModule or a subclass that implements draw(n_samples, seed)"
            )
        _check(n_samples >= 2, "n_samples", n_samples, "an integer >= 2")
        _check(batch_size >= 1, "batch_size", batch_size, "an integer >= 1")
        _check(grid_size >= 2, "grid_size", grid_size, "an integer >= 2")
        n_val = _validation_size(n_samples, val_fraction)
        _check(
            0 <= val_fraction < 1 and (val_fraction == 0 or 2 <= n_val <= n_samples - 2),
            "val_fraction",
            val_fraction,
            f"0 (validate on the training points) or a fraction that leaves at least 2 of the"
            f" {n_samples} points on each side of the split",
        )
        n_train = n_samples - n_val if val_fraction else n_samples
        _check(batch_size <= n_train, "batch_size", batch_size, f"at most the {n_train} training points")
        self.save_hyperparameters()
        self._splits: dict[str, TensorDataset] = {}

    def draw(self, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The points (n_samples, 2) and their classes 0 … num_classes - 1 (n_samples,), drawn from ``seed``:
        the one method to write."""
        raise NotImplementedError  # never reached: __init__ refuses a class without its own draw

    def setup(self, stage: str) -> None:
        if self._splits:
            return
        # Imported here, not at the top: scikit-learn adds 0.15 s to every start-up, `--help` included.
        from sklearn.model_selection import train_test_split

        hp = self.hparams
        x, y = self.draw(hp.n_samples, hp.seed)
        if hp.val_fraction == 0:
            x_train, y_train, x_val, y_val = x, y, x, y
        else:
            x_train, x_val, y_train, y_val = train_test_split(
                x, y, test_size=_validation_size(hp.n_samples, hp.val_fraction), stratify=y, random_state=hp.seed
            )
        # An independent draw of the same size, from a seed derived from (but never equal to) ``seed``.
        x_test, y_test = self.draw(hp.n_samples, int(np.random.SeedSequence([hp.seed, 1]).generate_state(1)[0]))

        self._mean, self._std = (x_train.mean(0), x_train.std(0)) if hp.standardize else (0.0, 1.0)
        self.grid = self._plane_grid(x)  # raw coordinates, for plotting predictions
        self.train_points = (_features(x_train), torch.as_tensor(y_train, dtype=torch.float32))  # raw, for plots
        self._splits = {
            name: TensorDataset(self.model_inputs(_features(xs)), torch.as_tensor(ys, dtype=torch.float32))
            for name, (xs, ys) in {
                "train": (x_train, y_train),
                "val": (x_val, y_val),
                "test": (x_test, y_test),
            }.items()
        }
        self._splits["predict"] = TensorDataset(self.model_inputs(self.grid))

    def model_inputs(self, points: torch.Tensor) -> torch.Tensor:
        """Points of the plane as the model sees them: standardised with the training statistics if asked."""
        return ((points.double() - torch.as_tensor(self._mean)) / torch.as_tensor(self._std)).float()

    def check_world_size(self, world_size: int) -> None:
        """Raise if the global batch cannot be split evenly across ``world_size`` processes."""
        _check(
            self.hparams.batch_size % world_size == 0,
            "batch_size",
            self.hparams.batch_size,
            f"a multiple of the number of processes ({world_size}): it is the global batch, split evenly across them",
        )

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._rank_and_world_size()
        self.check_world_size(world_size)
        hp = self.hparams
        sampler = BatchIndexSampler(
            len(self._splits["train"]),
            hp.batch_size,
            shuffle=hp.shuffle,
            seed=hp.seed,
            rank=rank,
            world_size=world_size,
        )
        return _batch_loader(self._splits["train"], sampler)

    def val_dataloader(self) -> DataLoader:
        return self._whole_split("val")

    def test_dataloader(self) -> DataLoader:
        return self._whole_split("test")

    def predict_dataloader(self) -> DataLoader:
        return self._whole_split("predict")

    def _whole_split(self, name: str) -> DataLoader:
        n = len(self._splits[name])
        rank, world_size = self._rank_and_world_size()
        return _batch_loader(
            self._splits[name], BatchIndexSampler(n, n, shuffle=False, rank=rank, world_size=world_size)
        )

    def _rank_and_world_size(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _plane_grid(self, x: np.ndarray) -> torch.Tensor:
        """A ``grid_size``² grid covering the data with a 10% margin, as (grid_size², 2) points."""
        low, high = x.min(0), x.max(0)
        low, high = low - 0.1 * (high - low), high + 0.1 * (high - low)
        n = self.hparams.grid_size
        xx, yy = np.meshgrid(np.linspace(low[0], high[0], n), np.linspace(low[1], high[1], n))
        return _features(np.stack([xx.ravel(), yy.ravel()], axis=1))


class CirclesDataModule(PlaneDataModule):
    """Two noisy concentric circles (scikit-learn's ``make_circles``); class 1 is the inner circle.

    Args:
        noise: standard deviation of the Gaussian noise added to the points (>= 0).
        factor: inner radius / outer radius, in (0, 1).
        **kwargs: ``PlaneDataModule``'s options (``n_samples``, ``val_fraction``, ``batch_size``, ...).
    """

    def __init__(self, noise: float = 0.1, factor: float = 0.5, **kwargs: Any) -> None:
        _check(noise >= 0, "noise", noise, "a number >= 0")
        _check(0 < factor < 1, "factor", factor, "a number in (0, 1)")
        super().__init__(**kwargs)

    def draw(self, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import make_circles

        hp = self.hparams
        return make_circles(n_samples=n_samples, noise=hp.noise, factor=hp.factor, random_state=seed)


class MoonsDataModule(PlaneDataModule):
    """Two interleaving half circles (scikit-learn's ``make_moons``): not separable by a line either.

    Args:
        noise: standard deviation of the Gaussian noise added to the points (>= 0).
        **kwargs: ``PlaneDataModule``'s options.
    """

    def __init__(self, noise: float = 0.1, **kwargs: Any) -> None:
        _check(noise >= 0, "noise", noise, "a number >= 0")
        super().__init__(**kwargs)

    def draw(self, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import make_moons

        return make_moons(n_samples=n_samples, noise=self.hparams.noise, random_state=seed)


class SpiralsDataModule(PlaneDataModule):
    """``num_classes`` interleaved spiral arms, one class each: a multi-class problem for a softmax head.

    Arm c's points are at radius r ∈ [0, 1] and angle 2π (c / num_classes + turns · r), plus Gaussian
    noise; the arms are balanced.

    Args:
        num_classes: arms, and classes (>= 2).
        turns: how far each arm winds, in turns (> 0).
        noise: standard deviation of the Gaussian noise added to the points (>= 0).
        **kwargs: ``PlaneDataModule``'s options.
    """

    def __init__(self, num_classes: int = 3, turns: float = 0.75, noise: float = 0.05, **kwargs: Any) -> None:
        _check(num_classes >= 2, "num_classes", num_classes, "an integer >= 2")
        _check(turns > 0, "turns", turns, "a number > 0")
        _check(noise >= 0, "noise", noise, "a number >= 0")
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def draw(self, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        hp = self.hparams
        y = np.arange(n_samples) % hp.num_classes
        radius = rng.uniform(0.05, 1.0, n_samples)
        angle = 2 * np.pi * (y / hp.num_classes + hp.turns * radius)
        x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        return x + rng.normal(0, hp.noise, x.shape), y


class BatchIndexSampler(Sampler[torch.Tensor]):
    """Yields one index tensor per batch, so a DataLoader fetches a batch with a single tensor indexing.

    With ``shuffle`` the order is a permutation seeded by ``seed`` and the epoch (set by Lightning
    through ``set_epoch``), so runs are reproducible and each epoch differs. With ``world_size`` > 1,
    every global batch of ``batch_size`` indices is cut into ``world_size`` contiguous slices and
    this rank yields its own; a last global batch with fewer indices than ranks is dropped, so every
    rank runs the same number of steps.
    """

    def __init__(
        self, n: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator, so the order is drawn at the first batch: when Lightning resumes a run it
        # creates the iterator first and calls set_epoch after, which would otherwise be too late.
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.n)
        batches = order.split(self.batch_size)
        yield from (batch.tensor_split(self.world_size)[self.rank] for batch in batches[: len(self)])

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (rest >= self.world_size)


def _batch_loader(dataset: TensorDataset, sampler: BatchIndexSampler) -> DataLoader:
    # batch_size=None turns off automatic batching: each index tensor from the sampler fetches a whole batch.
    return DataLoader(dataset, sampler=sampler, batch_size=None)


def _features(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32)


def _validation_size(n_samples: int, val_fraction: float) -> int:
    return round(n_samples * val_fraction)


def _check(ok: bool, name: str, value: object, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"invalid data.{name} {value!r}; expected {accepted}")
