"""The rotary embedding of one model: its frequencies, and ``(cos, sin)`` tables per grid.

:class:`RotarySettings` holds the options of every rotary family (1D, axial, mixed), checked
once; :class:`Rotary` turns them into tables with the functions of
:mod:`vit_rope.layers.rotary`, and applies the test-time strategy of
:mod:`vit_rope.extrapolate` to its frequencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from vit_rope.errors import PositionConfigError, check_choice, check_range
from vit_rope.extrapolate import Resize, check_strategy, frequency_scale, yarn_attention_factor
from vit_rope.layers.rotary import (
    COORD_MODES,
    PAIR_LAYOUTS,
    augment_positions,
    axial_frequencies,
    grid_positions,
    mixed_frequencies_init,
    raster_positions,
    rotary_angles,
    rotated_pair_mask,
    spiral_frequencies,
)

ROTARY_KINDS = ("1d", "axial", "mixed", "spiral", "general")
LEARNED_KINDS = ("mixed", "general")  # one frequency table per layer and head
AXIS_ALIGNED = ("1d", "axial")  # base-generated, one axis per pair: NTK applies


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


def _check_factor(key: str, value: float) -> float:
    """A log-uniform augmentation factor: 0 or 1 mean off, above 1 is the range ``[1/f, f]``."""
    check_range(f"pos_embed.{key}", value, 0.0)
    if 0.0 < value < 1.0:
        raise PositionConfigError(
            f"pos_embed.{key}={value} is between 0 and 1; it is the factor f of a log-uniform draw in [1/f, f], "
            f"so set it above 1 (e.g. {1 / value:.3g}), or to 0 to switch it off."
        )
    return value


@dataclass(frozen=True)
class RotarySettings:
    """Options of a rotary encoding.

    Args:
        kind: ``1d`` (raster / token index), ``axial`` (pairs split between x and y),
            ``mixed`` (learned 2D frequencies per layer and head), ``spiral`` (fixed 2D
            frequencies along golden-angle directions per head) or ``general`` (RoPE-Mixed's
            frequencies in a learned orthogonal basis per layer and head).
        base: Frequency base (> 1): frequencies ``base^(-2j/d_a)``; the mixed init's magnitudes.
        layout: ``interleaved`` (pair j = channels 2j, 2j+1; timm) or ``half`` (j, j + d/2).
        coords: ``index`` (integer patch indices) or ``normalized`` (patch centres in [-1, 1]).
        shift: Training-only: add ``U(-shift, shift)`` per axis to the positions (0 = off).
        jitter: Training-only: scale each axis by a log-uniform factor in ``[1/jitter, jitter]``.
        rescale: Training-only: scale all axes by one log-uniform factor in ``[1/rescale, rescale]``.
        yarn_alpha, yarn_beta: YaRN's ramp, in turns over the training extent.
        rotate_fraction: Partial RoPE: the fraction of each axis's pairs that rotate (the
            fastest); the others are left unrotated. 1 rotates all.
        learn_basis: ``general`` only: learn the orthogonal basis ``P``; ``False`` fixes ``P = I``
            (exactly RoPE-Mixed).
    """

    kind: str
    base: float
    layout: str = "interleaved"
    coords: str = "index"
    shift: float = 0.0
    jitter: float = 0.0
    rescale: float = 0.0
    yarn_alpha: float = 1.0
    yarn_beta: float = 32.0
    rotate_fraction: float = 1.0
    learn_basis: bool = True

    def __post_init__(self) -> None:
        check_choice("rotary kind", self.kind, ROTARY_KINDS)
        check_range("pos_embed.base", self.base, 1.0, low_open=True)
        check_choice("pos_embed.layout", self.layout, PAIR_LAYOUTS)
        check_choice("pos_embed.coords", self.coords, COORD_MODES)
        if self.kind in LEARNED_KINDS and self.layout != "interleaved":
            raise PositionConfigError("RoPE-Mixed uses the interleaved pair layout; set pos_embed.layout=interleaved.")
        check_range("pos_embed.shift", self.shift, 0.0)
        _check_factor("jitter", self.jitter)
        _check_factor("rescale", self.rescale)
        check_range("pos_embed.yarn_alpha", self.yarn_alpha, 0.0)
        check_range("pos_embed.yarn_beta", self.yarn_beta, self.yarn_alpha, low_open=True)
        check_range("pos_embed.rotate_fraction", self.rotate_fraction, 0.0, 1.0, low_open=True)

    @property
    def augments(self) -> bool:
        return bool(self.shift) or self.jitter > 1.0 or self.rescale > 1.0


class Rotary(nn.Module):
    """Rotary position embedding for one model: builds ``(cos, sin)`` tables for a grid.

    One module per model (not per layer): fixed tables are computed once per grid, strategy,
    dtype and device and shared by all layers; learned (mixed) tables for all layers come
    from one batched op per forward.

    Args:
        settings: The encoding's options.
        head_dim: Channels per attention head ``d``.
        num_heads, depth: For the per-layer, per-head learned frequencies.
        train_grid: Token grid seen in training, ``(L,)`` or ``(H, W)``; the reference for strategies.
        num_prefix_tokens: Tokens in front of the grid (CLS, registers); they are not rotated.
    """

    def __init__(
        self,
        settings: RotarySettings,
        head_dim: int,
        num_heads: int,
        depth: int,
        train_grid: Sequence[int],
        num_prefix_tokens: int,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.kind = settings.kind
        self.layout = settings.layout
        self.coords = settings.coords if settings.kind != "1d" else "index"
        self.base = float(settings.base)
        self.head_dim = head_dim
        self.num_prefix_tokens = num_prefix_tokens
        self.train_grid = tuple(int(g) for g in train_grid)
        self.strategy = "extrapolate"
        if settings.kind == "axial" and len(self.train_grid) != 2:
            raise PositionConfigError("Axial RoPE needs a 2D grid; use rope1d for sequences.")
        if settings.kind in LEARNED_KINDS:
            self.freqs = nn.Parameter(mixed_frequencies_init(depth, num_heads, head_dim, self.base))
        elif settings.kind == "spiral":
            self.register_buffer("freqs", spiral_frequencies(num_heads, head_dim, self.base), persistent=False)
        else:
            num_axes = 1 if settings.kind == "1d" else 2
            self.register_buffer("freqs", axial_frequencies(head_dim, self.base, num_axes), persistent=False)
        # The general form: q and k enter an orthogonal basis P per layer and head, P = cayley(S),
        # S = 0 at init (P = I: RoPE-Mixed). Only q.k is used, and P^T P = I, so rotating in the
        # new basis without turning back gives the same attention (the back-rotation is skipped).
        if settings.kind == "general" and settings.learn_basis:
            self.basis_params = nn.Parameter(torch.zeros(depth, num_heads, head_dim, head_dim))
        else:
            self.basis_params = None
        groups = 1 if settings.kind == "1d" else 2
        mask = rotated_pair_mask(head_dim // 2, groups, settings.rotate_fraction)
        self.register_buffer("pair_mask", mask if settings.rotate_fraction < 1.0 else None, persistent=False)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.tables_built = 0  # how many fixed tables were computed (the cache test reads it)

    @property
    def learned(self) -> bool:
        return self.kind in LEARNED_KINDS

    @property
    def augmenting(self) -> bool:
        return self.training and self.settings.augments

    def extra_repr(self) -> str:
        fraction = self.settings.rotate_fraction
        return f"kind={self.kind}, base={self.base}, layout={self.layout}, coords={self.coords}, rotate={fraction}"

    def _apply(self, fn, recurse=True):
        self._cache.clear()  # tables follow the module to its new device / dtype
        return super()._apply(fn, recurse)

    def set_strategy(self, strategy: str) -> None:
        self.strategy = check_strategy(strategy)

    # -- positions and strategy -------------------------------------------------------------

    def positions(self, grid: Sequence[int]) -> torch.Tensor:
        dev = self.freqs.device
        if self.kind == "1d":
            return raster_positions(grid, device=dev)
        return grid_positions(grid, self.coords, device=dev)

    def resize(self, grid: Sequence[int]) -> Resize:
        """Per-axis ratio of ``grid`` to the training grid, in this encoding's position units."""
        if self.kind == "1d":
            scale = (math.prod(grid) / math.prod(self.train_grid),)
            extent = (float(math.prod(self.train_grid)),)
        else:
            scale = (grid[1] / self.train_grid[1], grid[0] / self.train_grid[0])  # (x, y)
            extent = (float(self.train_grid[1]), float(self.train_grid[0]))
        return Resize(tuple(float(s) for s in scale), extent, self.strategy)

    def effective_freqs(self, grid: Sequence[int]) -> torch.Tensor:
        """``F * G``: the frequencies after the test-time strategy for ``grid``."""
        resize = self.resize(grid)
        if resize.is_identity:
            return self.freqs
        s = self.settings
        return self.freqs * frequency_scale(
            self.freqs, resize, self.base, s.yarn_alpha, s.yarn_beta, learned=self.kind not in AXIS_ALIGNED
        )

    def attention_factor(self, grid: Sequence[int]) -> float:
        return yarn_attention_factor(self.resize(grid))

    # -- tables ------------------------------------------------------------------------------

    def angles(self, grid: Sequence[int]) -> torch.Tensor:
        """Angles ``(N_total, d/2)``, or ``(depth, heads, N_total, d/2)`` for learned frequencies
        (all layers in one batched op), prefix tokens first; not cached."""
        pos = self.positions(grid)
        if self.augmenting:
            s = self.settings
            pos = augment_positions(pos, s.shift, s.jitter, s.rescale)
        if self.coords == "normalized":
            # Normalized coordinates span [-1, 1]: a pair of frequency f turns f / pi times across
            # the image, as DINOv3's angle 2 pi x / period with period = 1 / f (timm RotaryEmbeddingDinoV3).
            pos = pos * (2 * math.pi)
        freqs = self.effective_freqs(grid)
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
            angles[layer].cos(), angles[layer].sin(), self.layout, None if basis is None else basis[layer]
        )

    def forward(self, grid: Sequence[int], dtype: torch.dtype = torch.float32) -> RotaryTables:
        """Tables shared by every layer for ``grid``, cached per grid, strategy, dtype and device.
        Fixed frequencies only: learned ones differ per layer (:meth:`angles`, :meth:`layer_tables`)."""
        if self.learned:
            raise TypeError("Learned rotary frequencies have one table per layer; use angles() and layer_tables().")
        grid = tuple(int(g) for g in grid)
        if self.augmenting or torch.compiler.is_compiling():
            angles = self.angles(grid)
            return RotaryTables(angles.cos().to(dtype), angles.sin().to(dtype), self.layout)
        key = (grid, self.strategy, dtype, self.freqs.device)
        tables = self._cache.get(key)
        if tables is None:
            angles = self.angles(grid)
            tables = (angles.cos().to(dtype), angles.sin().to(dtype))
            self._cache[key] = tables
            self.tables_built += 1
        return RotaryTables(*tables, self.layout)
