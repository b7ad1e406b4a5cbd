"""Issue 23's four faults: partial RoPE ranks pairs by frequency, the window's reach and log-n's
token count follow the positions the model met, NTK scales the slowest rotating pair by 1/s."""

import math

import pytest
import torch

from tests.conftest import assert_names
from vit_rope import create_model, create_text_model
from vit_rope.errors import PositionConfigError
from vit_rope.extrapolate import Resize, ensemble_logits, frequency_scale
from vit_rope.layers.rope_embed import Rotary
from vit_rope.layers.rotary import axial_frequencies, rotary_angles
from vit_rope.models.encodings import make_pos_embed

D = 32  # head dim


def rotary(name, grid, heads=2, depth=2, **options):
    return Rotary(make_pos_embed(name, **options), D, heads, depth, grid, num_prefix_tokens=0)


# -- (a) partial RoPE ----------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_partial_spiral_rotates_the_fastest_pairs(fraction):
    """Spiral magnitudes fall across all pairs (two pairs per magnitude), so the pairs that rotate
    must be the fastest ones of each head, not the first of two consecutive groups."""
    rope = rotary("rope_spiral", (6, 6), rotate_fraction=fraction)
    angles = rope.angles((6, 6))  # (h, N, d/2)
    mags = rope.freqs.norm(dim=-1)  # (h, d/2)
    for h in range(angles.shape[0]):
        turns = angles[h].abs().amax(0) > 0  # (d/2,) the pairs that rotate somewhere
        assert int(turns.sum()) == 2 * math.ceil(fraction * D // 4)  # as many as axial RoPE keeps
        assert mags[h][turns].min() > mags[h][~turns].max()


@pytest.mark.parametrize("name", ["rope1d", "rope_axial", "rope_mixed", "rope_general"])
def test_partial_rope_of_the_other_families_is_unchanged(name):
    """For 1D, axial and mixed RoPE the fastest pairs are the first ``ceil(f n)`` of each group of
    ``n``: the rule they had; their angles are bit for bit those of that mask."""
    grid = (16,) if name == "rope1d" else (4, 4)
    groups = 1 if name == "rope1d" else 2
    torch.manual_seed(0)
    rope = rotary(name, grid, rotate_fraction=0.5)
    n = D // 2 // groups
    old_mask = (torch.arange(n) < math.ceil(0.5 * n)).float().repeat(groups)[:, None]  # the old rule
    pos = rope.positions(grid)
    assert torch.equal(rope.angles(grid), rotary_angles(pos, rope.freqs * old_mask))


# -- (b) the window's reach in position units ----------------------------------------------------


def reach_mask(grid, reach):
    ys, xs = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return ((ys[:, None] - ys[None]).abs() <= reach[1]) & ((xs[:, None] - xs[None]).abs() <= reach[0])


@pytest.mark.parametrize(
    "pos_embed,options,strategy,compressed",
    [
        ("rope_axial", {}, "extrapolate", False),
        ("rope_axial", {}, "ntk", False),
        ("rope_axial", {}, "interpolate", True),
        ("sincos", {}, "interpolate", True),
        ("ape", {}, "extrapolate", True),  # the table is resampled: positions compressed by 1/s
        ("rope_dinov3", {}, "extrapolate", True),  # normalized coordinates
    ],
)
def test_window_reach_is_counted_in_position_units(pos_embed, options, strategy, compressed):
    """Trained on 4 x 4 patches, tested on 16 x 12: where positions are compressed by 1/s per axis
    the model met offsets up to s (W_train - 1) patches, and the window keeps them."""
    model = create_model("vit_micro", pos_embed, num_classes=3, img_size=32, patch_size=8, pos_options=options)
    grid = (16, 12)
    with model.use_strategy(strategy, window=True):
        mask = model.attention_mask(grid, torch.device("cpu"))
    reach = (3 * 12 / 4, 3 * 16 / 4) if compressed else (3, 3)  # (x, y)
    assert mask is not None
    assert torch.equal(mask[1:, 1:], reach_mask(grid, reach))
    assert mask[0].all() and mask[:, 0].all()


def test_text_window_reach_under_interpolate():
    model = create_text_model("text_micro", vocab_size=8, max_len=16, num_classes=2)
    with model.use_strategy("interpolate", window=True):
        mask = model.attention_mask((64,), torch.device("cpu"))
    idx = torch.arange(64)
    assert mask is None or torch.equal(mask[1:, 1:], (idx[:, None] - idx[None]).abs() <= 60)
    with model.use_strategy("extrapolate", window=True):
        mask = model.attention_mask((64,), torch.device("cpu"))
    assert torch.equal(mask[1:, 1:], (idx[:, None] - idx[None]).abs() <= 15)


def test_ensemble_members_window_reaches_follow_their_own_scale():
    """Under ``ensemble`` each member scales positions by ``s^(-alpha)``, so its window reaches
    ``s^alpha (T - 1)`` patches: 3 (alpha 0), 6 (alpha 1/2) and 12 (alpha 1) on 4 -> 16 patches;
    the ensemble's mean log-probability is the mean of members run with those masks."""
    model = create_model("vit_micro", "rope_axial", num_classes=3, img_size=32, patch_size=8).eval()
    grid = (16, 16)
    with model.use_strategy("ensemble", window=True):
        reaches = [model.window_reach(grid, a) for a in (0.0, 0.5, 1.0)]
        masks = [model.attention_mask(grid, torch.device("cpu"), a) for a in (0.0, 0.5, 1.0)]
    assert reaches == [pytest.approx((3.0, 3.0)), pytest.approx((6.0, 6.0)), pytest.approx((12.0, 12.0))]
    for m, r in zip(masks, (3, 6, 12), strict=True):
        assert torch.equal(m[1:, 1:], reach_mask(grid, (r, r)))
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad(), model.use_strategy("ensemble", window=True):
        got = model(x)
    members = []
    with torch.no_grad(), model.use_strategy("ensemble", window=True):
        tokens, g = model.forward_tokens(x)
        for a in (0.0, 0.5, 1.0):
            members.append(model.forward_head(model.norm(model.forward_blocks(tokens, g, alpha=a))))
    torch.testing.assert_close(got, ensemble_logits(members), atol=1e-5, rtol=1e-5)


def test_window_under_calibrate_is_na_with_its_reason():
    model = create_model("vit_micro", "rope_axial", num_classes=3, img_size=32, patch_size=8)
    assert model.strategy_applies("calibrate") and not model.strategy_applies("calibrate", window=True)
    with pytest.raises(PositionConfigError) as err:
        model.set_strategy("calibrate", window=True)
    assert_names(str(err.value), "calibrate", "window", "without the window")


# -- (c) NTK with partial RoPE -------------------------------------------------------------------


@pytest.mark.parametrize("fraction,s", [(0.5, 2.0), (0.25, 3.0), (1.0, 2.0)])
def test_ntk_scales_the_slowest_rotating_pair_by_exactly_one_over_s(fraction, s):
    rope = rotary("rope_axial", (8, 8), rotate_fraction=fraction)
    n = D // 4  # pairs per axis
    k = math.ceil(fraction * n)  # rotating pairs per axis
    with torch.no_grad():
        rope.set_strategy("ntk")
        grid = (int(8 * s), int(8 * s))
        G = rope.effective_freqs(grid) / rope.freqs  # (d/2, 2), each pair on its axis
    gx = torch.stack([G[j, 0] for j in range(n)])
    assert gx[0].item() == pytest.approx(1.0)
    assert gx[k - 1].item() == pytest.approx(1 / s, rel=1e-5)
    # between them, the base change over the k rotating pairs: s^(-j/(k-1))
    expected = [s ** (-j / (k - 1)) for j in range(k)]
    assert gx[:k].tolist() == pytest.approx(expected, rel=1e-5)


def test_ntk_without_partial_rope_is_the_base_change():
    s = 2.0
    F = axial_frequencies(D, 100.0, 2)
    d_a = D // 2
    G = frequency_scale(F, Resize((s, s), (8.0, 8.0), "ntk"), 100.0)
    torch.testing.assert_close(F * G, axial_frequencies(D, 100.0 * s ** (d_a / (d_a - 2)), 2), atol=1e-7, rtol=1e-5)


# -- (d) log-n under the window ------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy,window,keys",
    [
        ("extrapolate", False, 32 * 32),
        ("extrapolate", True, 15 * 15),  # (2 * 7 + 1)^2: the keys a query sees within the reach
        ("interpolate", True, 32 * 32),  # reach 4 * 7 = 28: the window holds the whole grid
    ],
)
def test_logn_counts_the_keys_a_query_can_see(strategy, window, keys):
    model = create_model("vit_micro", "rope_axial", num_classes=3, img_size=64, patch_size=8)  # 8 x 8
    with model.use_strategy(strategy, logn=True, window=window):
        assert model.logit_scale((32, 32)) == pytest.approx(math.log(keys) / math.log(64))


def test_logn_under_the_window_for_text():
    model = create_text_model("text_micro", vocab_size=8, max_len=16, num_classes=2)
    with model.use_strategy("extrapolate", logn=True, window=True):
        assert model.logit_scale((128,)) == pytest.approx(math.log(31) / math.log(16))
