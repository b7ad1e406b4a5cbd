"""Local attention for extrapolation (eval.window): nothing changes at the training size, keys
outside the training extent get zero weight, prefix tokens see and are seen by all."""

import pytest
import torch

from tests.conftest import TINY, read_results, train_run
from vit_rope import create_model, create_text_model
from vit_rope.eval.diagnostics import attention_weights
from vit_rope.extrapolate import local_window_mask


def vit():
    torch.manual_seed(0)
    model = create_model("vit_micro", "rope_axial", num_classes=3, img_size=32, patch_size=8).eval()
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.qkv.weight.mul_(4)
    return model


def test_window_changes_nothing_at_the_training_size():
    model = vit()
    x = torch.randn(2, 3, 32, 32)
    text = create_text_model("text_micro", vocab_size=8, max_len=12, num_classes=2).eval()
    tokens = torch.randint(0, 8, (2, 12))
    with torch.no_grad():
        ref, ref_text = model(x), text(tokens)
        with model.use_strategy("interpolate", logn=True, window=True), text.use_strategy(window=True):
            assert torch.equal(model(x), ref) and torch.equal(text(tokens), ref_text)
            assert model.attention_mask((4, 4), x.device) is None


def test_window_changes_a_larger_grid():
    model = vit()
    x = torch.randn(2, 3, 96, 96)  # a 12 x 12 grid, trained on 4 x 4
    with torch.no_grad():
        ref = model(x)
        with model.use_strategy("extrapolate", window=True):
            assert not torch.allclose(model(x), ref, atol=1e-4)


def test_weights_outside_the_window_are_zero_and_prefix_tokens_see_everything():
    model = vit()
    seen = {}

    def probe(q, k, scale, attn_mask=None):
        seen["weights"] = attention_weights(q, k, scale, attn_mask)

    model.blocks[0].attn.probe = probe
    with torch.no_grad(), model.use_strategy("extrapolate", window=True):
        model(torch.randn(1, 3, 80, 64))  # a 10 x 8 grid
    w = seen["weights"][0, 0]  # (N, N) of head 0, class token first
    H, W = 10, 8
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    outside = ((ys[:, None] - ys[None]).abs() > 3) | ((xs[:, None] - xs[None]).abs() > 3)  # reach: 4 - 1
    grid_w = w[1:, 1:]
    assert grid_w[outside].abs().max() == 0
    assert (grid_w[~outside] > 0).all()
    assert (w[0] > 0).all() and (w[1:, 0] > 0).all()  # the class token sees all, all see it
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[0]))


def test_text_window_reaches_the_training_length():
    mask = local_window_mask((10,), (4,), num_prefix_tokens=1)
    idx = torch.arange(10)
    assert torch.equal(mask[1:, 1:], (idx[:, None] - idx[None]).abs() <= 3)
    assert mask[0].all() and mask[:, 0].all()


def test_eval_window_rows_in_results(tmp_path):
    train_run(
        tmp_path, *TINY, "trainer.max_epochs=1", "eval.resolutions=[32,64]", "eval.strategies=[extrapolate]",
        "eval.logn=[false]", "eval.window=[false,true]",
    )  # fmt: skip
    rows = {(m["resolution"], m.get("window", False)): m for m in read_results(tmp_path)["metrics"]}
    assert set(rows) == {(32, False), (32, True), (64, False), (64, True)}
    assert rows[(32, True)]["top1"] == rows[(32, False)]["top1"]  # computed once: the same cell
    assert rows[(64, True)]["retention"] == pytest.approx(rows[(64, True)]["top1"] / rows[(32, True)]["top1"], abs=1e-3)
