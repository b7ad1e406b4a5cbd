"""The test-time strategies for inputs larger than in training: the only place they live.

A strategy says how positions behave on a grid other than the training grid:

| strategy      | what changes                                                        |
|---------------|---------------------------------------------------------------------|
| ``extrapolate`` | nothing: positions run on past the training grid                  |
| ``interpolate`` | positions scaled by ``1/s`` per axis                              |
| ``ntk``         | rotary base raised to ``base * s^(d_a/(d_a-2))``                  |
| ``yarn``        | per-pair blend of interpolation and extrapolation by wavelength, plus a temperature |
| ``logn``        | attention logits times ``log N' / log N`` (combines with any of the above) |
| ``window``      | each query attends within the offsets met in training, in position units (combines with any) |
| ``ensemble``    | softmax predictions averaged over the position scales ``G = s^(-alpha)``, alpha in :data:`ENSEMBLE_ALPHAS` |
| ``calibrate``   | per layer and head, ``G = s^(-alpha)`` and a logit temperature chosen without labels (:class:`Calibration`) |

Temperature: YaRN's temperature and log-n both correct the attention entropy for more tokens,
so they never multiply. With ``logn`` on, the logit multiplier is the log-n factor alone, for
every strategy; without it, ``yarn`` applies its own temperature (:func:`yarn_attention_factor`).

For rotary encodings every strategy is an elementwise scale ``G`` of the frequency matrix,
``F' = F * G`` (scaling frequency and scaling position are the same thing), plus an
attention-logit multiplier. At the training grid every ``G`` is exactly one, so every strategy
reproduces the unmodified model there. ``ensemble`` and ``calibrate`` use the family of scales
``G = s^(-alpha)`` per axis (:func:`power_scale`): alpha 0 is ``extrapolate``, 1 is
``interpolate``. Absolute tables read :class:`Resize` to resample or to
take fractional positions. Which strategies apply to an encoding is said by its family
(``strategy_applies`` in :mod:`vit_rope.models.encodings`); elsewhere the result is n/a.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vit_rope.errors import PositionConfigError

# One fixed rule for every layer and head (the default evaluation runs them all).
STRATEGIES = ("extrapolate", "interpolate", "ntk", "yarn")
# Chosen at test time without labels, over the scales G = s^(-alpha) of rotary frequencies: an
# average of three forwards, or a choice per layer and head from the attention of a few inputs.
LABEL_FREE_STRATEGIES = ("ensemble", "calibrate")

# ``ensemble``: the position scales whose softmax predictions are averaged (3 forwards per input).
ENSEMBLE_ALPHAS = (0.0, 0.5, 1.0)
# ``calibrate``: the candidates per layer and head, the exponent alpha of G = s^(-alpha) (chosen
# to keep the attention distance as a fraction of the input) and the logit temperature (chosen
# to keep the attention entropy over log N). The grids are fixed, not tuned to a data set.
CALIBRATION_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
CALIBRATION_TEMPERATURES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.4, 1.6)


def check_strategy(strategy: str, where: str = "") -> str:
    """``strategy`` if it is known, else one sentence naming it, where it was given, and the choices."""
    if strategy not in STRATEGIES + LABEL_FREE_STRATEGIES:
        place = f" in {where}" if where else ""
        raise PositionConfigError(
            f"Unknown test-time strategy '{strategy}'{place}; choose one of "
            f"{', '.join(STRATEGIES + LABEL_FREE_STRATEGIES)}."
        )
    return strategy


@dataclass(frozen=True)
class Resize:
    """How the current grid relates to the training grid, and what to do about it."""

    scale: tuple[float, ...]  # per-axis ratio s_a = current / training extent
    train_extent: tuple[float, ...]  # training extent per axis, in position units
    strategy: str = "extrapolate"

    @property
    def is_identity(self) -> bool:
        return self.strategy == "extrapolate" or all(s == 1.0 for s in self.scale)


def yarn_extrapolation_weight(
    freqs: torch.Tensor, extent: torch.Tensor, base: float, alpha: float = 1.0, beta: float = 32.0
) -> torch.Tensor:
    """YaRN's per-pair weight of extrapolation, ``(..., d/2, 1)``: 1 keeps the pair as trained,
    0 interpolates it (Peng et al., 2023, "YaRN", section 3.2, as in the authors' code).

    Pair ``j`` of a group of ``n`` pairs with ``d_a = 2n`` channels turns ``r_j = L |f_j| / 2 pi``
    times over the training extent ``L`` along its direction. YaRN's correction dims are the
    pair indices at which ``r`` equals ``beta`` and ``alpha``,
    ``j(r) = d_a ln(L / (2 pi r)) / (2 ln base)``, rounded outwards and clamped to ``[0, n - 1]``;
    the weight falls linearly from 1 at the first to 0 at the second. On small grids no pair turns
    ``beta`` times, so the lower index clamps to 0 and the fastest pair still extrapolates; a ramp
    over turns instead would interpolate every pair, which is plain position interpolation.
    A pair's index is read from its magnitude, ``j = d_a ln(1/|f_j|) / (2 ln base)``, which is its
    exact index for base-generated frequencies and places learned ones by their wavelength.

    Args:
        freqs: ``(..., d/2, a)``; the ``d/2`` pairs form ``a`` groups (one per axis, or the two
            halves of RoPE-Mixed) of ``n = d / (2a)`` pairs, ``a = 1`` for 1D.
        extent: ``(..., d/2, 1)`` length of the training grid along each pair's direction.
        base: The base the frequencies were generated (or initialised) with.
        alpha, beta: Turns over the training extent below which a pair interpolates (alpha)
            and above which it extrapolates (beta).
    """
    n = freqs.shape[-2] // freqs.shape[-1]
    d_a = 2 * n
    mag = freqs.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    index = d_a * torch.log(1.0 / mag) / (2 * math.log(base))
    ln_base2 = 2 * math.log(base)
    low = torch.floor(d_a * torch.log(extent / (2 * math.pi * beta)) / ln_base2).clamp(0, n - 1)
    high = torch.ceil(d_a * torch.log(extent / (2 * math.pi * alpha)) / ln_base2).clamp(0, n - 1)
    high = torch.where(high <= low, low + 1e-3, high)
    return 1.0 - ((index - low) / (high - low)).clamp(0.0, 1.0)


def frequency_scale(
    freqs: torch.Tensor,
    resize: Resize,
    base: float,
    yarn_alpha: float = 1.0,
    yarn_beta: float = 32.0,
    axis_aligned: bool = True,
    rotating_pairs: int | None = None,
) -> torch.Tensor:
    """Elementwise scale ``G`` (same shape as ``freqs``, ``(..., d/2, a)``) so that ``F * G``
    implements ``resize``.

    - ``interpolate``: ``G = 1/s_a`` (positions squeezed into the training range);
    - ``ntk``: base raised to ``base * s^(d_a/(d_a-2))``, i.e. pair ``j`` of axis ``a``
      scaled by ``s_a^(-2j/(d_a-2))`` (needs fixed, axis-aligned base-generated frequencies);
    - ``yarn``: per pair, ``G = (1-w)/s + w`` with ``w`` from :func:`yarn_extrapolation_weight`.

    Args:
        freqs: The trained frequency matrix.
        resize: The ratio of the current grid to the training grid, and the strategy.
        base: The base that generated (or initialised) the frequencies.
        yarn_alpha, yarn_beta: YaRN's correction bounds, in turns over the training extent.
        axis_aligned: Every pair follows one axis with a base-generated frequency; NTK needs it.
        rotating_pairs: Pairs per axis that rotate (partial RoPE: the fastest ``k`` of ``n``);
            ``None``: all of them. NTK spreads its base change over these, so that the slowest
            pair that still rotates is scaled by exactly ``1/s``.
    """
    s = torch.tensor(resize.scale, dtype=torch.float32, device=freqs.device)  # (a,)
    if resize.is_identity:
        return torch.ones_like(freqs)
    if resize.strategy == "interpolate":
        return (1.0 / s).expand_as(freqs).clone()
    if resize.strategy == "ntk":
        if not axis_aligned:
            raise PositionConfigError("NTK scaling needs base-generated frequencies; use yarn or interpolate.")
        # Exponent of each entry in units of the base: f = base^(-2j/d_a) = base^(-j/n)  =>
        # j/n = -log f / log base, with n = d_a/2 pairs per axis. NTK scales pair j by s^(-j/(k-1)),
        # k the pairs per axis that rotate, so the slowest rotating pair (j = k - 1) gets exactly
        # 1/s; with every pair rotating (k = n) that is the base change s^(d_a/(d_a-2)).
        n = freqs.shape[-2] // freqs.shape[-1]  # pairs per axis
        k = n if rotating_pairs is None else int(rotating_pairs)
        with torch.no_grad():
            exponent = (-torch.log(freqs.abs().clamp_min(1e-30)) / math.log(base)).clamp_min(0)
            exponent = exponent * n / max(k - 1, 1)
            return torch.where(freqs == 0, torch.ones_like(freqs), s ** (-exponent))
    if resize.strategy == "yarn":
        with torch.no_grad():
            extent = torch.tensor(resize.train_extent, dtype=torch.float32, device=freqs.device)
            direction = freqs / freqs.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            length = (direction.abs() * extent).sum(-1, keepdim=True)  # training grid along the wave
            w = yarn_extrapolation_weight(freqs, length, base, yarn_alpha, yarn_beta)  # (..., d/2, 1)
            return ((1.0 - w) / s + w).expand_as(freqs).clone()
    raise PositionConfigError(f"Unknown test-time strategy '{resize.strategy}'.")


def power_scale(freqs: torch.Tensor, scale: tuple[float, ...], alpha: float | torch.Tensor) -> torch.Tensor:
    """``G = s_a^(-alpha)`` per axis ``a``: positions scaled by ``s^(-alpha)``, alpha 0 extrapolates,
    1 interpolates, in between a geometric blend of the two.

    Args:
        freqs: ``(..., d/2, a)`` frequencies, to broadcast against.
        scale: Per-axis ratio of the grid to the training grid.
        alpha: One exponent for all layers and heads, or one per layer and head ``(depth, heads)``.

    Returns:
        ``G`` of ``freqs``' shape for a float alpha, ``(depth, heads, d/2, a)`` for a tensor.
    """
    s = torch.tensor(scale, dtype=torch.float32, device=freqs.device)  # (a,)
    if isinstance(alpha, torch.Tensor):
        g = s.pow(-alpha.to(freqs.device, torch.float32)[..., None, None])  # (L, h, 1, a)
        return g.expand(*g.shape[:2], *freqs.shape[-2:])
    return s.pow(-float(alpha)).expand_as(freqs).clone()


@dataclass(frozen=True)
class Calibration:
    """What ``calibrate`` chose for one test grid, per layer and head: the exponent alpha of the
    frequency scale ``G = s^(-alpha)`` and the logit temperature (q multiplied by it), both
    ``(depth, heads)``. ``images``: the calibration inputs it was chosen on."""

    alpha: torch.Tensor
    temperature: torch.Tensor
    images: int = 0

    def as_dict(self) -> dict:
        """For results.json: nested lists, layer by layer."""
        return {
            "alpha": [[round(float(a), 4) for a in row] for row in self.alpha],
            "temperature": [[round(float(t), 4) for t in row] for row in self.temperature],
            "images": int(self.images),
        }


def ensemble_logits(logits: list[torch.Tensor]) -> torch.Tensor:
    """The log of the mean softmax over the members: a valid logit vector whose softmax is the
    averaged prediction (cross-entropy and top-k read it as they read logits)."""
    probs = torch.stack([lg.float().softmax(-1) for lg in logits]).mean(0)
    return probs.clamp_min(torch.finfo(torch.float32).tiny).log()


def yarn_attention_factor(resize: Resize) -> float:
    """YaRN's temperature: q and k are each scaled by ``0.1 ln s + 1``, so the logits by its
    square, with ``s`` the ratio of token counts ``N'/N``, the same rule for text and images."""
    if resize.strategy != "yarn" or resize.is_identity:
        return 1.0
    s = math.prod(resize.scale)  # token ratio: length ratio in 1D, product of the axis ratios in 2D
    m = 0.1 * math.log(s) + 1.0 if s > 1.0 else 1.0
    return m * m


def logn_attention_factor(num_tokens: int, train_tokens: int) -> float:
    """Log-n scaling: logits multiplied by ``log N' / log N`` (Chiang & Cholak, 2022; Su, 2021)."""
    if num_tokens == train_tokens or train_tokens <= 1:
        return 1.0
    return math.log(num_tokens) / math.log(train_tokens)


def window_reach(grid: tuple[int, ...], train_grid: tuple[int, ...], alpha: float) -> tuple[float, ...]:
    """The local window's reach per axis, in grid steps: the largest offset the model met in
    training, measured in position units. Positions scaled by ``s^(-alpha)`` (``s = grid / T``
    per axis) met offsets up to ``s^alpha (T - 1)`` steps: ``alpha = 0`` where positions run on
    past the training grid (``extrapolate``, ``ntk``, ``yarn`` on integer positions), ``alpha = 1``
    where they are compressed by ``1/s`` into the training range (``interpolate``, a learned
    table's resampling, normalized coordinates), and each member's own alpha under ``ensemble``.
    """
    return tuple((t - 1) * (g / t) ** alpha for g, t in zip(grid, train_grid, strict=True))


def visible_keys(grid: tuple[int, ...], reach: tuple[float, ...]) -> int:
    """Grid keys a query sees through a window of ``reach`` steps per axis: per axis
    ``min(G, 2 floor(reach) + 1)`` (a query in the middle of the grid), multiplied over the axes."""
    return math.prod(min(g, 2 * math.floor(r + 1e-9) + 1) for g, r in zip(grid, reach, strict=True))


def local_window_mask(
    grid: tuple[int, ...],
    train_grid: tuple[int, ...],
    num_prefix_tokens: int,
    reach: tuple[float, ...] | None = None,
) -> torch.Tensor | None:
    """Local attention for extrapolation (Su): each grid query attends only to grid keys within
    ``reach`` of it per axis (:func:`window_reach`: the offsets it met in training, so at the
    training size nothing changes and on a larger grid no query meets an unseen distance; default
    ``T - 1`` steps, positions that run on). Prefix tokens (class token, registers) see
    everything and everyone sees them.

    Returns:
        ``(N, N)`` boolean mask (True attends), or ``None`` where the window holds the whole grid.
    """
    if reach is None:
        reach = window_reach(grid, train_grid, alpha=0.0)
    if all(g - 1 <= r + 1e-9 for g, r in zip(grid, reach, strict=True)):
        return None  # every offset on this grid is inside the window
    axes = [torch.arange(g) for g in grid]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(grid))  # raster order
    diff = (coords[:, None, :] - coords[None, :, :]).abs()  # (N, N, a)
    inside = (diff <= torch.tensor(reach, dtype=torch.float64) + 1e-9).all(-1)
    n = inside.shape[0] + num_prefix_tokens
    mask = torch.ones(n, n, dtype=torch.bool)
    mask[num_prefix_tokens:, num_prefix_tokens:] = inside
    return mask
