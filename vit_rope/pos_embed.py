"""Absolute position encodings and the table of named encodings (DESIGN section 2).

``ENCODINGS`` maps each ``pos_embed=`` name to what it is made of: an optional rotary part
(built by :class:`vit_rope.rope.Rotary`) and an optional absolute table added to the patch
tokens. The sin-cos table uses the rotary core's positions and angles; only the learned table
has its own code, and it resamples with timm's ``resample_abs_pos_embed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from vit_rope.rope import (
    PositionConfigError,
    axial_frequencies,
    check_strategy,
    grid_positions,
    rotary_angles,
)


@dataclass(frozen=True)
class Encoding:
    """What a named position encoding is made of."""

    rotary: str | None  # "1d", "axial", "mixed" or None
    absolute: str | None  # "learned", "sincos" or None
    cls_slot: bool = False  # the learned table has an entry for the prefix tokens (timm ViT)


ENCODINGS: dict[str, Encoding] = {
    "none": Encoding(None, None),
    "ape": Encoding(None, "learned", cls_slot=True),
    "sincos": Encoding(None, "sincos"),
    "rope1d": Encoding("1d", None),
    "rope_axial": Encoding("axial", None),
    "rope_mixed": Encoding("mixed", None),
    "rope_axial_ape": Encoding("axial", "learned"),
    "rope_mixed_ape": Encoding("mixed", "learned"),
}
TEXT_ENCODINGS = ("none", "ape", "rope1d")


def get_encoding(name: str, allowed: Sequence[str] | None = None) -> Encoding:
    """Look up ``name``; ``allowed`` restricts the choice (the text model takes three)."""
    allowed = tuple(allowed) if allowed is not None else tuple(ENCODINGS)
    if name not in allowed:
        raise PositionConfigError(f"Unknown position encoding '{name}'; choose one of {', '.join(allowed)}.")
    return ENCODINGS[name]


def strategy_applies(encoding: Encoding, strategy: str, coords: str = "index") -> bool:
    """Whether a test-time strategy means something for an encoding (else the result is n/a).

    Rotary encodings take every strategy (NTK needs a base, so not learned frequencies;
    normalized coordinates take only ``extrapolate``). A learned table is resampled under both
    ``extrapolate`` and ``interpolate``; a sin-cos table is recomputed on the larger grid or at
    fractional positions. NTK and YaRN rescale rotary frequencies, so they are n/a without them.
    With no encoding at all, only ``extrapolate`` (do nothing) applies.
    """
    check_strategy(strategy)
    if encoding.rotary is not None:
        if coords == "normalized":
            return strategy == "extrapolate"
        return not (strategy == "ntk" and encoding.rotary == "mixed")
    if encoding.absolute is not None:
        return strategy in ("extrapolate", "interpolate")
    return strategy == "extrapolate"


class LearnedPosEmbed(nn.Module):
    """Learned absolute table, bicubic-resampled (timm) at grids other than the training grid.

    Args:
        embed_dim: Token width.
        train_grid: ``(H, W)`` or ``(L,)`` of the table.
        num_prefix_tokens: Prefix tokens in front of the grid.
        cls_slot: Whether the table also has entries for the prefix tokens (timm's ViT) or
            only for the grid (DeiT-III, RoPE-ViT ``*_ape``).
        init_std: Std of the normal init; timm's ViT uses 0.02.
    """

    def __init__(
        self, embed_dim: int, train_grid: Sequence[int], num_prefix_tokens: int, cls_slot: bool, init_std: float = 0.02
    ):
        super().__init__()
        self.train_grid = tuple(int(g) for g in train_grid)
        self.num_slots = num_prefix_tokens if cls_slot else 0
        num = self.num_slots + math.prod(self.train_grid)
        self.init_std = float(init_std)
        self.pos_embed = nn.Parameter(torch.zeros(1, num, embed_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.pos_embed, std=self.init_std)

    def table(self, grid: Sequence[int]) -> torch.Tensor:
        grid = tuple(int(g) for g in grid)
        if grid == self.train_grid:
            return self.pos_embed
        as_2d = lambda g: g if len(g) == 2 else (1, g[0])  # noqa: E731  a sequence is a 1 x L grid
        return resample_abs_pos_embed(
            self.pos_embed,
            new_size=as_2d(grid),
            old_size=as_2d(self.train_grid),
            num_prefix_tokens=self.num_slots,
        )

    def forward(self, tokens: torch.Tensor, prefix: torch.Tensor | None, grid: Sequence[int]) -> torch.Tensor:
        """Add the table to the grid tokens ``(B, N, D)`` and put ``prefix`` in front."""
        table = self.table(grid)
        if self.num_slots:  # timm ViT: concatenate first, then add (the prefix has its own slots)
            return torch.cat([prefix, tokens], dim=1) + table
        tokens = tokens + table
        return tokens if prefix is None else torch.cat([prefix, tokens], dim=1)


class SinCosPosEmbed(nn.Module):
    """Fixed sin-cos table, recomputed for any grid from the rotary core's positions and angles.

    Channels ``[sin T, cos T]`` with ``T = P @ F.T`` and ``F`` the axial frequency matrix of
    width ``embed_dim`` (base 10000): a quarter of the channels per axis and function, as in
    MAE. Under ``interpolate`` the positions are scaled back into the training range.
    """

    def __init__(self, embed_dim: int, train_grid: Sequence[int], base: float = 10000.0):
        super().__init__()
        self.train_grid = tuple(int(g) for g in train_grid)
        num_axes = len(self.train_grid)
        self.register_buffer("freqs", axial_frequencies(embed_dim, base, num_axes), persistent=False)
        self.strategy = "extrapolate"
        self._cache: dict[tuple, torch.Tensor] = {}

    def _apply(self, fn, recurse=True):
        self._cache.clear()
        return super()._apply(fn, recurse)

    def table(self, grid: Sequence[int]) -> torch.Tensor:
        grid = tuple(int(g) for g in grid)
        key = (grid, self.strategy, self.freqs.device)
        if key not in self._cache or torch.compiler.is_compiling():
            pos = grid_positions(grid, "index", device=self.freqs.device)
            if self.strategy == "interpolate" and grid != self.train_grid:
                # (x, y) order for 2D grids; one axis for sequences
                ratio = [t / g for t, g in zip(self.train_grid[::-1], grid[::-1], strict=True)]
                pos = pos * torch.tensor(ratio, device=pos.device)
            angles = rotary_angles(pos, self.freqs)
            table = torch.cat([angles.sin(), angles.cos()], dim=-1)[None]
            if torch.compiler.is_compiling():
                return table
            self._cache[key] = table
        return self._cache[key]

    def forward(self, tokens: torch.Tensor, prefix: torch.Tensor | None, grid: Sequence[int]) -> torch.Tensor:
        tokens = tokens + self.table(grid).to(tokens.dtype)
        return tokens if prefix is None else torch.cat([prefix, tokens], dim=1)
