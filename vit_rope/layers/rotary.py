"""The rotary core: positions x frequencies -> angles -> rotate pairs of q and k.

Every position encoding of the project goes through this file:

- positions ``P`` of shape ``(N, a)``: ``a = 1`` for sequences (token index, or the raster
  index of image patches for ``rope1d``), ``a = 2`` for images (``x`` = column, ``y`` = row);
- a frequency matrix ``F`` of shape ``(d/2, a)``, or ``(depth, heads, d/2, a)`` when learned;
- angles ``T = P @ F.T`` of shape ``(N, d/2)``; pair ``j`` of ``q`` and ``k`` at token ``n`` is
  rotated by ``T[n, j]``.

The test-time strategies (:mod:`vit_rope.extrapolate`) scale ``F``; the module that owns the
tables of one model is :class:`vit_rope.layers.rope_embed.Rotary`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from vit_rope.errors import PositionConfigError, check_choice

PAIR_LAYOUTS = ("interleaved", "half")
COORD_MODES = ("index", "normalized")


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
    check_choice("coordinate mode", mode, COORD_MODES)
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
    """Training-only coordinate augmentation, one draw per call, in DINOv3's order: shift, then
    jitter, then rescale (the same draws as timm's ``RotaryEmbeddingDinoV3`` for the same seed).

    ``shift``: add ``U(-shift, shift)`` per axis; ``jitter``: multiply each axis by a log-uniform
    factor in ``[1/jitter, jitter]``; ``rescale``: multiply all axes by one log-uniform factor in
    ``[1/rescale, rescale]``. 0 switches a shift off; 0 or 1 switch a factor off.
    """
    a = pos.shape[-1]
    dev = pos.device
    if shift:
        pos = pos + torch.empty(a, device=dev).uniform_(-shift, shift, generator=generator)
    if jitter and jitter > 1.0:
        log_j = math.log(jitter)
        pos = pos * torch.empty(a, device=dev).uniform_(-log_j, log_j, generator=generator).exp()
    if rescale and rescale > 1.0:
        log_r = math.log(rescale)
        pos = pos * torch.empty(1, device=dev).uniform_(-log_r, log_r, generator=generator).exp()
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


GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))  # about 137.5 degrees


def spiral_frequencies(num_heads: int, head_dim: int, base: float) -> torch.Tensor:
    """Fixed 2D frequencies ``(heads, d/2, 2)`` along directions spread by the golden angle.

    Pair ``j`` of head ``h`` has the magnitude of axial RoPE's pair ``j // 2``,
    ``base^(-4 (j // 2) / d)``, and points along ``(h d/2 + j) * 137.5 degrees``: every magnitude
    comes in two directions, as in axial RoPE, but the directions differ from pair to pair and
    head to head and cover the circle evenly, like RoPE-Mixed's learned ones but fixed.
    """
    if head_dim % 4 != 0:
        raise PositionConfigError(
            f"Head dimension {head_dim} cannot be split for spiral 2D RoPE: it must be a multiple of 4; "
            "change embed_dim or num_heads so that embed_dim / num_heads is a multiple of 4."
        )
    pairs = head_dim // 2
    j = torch.arange(pairs, dtype=torch.float64)
    mag = base ** (-4.0 * torch.div(j, 2, rounding_mode="floor") / head_dim)  # (d/2,)
    index = torch.arange(num_heads, dtype=torch.float64)[:, None] * pairs + j  # (h, d/2)
    phi = index * GOLDEN_ANGLE
    return torch.stack([mag * torch.cos(phi), mag * torch.sin(phi)], dim=-1).float()


def rotated_pair_mask(freqs: torch.Tensor, groups: int, fraction: float) -> torch.Tensor:
    """Mask ``(..., d/2, 1)`` of the pairs that rotate under partial RoPE: of the ``d/2`` pairs
    of each head (per layer and head where ``freqs`` has those dims), the ``groups * ceil(fraction
    * n)`` with the largest frequency magnitude, ``n = d / (2 groups)`` pairs per group (axis);
    the slower ones, which turn least over the image, are left unrotated.

    Ranking by magnitude, not by index, is what makes the rule hold for every family: axial and
    1D RoPE (and RoPE-Mixed at init) order each group fast to slow, so they keep the first
    ``ceil(fraction * n)`` of each group; spiral RoPE's magnitudes fall across all pairs of a head.
    Ties keep the lower index.

    Args:
        freqs: ``(..., d/2, a)`` frequencies (at construction: the initial ones of learned families).
        groups: Groups of pairs that follow one axis each (``a``); sets how many pairs rotate.
        fraction: The fraction of each group's pairs that rotate, in ``(0, 1]``.
    """
    pairs = freqs.shape[-2]
    keep = groups * math.ceil(fraction * (pairs // groups))
    mags = freqs.detach().double().norm(dim=-1)  # (..., d/2)
    order = torch.sort(mags, dim=-1, descending=True, stable=True).indices  # fastest first
    mask = torch.zeros_like(mags, dtype=torch.float32)
    mask.scatter_(-1, order[..., :keep], 1.0)
    return mask[..., None]


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
