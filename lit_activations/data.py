"""The data: ``ArrayDataModule``, labelled arrays held in memory, and its datasets.

``PlaneDataModule`` draws a problem in the plane (circles, moons, spirals: the decision boundary can
be drawn); ``DigitsDataModule`` is scikit-learn's 8 × 8 digits, 64 features and 10 classes. Any other
``LightningDataModule`` works too: ``data_shape`` reads what the model needs to know from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Sampler, TensorDataset

from lit_activations.errors import ConfigError, check_seed


class ArrayDataModule(LightningDataModule):
    """A labelled dataset held in memory as arrays, of any number of features: subclasses write ``load``.

    ``load()`` returns the splits, ``{"train": (x, y), "val": (x, y), "test": (x, y)}``: x of shape
    (n, features…) and y the classes 0 … num_classes - 1 (``stratified_splits`` cuts one dataset into
    the three). The base class standardises with the training split's statistics, batches (a batch is
    a single indexing of the tensors, no per-sample collate; validation and test run in one batch
    each), shards over devices and predicts the test inputs.

    ``batch_size`` is the global batch. On several devices each rank takes its slice of every global
    batch (the data module shards itself, so the CLI's defaults set ``use_distributed_sampler=False``:
    Lightning's DistributedSampler would reshuffle and re-batch), which keeps the batch order, and so
    the experiment, the same whatever the device count.

    ``num_features`` (values per sample) and ``num_classes`` size the model: set them as class
    attributes when they are known before loading (the CLI then builds the model without loading the
    data first); left ``None``, they are read from the loaded arrays.

    Args:
        batch_size: training batch size over all devices together; must divide by their number.
        shuffle: reshuffle the training set each epoch (seeded by ``seed`` and the epoch); ``False``
            keeps the fixed order of the tutorial.
        standardize: scale each input feature to zero mean and unit variance, with statistics of the
            training split (a feature that never varies is only centred).
        seed: seed of the data (its draw or split, and the shuffling), apart from the global seed that
            drives initialisation.

    Example, scikit-learn's wine data as a data module (``--data=my_package.WineDataModule``)::

        class WineDataModule(ArrayDataModule):
            num_features, num_classes = 13, 3

            def load(self):
                x, y = sklearn.datasets.load_wine(return_X_y=True)
                return stratified_splits(x, y, val_fraction=0.2, test_fraction=0.2, seed=self.hparams.seed)
    """

    num_features: int | None = None
    num_classes: int | None = None
    shards_itself = True  # batches are cut per rank here: Lightning's distributed sampler must stay off

    def __init__(self, batch_size: int = 32, shuffle: bool = True, standardize: bool = False, seed: int = 0) -> None:
        super().__init__()
        if type(self).load is ArrayDataModule.load:  # the base class, or a subclass that loads nothing
            raise ConfigError(
                f"invalid data {type(self).__name__}: it loads no data; choose DigitsDataModule or a subclass that"
                " implements load()"
            )
        _check(batch_size >= 1, "batch_size", batch_size, "an integer >= 1")
        check_seed("data.seed", seed)
        self.save_hyperparameters()
        self._splits: dict[str, TensorDataset] = {}

    def load(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The splits ``train``, ``val`` and ``test``, each (inputs, classes): the one method to write."""
        raise NotImplementedError  # never reached: __init__ refuses a class without its own load

    def setup(self, stage: str) -> None:
        if self._splits:
            return
        splits = self.load()
        x_train = np.asarray(splits["train"][0])
        if self.hparams.standardize:
            self._mean, std = x_train.mean(0), x_train.std(0)
            self._std = np.where(std > 0, std, 1.0)
        else:
            self._mean, self._std = 0.0, 1.0
        self._splits = {
            name: TensorDataset(self.model_inputs(_features(x)), torch.as_tensor(np.asarray(y), dtype=torch.float32))
            for name, (x, y) in splits.items()
        }
        self._splits["predict"] = TensorDataset(self._predict_inputs())
        if self.num_features is None:
            self.num_features = math.prod(x_train.shape[1:])
        if self.num_classes is None:
            self.num_classes = max(2, int(max(np.max(y) for _, y in splits.values())) + 1)

    def model_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs as the model sees them: standardised with the training statistics if asked."""
        return ((x.double() - torch.as_tensor(self._mean)) / torch.as_tensor(self._std)).float()

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

    def _predict_inputs(self) -> torch.Tensor:
        """What ``predict`` runs on, as the model sees it: the test inputs."""
        return self._splits["test"].tensors[0]

    def _whole_split(self, name: str) -> DataLoader:
        n = len(self._splits[name])
        rank, world_size = self._rank_and_world_size()
        return _batch_loader(
            self._splits[name], BatchIndexSampler(n, n, shuffle=False, rank=rank, world_size=world_size)
        )

    def _rank_and_world_size(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


class PlaneDataModule(ArrayDataModule):
    """A classification problem in the plane, drawn from a seed: subclasses write ``draw``.

    ``draw(n_samples, seed)`` returns the points (n_samples, 2) and their classes (n_samples,); the
    base class splits them, stratified, into training and validation, draws an independent test set
    of the same size, and builds the grid over the plane that ``predict`` and the decision-boundary
    images use (``ArrayDataModule`` does the rest).

    Args:
        n_samples: points drawn for training and validation together.
        val_fraction: share of the points held out for validation, stratified by class. ``0`` trains
            on all points and validates on those same points, as the tutorial does.
        batch_size, shuffle, standardize, seed: see ``ArrayDataModule``.
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
        if type(self).draw is PlaneDataModule.draw:  # the base class, or a subclass that draws nothing
            raise ConfigError(
                f"invalid data {type(self).__name__}: it draws no points; choose CirclesDataModule, MoonsDataModule,"
                " SpiralsDataModule or a subclass that implements draw(n_samples, seed)"
            )
        super().__init__(batch_size=batch_size, shuffle=shuffle, standardize=standardize, seed=seed)
        _check(n_samples >= 2, "n_samples", n_samples, "an integer >= 2")
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

    def draw(self, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The points (n_samples, 2) and their classes 0 … num_classes - 1 (n_samples,), drawn from ``seed``:
        the one method to write."""
        raise NotImplementedError  # never reached: __init__ refuses a class without its own draw

    def load(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        hp = self.hparams
        x, y = self._drawn(hp.n_samples, hp.seed)
        if hp.val_fraction == 0:
            x_train, y_train, x_val, y_val = x, y, x, y
        else:
            from sklearn.model_selection import train_test_split  # here: scikit-learn adds 0.15 s to a start-up

            x_train, x_val, y_train, y_val = train_test_split(
                x, y, test_size=_validation_size(hp.n_samples, hp.val_fraction), stratify=y, random_state=hp.seed
            )
        # An independent draw of the same size, from a seed derived from (but never equal to) ``seed``.
        test = self._drawn(hp.n_samples, int(np.random.SeedSequence([hp.seed, 1]).generate_state(1)[0]))
        self.grid = self._plane_grid(x)  # raw coordinates, for plotting predictions
        self.train_points = (_features(x_train), torch.as_tensor(y_train, dtype=torch.float32))  # raw, for plots
        return {"train": (x_train, y_train), "val": (x_val, y_val), "test": test}

    def _predict_inputs(self) -> torch.Tensor:
        """The grid over the plane."""
        return self.model_inputs(self.grid)

    def _drawn(self, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.draw(n_samples, seed)
        if np.shape(x) != (n_samples, 2) or np.shape(y) != (n_samples,):
            raise ValueError(
                f"{type(self).__name__}.draw({n_samples}, seed) returned points of shape {np.shape(x)} and classes of"
                f" shape {np.shape(y)}; a PlaneDataModule draws ({n_samples}, 2) and ({n_samples},) (for data of"
                " other shapes, subclass ArrayDataModule)"
            )
        return x, y

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


class DigitsDataModule(ArrayDataModule):
    """scikit-learn's handwritten digits: 1,797 images of 8 × 8 pixels (64 features, 0–16) in 10 classes.

    It ships with scikit-learn (no download). The images are split, stratified by class, into
    training, validation and test sets; an MLP sees each image as its 64 pixel values. Not in the
    plane, so no decision boundary is drawn; ``predict`` gives the class probabilities of the test images.

    Args:
        val_fraction: share of the images held out for validation.
        test_fraction: share of the images held out for the test set.
        **kwargs: ``ArrayDataModule``'s options (``batch_size``, ``shuffle``, ``standardize``, ``seed``).
    """

    num_features = 64
    num_classes = 10
    SIZE = 1797  # images in scikit-learn's copy

    def __init__(self, val_fraction: float = 0.2, test_fraction: float = 0.2, **kwargs: Any) -> None:
        _check(0 < val_fraction < 1, "val_fraction", val_fraction, "a fraction in (0, 1)")
        _check(0 < test_fraction < 1 and val_fraction + test_fraction < 1, "test_fraction", test_fraction,
               f"a fraction in (0, 1) that leaves training images beside val_fraction {val_fraction}")  # fmt: skip
        super().__init__(**kwargs)
        n_train = self.SIZE - round(self.SIZE * test_fraction) - round(self.SIZE * val_fraction)
        batch_size = self.hparams.batch_size
        _check(batch_size <= n_train, "batch_size", batch_size, f"at most the {n_train} training images")

    def load(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        hp = self.hparams
        return stratified_splits(x, y, hp.val_fraction, hp.test_fraction, hp.seed)


def stratified_splits(
    x: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``x``, ``y`` cut into ``train``, ``val`` and ``test`` splits with the classes in the same proportions.

    >>> splits = stratified_splits(np.arange(20).reshape(10, 2), np.arange(10) % 2, 0.2, 0.2, seed=0)
    >>> {name: len(y) for name, (x, y) in splits.items()}
    {'train': 6, 'val': 2, 'test': 2}
    """
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=round(len(y) * test_fraction), stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=round(len(y) * val_fraction), stratify=y_rest, random_state=seed
    )
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def data_shape(data: LightningDataModule) -> tuple[int, int]:
    """(values per sample, classes) of any data module: what it states as ``num_features`` and ``num_classes``,
    else what its data show.

    A module that does not state them is set up (``prepare_data``, ``setup("fit")``) and read: an
    ``ArrayDataModule`` from its arrays, any other from its first training batch (the values of one
    sample; classes: the largest label in the batch + 1, at least 2, so state ``num_classes`` if a
    batch may miss the last class).
    """
    features, classes = getattr(data, "num_features", None), getattr(data, "num_classes", None)
    if features is not None and classes is not None:
        return int(features), int(classes)
    data.prepare_data()
    data.setup("fit")
    features, classes = getattr(data, "num_features", None), getattr(data, "num_classes", None)
    if features is None or classes is None:
        x, y = next(iter(data.train_dataloader()))[:2]
        features = math.prod(x.shape[1:]) if features is None else features
        classes = max(2, int(y.max()) + 1) if classes is None else classes
    return int(features), int(classes)


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
