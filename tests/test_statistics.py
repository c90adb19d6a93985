import math

import numpy as np
import pytest
import torch
from torch import nn

from lit_activations import statistics as stats
from lit_activations.activations import ACTIVATIONS, create_activation
from lit_activations.stacked import MemberActivation


def test_units_are_dimension_2_after_the_members_and_the_rest_are_samples():
    slopes = torch.zeros(2, 2, 3, 4, 4)  # (K, B, C, H, W): 2 members, 3 units, 2·4·4 = 32 samples each
    slopes[:, :, 1] = 1.0
    slopes[1, :, 2] = 0.3
    counts = stats.small_slope_counts(slopes, thresholds=torch.tensor([0.5, 0.2]))  # each member its own threshold
    assert counts.tolist() == [[32, 0, 32], [32, 0, 0]]


def test_gradient_norms_per_member_equal_each_members_own():
    grads = [torch.randn(3, 4, 5), torch.randn(3, 4)]  # 3 members stacked on dim 0
    per_member = stats.gradient_norms(grads, p=1, num_members=3)
    expected = torch.tensor([[g[k].abs().sum().item() for k in range(3)] for g in grads])
    torch.testing.assert_close(per_member, expected)
    one = stats.gradient_norms(grads, p=2)  # one member: the whole tensor
    torch.testing.assert_close(one[:, 0], torch.stack([g.norm() for g in grads]))


def test_vanishing_ratio_when_a_layer_has_no_gradient():
    assert stats.vanishing_ratio(0.0, 1e-3) == -math.inf
    assert math.isnan(stats.vanishing_ratio(1e-3, 0.0))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_measured_max_slope_equals_the_registrys_closed_form(name):
    (measured,) = stats.max_slopes(create_activation(name), n_units=3).tolist()
    assert measured == pytest.approx(ACTIVATIONS[name].max_slope, rel=1e-3)


def test_max_slope_follows_the_activations_parameters():
    assert stats.max_slopes(nn.ELU(alpha=2.0), n_units=1).item() == pytest.approx(2.0, rel=1e-3)
    assert stats.max_slopes(nn.LeakyReLU(negative_slope=3.0), n_units=1).item() == pytest.approx(3.0)


def test_max_slope_of_each_member_of_a_stacked_activation():
    blocks = MemberActivation([(nn.Sigmoid(), 2), (nn.ELU(alpha=2.0), 1)])
    measured = stats.max_slopes(blocks, n_units=4, num_members=3)
    torch.testing.assert_close(measured, torch.tensor([0.25, 0.25, 2.0]), rtol=1e-3, atol=0)


def test_local_slopes_inside_inference_mode_and_per_channel_prelu():
    prelu = nn.PReLU(num_parameters=2, init=0.1)
    with torch.inference_mode():
        z = torch.tensor([[-1.0, 2.0], [3.0, -4.0]])
        torch.testing.assert_close(stats.local_slopes(prelu, z), torch.tensor([[0.1, 1.0], [1.0, 0.1]]))


def test_fractions_and_moments_from_counts():
    assert stats.saturation_fraction([0, 0, 0], n_samples=10) == 0.0
    assert stats.dead_unit_fraction([10, 10, 3], n_samples=10) == pytest.approx(2 / 3)
    mean, std = stats.mean_and_std(total=4.0, total_sq=8.0, count=2)  # values 2 and 2
    assert (mean, std) == (2.0, 0.0)


def test_histograms_of_each_member_equal_numpys():
    scales = torch.tensor([[1.0], [3.0], [0.0], [1e-3]])  # the third member's values are all equal
    values = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0)) * scales
    counts, edges = stats.histograms(values, bins=30)
    for k in range(4):
        expected_counts, expected_edges = np.histogram(values[k].double().numpy(), bins=30)
        np.testing.assert_array_equal(counts[k].numpy(), expected_counts)
        np.testing.assert_allclose(edges[k].numpy(), expected_edges, rtol=1e-12)


KNOWN = [nn.ReLU(), nn.LeakyReLU(), nn.LeakyReLU(0.2), nn.ReLU6(), nn.Hardtanh(-2.0, 3.0), nn.Sigmoid(), nn.Tanh(),
         nn.Identity()]  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [1, 7, 17, 75_000])  # vectorised loops and their scalar tails
def test_known_slopes_equal_autograds_bit_for_bit(dtype, size):
    """The probe pass takes these formulas for autograd's: a slope that moved by one ulp could cross the threshold
    and change a count, so they must be autograd's own, on kinks, signed zeros, infinities and NaN too."""
    special = torch.tensor([0.0, -0.0, 6.0, -6.0, -2.0, 3.0, 1e-30, -1e-30, 88.7, -88.7, math.inf, -math.inf, math.nan])
    z = torch.cat([special, torch.randn(size, generator=torch.Generator().manual_seed(size)) * 5]).to(dtype)
    for module in KNOWN:
        expected = stats.local_slopes(module, z)
        if isinstance(module, nn.Hardtanh):  # torch's own hardtanh_backward gives a NaN 1 in its scalar loop, 0 in
            expected[z.isnan()] = 0.0  # its vectorised one; known_slopes gives 0 (no NaN reaches a probe pass)
        for output in (None, module(z)):
            got = stats.known_slopes(module, z, output)
            assert got.dtype == dtype and torch.equal(got.nan_to_num(-7.0), expected.nan_to_num(-7.0)), module


def test_known_slopes_leave_other_modules_and_dtypes_to_autograd():
    class MyReLU(nn.ReLU):  # a subclass may change forward
        pass

    z = torch.randn(10)
    for module in (nn.ELU(), nn.GELU(), nn.PReLU(), MyReLU(), nn.ReLU(inplace=True)):
        assert stats.known_slopes(module, z) is None
    assert stats.known_slopes(nn.ReLU(), z.bfloat16()) is None


def test_a_stacked_activations_slopes_block_by_block_equal_autograd_on_the_whole():
    from lit_activations.monitor import slopes_of

    blocks = [(nn.Sigmoid(), 2), (nn.ELU(), 1), (nn.Tanh(), 3), (nn.PReLU(5), 1), (nn.LeakyReLU(0.3), 2)]
    stacked = MemberActivation(blocks)  # ELU and PReLU by autograd, block by block; the rest by formula
    z = torch.randn(stacked.num_members, 64, 5) * 4
    assert torch.equal(slopes_of(stacked, z, stacked(z)), stats.local_slopes(stacked, z))
