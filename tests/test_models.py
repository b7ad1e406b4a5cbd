"""The ViT and text models: every encoding runs, strategies, errors, parity with timm."""

import pytest
import torch

import vit_rope
from tests.conftest import assert_names
from vit_rope import ENCODINGS, STRATEGIES, PositionConfigError, create_model, create_text_model, from_timm

TINY = dict(embed_dim=64, depth=2, num_heads=2)


def tiny(pos_embed, **kw):
    args = {"num_classes": 5, "img_size": 32, "patch_size": 8, **TINY, **kw}
    return create_model("vit_micro", pos_embed=pos_embed, **args)


@pytest.mark.parametrize("pos_embed", list(ENCODINGS))
def test_every_encoding_runs_forward_backward_at_many_grids(pos_embed):
    torch.manual_seed(0)
    model = tiny(pos_embed)
    for shape in [(32, 32), (48, 48), (24, 40)]:  # training grid, larger grid, non-square
        x = torch.randn(2, 3, *shape)
        out = model(x)
        assert out.shape == (2, 5)
        out.square().mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        model.zero_grad()


@pytest.mark.parametrize("pos_embed", list(ENCODINGS))
def test_every_strategy_is_exactly_identity_at_training_grid(pos_embed):
    torch.manual_seed(0)
    model = tiny(pos_embed).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        for strategy in STRATEGIES:
            if not model.strategy_applies(strategy):
                continue
            for logn in (False, True):
                with model.use_strategy(strategy, logn=logn):
                    assert torch.equal(model(x), reference), (strategy, logn)


@pytest.mark.parametrize("pos_embed", ["rope1d", "rope_axial", "rope_mixed", "sincos"])
def test_strategies_change_outputs_on_larger_grid(pos_embed):
    torch.manual_seed(0)
    model = tiny(pos_embed).eval()
    with torch.no_grad():
        for blk in model.blocks:  # make attention depend on position strongly enough to see
            blk.attn.qkv.weight.mul_(8)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        for strategy in STRATEGIES[1:]:
            if model.strategy_applies(strategy):
                with model.use_strategy(strategy):
                    assert not torch.allclose(model(x), reference, atol=1e-4), strategy
        with model.use_strategy("extrapolate", logn=True):
            assert not torch.allclose(model(x), reference, atol=1e-4)


def test_strategy_applicability_table():
    expect_na = {
        "none": {"interpolate", "ntk", "yarn"},
        "ape": {"ntk", "yarn"},
        "sincos": {"ntk", "yarn"},
        "rope1d": set(),
        "rope_axial": set(),
        "rope_mixed": {"ntk"},
        "rope_axial_ape": set(),
        "rope_mixed_ape": {"ntk"},
    }
    for name, na in expect_na.items():
        model = tiny(name)
        assert {s for s in STRATEGIES if not model.strategy_applies(s)} == na, name


def test_na_strategy_is_refused_not_replaced():
    model = tiny("ape")
    with pytest.raises(PositionConfigError, match="Strategy 'ntk' does not apply to pos_embed=ape"):
        model.set_strategy("ntk")
    assert model.strategy == "extrapolate"


def test_learned_frequencies_get_gradients_and_no_weight_decay():
    model = tiny("rope_mixed_ape")
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.rope.freqs.grad is not None and model.rope.freqs.grad.abs().sum() > 0
    assert {"rope.freqs", "abs_pos.pos_embed", "cls_token"} <= model.no_weight_decay()


def test_registers_and_avg_pool():
    model = tiny("rope_axial", num_reg_tokens=4, global_pool="avg")
    assert model.num_prefix_tokens == 5
    assert model(torch.randn(1, 3, 40, 32)).shape == (1, 5)


def test_model_registry():
    assert {"vit_micro", "vit_tiny", "vit_small", "vit_base", "vit_large"} <= set(vit_rope.list_models())
    m = create_model("vit_small", pos_embed="rope_mixed", num_classes=1000, img_size=224, patch_size=16)
    assert m.embed_dim == 384 and len(m.blocks) == 12 and m.train_grid == (14, 14)


# -- clear errors ------------------------------------------------------------------------------


def test_error_axial_head_dim_not_multiple_of_4():
    with pytest.raises(PositionConfigError) as err:
        create_model("vit_micro", pos_embed="rope_axial", img_size=32, patch_size=8, embed_dim=36, num_heads=6)
    assert_names(str(err.value), "Head dimension 6", "axial", "multiple of 4")


def test_error_input_not_multiple_of_patch():
    model = tiny("rope_axial")
    with pytest.raises(ValueError) as err:
        model(torch.randn(1, 3, 30, 32))
    assert_names(str(err.value), "input height", "30", "patch size 8", "use a multiple of 8")
    with pytest.raises(ValueError) as err:
        tiny("rope_axial", img_size=30)
    assert_names(str(err.value), "data.img_size", "30", "use a multiple of 8")


def test_error_unknown_encoding_and_strategy():
    with pytest.raises(PositionConfigError) as err:
        tiny("rope2d")
    assert_names(str(err.value), "rope2d", "none, ape")
    with pytest.raises(PositionConfigError) as err:
        tiny("rope_axial").set_strategy("linear")
    assert_names(str(err.value), "strategy", "linear", "extrapolate, interpolate")
    with pytest.raises(PositionConfigError) as err:
        create_text_model("text_micro", vocab_size=16, max_len=8, num_classes=2, pos_embed="rope_axial")
    assert_names(str(err.value), "rope_axial", "none, ape, rope1d")
    with pytest.raises(ValueError) as err:
        create_model("vit_huge")
    assert_names(str(err.value), "model", "vit_huge", "vit_micro")


# -- text path ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pos_embed", ["none", "ape", "rope1d"])
def test_text_model_runs_at_longer_lengths(pos_embed):
    model = create_text_model("text_micro", vocab_size=16, max_len=12, num_classes=3, pos_embed=pos_embed, **TINY)
    for length in (12, 24):
        out = model(torch.randint(0, 16, (2, length)))
        assert out.shape == (2, 3)
        out.sum().backward()


# -- parity with timm --------------------------------------------------------------------------

TIMM_MODELS = [
    "vit_small_patch16_224",
    "vit_small_patch16_rope_224",
    "vit_small_patch16_rope_mixed_224",
    "vit_small_patch16_rope_ape_224",
    "vit_small_patch16_rope_mixed_ape_224",
]


def _perturb(model):
    """Random weights large enough that attention, and so position, matters (timm's init makes
    attention almost uniform, which would hide a wrong position encoding)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gamma" in name or "pos_embed" in name or name.startswith("head"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif "qkv.weight" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_from_timm_same_logits_at_224_and_320(name):
    import timm

    reference = timm.create_model(name, pretrained=False, dynamic_img_size=True, num_classes=10).eval()
    _perturb(reference)
    model = from_timm(reference).eval()
    expected_name = {
        "vit_small_patch16_224": "ape",
        "vit_small_patch16_rope_224": "rope_axial",
        "vit_small_patch16_rope_mixed_224": "rope_mixed",
        "vit_small_patch16_rope_ape_224": "rope_axial_ape",
        "vit_small_patch16_rope_mixed_ape_224": "rope_mixed_ape",
    }[name]
    assert model.encoding.name == expected_name
    g = torch.Generator().manual_seed(1)
    for size in (224, 320):
        x = torch.randn(2, 3, size, size, generator=g)
        with torch.no_grad():
            a, b = reference(x), model(x)
        scale = max(1.0, a.abs().max().item())
        assert (a - b).abs().max().item() <= 1e-4 * scale, (size, (a - b).abs().max().item())


def test_from_timm_by_name_builds_without_download():
    model = from_timm("vit_small_patch16_rope_mixed_224")
    assert model.encoding.name == "rope_mixed" and model.num_classes == 1000


SIBLINGS = [
    f"vit_{size}_patch16_{kind}224"
    for size in ("base", "large")
    for kind in ("", "rope_", "rope_mixed_", "rope_ape_", "rope_mixed_ape_")
]


@pytest.mark.parametrize("name", SIBLINGS)
def test_from_timm_base_and_large_siblings_convert(name):
    """The base and large models keep their width, heads and rotary settings; two blocks instead
    of 12 or 24 keep the test fast without changing what the conversion has to get right."""
    import timm

    reference = timm.create_model(name, pretrained=False, depth=2, num_classes=7).eval()
    _perturb(reference)
    model = from_timm(reference).eval()
    assert model.embed_dim == reference.embed_dim and len(model.blocks) == 2
    assert model.blocks[0].attn.num_heads == reference.blocks[0].attn.num_heads
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = reference(x), model(x)
    scale = max(1.0, a.abs().max().item())
    assert (a - b).abs().max().item() <= 1e-4 * scale, (a - b).abs().max().item()


def test_learned_table_init_scale_follows_the_model_config():
    """conf/model/vit_micro.yaml starts the table at N(0, 1) (short CPU runs); the timm sizes keep
    timm's 0.02, as does create_model unless told otherwise."""
    from tests.conftest import build_net_from_config, compose_train

    def table_std(model_name, pos_embed):
        cfg = compose_train(f"model={model_name}", f"pos_embed={pos_embed}")
        return build_net_from_config(cfg, 4, 64).abs_pos.pos_embed.std().item()

    assert table_std("vit_micro", "ape") == pytest.approx(1.0, rel=0.05)
    assert table_std("vit_small", "rope_axial_ape") == pytest.approx(0.02, rel=0.05)
    assert create_model("vit_micro", pos_embed="ape").abs_pos.pos_embed.std().item() == pytest.approx(0.02, rel=0.05)


def test_model_yaml_dims_equal_the_size_table():
    """conf/model/<name>.yaml spells out the dims of vit_rope.models.vit.MODEL_SIZES; the two agree."""
    from tests.conftest import compose_train
    from vit_rope.models import MODEL_SIZES, build_model_config

    for name, dims in MODEL_SIZES.items():
        cfg = build_model_config(compose_train(f"model={name}").model)
        assert {k: getattr(cfg, k) for k in dims} == dims, name


def test_from_timm_refuses_separate_q_v_biases():
    """EVA/BEiT keep q and v biases apart from the fused qkv; they used to convert with the biases dropped."""
    from timm.models.eva import Eva

    model = Eva(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, qkv_bias=True, use_rot_pos_emb=True)
    with pytest.raises(PositionConfigError, match=r"separate q/v biases \(q_bias, BEiT/EVA style\)"):
        from_timm(model)


def test_training_time_logn_uses_one_rule_in_training_and_test():
    import math

    model = create_model("vit_micro", "rope_axial", num_classes=2, img_size=32, patch_size=4, logn_attention=True)
    assert model.logit_scale((8, 8)) == 1.0  # the training grid
    assert model.logit_scale((12, 12)) == pytest.approx(math.log(144) / math.log(64))  # a multi-res batch
    assert model.logit_scale((6, 6)) == pytest.approx(math.log(36) / math.log(64))  # smaller, below 1
    with model.use_strategy("yarn", logn=False):  # log-n stays on: it replaces YaRN's temperature
        assert model.logit_scale((16, 16)) == pytest.approx(math.log(256) / math.log(64))


def test_spiral_and_dinov3_strategy_applicability():
    assert {s for s in STRATEGIES if not tiny("rope_spiral").strategy_applies(s)} == {"ntk"}
    assert {s for s in STRATEGIES if not tiny("rope_dinov3").strategy_applies(s)} == {"interpolate", "ntk", "yarn"}
    dinov3 = tiny("rope_dinov3").rope.encoding
    assert dinov3.coords == "normalized" and dinov3.rescale == 2.0 and dinov3.augments
