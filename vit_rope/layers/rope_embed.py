"""The rotary embedding of one model: its frequencies, and ``(cos, sin)`` tables per grid.

:class:`Rotary` reads a rotary encoding (a family of :mod:`vit_rope.models.encodings`, where
each option has its default and its check), turns it into tables with the functions of
:mod:`vit_rope.layers.rotary`, and applies the test-time strategy of
:mod:`vit_rope.extrapolate` to its frequencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch
from torch import nn

from vit_rope.errors import PositionConfigError
from vit_rope.extrapolate import Resize, check_strategy, frequency_scale, power_scale, yarn_attention_factor
from vit_rope.layers.rotary import (
    augment_positions,
    grid_positions,
    raster_positions,
    rotary_angles,
    rotated_pair_mask,
)


class RotaryTables(NamedTuple):
    """What attention needs to rotate q and k: ``cos``/``sin`` of shape ``(N, d/2)`` (or
    ``(heads, N, d/2)`` for learned frequencies), the pair layout of the channels, and for the
    general form an orthogonal basis ``P`` per head ``(heads, d, d)`` that q and k enter first."""

    cos: torch.Tensor
    sin: torch.Tensor
    layout: str
    basis: torch.Tensor | None = None


def cayley(skew_params: torch.Tensor) -> torch.Tensor:
    """Orthogonal ``P = (I - A)(I + A)^-1`` from ``A = S - S^T`` (batched over leading dims);
    ``S = 0`` gives ``P = I``. The Cayley map covers the orthogonal matrices without eigenvalue -1."""
    A = skew_params - skew_params.transpose(-1, -2)
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device).expand_as(A)
    return torch.linalg.solve(eye + A, eye - A, left=False)


class RotaryEncoding(Protocol):
    """What :class:`Rotary` reads of a rotary encoding; the rotary families of
    :mod:`vit_rope.models.encodings` are its implementations, with every default and check.

    ``num_axes``: 1 (token or raster index) or 2 (``x``, ``y``); ``learned``: the frequencies are
    parameters, one set per layer and head; ``axis_aligned``: every pair follows one axis with a
    base-generated frequency (what NTK needs); ``learn_basis``: the general form's orthogonal
    basis per layer and head is learned; ``augments``: training-only coordinate augmentation is on.
    """

    name: str
    num_axes: int
    learned: bool
    axis_aligned: bool
    learn_basis: bool
    base: float
    layout: str
    coords: str
    shift: float
    jitter: float
    rescale: float
    yarn_alpha: float
    yarn_beta: float
    rotate_fraction: float

    @property
    def augments(self) -> bool: ...

    def frequencies(self, depth: int, num_heads: int, head_dim: int) -> torch.Tensor:
        """The frequency matrix ``(d/2, a)`` (fixed), ``(heads, d/2, a)`` or ``(depth, heads, d/2, a)``
        (the initial values of learned ones)."""
        ...


class Rotary(nn.Module):
    """Rotary position embedding for one model: builds ``(cos, sin)`` tables for a grid.

    One module per model (not per layer): fixed tables are computed once per grid, strategy,
    dtype and device and shared by all layers; learned (mixed) tables for all layers come
    from one batched op per forward.

    Args:
        encoding: The rotary encoding (its family says how frequencies and positions are made).
        head_dim: Channels per attention head ``d``.
        num_heads, depth: For the per-layer, per-head learned frequencies.
        train_grid: Token grid seen in training, ``(L,)`` or ``(H, W)``; the reference for strategies.
        num_prefix_tokens: Tokens in front of the grid (CLS, registers); they are not rotated.
    """

    def __init__(
        self,
        encoding: RotaryEncoding,
        head_dim: int,
        num_heads: int,
        depth: int,
        train_grid: Sequence[int],
        num_prefix_tokens: int,
    ) -> None:
        super().__init__()
        self.encoding = encoding
        self.head_dim = head_dim
        self.num_prefix_tokens = num_prefix_tokens
        self.train_grid = tuple(int(g) for g in train_grid)
        self.strategy = "extrapolate"
        if encoding.num_axes == 2 and len(self.train_grid) != 2:
            raise PositionConfigError(f"pos_embed={encoding.name} needs a 2D grid; use rope1d for sequences.")
        freqs = encoding.frequencies(depth, num_heads, head_dim)
        if encoding.learned:
            self.freqs = nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs, persistent=False)
        # The general form: q and k enter an orthogonal basis P per layer and head, P = cayley(S),
        # S = 0 at init (P = I: RoPE-Mixed). Only q.k is used, and P^T P = I, so rotating in the
        # new basis without turning back gives the same attention (the back-rotation is skipped).
        if encoding.learn_basis:
            self.basis_params = nn.Parameter(torch.zeros(depth, num_heads, head_dim, head_dim))
        else:
            self.basis_params = None
        # Partial RoPE: the slowest pairs by frequency magnitude (per layer and head where the
        # frequencies have those dims) stay unrotated; ranked once, from the initial frequencies.
        mask = rotated_pair_mask(freqs, encoding.num_axes, encoding.rotate_fraction)
        self.register_buffer("pair_mask", mask if encoding.rotate_fraction < 1.0 else None, persistent=False)
        # pairs per axis that rotate (what NTK's exponent counts)
        self.rotating_pairs = math.ceil(encoding.rotate_fraction * (head_dim // 2 // encoding.num_axes))
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def learned(self) -> bool:
        """Learned frequencies: one table per layer (:meth:`angles`, :meth:`layer_tables`)."""
        return self.encoding.learned

    @property
    def augmenting(self) -> bool:
        return self.training and self.encoding.augments

    def extra_repr(self) -> str:
        e = self.encoding
        return f"encoding={e.name}, base={e.base}, layout={e.layout}, coords={e.coords}, rotate={e.rotate_fraction}"

    def _apply(self, fn, recurse=True):
        self._cache.clear()  # tables follow the module to its new device / dtype
        return super()._apply(fn, recurse)

    def set_strategy(self, strategy: str) -> None:
        self.strategy = check_strategy(strategy)

    # -- positions and strategy -------------------------------------------------------------

    def positions(self, grid: Sequence[int]) -> torch.Tensor:
        dev = self.freqs.device
        if self.encoding.num_axes == 1:
            return raster_positions(grid, device=dev)
        return grid_positions(grid, self.encoding.coords, device=dev)

    def resize(self, grid: Sequence[int]) -> Resize:
        """Per-axis ratio of ``grid`` to the training grid, in this encoding's position units."""
        if self.encoding.num_axes == 1:
            scale = (math.prod(grid) / math.prod(self.train_grid),)
            extent = (float(math.prod(self.train_grid)),)
        else:
            scale = (grid[1] / self.train_grid[1], grid[0] / self.train_grid[0])  # (x, y)
            extent = (float(self.train_grid[1]), float(self.train_grid[0]))
        return Resize(tuple(float(s) for s in scale), extent, self.strategy)

    def effective_freqs(self, grid: Sequence[int], alpha: float | torch.Tensor | None = None) -> torch.Tensor:
        """``F * G``: the frequencies after the test-time strategy for ``grid``.

        ``alpha`` (``ensemble``, ``calibrate``): instead, ``G = s^(-alpha)`` per axis, one exponent
        or one per layer and head ``(depth, heads)``; the latter gives ``(depth, heads, d/2, a)``
        frequencies, at the training grid too (``G`` is exactly 1 there)."""
        resize = self.resize(grid)
        if alpha is not None:
            if not isinstance(alpha, torch.Tensor) and all(s == 1.0 for s in resize.scale):
                return self.freqs
            return self.freqs * power_scale(self.freqs, resize.scale, alpha)
        if resize.strategy in ("ensemble", "calibrate") and not all(s == 1.0 for s in resize.scale):
            raise PositionConfigError(
                f"Strategy '{resize.strategy}' scales the frequencies by s^(-alpha) and needs alpha; "
                "run the model through its forward (ensemble) or calibrate it first (vit_rope.eval.calibrate)."
            )
        if resize.is_identity:
            return self.freqs
        e = self.encoding
        return self.freqs * frequency_scale(
            self.freqs,
            resize,
            float(e.base),
            e.yarn_alpha,
            e.yarn_beta,
            axis_aligned=e.axis_aligned,
            rotating_pairs=self.rotating_pairs,
        )

    def attention_factor(self, grid: Sequence[int]) -> float:
        return yarn_attention_factor(self.resize(grid))

    # -- tables ------------------------------------------------------------------------------

    def per_layer(self, alpha: float | torch.Tensor | None = None) -> bool:
        """Whether the tables differ per layer: learned frequencies, or one scale per layer and head."""
        return self.learned or isinstance(alpha, torch.Tensor)

    def angles(self, grid: Sequence[int], alpha: float | torch.Tensor | None = None) -> torch.Tensor:
        """Angles ``(N_total, d/2)``, or ``(depth, heads, N_total, d/2)`` for learned frequencies or
        a per-layer-and-head ``alpha`` (all layers in one batched op), prefix tokens first; not cached."""
        pos = self.positions(grid)
        if self.augmenting:
            e = self.encoding
            pos = augment_positions(pos, e.shift, e.jitter, e.rescale)
        if self.encoding.coords == "normalized":
            # Normalized coordinates span [-1, 1]: a pair of frequency f turns f / pi times across
            # the image, as DINOv3's angle 2 pi x / period with period = 1 / f (timm RotaryEmbeddingDinoV3).
            pos = pos * (2 * math.pi)
        freqs = self.effective_freqs(grid, alpha)
        if self.pair_mask is not None:  # partial RoPE: the slow pairs get frequency 0, angle 0
            freqs = freqs * self.pair_mask
        angles = rotary_angles(pos, freqs)  # (..., N, d/2)
        if self.num_prefix_tokens:
            # Prefix tokens get angle 0: cos = 1, sin = 0 leaves them exactly unchanged and
            # spares slicing and concatenating q and k.
            pad = angles.new_zeros(*angles.shape[:-2], self.num_prefix_tokens, angles.shape[-1])
            angles = torch.cat([pad, angles], dim=-2)
        return angles

    def basis(self) -> torch.Tensor | None:
        """The orthogonal bases ``(depth, heads, d, d)`` of the general form, else ``None``."""
        return None if self.basis_params is None else cayley(self.basis_params)

    def layer_tables(self, angles: torch.Tensor, layer: int, basis: torch.Tensor | None = None) -> RotaryTables:
        """Tables of one layer from the angles of :meth:`angles` (learned frequencies), with that
        layer's basis from :meth:`basis` for the general form."""
        return RotaryTables(
            angles[layer].cos(), angles[layer].sin(), self.encoding.layout, None if basis is None else basis[layer]
        )

    def forward(
        self, grid: Sequence[int], dtype: torch.dtype = torch.float32, alpha: float | None = None
    ) -> RotaryTables:
        """Tables shared by every layer for ``grid``, cached per grid, strategy, alpha (one
        exponent of ``G = s^(-alpha)``, or ``None``), dtype and device. Fixed frequencies only:
        learned ones differ per layer (:meth:`angles`, :meth:`layer_tables`)."""
        if self.per_layer(alpha):
            raise TypeError("These rotary tables differ per layer; use angles() and layer_tables().")
        grid = tuple(int(g) for g in grid)
        if self.augmenting or torch.compiler.is_compiling():
            angles = self.angles(grid, alpha)
            return RotaryTables(angles.cos().to(dtype), angles.sin().to(dtype), self.encoding.layout)
        key = (grid, self.strategy, alpha, dtype, self.freqs.device)
        tables = self._cache.get(key)
        if tables is None:
            angles = self.angles(grid, alpha)
            tables = (angles.cos().to(dtype), angles.sin().to(dtype))
            self._cache[key] = tables
        return RotaryTables(*tables, self.encoding.layout)
