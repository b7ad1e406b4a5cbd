"""The test-time strategies for inputs larger than in training: the only place they live.

A strategy says how positions behave on a grid other than the training grid:

| strategy      | what changes                                                        |
|---------------|---------------------------------------------------------------------|
| ``extrapolate`` | nothing: positions run on past the training grid                  |
| ``interpolate`` | positions scaled by ``1/s`` per axis                              |
| ``ntk``         | rotary base raised to ``base * s^(d_a/(d_a-2))``                  |
| ``yarn``        | per-pair blend of interpolation and extrapolation by wavelength, plus a temperature |
| ``logn``        | attention logits times ``log N' / log N`` (combines with any of the above) |

For rotary encodings every strategy is an elementwise scale ``G`` of the frequency matrix,
``F' = F * G`` (scaling frequency and scaling position are the same thing), plus an
attention-logit multiplier. At the training grid every ``G`` is exactly one, so every strategy
reproduces the unmodified model there. Absolute tables read :class:`Resize` to resample or to
take fractional positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vit_rope.errors import PositionConfigError

STRATEGIES = ("extrapolate", "interpolate", "ntk", "yarn")


def check_strategy(strategy: str, where: str = "") -> str:
    """``strategy`` if it is known, else one sentence naming it, where it was given, and the choices."""
    if strategy not in STRATEGIES:
        place = f" in {where}" if where else ""
        raise PositionConfigError(
            f"Unknown test-time strategy '{strategy}'{place}; choose one of {', '.join(STRATEGIES)}."
        )
    return strategy


def strategy_applies(rotary: str | None, absolute: str | None, strategy: str, coords: str = "index") -> bool:
    """Whether ``strategy`` means something for an encoding (else its result is recorded n/a).

    Args:
        rotary: The rotary family (``1d``, ``axial``, ``mixed``) or ``None``.
        absolute: The absolute table (``learned``, ``sincos``) or ``None``.
        strategy: One of :data:`STRATEGIES`.
        coords: ``index`` or ``normalized`` rotary positions.

    Rotary encodings take every strategy, except that NTK needs a base (so not learned
    frequencies) and normalized coordinates already map every grid onto the training range
    (so only ``extrapolate``). A learned table is resampled under both ``extrapolate`` and
    ``interpolate``; a sin-cos table is recomputed on the larger grid or at fractional
    positions; NTK and YaRN rescale rotary frequencies, so they are n/a without them. With no
    encoding at all only ``extrapolate`` (do nothing) applies.
    """
    check_strategy(strategy)
    if rotary is not None:
        if coords == "normalized":
            return strategy == "extrapolate"
        return not (strategy == "ntk" and rotary == "mixed")
    if absolute is not None:
        return strategy in ("extrapolate", "interpolate")
    return strategy == "extrapolate"


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
    """Elementwise scale ``G`` (same shape as ``freqs``, ``(..., d/2, a)``) so that ``F * G``
    implements ``resize``.

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
