"""The named position encodings (``pos_embed=``): one typed config per family, and the registry.

| name | family | what it is |
|---|---|---|
| ``none`` | :class:`NoPosEmbed` | no position signal (a sanity floor) |
| ``ape`` | :class:`LearnedAPE` | learned absolute table with a class-token slot (timm's ViT) |
| ``sincos`` | :class:`SinCos` | fixed 2D sin-cos table, recomputed for any grid |
| ``rope1d`` | :class:`Rope1d` | 1D RoPE on the raster index ``y*W + x`` (or the token index) |
| ``rope_axial`` | :class:`RopeAxial` | axial 2D RoPE: half the pairs follow x, half y |
| ``rope_mixed`` | :class:`RopeMixed` | RoPE-Mixed: learned 2D frequencies per layer and head |
| ``rope_general`` | :class:`RopeGeneral` | RoPE-Mixed in a learned orthogonal basis per head |
| ``rope_spiral`` | :class:`RopeSpiral` | fixed 2D frequencies along golden-angle directions |
| ``rope_dinov3`` | :class:`RopeAxial` | axial RoPE on normalized coordinates with DINOv3's augmentation |
| ``*_ape`` | the same | plus a learned table without class slot |

``conf/pos_embed/<name>.yaml`` names the family in ``_target_`` and sets its options, which
are exactly the fields of its dataclass; :func:`build_pos_embed` refuses any other key in one
sentence. A family is one class that says everything about itself: its names and presets,
whether it rotates q and k and how (its frequencies, whether they are learned or axis-aligned),
its absolute table, which layers it builds (:meth:`PosEmbedConfig.build_rotary`,
:meth:`PosEmbedConfig.build_absolute`) and which test-time strategies apply to it
(:meth:`PosEmbedConfig.strategy_applies`). Defining the class registers its names in
:data:`ENCODINGS`, so a new encoding is one class here and one YAML file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from vit_rope.config import build_dataclass
from vit_rope.errors import PositionConfigError, check_choice, check_range
from vit_rope.extrapolate import check_strategy
from vit_rope.layers.abs_pos import LearnedPosEmbed, SinCosPosEmbed
from vit_rope.layers.rope_embed import Rotary
from vit_rope.layers.rotary import (
    COORD_MODES,
    PAIR_LAYOUTS,
    axial_frequencies,
    mixed_frequencies_init,
    spiral_frequencies,
)

# The registry: ``pos_embed=`` name -> family, in the order the families are defined (the order
# of tables and benchmarks). A family adds its names when its class is defined.
ENCODINGS: dict[str, type[PosEmbedConfig]] = {}


@dataclass(frozen=True)
class PosEmbedConfig:
    """Base of every family: its ``name``, what it is, and the layers it is made of.

    A subclass that declares ``names`` (its ``pos_embed=`` names) is a family and registers them;
    ``presets`` maps some of those names to the options they set (``conf/pos_embed/<name>.yaml``
    sets the same). ``rotary``: it rotates q and k (:meth:`build_rotary`); ``text``: the text
    encoder takes it (it works on a sequence of tokens).
    """

    name: str = "none"
    names: ClassVar[tuple[str, ...]] = ()
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    rotary: ClassVar[bool] = False
    text: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "names" not in cls.__dict__:
            return  # a base shared by families, not a family
        for name in cls.__dict__.get("presets", {}):  # a parent's presets are not its own
            if name not in cls.names:
                raise TypeError(f"{cls.__name__}.presets names '{name}'; add it to {cls.__name__}.names.")
        for name in cls.names:
            if name in ENCODINGS:
                raise TypeError(f"pos_embed={name} is {ENCODINGS[name].__name__}; give {cls.__name__} another name.")
        ENCODINGS.update(dict.fromkeys(cls.names, cls))

    def __post_init__(self) -> None:
        if self.name not in self.names:
            raise PositionConfigError(
                f"pos_embed.name '{self.name}' is not a name of {type(self).__name__}; use one of {', '.join(self.names)}."
            )

    @property
    def absolute(self) -> str | None:
        """The absolute table: ``learned``, ``sincos`` or ``None``."""
        return None

    def strategy_applies(self, strategy: str) -> bool:
        """False where ``strategy`` means nothing for this encoding (its result is n/a). An absolute
        table is resampled (learned) or recomputed (sin-cos) on the larger grid or at fractional
        positions inside the training range; with no encoding only ``extrapolate`` (do nothing).
        ``ensemble`` and ``calibrate`` scale rotary frequencies, so they apply to rotary families only."""
        check_strategy(strategy)
        if self.absolute is not None:
            return strategy in ("extrapolate", "interpolate")
        return strategy == "extrapolate"

    def equivalent_strategy(self, strategy: str) -> str:
        """The strategy that gives the same numbers as ``strategy`` for this encoding, by
        definition (an evaluation computes each once); mostly ``strategy`` itself."""
        return strategy

    def compresses_positions(self, strategy: str) -> bool:
        """Whether, under ``strategy``, a larger grid's positions are squeezed by ``1/s`` into the
        range met in training (the local window's reach then grows by ``s``,
        :func:`vit_rope.extrapolate.window_reach`): ``interpolate`` does so for every encoding."""
        return strategy == "interpolate"

    def build_rotary(
        self, head_dim: int, num_heads: int, depth: int, train_grid: Sequence[int], num_prefix_tokens: int
    ) -> Rotary | None:
        return None

    def build_absolute(
        self, embed_dim: int, train_grid: Sequence[int], num_prefix_tokens: int, init_std: float
    ) -> nn.Module | None:
        return None


@dataclass(frozen=True)
class NoPosEmbed(PosEmbedConfig):
    """No position signal."""

    names: ClassVar[tuple[str, ...]] = ("none",)
    text: ClassVar[bool] = True


@dataclass(frozen=True)
class LearnedAPE(PosEmbedConfig):
    """Learned absolute table, bicubic-resampled at other grids (timm).

    ``perturb_zoom`` > 1 turns on training-time position perturbation: each training batch reads
    the table resampled to a grid up to that many times larger, at a random offset
    (:meth:`vit_rope.layers.abs_pos.LearnedPosEmbed.perturbed`); 1 = off.
    """

    name: str = "ape"
    perturb_zoom: float = 1.0
    names: ClassVar[tuple[str, ...]] = ("ape",)
    text: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("pos_embed.perturb_zoom", self.perturb_zoom, 1.0)

    @property
    def absolute(self) -> str | None:
        return "learned"

    def equivalent_strategy(self, strategy: str) -> str:
        """``interpolate`` resamples the table, as ``extrapolate`` does."""
        return "extrapolate" if strategy == "interpolate" else strategy

    def compresses_positions(self, strategy: str) -> bool:
        """The table is resampled under every strategy: its positions are always compressed."""
        return True

    def build_absolute(
        self, embed_dim: int, train_grid: Sequence[int], num_prefix_tokens: int, init_std: float
    ) -> nn.Module | None:
        return LearnedPosEmbed(
            embed_dim, train_grid, num_prefix_tokens, cls_slot=True, init_std=init_std, perturb_zoom=self.perturb_zoom
        )


@dataclass(frozen=True)
class SinCos(PosEmbedConfig):
    """Fixed sin-cos table (base 10000), recomputed for any grid."""

    name: str = "sincos"
    names: ClassVar[tuple[str, ...]] = ("sincos",)

    @property
    def absolute(self) -> str | None:
        return "sincos"

    def build_absolute(
        self, embed_dim: int, train_grid: Sequence[int], num_prefix_tokens: int, init_std: float
    ) -> nn.Module | None:
        return SinCosPosEmbed(embed_dim, train_grid)


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
class _RotaryFamily(PosEmbedConfig):
    """A rotary family (:class:`vit_rope.layers.rope_embed.Rotary` reads it); a name ending in
    ``_ape`` adds a learned table (no class slot).

    ``base`` generates the frequencies; ``yarn_alpha``/``yarn_beta`` bound YaRN's ramp, in
    turns over the training extent (see :mod:`vit_rope.extrapolate`); ``rotate_fraction`` below
    1 is partial RoPE (the slowest pairs of each axis stay unrotated).

    What the family is: ``num_axes`` (1: token or raster index; 2: ``x``, ``y``), ``learned``
    (the frequencies are parameters, one set per layer and head), ``axis_aligned`` (every pair
    follows one axis with a base-generated frequency, as NTK needs), ``learn_basis`` (the general
    form's orthogonal basis is learned). The class attributes ``layout``, ``coords``, ``shift``,
    ``jitter``, ``rescale`` are the values of a family without that option; a family that has it
    declares it as a field.
    """

    base: float = 100.0
    yarn_alpha: float = 1.0
    yarn_beta: float = 32.0
    rotate_fraction: float = 1.0
    # Options some families have (in this order, which is their order as fields).
    coords: ClassVar[str] = "index"
    shift: ClassVar[float] = 0.0
    jitter: ClassVar[float] = 0.0
    rescale: ClassVar[float] = 0.0
    learn_basis: ClassVar[bool] = False
    layout: ClassVar[str] = "interleaved"
    rotary: ClassVar[bool] = True
    num_axes: ClassVar[int] = 2
    learned: ClassVar[bool] = False
    axis_aligned: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()  # every option is checked now, before any model is built
        check_range("pos_embed.base", self.base, 1.0, low_open=True)
        check_choice("pos_embed.layout", self.layout, PAIR_LAYOUTS)
        check_choice("pos_embed.coords", self.coords, COORD_MODES)
        check_range("pos_embed.shift", self.shift, 0.0)
        _check_factor("jitter", self.jitter)
        _check_factor("rescale", self.rescale)
        check_range("pos_embed.yarn_alpha", self.yarn_alpha, 0.0)
        check_range("pos_embed.yarn_beta", self.yarn_beta, self.yarn_alpha, low_open=True)
        check_range("pos_embed.rotate_fraction", self.rotate_fraction, 0.0, 1.0, low_open=True)

    @property
    def absolute(self) -> str | None:
        return "learned" if self.name.endswith("_ape") else None

    @property
    def augments(self) -> bool:
        """Training-only coordinate augmentation is on."""
        return bool(self.shift) or self.jitter > 1.0 or self.rescale > 1.0

    def strategy_applies(self, strategy: str) -> bool:
        """Every strategy (``ensemble`` and ``calibrate`` included: they scale the rotary
        frequencies), except that NTK needs axis-aligned base-generated frequencies and
        normalized coordinates already map every grid onto the training range (so only
        ``extrapolate``). A learned table beside the rotation is resampled under all of them."""
        check_strategy(strategy)
        if self.coords == "normalized":
            return strategy == "extrapolate"
        return strategy != "ntk" or self.axis_aligned

    def compresses_positions(self, strategy: str) -> bool:
        """Normalized coordinates map every grid onto the training range; index positions are
        compressed under ``interpolate`` only. A learned table beside the rotation does not count:
        the rotation carries the relative positions."""
        return self.coords == "normalized" or strategy == "interpolate"

    def frequencies(self, depth: int, num_heads: int, head_dim: int) -> torch.Tensor:
        """The frequency matrix ``(d/2, a)`` (fixed), ``(heads, d/2, a)`` (fixed per head) or
        ``(depth, heads, d/2, a)`` (the initial values of learned ones)."""
        raise NotImplementedError

    def build_rotary(
        self, head_dim: int, num_heads: int, depth: int, train_grid: Sequence[int], num_prefix_tokens: int
    ) -> Rotary:
        return Rotary(self, head_dim, num_heads, depth, train_grid, num_prefix_tokens)

    def build_absolute(
        self, embed_dim: int, train_grid: Sequence[int], num_prefix_tokens: int, init_std: float
    ) -> nn.Module | None:
        if self.absolute is None:
            return None
        # RoPE-ViT's ``*_ape`` tables have no slots for the prefix tokens (timm's ViT has).
        return LearnedPosEmbed(embed_dim, train_grid, num_prefix_tokens, cls_slot=False, init_std=init_std)


@dataclass(frozen=True)
class _Rotary2d(_RotaryFamily):
    """A 2D rotary family: positions are ``index`` or ``normalized`` coordinates, with optional
    training-only augmentation (``shift``, ``jitter``, ``rescale``; 0 = off)."""

    coords: str = "index"
    shift: float = 0.0
    jitter: float = 0.0
    rescale: float = 0.0


@dataclass(frozen=True)
class Rope1d(_RotaryFamily):
    """1D RoPE on the raster index ``y*W + x`` of patches, or the token index of text."""

    name: str = "rope1d"
    base: float = 10000.0
    layout: str = "interleaved"
    names: ClassVar[tuple[str, ...]] = ("rope1d",)
    text: ClassVar[bool] = True
    num_axes: ClassVar[int] = 1
    axis_aligned: ClassVar[bool] = True

    def frequencies(self, depth: int, num_heads: int, head_dim: int) -> torch.Tensor:
        return axial_frequencies(head_dim, float(self.base), 1)


@dataclass(frozen=True)
class RopeAxial(_Rotary2d):
    """Axial 2D RoPE: the first d/4 pairs follow the column x, the rest the row y, frequencies
    ``base^(-4j/d)``. ``rope_dinov3`` is DINOv3's: normalized coordinates, rescale 2."""

    name: str = "rope_axial"
    base: float = 100.0
    layout: str = "interleaved"
    names: ClassVar[tuple[str, ...]] = ("rope_axial", "rope_axial_ape", "rope_dinov3")
    presets: ClassVar[dict[str, dict[str, Any]]] = {"rope_dinov3": {"coords": "normalized", "rescale": 2.0}}
    axis_aligned: ClassVar[bool] = True

    def frequencies(self, depth: int, num_heads: int, head_dim: int) -> torch.Tensor:
        return axial_frequencies(head_dim, float(self.base), 2)


@dataclass(frozen=True)
class RopeMixed(_Rotary2d):
    """RoPE-Mixed: learned 2D frequencies per layer and head, initialised with magnitudes
    ``base^(-4j/d)`` along a random direction (second half orthogonal); no weight decay."""

    name: str = "rope_mixed"
    base: float = 10.0
    names: ClassVar[tuple[str, ...]] = ("rope_mixed", "rope_mixed_ape")
    learned: ClassVar[bool] = True

    def frequencies(self, depth: int, num_heads: int, head_dim: int) -> torch.Tensor:
        return mixed_frequencies_init(depth, num_heads, head_dim, float(self.base))


@dataclass(frozen=True)
class RopeGeneral(RopeMixed):
    """The general rotary form ``P blockdiag(R(x a_j + y b_j)) P^T`` (Su's "completeness" of
    RoPE): RoPE-Mixed's learned frequencies in a learned orthogonal basis ``P`` per layer and
    head (a Cayley map, ``P = I`` at init). ``learn_basis=false`` fixes ``P = I``: RoPE-Mixed."""

    name: str = "rope_general"
    base: float = 10.0
    learn_basis: bool = True
    names: ClassVar[tuple[str, ...]] = ("rope_general", "rope_general_ape")


@dataclass(frozen=True)
class RopeSpiral(_Rotary2d):
    """Fixed 2D RoPE whose pairs point along golden-angle directions (a different set per head):
    axial RoPE's magnitudes ``base^(-4j/d)``, RoPE-Mixed's many directions, nothing learned."""

    name: str = "rope_spiral"
    base: float = 100.0
    layout: str = "interleaved"
    names: ClassVar[tuple[str, ...]] = ("rope_spiral", "rope_spiral_ape")

    def frequencies(self, depth: int, num_heads: int, head_dim: int) -> torch.Tensor:
        return spiral_frequencies(num_heads, head_dim, float(self.base))


def make_pos_embed(pos_embed: str | PosEmbedConfig, **options: Any) -> PosEmbedConfig:
    """The config of the encoding named ``pos_embed`` (or a config) with ``options``, e.g.
    ``make_pos_embed("rope_axial", base=10)``."""
    if isinstance(pos_embed, PosEmbedConfig):
        return dataclasses.replace(pos_embed, **options) if options else pos_embed
    family = ENCODINGS.get(pos_embed)
    if family is None:
        raise PositionConfigError(f"Unknown position encoding '{pos_embed}'; choose one of {', '.join(ENCODINGS)}.")
    values = {"name": pos_embed, **family.presets.get(pos_embed, {}), **options}
    return build_dataclass(family, values, "pos_embed", what=pos_embed)


def build_pos_embed(node: Mapping[str, Any]) -> PosEmbedConfig:
    """The config from a ``pos_embed`` group (``_target_`` names the family); any key that is not
    an option of that family ends in one sentence naming it and the valid keys."""
    node = dict(node)
    target = node.pop("_target_", None)
    name = node.get("name")
    if target is None:
        return make_pos_embed(node.pop("name", "none"), **node)
    family = next((f for f in ENCODINGS.values() if f"{f.__module__}.{f.__qualname__}" == target), None)
    if family is None:
        raise PositionConfigError(f"pos_embed._target_ '{target}' is not an encoding family of this project.")
    return build_dataclass(family, node, "pos_embed", what=str(name))
