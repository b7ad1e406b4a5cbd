"""The rotary core: positions x frequencies -> angles -> rotate pairs of q and k.

Every position encoding of the project goes through this file:

- positions ``P`` of shape ``(N, a)``: ``a = 1`` for sequences (token index, or the raster
  index of image patches for ``rope1d``), ``a = 2`` for images (``x`` = column, ``y`` = row);
- a frequency matrix ``F`` of shape ``(d/2, a)``, or ``(depth, heads, d/2, a)`` when learned;
- angles ``T = P @ F.T`` of shape ``(N, d/2)``; pair ``j`` of ``q`` and ``k`` at token ``n`` is
  rotated by ``T[n, j]``.

Test-time strategies for larger inputs (DESIGN section 3) are all written as an elementwise
scale ``G`` of the frequency matrix, ``F' = F * G`` (scaling frequency and scaling position
are the same thing), plus an attention-logit multiplier. At the training grid every ``G`` is
exactly one, so every strategy reproduces the unmodified model there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vit_rope.errors import ConfigError

STRATEGIES = ("extrapolate", "interpolate", "ntk", "yarn")
PAIR_LAYOUTS = ("interleaved", "half")
COORD_MODES = ("index", "normalized")
ROTARY_KINDS = ("1d", "axial", "mixed")


class PositionConfigError(ConfigError):
    """A position-encoding option that cannot work; the message names the value and the fix."""


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise PositionConfigError(f"Unknown test-time strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}.")
    return strategy


# --------------------------------------------------------------------------------------------
# positions
# --------------------------------------------------------------------------------------------


def grid_positions(
    grid: Sequence[int],
    mode: str = "index",
    device: torch.device | None = None,
) -> torch.Tensor:
    """Positions of the tokens of a grid, in the raster order of ``x.flatten``.

    Args:
        grid: ``(L,)`` for a sequence or ``(H, W)`` for a patch grid.
        mode: ``index`` (integer indices, a larger grid gives larger positions) or
            ``normalized`` (cell centres mapped into [-1, 1] per axis).
        device: Output device.

    Returns:
        ``(N, a)`` float32 positions; for 2D, column 0 is ``x`` (column) and column 1 is ``y`` (row).
    """
    if mode not in COORD_MODES:
        raise PositionConfigError(f"Unknown coordinate mode '{mode}'; choose one of {', '.join(COORD_MODES)}.")
    axes = []
    for size in grid:
        t = torch.arange(size, device=device, dtype=torch.float32)
        if mode == "normalized":
            t = (t + 0.5) / size * 2.0 - 1.0
        axes.append(t)
    if len(grid) == 1:
        return axes[0][:, None]
    ys, xs = torch.meshgrid(axes[0], axes[1], indexing="ij")  # (H, W) each
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1)


def raster_positions(grid: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """1D positions of a grid's tokens in raster order, ``y * W + x``; shape ``(N, 1)``."""
    return torch.arange(math.prod(grid), device=device, dtype=torch.float32)[:, None]


def augment_positions(
    pos: torch.Tensor,
    shift: float = 0.0,
    jitter: float = 0.0,
    rescale: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training-only coordinate augmentation (as in DINOv3), one draw per call.

    ``shift``: add ``U(-shift, shift)`` per axis; ``jitter``: multiply each axis by a log-uniform
    factor in ``[1/jitter, jitter]``; ``rescale``: multiply all axes by one log-uniform factor in
    ``[1/rescale, rescale]``. Zero (or one for the factors) disables each.
    """
    a = pos.shape[-1]
    dev = pos.device
    if rescale and rescale > 1.0:
        log_r = math.log(rescale)
        pos = pos * torch.empty(1, device=dev).uniform_(-log_r, log_r, generator=generator).exp()
    if jitter and jitter > 1.0:
        log_j = math.log(jitter)
        pos = pos * torch.empty(a, device=dev).uniform_(-log_j, log_j, generator=generator).exp()
    if shift:
        pos = pos + torch.empty(a, device=dev).uniform_(-shift, shift, generator=generator)
    return pos


# --------------------------------------------------------------------------------------------
# frequencies
# --------------------------------------------------------------------------------------------


def axial_frequencies(head_dim: int, base: float, num_axes: int) -> torch.Tensor:
    """Fixed frequency matrix ``(d/2, a)``: the pairs are split into ``a`` consecutive groups,
    group ``i`` follows axis ``i`` with frequencies ``base^(-2j/d_a)``, ``d_a = d/a`` channels.

    ``num_axes=1`` is the classic 1D RoPE (``base^(-2j/d)``); ``num_axes=2`` is axial 2D RoPE
    (``base^(-4j/d)``, first ``d/4`` pairs follow ``x``, the rest ``y``).
    """
    if head_dim % (2 * num_axes) != 0:
        need = 2 * num_axes
        kind = "axial 2D RoPE" if num_axes == 2 else "1D RoPE"
        raise PositionConfigError(
            f"Head dimension {head_dim} cannot be split for {kind}: it must be a multiple of {need}; "
            f"change embed_dim or num_heads so that embed_dim / num_heads is a multiple of {need}."
        )
    pairs_per_axis = head_dim // (2 * num_axes)
    d_a = head_dim // num_axes
    j = torch.arange(pairs_per_axis, dtype=torch.float64)
    f = base ** (-2.0 * j / d_a)
    freqs = torch.zeros(head_dim // 2, num_axes, dtype=torch.float64)
    for axis in range(num_axes):
        freqs[axis * pairs_per_axis : (axis + 1) * pairs_per_axis, axis] = f
    return freqs.float()


def mixed_frequencies_init(
    depth: int,
    num_heads: int,
    head_dim: int,
    base: float = 10.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Initial RoPE-Mixed frequencies ``(depth, heads, d/2, 2)``.

    Magnitudes ``base^(-4j/d)`` for ``j < d/4``; the first ``d/4`` pairs point along a random
    direction per layer and head, the second ``d/4`` along the orthogonal direction
    (Heo et al., 2024, "Rotary Position Embedding for Vision Transformer").
    """
    if head_dim % 4 != 0:
        raise PositionConfigError(
            f"Head dimension {head_dim} cannot be split for RoPE-Mixed: it must be a multiple of 4; "
            "change embed_dim or num_heads so that embed_dim / num_heads is a multiple of 4."
        )
    mag = base ** (-4.0 * torch.arange(head_dim // 4, dtype=torch.float32) / head_dim)  # (d/4,)
    theta = torch.rand(depth, num_heads, 1, generator=generator) * 2 * math.pi  # (L, h, 1)
    first = torch.stack([mag * torch.cos(theta), mag * torch.sin(theta)], dim=-1)  # (L, h, d/4, 2)
    second = torch.stack([mag * torch.cos(theta + math.pi / 2), mag * torch.sin(theta + math.pi / 2)], -1)
    return torch.cat([first, second], dim=2)


# --------------------------------------------------------------------------------------------
# angles and rotation
# --------------------------------------------------------------------------------------------


def rotary_angles(pos: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """``T = P @ F.T``: positions ``(N, a)`` and frequencies ``(..., d/2, a)`` -> ``(..., N, d/2)``.

    Written as a sum of outer products (``a`` is 1 or 2) in float32, so autocast cannot
    round the angles to bf16 and batched learned frequencies cost one op.
    """
    pos = pos.float()
    freqs = freqs.float()
    out = pos[:, 0, None] * freqs[..., None, :, 0]
    for axis in range(1, pos.shape[-1]):
        out = out + pos[:, axis, None] * freqs[..., None, :, axis]
    return out


def apply_rotary(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    layout: str = "interleaved",
    inplace: bool = False,
) -> torch.Tensor:
    """Rotate pair ``j`` of the last dim of ``x`` by the angle whose cos/sin are ``cos[..., j]``.

    In eager mode the rotation is one complex multiplication, ``(x0 + i x1) * (cos + i sin)``, in
    at least float32: a single kernel forward and backward. Under ``torch.compile`` it is the same
    product written in reals, which inductor fuses into one kernel. In eager mode, when the two
    channels of each pair are adjacent in memory (``interleaved``, float32 or float64), ``x`` is
    read as complex numbers in place, so the only tensor written is the result, or nothing new at
    all with ``inplace``.

    Args:
        x: ``(..., N, d)``; any strides (a view of the fused qkv projection is fine).
        cos, sin: ``(..., N, d/2)``, broadcastable to ``x``'s leading dims.
        layout: ``interleaved`` (pair ``j`` = channels ``2j, 2j+1``; timm and the RoPE-ViT
            checkpoints) or ``half`` (pair ``j`` = channels ``j, j + d/2``; GPT-NeoX / LLaMA).
        inplace: Write the result into ``x`` (autograd-safe: ``x`` may be a view of a
            projection's output) and return ``x``.

    Returns:
        Rotated tensor, same shape and dtype as ``x``: ``(x0 cos - x1 sin, x1 cos + x0 sin)``.
    """
    work = torch.promote_types(x.dtype, torch.float32)
    pairs = x.unflatten(-1, (2, -1)).transpose(-1, -2) if layout == "half" else x.unflatten(-1, (-1, 2))
    if torch.compiler.is_compiling():
        # Inductor generates no code for complex numbers; written out in reals, the rotation and
        # its dtype casts fuse into one kernel. For the in-place write autograd needs the inputs
        # as a copy, not as views of ``x``; functionalisation and fusion remove that copy.
        x0, x1 = pairs.to(work, copy=inplace).unbind(-1)
        c, s = cos.to(work), sin.to(work)
        rotated = torch.stack((x0 * c - x1 * s, x1 * c + x0 * s), -1)  # (..., d/2, 2)
    else:
        cis = torch.complex(cos.to(work), sin.to(work))  # e^{iT}, (..., N, d/2)
        if _viewable_as_complex(pairs):  # (..., d/2, 2) -> (..., d/2) complex, no copy
            z = torch.view_as_complex(pairs)
            if inplace and torch.is_grad_enabled() and (z.requires_grad or cis.requires_grad):
                _RotateInPlace.apply(z, cis)
                return x
            if inplace:  # no graph to record
                z.mul_(cis)
                return x
            return torch.view_as_real(z * cis).flatten(-2)
        rotated = torch.view_as_real(torch.view_as_complex(pairs.to(work).contiguous()) * cis)  # (..., d/2, 2)
    if layout == "half":
        rotated = rotated.transpose(-1, -2)
    rotated = rotated.flatten(-2).to(x.dtype)
    return x.copy_(rotated) if inplace else rotated


class _RotateInPlace(torch.autograd.Function):
    """``z *= cis`` for complex ``z``, keeping the result rather than the input for backward.

    The table's gradient needs the input, ``conj(z_in) = conj(z_out) * cis`` as ``|cis| = 1``;
    the result is kept anyway (SDPA saves the rotated q and k), so a learned table costs no
    extra copy of q and k, where autograd's own in-place multiply would save one.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
        z.mul_(cis)
        ctx.mark_dirty(z)
        ctx.save_for_backward(z, cis)
        return z

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        z, cis = ctx.saved_tensors
        grad_cis = None
        if ctx.needs_input_grad[1]:  # sum(grad * conj(z_in)) over the batch; cis is constant there
            grad_cis = (grad * z.conj()).sum_to_size(cis.shape) * cis
        return grad * cis.conj(), grad_cis


def _viewable_as_complex(pairs: torch.Tensor) -> bool:
    """Whether ``torch.view_as_complex`` can read ``(..., 2)`` pairs where they are."""
    return (
        pairs.dtype in (torch.float32, torch.float64)
        and pairs.stride(-1) == 1
        and pairs.storage_offset() % 2 == 0
        and all(s % 2 == 0 for s in pairs.stride()[:-1])
    )


# --------------------------------------------------------------------------------------------
# test-time strategies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resize:
    """How the current grid relates to the training grid, and what to do about it."""

    scale: tuple[float, ...]  # per-axis ratio s_a = current / training extent
    train_extent: tuple[float, ...]  # training extent per axis, in position units
    strategy: str = "extrapolate"

    @property
    def is_identity(self) -> bool:
        return self.strategy == "extrapolate" or all(s == 1.0 for s in self.scale)

    @property
    def linear_scale(self) -> float:
        """One number for the whole input: the geometric mean of the per-axis ratios."""
        return math.prod(self.scale) ** (1.0 / len(self.scale))


def yarn_ramp(periods: torch.Tensor, alpha: float = 1.0, beta: float = 32.0) -> torch.Tensor:
    """YaRN's blend weight per pair: 0 (interpolate) for pairs that make fewer than ``alpha``
    turns over the training extent, 1 (extrapolate) above ``beta`` turns, linear in between
    (Peng et al., 2023, "YaRN", section 3.2)."""
    return ((periods - alpha) / (beta - alpha)).clamp(0.0, 1.0)


def frequency_scale(
    freqs: torch.Tensor,
    resize: Resize,
    base: float | None,
    yarn_alpha: float = 1.0,
    yarn_beta: float = 32.0,
) -> torch.Tensor:
    """Elementwise scale ``G`` (same shape as ``freqs``) so that ``F * G`` implements ``resize``.

    - ``interpolate``: ``G = 1/s_a`` (positions squeezed into the training range);
    - ``ntk``: base raised to ``base * s^(d_a/(d_a-2))``, i.e. pair ``j`` of axis ``a``
      scaled by ``s_a^(-2j/(d_a-2))`` (needs the fixed ``base``-generated frequencies);
    - ``yarn``: per pair, ``G = (1-r)/s + r`` with ``r`` the YaRN ramp of the number of
      turns the pair makes over the training extent along its own direction; the wavelength
      of a pair is ``2 pi / |f_j|``.
    """
    s = torch.tensor(resize.scale, dtype=torch.float32, device=freqs.device)  # (a,)
    if resize.is_identity:
        return torch.ones_like(freqs)
    if resize.strategy == "interpolate":
        return (1.0 / s).expand_as(freqs).clone()
    if resize.strategy == "ntk":
        if base is None:
            raise PositionConfigError("NTK scaling needs base-generated frequencies; use yarn or interpolate.")
        # Exponent of each entry in units of the base: f = base^(-2j/d_a)  =>  2j/d_a = -log f / log base.
        # NTK multiplies it by d_a/(d_a-2): f' = f * s^(-2j/(d_a-2)).
        pairs = freqs.shape[-2]
        d_a = 2 * pairs // freqs.shape[-1]  # rotary channels per axis
        with torch.no_grad():
            exponent = (-torch.log(freqs.abs().clamp_min(1e-30)) / math.log(base)).clamp_min(0)
            exponent = exponent * d_a / max(d_a - 2, 1)
            return torch.where(freqs == 0, torch.ones_like(freqs), s ** (-exponent))
    if resize.strategy == "yarn":
        extent = torch.tensor(resize.train_extent, dtype=torch.float32, device=freqs.device)
        norm = freqs.norm(dim=-1, keepdim=True).clamp_min(1e-30)  # |f_j|
        direction = freqs / norm
        # Length of the training grid projected onto the wave's direction.
        length = (direction.abs() * extent).sum(-1, keepdim=True)
        periods = length * norm / (2 * math.pi)
        ramp = yarn_ramp(periods, yarn_alpha, yarn_beta)
        return ((1.0 - ramp) / s + ramp).detach()
    raise PositionConfigError(f"Unknown test-time strategy '{resize.strategy}'.")


def yarn_attention_factor(resize: Resize) -> float:
    """YaRN's temperature: q and k are each scaled by ``0.1 ln s + 1``, so the logits by its square."""
    if resize.strategy != "yarn" or resize.is_identity:
        return 1.0
    s = resize.linear_scale
    m = 0.1 * math.log(s) + 1.0 if s > 1.0 else 1.0
    return m * m


def logn_attention_factor(num_tokens: int, train_tokens: int) -> float:
    """Log-n scaling: logits multiplied by ``log N' / log N`` (Chiang & Cholak, 2022; Su, 2021)."""
    if num_tokens == train_tokens or train_tokens <= 1:
        return 1.0
    return math.log(num_tokens) / math.log(train_tokens)


# --------------------------------------------------------------------------------------------
# the module every rotary encoding uses
# --------------------------------------------------------------------------------------------


class Rotary(nn.Module):
    """Rotary position embedding for one model: builds ``(cos, sin)`` tables for a grid.

    One module per model (not per layer): fixed tables are computed once per grid, strategy,
    dtype and device and shared by all layers; learned (mixed) tables for all layers come
    from one batched op per forward.

    Args:
        kind: ``1d`` (raster / token index), ``axial`` (x, y split) or ``mixed`` (learned).
        head_dim: Channels per attention head ``d``.
        num_heads, depth: Needed for the per-layer, per-head learned frequencies.
        train_grid: Token grid seen in training, ``(L,)`` or ``(H, W)``; the reference for strategies.
        base: Frequency base (``10000`` for 1d, ``100`` for axial, ``10`` for mixed init).
        layout: Pair layout, ``interleaved`` or ``half``.
        coords: ``index`` or ``normalized`` (for ``axial`` and ``mixed``).
        num_prefix_tokens: Tokens in front of the grid (CLS, registers) that are not rotated.
        shift, jitter, rescale: Training-only coordinate augmentation (0 = off).
        yarn_alpha, yarn_beta: YaRN ramp bounds, in turns over the training extent.
    """

    def __init__(
        self,
        kind: str,
        head_dim: int,
        num_heads: int,
        depth: int,
        train_grid: Sequence[int],
        base: float | None = None,
        layout: str = "interleaved",
        coords: str = "index",
        num_prefix_tokens: int = 1,
        shift: float = 0.0,
        jitter: float = 0.0,
        rescale: float = 0.0,
        yarn_alpha: float = 1.0,
        yarn_beta: float = 32.0,
    ) -> None:
        super().__init__()
        if kind not in ROTARY_KINDS:
            raise PositionConfigError(f"Unknown rotary kind '{kind}'; choose one of {', '.join(ROTARY_KINDS)}.")
        if layout not in PAIR_LAYOUTS:
            raise PositionConfigError(f"Unknown pair layout '{layout}'; choose one of {', '.join(PAIR_LAYOUTS)}.")
        if coords not in COORD_MODES:
            raise PositionConfigError(f"Unknown coordinate mode '{coords}'; choose one of {', '.join(COORD_MODES)}.")
        if kind == "mixed" and layout != "interleaved":
            raise PositionConfigError("RoPE-Mixed uses the interleaved pair layout; set layout=interleaved.")
        self.kind = kind
        self.head_dim = head_dim
        self.layout = layout
        self.coords = coords if kind != "1d" else "index"
        self.num_prefix_tokens = num_prefix_tokens
        self.train_grid = tuple(int(g) for g in train_grid)
        self.aug = (float(shift or 0.0), float(jitter or 0.0), float(rescale or 0.0))
        self.yarn_alpha, self.yarn_beta = yarn_alpha, yarn_beta
        self.strategy = "extrapolate"
        self.base = float(base) if base is not None else {"1d": 10000.0, "axial": 100.0, "mixed": 10.0}[kind]
        if kind == "mixed":
            self.freqs = nn.Parameter(mixed_frequencies_init(depth, num_heads, head_dim, self.base))
        else:
            num_axes = 1 if kind == "1d" else 2
            if kind == "axial" and len(self.train_grid) != 2:
                raise PositionConfigError("Axial RoPE needs a 2D grid; use rope1d for sequences.")
            self.register_buffer("freqs", axial_frequencies(head_dim, self.base, num_axes), persistent=False)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.tables_built = 0  # how many fixed tables were computed (the cache test reads it)

    @property
    def learned(self) -> bool:
        return self.kind == "mixed"

    @property
    def augmenting(self) -> bool:
        return self.training and any(self.aug)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, base={self.base}, layout={self.layout}, coords={self.coords}"

    def _apply(self, fn, recurse=True):
        self._cache.clear()  # tables follow the module to its new device / dtype
        return super()._apply(fn, recurse)

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
        base = None if self.learned else self.base
        return self.freqs * frequency_scale(self.freqs, resize, base, self.yarn_alpha, self.yarn_beta)

    def attention_factor(self, grid: Sequence[int]) -> float:
        return yarn_attention_factor(self.resize(grid))

    # -- tables ------------------------------------------------------------------------------

    def angles(self, grid: Sequence[int]) -> torch.Tensor:
        """Angles ``(N_total, d/2)``, or ``(depth, heads, N_total, d/2)`` for learned frequencies
        (all layers in one batched op), prefix tokens first; not cached."""
        pos = self.positions(grid)
        if self.augmenting:
            pos = augment_positions(pos, *self.aug)
        angles = rotary_angles(pos, self.effective_freqs(grid))  # (..., N, d/2)
        if self.num_prefix_tokens:
            # Prefix tokens get angle 0: cos = 1, sin = 0 leaves them exactly unchanged and
            # spares slicing and concatenating q and k.
            pad = angles.new_zeros(*angles.shape[:-2], self.num_prefix_tokens, angles.shape[-1])
            angles = torch.cat([pad, angles], dim=-2)
        return angles

    def _build(self, grid: Sequence[int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        angles = self.angles(grid)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, grid: Sequence[int], dtype: torch.dtype = torch.float32):
        """``(cos, sin)`` for ``grid``: ``(N_total, d/2)`` for fixed encodings, or
        ``(depth, heads, N_total, d/2)`` for learned ones (index by layer)."""
        grid = tuple(int(g) for g in grid)
        if self.learned or self.augmenting or torch.compiler.is_compiling():
            return self._build(grid, dtype)
        key = (grid, self.strategy, dtype, self.freqs.device)
        tables = self._cache.get(key)
        if tables is None:
            tables = self._build(grid, dtype)
            self._cache[key] = tables
            self.tables_built += 1
        return tables

    def set_strategy(self, strategy: str) -> None:
        self.strategy = check_strategy(strategy)
