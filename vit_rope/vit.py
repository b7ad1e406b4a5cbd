"""A timm-style Vision Transformer whose position encoding is one name (DESIGN section 2),
the registry of model sizes, and conversion from timm's ViT and RoPE-ViT models.

:class:`Transformer` is the trunk shared with the text encoder (:mod:`vit_rope.text`):
prefix tokens, position encoding, blocks, pooling, head and the test-time strategies. A
subclass only says how inputs become a grid of tokens (:meth:`Transformer.embed`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models import named_apply
from timm.models.vision_transformer import init_weights_vit_timm
from torch import nn

from vit_rope.attention import Block
from vit_rope.errors import ConfigError
from vit_rope.pos_embed import (
    LearnedPosEmbed,
    SinCosPosEmbed,
    get_encoding,
    strategy_applies,
)
from vit_rope.rope import PositionConfigError, Rotary, check_strategy, logn_attention_factor

# name -> (embed_dim, depth, num_heads); patch size and resolution are separate arguments.
MODEL_SIZES: dict[str, dict] = {
    "vit_micro": dict(embed_dim=64, depth=4, num_heads=4),  # CPU-sized: the default run takes minutes on 2 cores
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16),
}


class Transformer(nn.Module):
    """Encoder trunk: tokens on a grid -> prefix tokens, positions, blocks, pooled logits.

    Args:
        train_grid: Token grid of the training input, ``(H, W)`` or ``(L,)``; the reference for
            learned tables and test-time strategies.
        num_classes: Classifier outputs (0 for features only).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: Transformer size.
        pos_embed: Encoding name, one of :data:`vit_rope.pos_embed.ENCODINGS`.
        rope_base: Rotary frequency base; ``None`` takes the encoding's default (1d: 10000,
            axial: 100, mixed: 10).
        rope_layout: ``interleaved`` or ``half`` pairs.
        rope_coords: ``index`` or ``normalized`` positions for 2D rotary encodings.
        rope_shift, rope_jitter, rope_rescale: Training-only coordinate augmentation.
        yarn_alpha, yarn_beta: YaRN ramp bounds (turns over the training extent).
        class_token, num_reg_tokens, global_pool: Prefix tokens and pooling (``token``/``avg``).
        init_values: LayerScale init (None disables it).
        abs_init_std: Std of the normal init of a learned absolute table (timm: 0.02).
        drop_rate, drop_path_rate, attn_drop_rate, proj_drop_rate: Regularisation.
        allowed_encodings: Names this model accepts.
    """

    def __init__(
        self,
        train_grid: Sequence[int],
        num_classes: int = 1000,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        pos_embed: str = "rope_axial",
        rope_base: float | None = None,
        rope_layout: str = "interleaved",
        rope_coords: str = "index",
        rope_shift: float = 0.0,
        rope_jitter: float = 0.0,
        rope_rescale: float = 0.0,
        yarn_alpha: float = 1.0,
        yarn_beta: float = 32.0,
        class_token: bool = True,
        num_reg_tokens: int = 0,
        global_pool: str = "token",
        init_values: float | None = None,
        abs_init_std: float = 0.02,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        allowed_encodings: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ConfigError(f"Unknown global_pool '{global_pool}'; choose token or avg.")
        if global_pool == "token" and not class_token:
            raise ConfigError("global_pool=token needs class_token=true; set one of them differently.")
        if embed_dim % num_heads != 0:
            raise ConfigError(
                f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}; pick num_heads that divides it."
            )
        self.encoding_name = pos_embed
        self.encoding = get_encoding(pos_embed, allowed_encodings)
        self.train_grid = tuple(int(g) for g in train_grid)
        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.global_pool = global_pool
        self.num_prefix_tokens = int(class_token) + num_reg_tokens
        self.head_dim = embed_dim // num_heads
        self.strategy = "extrapolate"
        self.logn = False

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, num_reg_tokens, embed_dim)) if num_reg_tokens else None

        enc = self.encoding
        self.abs_pos: LearnedPosEmbed | SinCosPosEmbed | None = None
        if enc.absolute == "learned":
            self.abs_pos = LearnedPosEmbed(
                embed_dim, self.train_grid, self.num_prefix_tokens, enc.cls_slot, init_std=abs_init_std
            )
        elif enc.absolute == "sincos":
            if embed_dim % (2 * len(self.train_grid)) != 0:
                raise PositionConfigError(
                    f"embed_dim {embed_dim} cannot hold a {len(self.train_grid)}D sin-cos table; "
                    f"use a multiple of {2 * len(self.train_grid)}."
                )
            self.abs_pos = SinCosPosEmbed(embed_dim, self.train_grid)
        self.rope: Rotary | None = None
        if enc.rotary is not None:
            self.rope = Rotary(
                enc.rotary,
                self.head_dim,
                num_heads,
                depth,
                self.train_grid,
                base=rope_base,
                layout=rope_layout,
                coords=rope_coords,
                num_prefix_tokens=self.num_prefix_tokens,
                shift=rope_shift,
                jitter=rope_jitter,
                rescale=rope_rescale,
                yarn_alpha=yarn_alpha,
                yarn_beta=yarn_beta,
            )

        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth decay rule
        self.blocks = nn.ModuleList(
            [
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    qkv_bias,
                    init_values,
                    dpr[i],
                    proj_drop_rate,
                    attn_drop_rate,
                    norm_layer,
                    rope_layout=rope_layout,
                )
                for i in range(depth)
            ]
        )
        # timm: average pooling normalises after pooling, token pooling before it.
        self.norm = norm_layer(embed_dim) if global_pool == "token" else nn.Identity()
        self.fc_norm = norm_layer(embed_dim) if global_pool == "avg" else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def init_weights(self) -> None:
        """timm's ViT init: truncated normal linears, tiny prefix tokens."""
        named_apply(init_weights_vit_timm, self)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)
        if isinstance(self.abs_pos, LearnedPosEmbed):
            self.abs_pos.reset_parameters()

    # -- what a subclass provides ------------------------------------------------------------

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Input -> grid tokens ``(B, N, D)`` in raster order, and the grid shape."""
        raise NotImplementedError

    # -- test-time strategies ------------------------------------------------------------------

    @property
    def coords(self) -> str:
        return self.rope.coords if self.rope is not None else "index"

    def strategy_applies(self, strategy: str) -> bool:
        """False where ``strategy`` does not apply to this encoding (the result is n/a)."""
        return strategy_applies(self.encoding, strategy, self.coords)

    def set_strategy(self, strategy: str = "extrapolate", logn: bool = False) -> None:
        """Select how positions behave on grids other than the training grid.

        Raises a clear error for a strategy that does not apply, rather than running another.
        """
        check_strategy(strategy)
        if not self.strategy_applies(strategy):
            raise PositionConfigError(
                f"Strategy '{strategy}' does not apply to pos_embed={self.encoding_name}; "
                "record it as n/a or choose another strategy."
            )
        self.strategy, self.logn = strategy, bool(logn)
        if self.rope is not None:
            self.rope.set_strategy(strategy)
        if isinstance(self.abs_pos, SinCosPosEmbed):
            self.abs_pos.strategy = strategy

    @contextlib.contextmanager
    def use_strategy(self, strategy: str = "extrapolate", logn: bool = False) -> Iterator[None]:
        """``with model.use_strategy("ntk", logn=True): ...`` restores the previous one after."""
        before = (self.strategy, self.logn)
        self.set_strategy(strategy, logn)
        try:
            yield
        finally:
            self.set_strategy(*before)

    def logit_scale(self, grid: Sequence[int]) -> float:
        """Attention-logit multiplier on ``grid``: log-n (if on) times YaRN's temperature."""
        scale = 1.0
        if self.logn:
            scale *= logn_attention_factor(math.prod(grid), math.prod(self.train_grid))
        if self.rope is not None:
            scale *= self.rope.attention_factor(grid)
        return scale

    # -- forward -------------------------------------------------------------------------------

    def _prefix(self, batch: int) -> torch.Tensor | None:
        parts = []
        if self.cls_token is not None:
            parts.append(self.cls_token.expand(batch, -1, -1))
        if self.reg_token is not None:
            parts.append(self.reg_token.expand(batch, -1, -1))
        return torch.cat(parts, dim=1) if parts else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens, grid = self.embed(x)  # (B, N, D)
        prefix = self._prefix(tokens.shape[0])
        if self.abs_pos is not None:
            x = self.abs_pos(tokens, prefix, grid)
        else:
            x = tokens if prefix is None else torch.cat([prefix, tokens], dim=1)
        logit_scale = self.logit_scale(grid)
        # Fixed frequencies: one cached float32 (cos, sin) for every layer. Learned: the angles of
        # all layers in one batched op, and each layer's cos, sin in its turn, so that only the
        # angles, not cos and sin of every layer, are held through the forward.
        learned = self.rope is not None and self.rope.learned
        rope = self.rope.angles(grid) if learned else self.rope(grid) if self.rope is not None else None
        for i, blk in enumerate(self.blocks):
            tables = (rope[i].cos(), rope[i].sin()) if learned else rope
            x = blk(x, tables, logit_scale)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens :].mean(dim=1)
        else:
            x = x[:, 0]
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay: prefix tokens, absolute tables, frequencies."""
        names = {"cls_token", "reg_token", "abs_pos.pos_embed", "rope.freqs"}
        return {n for n, _ in self.named_parameters() if n in names}


class VisionTransformer(Transformer):
    """ViT over a patch grid; any input whose sides are multiples of the patch size, square or not.

    Args:
        img_size: Training resolution (int or ``(H, W)``); sets the training grid.
        patch_size: Patch side in pixels.
        in_chans: Input channels.
        **kwargs: See :class:`Transformer`.
    """

    def __init__(self, img_size: int | Sequence[int] = 224, patch_size: int = 16, in_chans: int = 3, **kwargs):
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        for side in img_size:
            check_divisible(side, patch_size, "data.img_size")
        train_grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        super().__init__(train_grid, **kwargs)
        self.img_size = img_size
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=self.embed_dim,
            strict_img_size=False,
            output_fmt="NHWC",
        )
        self.init_weights()

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        H, W = x.shape[-2:]
        check_divisible(H, self.patch_size, "input height")
        check_divisible(W, self.patch_size, "input width")
        x = self.patch_embed(x)  # (B, H/p, W/p, D)
        B, gh, gw, D = x.shape
        return x.reshape(B, gh * gw, D), (gh, gw)


def check_divisible(size: int, patch_size: int, what: str) -> None:
    if size % patch_size != 0:
        lower = size // patch_size * patch_size
        raise ConfigError(
            f"{what} {size} is not a multiple of the patch size {patch_size}; "
            f"use a multiple of {patch_size} such as {lower or patch_size} or {lower + patch_size}."
        )


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(MODEL_SIZES)


def create_model(
    name: str,
    pos_embed: str = "rope_axial",
    num_classes: int = 1000,
    img_size: int | Sequence[int] = 224,
    patch_size: int = 16,
    **kwargs,
) -> VisionTransformer:
    """Build a ViT by size name, e.g. ``create_model("vit_small", pos_embed="rope_mixed")``.

    Keyword arguments override the size's dims and any :class:`Transformer` option.
    """
    if name not in MODEL_SIZES:
        raise ConfigError(f"Unknown model '{name}'; choose one of {', '.join(list_models())}.")
    args = {**MODEL_SIZES[name], **kwargs}
    return VisionTransformer(
        img_size=img_size, patch_size=patch_size, num_classes=num_classes, pos_embed=pos_embed, **args
    )


# ------------------------------------------------------------------------------------------------
# conversion from timm
# ------------------------------------------------------------------------------------------------


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
        return "rope_axial" + suffix, {"rope_base": float(rope.temperature), "rope_layout": layout}
    raise PositionConfigError(f"timm rotary module {type(rope).__name__} has no counterpart here.")


def from_timm(model_or_name: nn.Module | str, checkpoint_path: str | None = None, **kwargs) -> VisionTransformer:
    """Convert a timm ViT (``vit_*_patch16_224``) or RoPE-ViT (``vit_*_patch16_rope*_224``)
    into this project's model with the same weights.

    Args:
        model_or_name: A timm model, or a timm model name (built with ``pretrained=False``).
        checkpoint_path: Optional timm checkpoint to load into the named model first.
        **kwargs: Extra options for our model (e.g. ``yarn_beta``).
    """
    import timm

    if isinstance(model_or_name, str):
        # A fine-tuned checkpoint (say on ImageNet-100) carries its own head: build the timm
        # model with that many classes, so its weights load as they are.
        state = timm.models.load_state_dict(checkpoint_path) if checkpoint_path else None
        head = state.get("head.weight") if state else None
        num_classes = {} if head is None else {"num_classes": head.shape[0]}
        model = timm.create_model(model_or_name, pretrained=False, **num_classes)
        if state is not None:
            model.load_state_dict(state)
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
    pos_embed, opts = _timm_encoding(model)
    has_layer_scale = getattr(first, "gamma_1", None) is not None or hasattr(getattr(first, "ls1", None), "gamma")
    init_values = 1.0 if has_layer_scale else None  # creates LayerScale; its gamma is loaded below
    pool = model.global_pool
    if pool not in ("token", "avg"):
        raise PositionConfigError(f"timm global_pool '{pool}' has no counterpart here; use token or avg.")
    embed_dim = model.embed_dim
    ours = VisionTransformer(
        img_size=tuple(model.patch_embed.img_size),
        patch_size=model.patch_embed.patch_size[0],
        in_chans=model.patch_embed.proj.in_channels,
        num_classes=model.num_classes,
        embed_dim=embed_dim,
        depth=len(blocks),
        num_heads=attn.num_heads,
        mlp_ratio=first.mlp.fc1.out_features / embed_dim,
        qkv_bias=attn.qkv.bias is not None or getattr(attn, "q_bias", None) is not None,
        pos_embed=pos_embed,
        class_token=model.cls_token is not None,
        num_reg_tokens=0 if getattr(model, "reg_token", None) is None else model.reg_token.shape[1],
        global_pool=pool,
        init_values=init_values,
        **{**opts, **kwargs},
    )
    ours.load_state_dict(_convert_state_dict(model, ours), strict=True)
    return ours.eval() if not model.training else ours


def _convert_state_dict(model: nn.Module, ours: VisionTransformer) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    rename = {"gamma_1": "ls1.gamma", "gamma_2": "ls2.gamma"}
    for key, value in sd.items():
        if key.startswith("rope."):
            if key == "rope.freqs":  # timm (2, depth, heads, d/2) -> ours (depth, heads, d/2, 2)
                out["rope.freqs"] = value.permute(1, 2, 3, 0).contiguous()
            continue
        if key == "pos_embed":
            out["abs_pos.pos_embed"] = value
            continue
        parts = key.split(".")
        if parts[0] == "blocks" and parts[2] in rename:
            key = ".".join(parts[:2] + [rename[parts[2]]])
        out[key] = value
    expected = set(ours.state_dict())
    unknown = sorted(set(out) - expected)
    if unknown:
        raise PositionConfigError(f"timm weights {unknown[:3]} have no counterpart here; this model does not convert.")
    return out
