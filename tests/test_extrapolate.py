"""The test-time strategies: identities at the training grid, NTK as a base change, YaRN's blend."""

import math

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


def test_yarn_blends_by_wavelength():
    F = axial_frequencies(D, 100.0, 2)
    extent = 8.0
    G = frequency_scale(F, Resize((2.0, 2.0), (extent, extent), "yarn"), None, yarn_alpha=1.0, yarn_beta=4.0)
    turns = extent * F.norm(dim=-1) / (2 * math.pi)
    gx = G.max(-1).values  # the axis each pair follows
    assert torch.allclose(gx[turns >= 4.0], torch.ones(1))  # short wavelengths extrapolate
    assert torch.allclose(gx[turns <= 1.0], torch.full((1,), 0.5))  # long wavelengths interpolate
