"""Absolute position tables added to the grid tokens: learned (resampled at other grids) and
fixed sin-cos (recomputed for any grid from the rotary core's positions and angles)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from vit_rope.errors import PositionConfigError
from vit_rope.extrapolate import check_strategy
from vit_rope.layers.rotary import axial_frequencies, grid_positions, rotary_angles


class LearnedPosEmbed(nn.Module):
    """Learned absolute table, bicubic-resampled (timm) at grids other than the training grid.

    Args:
        embed_dim: Token width.
        train_grid: ``(H, W)`` or ``(L,)`` of the table.
        num_prefix_tokens: Prefix tokens in front of the grid.
        cls_slot: Whether the table also has entries for the prefix tokens (timm's ViT) or
            only for the grid (DeiT-III, RoPE-ViT ``*_ape``).
        init_std: Std of the normal init; timm's ViT uses 0.02.
        perturb_zoom: Training-time position perturbation (ComRoPE's for APE): for each training
            batch the table is resampled to a grid up to ``perturb_zoom`` times larger and a random
            window of the training grid's size is kept (:meth:`perturbed`). A test at ``s`` times
            the training grid reads the table resampled by ``s``, so training has seen such
            tables, at a random offset. 1 = off.
    """

    def __init__(
        self,
        embed_dim: int,
        train_grid: Sequence[int],
        num_prefix_tokens: int,
        cls_slot: bool,
        init_std: float = 0.02,
        perturb_zoom: float = 1.0,
    ):
        super().__init__()
        self.perturb_zoom = float(perturb_zoom)
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

    def perturbed(self, grid: tuple[int, ...]) -> torch.Tensor:
        """Training-time perturbation, one draw per batch: the table resampled (as at test time) to
        a grid ``z`` times larger, ``z`` log-uniform in ``[1, perturb_zoom]`` and each side rounded
        to whole cells, of which a window of ``grid``'s size at a uniformly drawn offset is kept."""
        zoom = math.exp(torch.rand(()).item() * math.log(self.perturb_zoom))
        big = tuple(max(g, round(g * zoom)) if g > 1 else g for g in grid)  # a sequence's single row stays
        offsets = [int(torch.randint(b - g + 1, ())) for b, g in zip(big, grid, strict=True)]
        return self.window(big, offsets, grid)

    def window(self, big: tuple[int, ...], offsets: Sequence[int], grid: tuple[int, ...]) -> torch.Tensor:
        """The table at grid ``big`` (:meth:`table`), cut to the ``grid``-sized window that starts at
        ``offsets`` (one per axis); prefix slots are kept."""
        table = self.table(big)
        cells = table[:, self.num_slots :].unflatten(1, big)
        for axis, (o, g) in enumerate(zip(offsets, grid, strict=True)):
            cells = cells.narrow(1 + axis, o, g)
        return torch.cat([table[:, : self.num_slots], cells.flatten(1, -2)], dim=1)

    def forward(self, tokens: torch.Tensor, prefix: torch.Tensor | None, grid: Sequence[int]) -> torch.Tensor:
        """Add the table to the grid tokens ``(B, N, D)`` and put ``prefix`` in front."""
        grid = tuple(int(g) for g in grid)
        table = self.perturbed(grid) if self.training and self.perturb_zoom > 1 else self.table(grid)
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

    BASE = 10000.0

    def __init__(self, embed_dim: int, train_grid: Sequence[int]):
        super().__init__()
        self.train_grid = tuple(int(g) for g in train_grid)
        num_axes = len(self.train_grid)
        if embed_dim % (2 * num_axes) != 0:
            raise PositionConfigError(
                f"embed_dim {embed_dim} cannot hold a {num_axes}D sin-cos table; use a multiple of {2 * num_axes}."
            )
        self.register_buffer("freqs", axial_frequencies(embed_dim, self.BASE, num_axes), persistent=False)
        self.strategy = "extrapolate"
        self._cache: dict[tuple, torch.Tensor] = {}

    def _apply(self, fn, recurse=True):
        self._cache.clear()
        return super()._apply(fn, recurse)

    def set_strategy(self, strategy: str) -> None:
        self.strategy = check_strategy(strategy)

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
