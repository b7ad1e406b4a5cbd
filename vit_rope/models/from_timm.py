"""Conversion between timm's ViT / RoPE-ViT models and this project's model, with the same
weights: :func:`from_timm` (timm -> ours) and :func:`to_timm` (ours -> timm, for export).

Both directions read one key table (:data:`TIMM_TO_OURS`, :data:`EVA_BLOCK_TO_OURS`) and one
layout rule for learned frequencies (:func:`freqs_from_timm`, :func:`freqs_to_timm`).
"""

from __future__ import annotations

import torch
from torch import nn

from vit_rope.errors import PositionConfigError
from vit_rope.models.encodings import make_pos_embed
from vit_rope.models.vit import VisionTransformer, ViTConfig


def _timm_encoding(model: nn.Module) -> tuple[str, dict]:
    """Which of our encodings a timm model uses, and the options that reproduce it."""
    from timm.layers.pos_embed_sincos import RotaryEmbeddingCat, RotaryEmbeddingMixed

    rope = getattr(model, "rope", None)
    has_table = getattr(model, "pos_embed", None) is not None
    if rope is None:
        if not has_table:
            return "none", {}
        if getattr(model, "no_embed_class", False):
            raise PositionConfigError(
                "This timm model's position table has no class-token slot without RoPE; "
                "only timm's standard ViT (class slot) and the RoPE-ViT models convert."
            )
        return "ape", {}
    suffix = "_ape" if has_table else ""
    if isinstance(rope, RotaryEmbeddingMixed):
        if rope.grid_indexing != "xy":
            raise PositionConfigError("Only RoPE-Mixed with grid_indexing='xy' converts.")
        return "rope_mixed" + suffix, {}
    if isinstance(rope, RotaryEmbeddingCat):
        ok = (not rope.in_pixels) and rope.grid_indexing == "xy" and rope.grid_type == "index"
        ok = ok and rope.ref_feat_shape is None and getattr(rope, "grid_offset", 0.0) == 0.0
        if not ok:
            raise PositionConfigError(
                "Only timm axial RoPE with in_pixels=False, grid_indexing='xy' and index grids converts."
            )
        layout = "half" if rope.rotate_half else "interleaved"
        return "rope_axial" + suffix, {"base": float(rope.temperature), "layout": layout}
    raise PositionConfigError(f"timm rotary module {type(rope).__name__} has no counterpart here.")


# Keys that differ (all others are equal): whole keys, and the layer scale of timm's Eva blocks
# (``blocks.N.gamma_1``); timm's ``VisionTransformer`` already names it ``ls1.gamma`` as we do.
TIMM_TO_OURS = {"pos_embed": "abs_pos.pos_embed"}
EVA_BLOCK_TO_OURS = {"gamma_1": "ls1.gamma", "gamma_2": "ls2.gamma"}


def freqs_from_timm(freqs: torch.Tensor) -> torch.Tensor:
    """RoPE-Mixed frequencies: timm ``(2, depth, heads, d/2)`` -> ours ``(depth, heads, d/2, 2)``."""
    return freqs.permute(1, 2, 3, 0).contiguous()


def freqs_to_timm(freqs: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`freqs_from_timm`."""
    return freqs.permute(3, 0, 1, 2).contiguous()


def create_timm_model(name: str, checkpoint_path: str | None = None, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=False)``, with a checkpoint's weights if given.

    A fine-tuned checkpoint (say on ImageNet-100) carries its own head: the model is built with
    that many classes, so that its weights load as they are.
    """
    import timm

    state = timm.models.load_state_dict(checkpoint_path) if checkpoint_path else None
    head = state.get("head.weight") if state else None
    num_classes = {} if head is None else {"num_classes": head.shape[0]}
    model = timm.create_model(name, pretrained=False, **num_classes, **kwargs)
    if state is not None:
        model.load_state_dict(state)
    return model


def from_timm(model_or_name: nn.Module | str, checkpoint_path: str | None = None, **kwargs) -> VisionTransformer:
    """Convert a timm ViT (``vit_*_patch16_224``) or RoPE-ViT (``vit_*_patch16_rope*_224``)
    into this project's model with the same weights.

    Args:
        model_or_name: A timm model, or a timm model name (built with ``pretrained=False``).
        checkpoint_path: Optional timm checkpoint to load into the named model first.
        **kwargs: Extra options of the encoding (e.g. ``yarn_beta``).
    """
    import timm

    if isinstance(model_or_name, str):
        model = create_timm_model(model_or_name, checkpoint_path)
    else:
        model = model_or_name
        if checkpoint_path:
            timm.models.load_checkpoint(model, checkpoint_path)
    blocks = model.blocks
    first = blocks[0]
    attn = first.attn
    if not isinstance(getattr(attn, "q_norm", nn.Identity()), nn.Identity):
        raise PositionConfigError("timm models with qk_norm have no counterpart here.")
    if getattr(attn, "qkv", None) is None:
        raise PositionConfigError("Only timm models with a fused qkv projection convert.")
    if getattr(attn, "q_bias", None) is not None:
        raise PositionConfigError(
            "timm models with separate q/v biases (q_bias, BEiT/EVA style) have no counterpart here; "
            "only models whose qkv projection carries its own bias convert."
        )
    pos_embed, opts = _timm_encoding(model)
    has_layer_scale = getattr(first, "gamma_1", None) is not None or hasattr(getattr(first, "ls1", None), "gamma")
    init_values = 1.0 if has_layer_scale else None  # creates LayerScale; its gamma is loaded below
    pool = model.global_pool
    if pool not in ("token", "avg"):
        raise PositionConfigError(f"timm global_pool '{pool}' has no counterpart here; use token or avg.")
    embed_dim = model.embed_dim
    cfg = ViTConfig(
        name=getattr(model, "default_cfg", {}).get("architecture", type(model).__name__),
        embed_dim=embed_dim,
        depth=len(blocks),
        num_heads=attn.num_heads,
        mlp_ratio=first.mlp.fc1.out_features / embed_dim,
        qkv_bias=attn.qkv.bias is not None,
        class_token=model.cls_token is not None,
        num_reg_tokens=0 if getattr(model, "reg_token", None) is None else model.reg_token.shape[1],
        global_pool=pool,
        init_values=init_values,
        patch_size=model.patch_embed.patch_size[0],
        in_chans=model.patch_embed.proj.in_channels,
    )
    encoding = make_pos_embed(pos_embed, **{**opts, **kwargs})
    ours = VisionTransformer(cfg, encoding, img_size=tuple(model.patch_embed.img_size), num_classes=model.num_classes)
    ours.load_state_dict(_convert_state_dict(model, ours), strict=True)
    return ours.eval() if not model.training else ours


def _convert_state_dict(model: nn.Module, ours: VisionTransformer) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith("rope."):
            if key == "rope.freqs":
                out["rope.freqs"] = freqs_from_timm(value)
            continue
        parts = key.split(".")
        if parts[0] == "blocks" and parts[2] in EVA_BLOCK_TO_OURS:
            key = ".".join(parts[:2] + [EVA_BLOCK_TO_OURS[parts[2]]])
        out[TIMM_TO_OURS.get(key, key)] = value
    expected = set(ours.state_dict())
    unknown = sorted(set(out) - expected)
    if unknown:
        raise PositionConfigError(f"timm weights {unknown[:3]} have no counterpart here; this model does not convert.")
    return out


# -- ours -> timm (export) ------------------------------------------------------------------------

# The timm model family of each encoding timm has; the kwargs of :func:`timm_spec` set every size
# and option, so the name only picks the family (VisionTransformer, or Eva with RoPE).
TIMM_FAMILIES = {
    "ape": "vit_base_patch16_224",
    "rope_axial": "vit_base_patch16_rope_224",
    "rope_mixed": "vit_base_patch16_rope_mixed_224",
    "rope_axial_ape": "vit_base_patch16_rope_ape_224",
    "rope_mixed_ape": "vit_base_patch16_rope_mixed_ape_224",
}


def _no_timm(what: str) -> PositionConfigError:
    return PositionConfigError(
        f"timm has no counterpart of {what}; export the model without it (python -m vit_rope.export CKPT --no-timm "
        "writes model.safetensors only)."
    )


def timm_spec(model: VisionTransformer) -> tuple[str, dict]:
    """The timm model name and kwargs that build the counterpart of ``model``
    (``timm.create_model(name, pretrained=False, **kwargs)``); refused in one sentence where timm
    has no counterpart."""
    if not isinstance(model, VisionTransformer):
        raise _no_timm(f"the {type(model).__name__} (text) model")
    cfg, encoding = model.cfg, model.encoding
    name = encoding.name
    if name not in TIMM_FAMILIES:
        raise _no_timm(f"pos_embed={name} (timm has ape, rope_axial, rope_mixed and their _ape forms)")
    if cfg.logn_attention:
        raise _no_timm("model.logn_attention=true")
    kwargs: dict = dict(
        img_size=list(model.img_size), patch_size=cfg.patch_size, in_chans=cfg.in_chans,
        num_classes=model.num_classes, global_pool=cfg.global_pool, embed_dim=cfg.embed_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, init_values=cfg.init_values,
        class_token=cfg.class_token, drop_rate=cfg.drop_rate, proj_drop_rate=cfg.proj_drop_rate,
        attn_drop_rate=cfg.attn_drop_rate, drop_path_rate=cfg.drop_path_rate, dynamic_img_size=True,
    )  # fmt: skip
    if name == "ape":
        return TIMM_FAMILIES[name], {**kwargs, "reg_tokens": cfg.num_reg_tokens, "no_embed_class": False}
    if encoding.coords != "index":
        raise _no_timm(f"pos_embed.coords={encoding.coords} (timm's RoPE-ViT uses integer patch indices)")
    if encoding.rotate_fraction != 1.0:
        raise _no_timm(f"pos_embed.rotate_fraction={encoding.rotate_fraction} (partial RoPE)")
    kwargs.update(
        num_reg_tokens=cfg.num_reg_tokens, use_abs_pos_emb=name.endswith("_ape"), no_embed_class=True,
        use_rot_pos_emb=True, rope_type="mixed" if encoding.learned else "cat",
        rope_temperature=float(encoding.base), rope_grid_indexing="xy",
        rope_rotate_half=encoding.layout == "half",
        # timm.create_model drops None kwargs, so the RoPE-ViT names' init_values=1e-5 would
        # stay: without LayerScale here, timm gets one with gamma = 1 (see to_timm_state_dict).
        init_values=1.0 if cfg.init_values is None else cfg.init_values,
    )  # fmt: skip
    return TIMM_FAMILIES[name], kwargs


def to_timm_state_dict(model: VisionTransformer) -> dict[str, torch.Tensor]:
    """``model``'s weights under timm's names (the inverse of the key table above)."""
    eva = model.encoding.rotary  # RoPE-ViT models are timm's Eva
    ours_to_timm = {v: k for k, v in TIMM_TO_OURS.items()}
    block_to_timm = {v: k for k, v in EVA_BLOCK_TO_OURS.items()} if eva else {}
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("rope."):
            if key == "rope.freqs":
                out[key] = freqs_to_timm(value)
            continue
        parts = key.split(".")
        inner = ".".join(parts[2:])
        if parts[0] == "blocks" and inner in block_to_timm:
            key = ".".join(parts[:2] + [block_to_timm[inner]])
        out[ours_to_timm.get(key, key)] = value.contiguous()
    if eva and model.cfg.init_values is None:  # LayerScale with gamma = 1 is the identity, exactly
        for i in range(len(model.blocks)):
            for name in EVA_BLOCK_TO_OURS:
                out[f"blocks.{i}.{name}"] = torch.ones(model.embed_dim)
    return out


def to_timm(model: VisionTransformer) -> nn.Module:
    """The timm model with ``model``'s weights (built with ``pretrained=False``, loaded strictly)."""
    import timm

    name, kwargs = timm_spec(model)
    reference = timm.create_model(name, pretrained=False, **kwargs)
    reference.load_state_dict(to_timm_state_dict(model), strict=True)
    return reference.train(model.training)
