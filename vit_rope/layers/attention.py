"""Multi-head self-attention with optional rotary q/k and a logit multiplier, on SDPA; and the
pre-norm transformer block built from timm's Mlp, DropPath and LayerScale.

The logit multiplier carries the test-time temperatures (log-n scaling, YaRN) so that they
apply to every token, prefix tokens included, without touching q or k.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerScale, Mlp
from torch import nn

from vit_rope.errors import ConfigError
from vit_rope.layers.rope_embed import RotaryTables
from vit_rope.layers.rotary import apply_rotary


class Attention(nn.Module):
    """Self-attention over ``(B, N, C)`` tokens.

    Args:
        dim: Token width ``C``.
        num_heads: Heads; ``head_dim = C / num_heads``.
        qkv_bias: Bias on the fused qkv projection.
        attn_drop, proj_drop: Dropout rates.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ConfigError(
                f"embed_dim {dim} is not divisible by num_heads {num_heads}; pick num_heads that divides it."
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # Attention diagnostics (vit_rope.eval.diagnostics.record_attention) set this to a
        # callable(q, k, scale[, attn_mask]) while they record; None: the plain SDPA forward.
        self.probe: Callable[..., None] | None = None

    def forward(
        self,
        x: torch.Tensor,
        tables: RotaryTables | None = None,
        logit_scale: float = 1.0,
        attn_mask: torch.Tensor | None = None,
        head_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``attn_mask``: optional ``(N, N)`` boolean mask, True where a query may attend.
        ``head_scale``: optional ``(heads,)`` logit temperature per head (q is multiplied by it)."""
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, N, hd)
        if tables is not None and tables.basis is not None:
            # The general form: q and k in the basis P of each head, then rotated there.
            qk = apply_rotary(qkv[:2] @ tables.basis, tables.cos, tables.sin, tables.layout)  # (2, B, h, N, hd)
            (q, k), v = qk.unbind(0), qkv[2]
        else:
            if tables is not None:
                # q and k in one op, written back into the projection's output: SDPA then reads (and
                # saves for backward) views of one buffer, as without RoPE, and no copy of q, k is made.
                apply_rotary(qkv[:2], tables.cos, tables.sin, tables.layout, inplace=True)
            q, k, v = qkv.unbind(0)  # (B, h, N, hd) each
        if head_scale is not None:
            q = q * head_scale.to(q.dtype)[:, None, None]
        if self.probe is not None:
            self.probe(q, k, self.scale * logit_scale, attn_mask)
        x = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_drop if self.training else 0.0,
            scale=self.scale * logit_scale,
        )  # (B, h, N, hd)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Pre-norm transformer block with timm's parameter names (``norm1``, ``attn``, ``ls1``, ...)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float | None = None,
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        tables: RotaryTables | None = None,
        logit_scale: float = 1.0,
        attn_mask: torch.Tensor | None = None,
        head_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), tables, logit_scale, attn_mask, head_scale)))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x
