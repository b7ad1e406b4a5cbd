"""The test-time strategies: identities at the training grid, NTK as a base change, YaRN's blend."""

import math

import pytest
import torch

from vit_rope.extrapolate import Resize, frequency_scale
from vit_rope.layers.rotary import axial_frequencies

D = 32  # head dim


def test_strategies_at_training_grid_are_identity_and_differ_beyond():
    F = axial_frequencies(D, 100.0, 2)
    for strategy in ("interpolate", "ntk", "yarn"):
        same = Resize((1.0, 1.0), (8.0, 8.0), strategy)
        assert torch.equal(frequency_scale(F, same, 100.0), torch.ones_like(F))
        bigger = Resize((2.0, 2.0), (8.0, 8.0), strategy)
        G = frequency_scale(F, bigger, 100.0)
        assert (G <= 1.0 + 1e-6).all() and (G < 1.0).any()


def test_ntk_equals_base_change():
    """NTK: base' = base * s^(d_a/(d_a-2)) gives exactly the scaled frequencies."""
    s = 2.0
    F = axial_frequencies(D, 100.0, 2)
    d_a = D // 2
    F_ntk = axial_frequencies(D, 100.0 * s ** (d_a / (d_a - 2)), 2)
    G = frequency_scale(F, Resize((s, s), (8.0, 8.0), "ntk"), 100.0)
    torch.testing.assert_close(F * G, F_ntk, atol=1e-7, rtol=1e-5)
    # the highest frequency is unchanged, the lowest is interpolated by exactly 1/s
    assert math.isclose(G[0, 0].item(), 1.0) and math.isclose(G[D // 4 - 1, 0].item(), 1 / s, rel_tol=1e-5)


def yarn_reference_multipliers(n_pairs: int, d_a: int, base: float, extent: float, s: float, alpha=1.0, beta=32.0):
    """YaRN's frequency multipliers written out from the paper's correction-dim formula, pair by pair."""

    def correction_dim(turns):  # the pair index that turns `turns` times over the extent
        return d_a * math.log(extent / (turns * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta)), 0)
    high = min(math.ceil(correction_dim(alpha)), n_pairs - 1)
    if high <= low:
        high = low + 1e-3
    out = []
    for j in range(n_pairs):
        w = 1.0 - min(max((j - low) / (high - low), 0.0), 1.0)  # 1 extrapolates, 0 interpolates
        out.append((1 - w) / s + w)
    return out


@pytest.mark.parametrize("grid,head_dim", [(8, 16), (8, 32), (14, 64)])
def test_yarn_keeps_the_fastest_pairs_and_interpolates_the_slowest(grid, head_dim):
    """On small grids no pair turns 32 times; YaRN must still keep its fastest pairs as trained
    (it used to scale every pair by about 1/s, which is plain position interpolation)."""
    s = 2.0
    F = axial_frequencies(head_dim, 100.0, 2)
    G = frequency_scale(F, Resize((s, s), (float(grid), float(grid)), "yarn"), 100.0)
    gx = G[: head_dim // 4, 0]  # the pairs that follow x
    assert gx[0].item() == pytest.approx(1.0)  # the fastest pair is kept
    assert gx[-1].item() == pytest.approx(1 / s)  # the slowest is interpolated
    expected = yarn_reference_multipliers(head_dim // 4, head_dim // 2, 100.0, grid, s)
    assert gx.tolist() == pytest.approx(expected, abs=1e-5)
    assert G[head_dim // 4 :, 1].tolist() == pytest.approx(expected, abs=1e-5)  # y pairs alike


def test_yarn_on_rope1d_matches_the_reference_formula():
    F = axial_frequencies(64, 10000.0, 1)
    G = frequency_scale(F, Resize((4.0,), (256.0,), "yarn"), 10000.0)
    assert G[:, 0].tolist() == pytest.approx(yarn_reference_multipliers(32, 64, 10000.0, 256.0, 4.0), abs=1e-5)


def test_yarn_temperature_is_one_rule_for_text_and_images():
    """0.1 ln s + 1 on q and k with s the token ratio: a 2x larger image (4x the tokens) gets the
    temperature of a 4x longer sequence, whether the image is encoded with rope1d or rope_axial."""
    from vit_rope.extrapolate import yarn_attention_factor

    axial = yarn_attention_factor(Resize((2.0, 2.0), (8.0, 8.0), "yarn"))
    raster = yarn_attention_factor(Resize((4.0,), (64.0,), "yarn"))
    assert axial == pytest.approx(raster) == pytest.approx((0.1 * math.log(4) + 1) ** 2)
    assert yarn_attention_factor(Resize((2.0, 2.0), (8.0, 8.0), "interpolate")) == 1.0


def test_logn_replaces_the_yarn_temperature_rather_than_multiplying_it():
    from vit_rope import create_model

    model = create_model("vit_micro", "rope_axial", num_classes=2, img_size=32, patch_size=4)
    grid = (16, 16)  # 2x per axis
    logn = math.log(256) / math.log(64)
    with model.use_strategy("yarn", logn=False):
        assert model.logit_scale(grid) == pytest.approx((0.1 * math.log(4) + 1) ** 2)
    with model.use_strategy("yarn", logn=True):
        assert model.logit_scale(grid) == pytest.approx(logn)
    with model.use_strategy("interpolate", logn=True):
        assert model.logit_scale(grid) == pytest.approx(logn)
