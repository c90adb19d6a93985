import numpy as np
import pytest
import torch
from lightning.pytorch import LightningDataModule
from sklearn.datasets import make_circles
from torch.utils.data import DataLoader, TensorDataset

from lit_activations.data import (
    BatchIndexSampler,
    CirclesDataModule,
    DigitsDataModule,
    MoonsDataModule,
    SpiralsDataModule,
    data_shape,
)


def prepared(**kwargs) -> CirclesDataModule:
    data = CirclesDataModule(**kwargs)
    data.setup("fit")
    return data


def tensors(data: CirclesDataModule, split: str) -> tuple[torch.Tensor, ...]:
    return data._splits[split].tensors


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [tuple(b) for b in loader]


def test_split_sizes_shapes_and_class_balance():
    data = prepared(n_samples=1000, val_fraction=0.2)
    (x_train, y_train), (x_val, y_val) = tensors(data, "train"), tensors(data, "val")
    assert x_train.shape == (800, 2) and y_train.shape == (800,) and x_val.shape == (200, 2)
    assert x_train.dtype == y_train.dtype == torch.float32
    assert y_train.mean().item() == 0.5 and y_val.mean().item() == 0.5  # stratified
    assert len(tensors(data, "test")[0]) == 1000


def test_train_and_validation_are_disjoint_and_cover_the_draw():
    data = prepared(n_samples=500, val_fraction=0.3, seed=3)
    train, val = tensors(data, "train")[0].numpy(), tensors(data, "val")[0].numpy()
    x, _ = make_circles(n_samples=500, noise=0.1, factor=0.5, random_state=3)
    assert not {tuple(p) for p in train} & {tuple(p) for p in val}
    np.testing.assert_allclose(np.sort(np.concatenate([train, val]), axis=0), np.sort(x, axis=0).astype(np.float32))


def test_test_set_is_an_independent_draw():
    data = prepared(val_fraction=0.2)
    test, train = tensors(data, "test")[0].numpy(), tensors(data, "train")[0].numpy()
    assert not {tuple(p) for p in test} & {tuple(p) for p in train}


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = prepared(seed=1), prepared(seed=1), prepared(seed=2)
    assert torch.equal(tensors(a, "train")[0], tensors(b, "train")[0])
    assert not torch.equal(tensors(a, "train")[0], tensors(c, "train")[0])


def test_validation_fraction_zero_validates_on_the_training_points_in_draw_order():
    data = prepared(n_samples=100, val_fraction=0.0, noise=0.05, factor=0.3, seed=7)
    x, y = make_circles(n_samples=100, noise=0.05, factor=0.3, random_state=7)
    for split in ("train", "val"):
        np.testing.assert_array_equal(tensors(data, split)[0].numpy(), x.astype(np.float32))
        np.testing.assert_array_equal(tensors(data, split)[1].numpy(), y)


def test_fixed_order_batches_slice_the_data_in_order():
    data = prepared(n_samples=100, val_fraction=0.0, batch_size=32, shuffle=False)
    x, _ = tensors(data, "train")
    got = batches(data.train_dataloader())
    assert [len(b[0]) for b in got] == [32, 32, 32, 4]
    assert torch.equal(torch.cat([b[0] for b in got]), x)


def test_shuffled_order_is_seeded_and_changes_each_epoch():
    loader = prepared(n_samples=100, val_fraction=0.0, batch_size=10, shuffle=True).train_dataloader()
    first = batches(loader)
    again = batches(loader)
    loader.sampler.set_epoch(1)
    second = batches(loader)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0][0], second[0][0])
    assert torch.equal(torch.cat([b[1] for b in second]).sort().values, torch.cat([b[1] for b in first]).sort().values)


def test_sampler_yields_every_index_once():
    sampler = BatchIndexSampler(10, 4, shuffle=True, seed=5)
    assert len(sampler) == 3
    assert sorted(torch.cat(list(sampler)).tolist()) == list(range(10))


def test_standardize_uses_training_statistics():
    data = prepared(standardize=True, val_fraction=0.2)
    x_train = tensors(data, "train")[0]
    np.testing.assert_allclose(x_train.mean(0).numpy(), 0, atol=1e-6)
    np.testing.assert_allclose(x_train.std(0, unbiased=False).numpy(), 1, atol=1e-5)


def test_validation_and_test_run_in_one_batch():
    data = prepared(n_samples=200, val_fraction=0.25)
    assert [len(b[0]) for b in data.val_dataloader()] == [50]
    assert [len(b[0]) for b in data.test_dataloader()] == [200]


def test_predict_grid_covers_the_input_plane():
    data = prepared(grid_size=20)
    x = torch.cat([tensors(data, s)[0] for s in ("train", "val")])
    (grid,) = next(iter(data.predict_dataloader()))
    assert grid.shape == (400, 2)
    assert (grid.min(0).values < x.min(0).values).all() and (grid.max(0).values > x.max(0).values).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_samples": 1}, r"invalid data.n_samples 1; expected an integer >= 2"),
        ({"noise": -0.1}, r"invalid data.noise -0.1; expected a number >= 0"),
        ({"factor": 0.0}, r"invalid data.factor 0.0; expected a number in \(0, 1\)"),
        ({"factor": 1.0}, r"invalid data.factor 1.0; expected a number in \(0, 1\)"),
        ({"val_fraction": 1.0}, r"invalid data.val_fraction 1.0; expected 0 .* or a fraction"),
        ({"val_fraction": -0.1}, r"invalid data.val_fraction -0.1"),
        ({"val_fraction": 0.001}, r"invalid data.val_fraction 0.001; .*at least 2 of the 1000 points"),
        ({"batch_size": 0}, r"invalid data.batch_size 0; expected an integer >= 1"),
        ({"grid_size": 1}, r"invalid data.grid_size 1; expected an integer >= 2"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CirclesDataModule(**kwargs)


def test_ranks_take_disjoint_slices_of_every_global_batch():
    full = list(BatchIndexSampler(100, 32, shuffle=True, seed=1))
    ranks = [list(BatchIndexSampler(100, 32, shuffle=True, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert [len(b) for b in ranks[0]] == [16, 16, 16, 2]
    for whole, first, second in zip(full, *ranks, strict=True):
        assert torch.equal(torch.cat([first, second]), whole)


def test_a_last_batch_smaller_than_the_ranks_is_dropped_everywhere():
    samplers = [BatchIndexSampler(97, 32, shuffle=False, rank=r, world_size=2) for r in (0, 1)]
    assert [len(s) for s in samplers] == [3, 3]
    assert [len(list(s)) for s in samplers] == [3, 3]


def test_batch_size_must_divide_across_processes():
    with pytest.raises(ValueError, match=r"invalid data.batch_size 33; expected a multiple of the number of processes"):
        CirclesDataModule(batch_size=33).check_world_size(2)


def test_spirals_are_balanced_arms_and_moons_are_two_classes():
    spirals = SpiralsDataModule(num_classes=4, n_samples=400, val_fraction=0.25)
    spirals.setup("fit")
    assert spirals.num_classes == 4
    assert torch.bincount(tensors(spirals, "train")[1].long()).tolist() == [75, 75, 75, 75]  # stratified, balanced
    moons = MoonsDataModule(n_samples=100)
    moons.setup("fit")
    assert moons.num_classes == 2 and set(tensors(moons, "train")[1].tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match=r"invalid data.num_classes 1; expected an integer >= 2"):
        SpiralsDataModule(num_classes=1)


def test_digits_are_scikit_learns_images_split_by_class_without_overlap():
    from sklearn.datasets import load_digits

    data = DigitsDataModule(seed=3)
    data.setup("fit")
    x_all, y_all = load_digits(return_X_y=True)
    splits = {name: tensors(data, name) for name in ("train", "val", "test")}
    assert {name: len(y) for name, (_, y) in splits.items()} == {"train": 1079, "val": 359, "test": 359}
    together = np.concatenate([x.numpy() for x, _ in splits.values()])
    np.testing.assert_array_equal(np.sort(together, axis=0), np.sort(x_all.astype(np.float32), axis=0))
    for _, y in splits.values():  # stratified: every class in every split, in the dataset's proportions ±1
        counts = torch.bincount(y.long(), minlength=10).numpy()
        expected = np.bincount(y_all, minlength=10) * len(y) / len(y_all)
        assert np.all(np.abs(counts - expected) <= 1)
    assert (data.num_features, data.num_classes) == (64, 10)
    (predicted,) = next(iter(data.predict_dataloader()))
    assert torch.equal(predicted, splits["test"][0])  # predict runs on the test images


def test_standardizing_digits_leaves_the_never_lit_pixels_at_zero():
    data = DigitsDataModule(standardize=True)
    data.setup("fit")
    x = tensors(data, "train")[0]
    varying = x.std(0) > 0
    assert 0 < varying.sum() < 64  # a border pixel of the 8 x 8 images is blank in every training image
    np.testing.assert_allclose(x.mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(x[:, varying].std(0, unbiased=False).numpy(), 1, atol=1e-4)
    assert torch.isfinite(tensors(data, "test")[0]).all()


class ListedData(LightningDataModule):
    """A data module of a user's own that states nothing: 3 × 4 values per sample, labels 0 … 4."""

    def setup(self, stage: str) -> None:
        self.x, self.y = torch.randn(20, 3, 4), torch.arange(20) % 5

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=10)


def test_data_shape_is_what_a_module_states_or_what_its_first_batch_shows():
    assert data_shape(CirclesDataModule()) == (2, 2) and data_shape(SpiralsDataModule(num_classes=4)) == (2, 4)
    assert data_shape(DigitsDataModule()) == (64, 10)
    assert data_shape(ListedData()) == (12, 5)


def test_a_plane_data_module_that_draws_other_shapes_says_so():
    class Cube(CirclesDataModule):
        def draw(self, n_samples, seed):
            return np.zeros((n_samples, 3)), np.zeros(n_samples)

    with pytest.raises(ValueError, match=r"Cube.draw\(1000, seed\) returned points of shape \(1000, 3\)"):
        Cube().setup("fit")
