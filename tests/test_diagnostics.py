"""Attention diagnostics: the probe leaves outputs alone, the entropy and distance of attention
maps whose values are known, and the ``attention`` key of results.json from a real run."""

import csv
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import TINY, read_results, train_run
from vit_rope import create_model, create_text_model
from vit_rope.eval.diagnostics import (
    AttentionRecorder,
    attention_diagnostics,
    attention_layers,
    attention_weights,
    record_attention,
)
from vit_rope.eval.results import load_results

DIMS = dict(embed_dim=32, depth=2, num_heads=2)


def tiny_vit(pos_embed="rope_axial", **kw):
    torch.manual_seed(0)
    args = {"num_classes": 4, "img_size": 32, "patch_size": 4, **DIMS, **kw}
    return create_model("vit_micro", pos_embed=pos_embed, **args).eval()


def mean_grid_distance(h: int, w: int) -> float:
    """Mean Euclidean distance between two cells of an h x w grid, over all ordered pairs."""
    cells = list(itertools.product(range(h), range(w)))
    return sum(math.hypot(a[0] - b[0], a[1] - b[1]) for a in cells for b in cells) / len(cells) ** 2


def zero_attention(model):
    """q = k = 0 in every layer: every query attends uniformly to every key."""
    for layer in attention_layers(model):
        with torch.no_grad():
            layer.qkv.weight.zero_()
            layer.qkv.bias.zero_()


@pytest.mark.parametrize("pos_embed,strategy,logn", [("rope_axial", "yarn", True), ("rope_mixed", "interpolate", False), ("ape", "extrapolate", False)])  # fmt: skip
def test_recorder_leaves_outputs_unchanged(pos_embed, strategy, logn):
    model = tiny_vit(pos_embed)
    x = torch.randn(3, 3, 48, 32)  # larger and non-square grid: the strategy and logit scale act
    with model.use_strategy(strategy, logn=logn):
        plain = model(x)
        with record_attention(model) as rec:
            recorded = model(x)
        again = model(x)
    assert torch.equal(plain, recorded) and torch.equal(plain, again)
    assert rec.grid == (12, 8)
    summary = rec.summary()
    assert len(summary["entropy"]) == len(summary["distance"]) == DIMS["depth"]
    assert all(0.0 <= e <= 1.0 for e in summary["entropy"])
    assert all(0.0 <= d <= math.hypot(11, 7) for d in summary["distance"])
    # everything is undone: no probe, the class's own embed
    assert all(layer.probe is None for layer in attention_layers(model)) and "embed" not in vars(model)


def test_probe_weights_are_the_weights_sdpa_applies():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 2, 7, 8).unbind(0)
    mask = torch.rand(7, 7) > 0.3
    mask.fill_diagonal_(True)
    for scale, m in ((0.35, None), (1.7, None), (0.35, mask)):
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=scale)
        assert torch.allclose(attention_weights(q, k, scale, m) @ v, expected, atol=1e-5)


@pytest.mark.parametrize("size", [(32, 32), (48, 24)])
def test_uniform_attention_has_entropy_one_and_the_mean_grid_distance(size):
    model = tiny_vit()
    zero_attention(model)
    with record_attention(model) as rec:
        model(torch.randn(2, 3, *size))
    summary = rec.summary()
    h, w = size[0] // 4, size[1] // 4
    assert summary["entropy"] == pytest.approx([1.0] * DIMS["depth"], abs=1e-5)
    assert summary["distance"] == pytest.approx([mean_grid_distance(h, w)] * DIMS["depth"], rel=1e-5)


def test_uniform_attention_on_text_has_the_mean_token_distance():
    torch.manual_seed(0)
    model = create_text_model("text_micro", vocab_size=16, max_len=12, num_classes=3, pos_embed="rope1d", **DIMS)
    zero_attention(model)
    L = 20
    with record_attention(model.eval()) as rec:
        model(torch.randint(0, 16, (2, L)))
    expected = sum(abs(i - j) for i in range(L) for j in range(L)) / L**2
    assert rec.grid == (L,)
    assert rec.summary()["entropy"] == pytest.approx([1.0] * DIMS["depth"], abs=1e-5)
    assert rec.summary()["distance"] == pytest.approx([expected] * DIMS["depth"], rel=1e-5)


def test_rope_self_attention_has_distance_zero_and_entropy_zero():
    """q = k = the same large vector at every token: after rotation q_i . k_j is largest at
    i = j (every rotation pair adds |c|^2 cos(angle_i - angle_j)), so each query attends to itself."""
    model = tiny_vit(class_token=False, global_pool="avg")  # no unrotated prefix key to tie with
    dim = DIMS["embed_dim"]
    for layer in attention_layers(model):
        with torch.no_grad():
            layer.qkv.weight.zero_()
            layer.qkv.bias.zero_()
            layer.qkv.bias[: 2 * dim] = 100.0  # q and k parts
    with record_attention(model) as rec:
        model(torch.randn(2, 3, 48, 48))
    summary = rec.summary()
    assert max(summary["distance"]) < 1e-4 and max(summary["entropy"]) < 1e-4


def _probe_with_weights(rec: AttentionRecorder, weights: torch.Tensor) -> None:
    """Give the recorder's probe, as the attention layer does, queries and keys whose softmax is
    ``weights`` ``(B, h, N, N)``: zero logits plus an additive mask of the weights' logarithm."""
    zeros = torch.zeros(*weights.shape[:3], 4)
    rec.probe(0, zeros, zeros, 1.0, weights.log())


def test_next_token_attention_on_a_grid_and_prefix_keys():
    """Constructed weights: each grid query puts half its mass on the CLS key and half on the
    next grid token in raster order (the last one on itself). Distance counts grid keys only,
    renormalised, so it is the raster step's length: 1 within a row, back to the next row's
    start at a row's end; entropy is log 2 / log N."""
    h, w, B, heads = 3, 5, 2, 2
    G, N = h * w, h * w + 1
    weights = torch.zeros(B, heads, N, N)
    weights[:, :, 0, :] = 1.0 / N  # the CLS query: not a grid query, not counted
    for i in range(G):
        weights[:, :, 1 + i, 0] = 0.5
        weights[:, :, 1 + i, 1 + min(i + 1, G - 1)] = 0.5
    rec = AttentionRecorder(num_layers=1, num_prefix_tokens=1)
    rec.grid = (h, w)
    _probe_with_weights(rec, weights)
    cells = [divmod(i, w) for i in range(G)]
    steps = [math.dist(cells[i], cells[min(i + 1, G - 1)]) for i in range(G)]
    assert rec.summary()["distance"] == pytest.approx([sum(steps) / G], rel=1e-6)
    assert rec.summary()["entropy"] == pytest.approx([math.log(2) / math.log(N)], rel=1e-6)
    # the same weights read as a 15-token sequence: every step is 1 but the last
    rec = AttentionRecorder(num_layers=1, num_prefix_tokens=1)
    _probe_with_weights(rec, weights)
    assert rec.summary()["distance"] == pytest.approx([(G - 1) / G], rel=1e-6)


def test_diagnostics_use_only_the_first_images():
    model = tiny_vit()
    x = torch.randn(5, 3, 32, 32)
    batches = [(x[:2], None), (x[2:], None)]
    first3 = attention_diagnostics(model, batches, 3)
    with record_attention(model) as rec:
        model(x[:3])
    expected = rec.summary()
    for key in ("entropy", "distance"):
        assert first3[key] == pytest.approx(expected[key], rel=1e-5)
    assert attention_diagnostics(model, batches, 0) is None
    assert attention_diagnostics(model, [], 4) is None
    assert model.training is False


def test_nested_recorders_are_refused():
    model = tiny_vit()
    with record_attention(model), pytest.raises(RuntimeError, match="already active"):
        with record_attention(model):
            pass
    assert all(layer.probe is None for layer in attention_layers(model))


def test_results_json_carries_attention_per_layer(tmp_path):
    """A tiny training run evaluated at 32 and 64 px: every evaluated cell has one entropy and
    one distance per layer, n/a cells have null; the report has the layer means."""
    train_run(
        tmp_path, *TINY, "pos_embed=rope_mixed", "trainer.max_epochs=1", "eval.resolutions=[32,64]",
        "eval.strategies=[extrapolate,ntk,yarn]",
    )  # fmt: skip
    results = read_results(tmp_path)
    load_results(tmp_path)  # the schema check accepts the key
    depth = 2  # tests/conftest.py TINY
    evaluated = [m for m in results["metrics"] if m["top1"] is not None]
    na = [m for m in results["metrics"] if m["top1"] is None]
    assert evaluated and na and all(m["strategy"] == "ntk" for m in na)  # NTK needs a base: n/a for rope_mixed
    assert all(m["attention"] is None for m in na)
    for m in evaluated:
        att = m["attention"]
        assert len(att["entropy"]) == len(att["distance"]) == depth
        assert all(0.0 <= e <= 1.0 for e in att["entropy"])
        side = m["resolution"] // 4
        assert all(0.0 < d <= math.hypot(side - 1, side - 1) for d in att["distance"])
    with open(tmp_path / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        filled = r["attn_entropy"] != "" and r["attn_distance"] != ""
        assert filled == (r["top1"] != "")
        if filled:
            assert 0.0 <= float(r["attn_entropy"]) <= 1.0
