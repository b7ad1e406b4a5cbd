"""The fast rotary path of the model: the in-place rotation equals the plain formula, tables are
built once per grid, learned angles take one batched op, and torch.compile has no graph break."""

import pytest
import torch

import vit_rope.layers.rope_embed as rope_embed_module
from vit_rope import ENCODINGS, create_model
from vit_rope.layers.rotary import apply_rotary

TINY = dict(num_classes=5, img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)


def tiny(pos_embed, **kw):
    return create_model("vit_micro", pos_embed=pos_embed, **{**TINY, **kw})


# -- the fast rotation equals the formula -----------------------------------------------------------


def rot_interleaved(x):  # [x0, x1, x2, x3, ...] -> [-x1, x0, -x3, x2, ...]
    return torch.stack([-x[..., 1::2], x[..., ::2]], -1).flatten(-2)


def rot_half(x):  # [a, b] -> [-b, a]
    a, b = x.chunk(2, -1)
    return torch.cat([-b, a], -1)


def formula(x, theta, layout):
    """``x*cos + rot(x)*sin`` with the angles spread over the channels of their pairs."""
    if layout == "interleaved":
        cos, sin = theta.cos().repeat_interleave(2, -1), theta.sin().repeat_interleave(2, -1)
        return x * cos + rot_interleaved(x) * sin
    cos, sin = torch.cat([theta.cos()] * 2, -1), torch.cat([theta.sin()] * 2, -1)
    return x * cos + rot_half(x) * sin


@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("per_head", [False, True])  # fixed (N, d/2) tables, or learned (heads, N, d/2)
def test_inplace_rotation_of_qk_in_the_qkv_buffer_equals_the_formula(layout, per_head):
    B, N, h, d, C = 2, 7, 3, 8, 12
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, N, C, generator=g)
    weight = torch.randn(3 * h * d, C, generator=g, requires_grad=True)
    theta = (torch.randn(*((h,) if per_head else ()), N, d // 2, generator=g) * 3).requires_grad_(per_head)

    def plain():
        q, k, v = (x @ weight.T).view(B, N, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        return formula(q, theta, layout), formula(k, theta, layout), v

    def fast():  # what Attention does: q and k rotated together, written back into the projection
        qkv = (x @ weight.T).view(B, N, 3, h, d).permute(2, 0, 3, 1, 4)
        apply_rotary(qkv[:2], theta.cos(), theta.sin(), layout, inplace=True)
        return qkv.unbind(0)

    expected, got = plain(), fast()
    for e, o in zip(expected, got, strict=True):
        torch.testing.assert_close(o, e, atol=1e-5, rtol=1e-5)
    inputs = (weight, theta) if per_head else (weight,)
    loss = lambda out: sum((o * torch.linspace(-1, 1, d)).sum() for o in out)  # noqa: E731
    for ge, go in zip(torch.autograd.grad(loss(expected), inputs), torch.autograd.grad(loss(got), inputs), strict=True):
        torch.testing.assert_close(go, ge, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_rotation_of_low_precision_and_odd_strided_inputs(layout):
    g = torch.Generator().manual_seed(0)
    theta = torch.rand(5, 4, generator=g) * 10
    base = torch.randn(2, 5, 9, generator=g)
    x = base[..., 1:]  # odd storage offset: cannot be read as complex numbers in place
    torch.testing.assert_close(apply_rotary(x, theta.cos(), theta.sin(), layout), formula(x, theta, layout))
    x16 = x.bfloat16()
    out = apply_rotary(x16, theta.cos(), theta.sin(), layout)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), formula(x16.float(), theta, layout), atol=2e-2, rtol=1e-2)
    y = x16.clone()
    assert apply_rotary(y, theta.cos(), theta.sin(), layout, inplace=True) is y and torch.equal(y, out)


# -- tables: built once per grid, learned ones in one op ------------------------------------------


def test_model_builds_fixed_tables_once_per_grid(monkeypatch):
    built = []  # (grid, strategy) of every table the model computes
    original = rope_embed_module.Rotary.angles

    def counting(self, grid, alpha=None):
        built.append((tuple(grid), self.strategy))
        return original(self, grid, alpha)

    monkeypatch.setattr(rope_embed_module.Rotary, "angles", counting)
    model = tiny("rope_axial")
    small, large = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 48, 48)
    model(small)
    model(small)
    assert built == [((4, 4), "extrapolate")]  # one table for all layers and both forwards
    model(large)
    model(large)
    model(small)  # the first is still cached
    assert built == [((4, 4), "extrapolate"), ((6, 6), "extrapolate")]  # the new grid adds one
    with model.use_strategy("ntk"):
        model(large)
    assert built[2:] == [((6, 6), "ntk")]  # a strategy is part of the key


def test_learned_angles_are_one_batched_op_per_forward(monkeypatch):
    calls = []
    original = rope_embed_module.rotary_angles

    def counting(pos, freqs):
        calls.append(tuple(freqs.shape))
        return original(pos, freqs)

    monkeypatch.setattr(rope_embed_module, "rotary_angles", counting)
    model = tiny("rope_mixed", depth=3)
    model(torch.randn(2, 3, 32, 32))
    assert calls == [(3, 2, 16, 2)]  # all layers and heads at once: (depth, heads, d/2, 2)
    fixed = tiny("rope_axial", depth=3)
    calls.clear()
    fixed(torch.randn(2, 3, 32, 32))
    fixed(torch.randn(2, 3, 32, 32))
    assert calls == [(16, 2)]  # one (d/2, 2) table, then the cache


# -- torch.compile ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pos_embed", list(ENCODINGS))
def test_compiles_with_no_graph_break_at_two_sizes(pos_embed):
    """``fullgraph=True`` raises on any graph break; the second size forces a recompile (with
    dynamic shapes), where the rotary cache is bypassed. Dynamo's tracing is what can break, so
    the ``eager`` backend checks it without the cost of code generation."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = tiny(pos_embed, depth=1)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    for size in (32, 48):
        x = torch.randn(2, 3, size, size)
        torch.manual_seed(1)  # the same coordinate-augmentation draws (rope_dinov3) in both runs
        out = compiled(x)
        out.square().sum().backward()  # the traced backward too: the rotation writes into qkv
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        torch.manual_seed(1)
        ref = model(x)
        ref.square().sum().backward()
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        for n, p in model.named_parameters():
            torch.testing.assert_close(grads[n], p.grad, atol=1e-4, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")
        model.zero_grad()
    model.eval()
    with torch.inference_mode():  # no autograd graph: another trace of the rotation
        for size in (32, 48):
            x = torch.randn(2, 3, size, size)
            torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)
