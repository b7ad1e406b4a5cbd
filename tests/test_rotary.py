"""The rotary core and the Rotary module: RoPE's identity, closed forms, timm parity, caching."""

import pytest
import torch

from vit_rope.layers.rope_embed import Rotary
from vit_rope.layers.rotary import (
    apply_rotary,
    axial_frequencies,
    grid_positions,
    mixed_frequencies_init,
    rotary_angles,
)
from vit_rope.models.encodings import RopeAxial, make_pos_embed

D = 32  # head dim


FAMILY_OF = {"1d": "rope1d", "axial": "rope_axial", "mixed": "rope_mixed", "spiral": "rope_spiral"}


def make_rotary(kind, head_dim, num_heads, depth, grid, num_prefix_tokens=1, **options):
    encoding = make_pos_embed(FAMILY_OF[kind], **options)
    return Rotary(encoding, head_dim, num_heads, depth, grid, num_prefix_tokens)


def rotate(x, pos, freqs, layout="interleaved"):
    t = rotary_angles(pos, freqs)
    return apply_rotary(x, t.cos(), t.sin(), layout)


def frequency_matrices():
    g = torch.Generator().manual_seed(0)
    return {
        "rope1d": (axial_frequencies(D, 10000.0, 1), 1),
        "rope_axial": (axial_frequencies(D, 100.0, 2), 2),
        "rope_mixed": (mixed_frequencies_init(1, 1, D, 10.0, generator=g)[0, 0], 2),
    }


@pytest.mark.parametrize("name", ["rope1d", "rope_axial", "rope_mixed"])
@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_score_depends_only_on_position_difference(name, layout):
    freqs, a = frequency_matrices()[name]
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 64, D, generator=g, dtype=torch.float64).unbind(0)
    pm, pn = torch.rand(2, 64, a, generator=g).mul(20).unbind(0)
    shift = torch.rand(1, a, generator=g) * 50
    freqs = freqs.double()

    def score(p1, p2):
        return (rotate(q, p1, freqs, layout) * rotate(k, p2, freqs, layout)).sum(-1)

    s0 = score(pm, pn)
    s1 = score(pm + shift, pn + shift)
    torch.testing.assert_close(s0, s1, atol=1e-4, rtol=1e-5)
    # and it does depend on the difference: a different offset for k changes the score
    assert (score(pm, pn + 1.0) - s0).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["rope1d", "rope_axial", "rope_mixed"])
def test_rotation_keeps_norms(name):
    freqs, a = frequency_matrices()[name]
    x = torch.randn(50, D)
    pos = torch.rand(50, a) * 30
    y = rotate(x, pos, freqs)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(x, y)


def test_rope1d_closed_form():
    """q*cos + rot(q)*sin, written out for the half layout (GPT-NeoX / LLaMA) and interleaved."""
    L = 12
    q = torch.randn(L, D, dtype=torch.float64)
    pos = torch.arange(L, dtype=torch.float64)[:, None]
    inv = 1.0 / 10000 ** (torch.arange(0, D, 2, dtype=torch.float64) / D)  # (d/2,)
    theta = pos * inv  # (L, d/2)
    # half layout: pair j = (j, j + d/2); rot(q) = [-q2, q1]
    cos, sin = torch.cat([theta.cos()] * 2, -1), torch.cat([theta.sin()] * 2, -1)
    rot = torch.cat([-q[:, D // 2 :], q[:, : D // 2]], -1)
    expected_half = q * cos + rot * sin
    # interleaved: pair j = (2j, 2j+1); rot(q) = [-q1, q0, -q3, q2, ...]
    cos_i, sin_i = theta.cos().repeat_interleave(2, -1), theta.sin().repeat_interleave(2, -1)
    rot_i = torch.stack([-q[:, 1::2], q[:, ::2]], -1).reshape(L, D)
    expected_inter = q * cos_i + rot_i * sin_i
    freqs = axial_frequencies(D, 10000.0, 1).double()
    torch.testing.assert_close(rotate(q, pos, freqs, "half"), expected_half, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(rotate(q, pos, freqs, "interleaved"), expected_inter, atol=1e-6, rtol=1e-6)


def test_axial_table_reduces_to_1d_when_one_axis_is_constant():
    """With y held at 0, the x pairs of axial RoPE (d) are 1D RoPE of width d/2, same base,
    and the y pairs do not rotate; and symmetrically for x held at 0."""
    base = 100.0
    F2 = axial_frequencies(D, base, 2)
    F1 = axial_frequencies(D // 2, base, 1)
    pos_x = grid_positions((1, 9))  # one row: y = 0, x = 0..8
    t2 = rotary_angles(pos_x, F2)
    t1 = rotary_angles(pos_x[:, :1], F1)
    torch.testing.assert_close(t2[:, : D // 4], t1)
    assert torch.count_nonzero(t2[:, D // 4 :]) == 0
    pos_y = grid_positions((9, 1))  # one column: x = 0, y = 0..8
    t2y = rotary_angles(pos_y, F2)
    torch.testing.assert_close(t2y[:, D // 4 :], rotary_angles(pos_y[:, 1:], F1))
    assert torch.count_nonzero(t2y[:, : D // 4]) == 0


def test_grid_positions_are_raster_order_xy():
    pos = grid_positions((2, 3))
    assert pos.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]
    norm = grid_positions((2, 2), "normalized")
    assert norm.tolist() == [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]


def test_timm_parity_axial_rotation():
    from timm.layers.pos_embed_sincos import RotaryEmbeddingCat, apply_rot_embed_cat

    H, W = 7, 5
    timm_rope = RotaryEmbeddingCat(dim=D, in_pixels=False, temperature=100, grid_indexing="xy", feat_shape=[H, W])
    emb = timm_rope.get_embed()  # (N, 2d)
    q = torch.randn(2, 3, H * W, D)
    expected = apply_rot_embed_cat(q, emb)
    ours = make_rotary("axial", D, 3, 1, (H, W), num_prefix_tokens=0)
    cos, sin, *_ = ours((H, W))
    got = apply_rotary(q, cos, sin)
    err = (got - expected).abs().max().item()
    assert err < 1e-5, err


def test_timm_parity_mixed_rotation():
    from timm.layers.pos_embed_sincos import RotaryEmbeddingMixed, apply_rot_embed_cat

    H, W, depth, heads = 6, 8, 2, 3
    torch.manual_seed(0)
    timm_rope = RotaryEmbeddingMixed(dim=D * heads, depth=depth, num_heads=heads, temperature=10.0, feat_shape=[H, W])
    emb = timm_rope.get_embed()  # (depth, heads, N, 2d)
    ours = make_rotary("mixed", D, heads, depth, (H, W), num_prefix_tokens=0)
    with torch.no_grad():
        ours.freqs.copy_(timm_rope.freqs.permute(1, 2, 3, 0))  # (2, L, h, d/2) -> (L, h, d/2, 2)
    angles = ours.angles((H, W))
    q = torch.randn(2, heads, H * W, D)
    for layer in range(depth):
        expected = apply_rot_embed_cat(q, emb[layer])
        cos, sin, *_ = ours.layer_tables(angles, layer)
        got = apply_rotary(q, cos, sin)
        assert (got - expected).abs().max().item() < 1e-5


def test_mixed_init_second_half_orthogonal():
    f = mixed_frequencies_init(3, 4, D)
    first, second = f[..., : D // 4, :], f[..., D // 4 :, :]
    torch.testing.assert_close((first * second).sum(-1), torch.zeros(3, 4, D // 4), atol=1e-6, rtol=0)
    mags = first.norm(dim=-1)[0, 0]
    torch.testing.assert_close(mags, 10.0 ** (-4 * torch.arange(D // 4) / D))


def test_prefix_tokens_are_not_rotated():
    rope = make_rotary("axial", D, 1, 1, (4, 4), num_prefix_tokens=2)
    cos, sin, *_ = rope((4, 4))
    q = torch.randn(1, 1, 18, D)
    out = apply_rotary(q, cos, sin)
    assert torch.equal(out[:, :, :2], q[:, :, :2])
    assert not torch.allclose(out[:, :, 3:], q[:, :, 3:])


def test_fixed_tables_are_cached_per_grid():
    rope = make_rotary("axial", D, 2, 3, (4, 4))
    small = rope((4, 4)).cos
    assert rope((4, 4)).cos is small  # the same tensor: computed once
    large = rope((6, 6)).cos
    assert large is not small and rope((6, 6)).cos is large
    assert rope((4, 4)).cos is small  # the first is still cached
    rope.set_strategy("ntk")
    assert rope((6, 6)).cos is not large  # a strategy is part of the key


@pytest.mark.parametrize("shape", [(6, 6), (5, 7)])
def test_normalized_coords_match_timm_dinov3(shape):
    """coords=normalized is DINOv3's RoPE: angle 2 pi x / period, periods base^(4j/d), patch centres
    in [-1, 1]; and its shift, jitter, rescale draws are DINOv3's, in its order, for the same seed."""
    from timm.layers.pos_embed_sincos import RotaryEmbeddingDinoV3, apply_rot_embed_cat

    H, W = shape
    q = torch.randn(2, 3, H * W, D)
    timm_rope = RotaryEmbeddingDinoV3(
        dim=D, temperature=100.0, feat_shape=[H, W], grid_indexing="xy", rotate_half=False,
        shift_coords=0.2, jitter_coords=1.5, rescale_coords=2.0,
    )  # fmt: skip
    ours = make_rotary("axial", D, 3, 1, (H, W), num_prefix_tokens=0, coords="normalized",
                       shift=0.2, jitter=1.5, rescale=2.0)  # fmt: skip
    for training in (False, True):
        timm_rope.train(training)
        ours.train(training)
        torch.manual_seed(3)
        expected = apply_rot_embed_cat(q, timm_rope.get_embed((H, W)))
        torch.manual_seed(3)
        cos, sin, *_ = ours((H, W))
        err = (apply_rotary(q, cos, sin) - expected).abs().max().item()
        assert err < 1e-4, (training, err)


def test_spiral_frequencies_keep_axial_magnitudes_along_spread_directions():
    from vit_rope.layers.rotary import spiral_frequencies

    heads = 3
    F = spiral_frequencies(heads, D, 100.0)  # (h, d/2, 2)
    axial = axial_frequencies(D, 100.0, 2).abs().sum(-1)  # magnitudes, d/4 per axis
    mags = F.norm(dim=-1)
    torch.testing.assert_close(mags[0, 0::2], axial[: D // 4])
    torch.testing.assert_close(mags[0, 1::2], axial[: D // 4])
    angles = torch.atan2(F[..., 1], F[..., 0])  # every pair of every head points elsewhere
    assert len({round(a, 4) for a in angles.flatten().tolist()}) == heads * D // 2


def test_spiral_rope_keeps_the_relative_position_identity():
    rope = make_rotary("spiral", D, 2, 1, (5, 6), num_prefix_tokens=0)
    cos, sin, *_ = rope((5, 6))  # (h, N, d/2)
    q, k = torch.randn(2, 1, D), torch.randn(2, 1, D)
    qs = apply_rotary(q.expand(2, 30, D), cos, sin)
    ks = apply_rotary(k.expand(2, 30, D), cos, sin)
    pos = grid_positions((5, 6))
    # tokens (0,0)-(1,2) and (2,1)-(3,3) have the same offset (+1, +2): same score per head
    idx = {tuple(p): i for i, p in enumerate(pos.long().tolist())}
    a = (qs[:, idx[(0, 0)]] * ks[:, idx[(1, 2)]]).sum(-1)
    b = (qs[:, idx[(2, 1)]] * ks[:, idx[(3, 3)]]).sum(-1)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind,groups", [("axial", 2), ("1d", 1), ("mixed", 2)])
def test_partial_rope_leaves_the_slowest_pairs_unrotated(kind, groups):
    grid = (4, 4) if kind != "1d" else (16,)
    rope = make_rotary(kind, D, 2, 1, grid, num_prefix_tokens=0, rotate_fraction=0.5)
    angles = rope.angles(grid)
    if kind == "mixed":
        angles = angles[0, 0]
    n = D // 2 // groups
    per_group = angles.unflatten(-1, (groups, n))  # (N, groups, n)
    assert per_group[..., n // 2 :].abs().max() == 0  # the slow half: angle 0, no rotation
    assert per_group[..., : n // 2].abs().amax(0).min() > 0  # every fast pair turns somewhere


def test_partial_rope_fraction_is_range_checked():
    from vit_rope.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pos_embed.rotate_fraction=0.0 is out of range; .* in \(0.0, 1.0\]"):
        RopeAxial(rotate_fraction=0.0)
