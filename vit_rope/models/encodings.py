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
sentence. Each config knows which layers it builds (:meth:`PosEmbedConfig.build_rotary`,
:meth:`PosEmbedConfig.build_absolute`) and which test-time strategies apply to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from vit_rope.config import build_dataclass
from vit_rope.errors import PositionConfigError, check_range
from vit_rope.extrapolate import strategy_applies
from vit_rope.layers.abs_pos import LearnedPosEmbed, SinCosPosEmbed
from vit_rope.layers.rope_embed import Rotary, RotarySettings


@dataclass(frozen=True)
class PosEmbedConfig:
    """Base of every family: its ``name`` and the layers it is made of.

    Class attributes: ``rotary`` (``1d``, ``axial``, ``mixed`` or ``None``), ``absolute``
    (``learned``, ``sincos`` or ``None``) and ``names`` (the ``pos_embed=`` names of the family).
    """

    name: str = "none"
    rotary: ClassVar[str | None] = None
    absolute_kind: ClassVar[str | None] = None
    names: ClassVar[tuple[str, ...]] = ("none",)

    def __post_init__(self) -> None:
        if self.name not in self.names:
            raise PositionConfigError(
                f"pos_embed.name '{self.name}' is not a name of {type(self).__name__}; use one of {', '.join(self.names)}."
            )

    @property
    def absolute(self) -> str | None:
        """The absolute table: ``learned``, ``sincos`` or ``None``."""
        return self.absolute_kind

    @property
    def coords(self) -> str:
        return "index"

    def strategy_applies(self, strategy: str) -> bool:
        """False where ``strategy`` means nothing for this encoding (its result is n/a)."""
        return strategy_applies(self.rotary, self.absolute, strategy, self.coords)

    def rotary_settings(self) -> RotarySettings | None:
        return None

    def build_rotary(
        self, head_dim: int, num_heads: int, depth: int, train_grid: Sequence[int], num_prefix_tokens: int
    ) -> Rotary | None:
        settings = self.rotary_settings()
        if settings is None:
            return None
        return Rotary(settings, head_dim, num_heads, depth, train_grid, num_prefix_tokens)

    def build_absolute(
        self, embed_dim: int, train_grid: Sequence[int], num_prefix_tokens: int, init_std: float
    ) -> nn.Module | None:
        if self.absolute == "sincos":
            return SinCosPosEmbed(embed_dim, train_grid)
        if self.absolute == "learned":
            # timm's ViT has slots for the prefix tokens; RoPE-ViT's ``*_ape`` tables do not.
            cls_slot = self.rotary is None
            return LearnedPosEmbed(embed_dim, train_grid, num_prefix_tokens, cls_slot, init_std=init_std)
        return None


@dataclass(frozen=True)
class NoPosEmbed(PosEmbedConfig):
    """No position signal."""


@dataclass(frozen=True)
class LearnedAPE(PosEmbedConfig):
    """Learned absolute table, bicubic-resampled at other grids (timm).

    ``perturb_zoom`` > 1 turns on training-time position perturbation: each training batch reads
    the table resampled to a grid up to that many times larger, at a random offset
    (:meth:`vit_rope.layers.abs_pos.LearnedPosEmbed.perturbed`); 1 = off.
    """

    name: str = "ape"
    perturb_zoom: float = 1.0
    absolute_kind: ClassVar[str | None] = "learned"
    names: ClassVar[tuple[str, ...]] = ("ape",)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("pos_embed.perturb_zoom", self.perturb_zoom, 1.0)

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
    absolute_kind: ClassVar[str | None] = "sincos"
    names: ClassVar[tuple[str, ...]] = ("sincos",)


@dataclass(frozen=True)
class _RotaryFamily(PosEmbedConfig):
    """A rotary family; a name ending in ``_ape`` adds a learned table (no class slot).

    ``base`` generates the frequencies; ``yarn_alpha``/``yarn_beta`` bound YaRN's ramp, in
    turns over the training extent (see :mod:`vit_rope.extrapolate`); ``rotate_fraction`` below
    1 is partial RoPE (the slowest pairs of each axis stay unrotated).
    """

    base: float = 100.0
    yarn_alpha: float = 1.0
    yarn_beta: float = 32.0
    rotate_fraction: float = 1.0

    @property
    def absolute(self) -> str | None:
        return "learned" if self.name.endswith("_ape") else None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rotary_settings()  # checks every option now, before any model is built

    def rotary_settings(self) -> RotarySettings:
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}
        return RotarySettings(kind=self.rotary, **options)


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
    rotary: ClassVar[str | None] = "1d"
    names: ClassVar[tuple[str, ...]] = ("rope1d",)


@dataclass(frozen=True)
class RopeAxial(_Rotary2d):
    """Axial 2D RoPE: the first d/4 pairs follow the column x, the rest the row y, frequencies
    ``base^(-4j/d)``."""

    name: str = "rope_axial"
    base: float = 100.0
    layout: str = "interleaved"
    rotary: ClassVar[str | None] = "axial"
    names: ClassVar[tuple[str, ...]] = ("rope_axial", "rope_axial_ape", "rope_dinov3")


@dataclass(frozen=True)
class RopeMixed(_Rotary2d):
    """RoPE-Mixed: learned 2D frequencies per layer and head, initialised with magnitudes
    ``base^(-4j/d)`` along a random direction (second half orthogonal); no weight decay."""

    name: str = "rope_mixed"
    base: float = 10.0
    rotary: ClassVar[str | None] = "mixed"
    names: ClassVar[tuple[str, ...]] = ("rope_mixed", "rope_mixed_ape")


@dataclass(frozen=True)
class RopeGeneral(_Rotary2d):
    """The general rotary form ``P blockdiag(R(x a_j + y b_j)) P^T`` (Su's "completeness" of
    RoPE): RoPE-Mixed's learned frequencies in a learned orthogonal basis ``P`` per layer and
    head (a Cayley map, ``P = I`` at init). ``learn_basis=false`` fixes ``P = I``: RoPE-Mixed."""

    name: str = "rope_general"
    base: float = 10.0
    learn_basis: bool = True
    rotary: ClassVar[str | None] = "general"
    names: ClassVar[tuple[str, ...]] = ("rope_general", "rope_general_ape")


@dataclass(frozen=True)
class RopeSpiral(_Rotary2d):
    """Fixed 2D RoPE whose pairs point along golden-angle directions (a different set per head):
    axial RoPE's magnitudes ``base^(-4j/d)``, RoPE-Mixed's many directions, nothing learned."""

    name: str = "rope_spiral"
    base: float = 100.0
    layout: str = "interleaved"
    rotary: ClassVar[str | None] = "spiral"
    names: ClassVar[tuple[str, ...]] = ("rope_spiral", "rope_spiral_ape")


FAMILIES: tuple[type[PosEmbedConfig], ...] = (
    NoPosEmbed, LearnedAPE, SinCos, Rope1d, RopeAxial, RopeMixed, RopeGeneral, RopeSpiral,
)  # fmt: skip
ENCODINGS: dict[str, type[PosEmbedConfig]] = {
    "none": NoPosEmbed,
    "ape": LearnedAPE,
    "sincos": SinCos,
    "rope1d": Rope1d,
    "rope_axial": RopeAxial,
    "rope_mixed": RopeMixed,
    "rope_axial_ape": RopeAxial,
    "rope_mixed_ape": RopeMixed,
    "rope_general": RopeGeneral,
    "rope_general_ape": RopeGeneral,
    "rope_spiral": RopeSpiral,
    "rope_spiral_ape": RopeSpiral,
    "rope_dinov3": RopeAxial,
}
# Names that set some options of their family (conf/pos_embed/<name>.yaml says the same; a test keeps them equal).
PRESETS: dict[str, dict[str, Any]] = {"rope_dinov3": {"coords": "normalized", "rescale": 2.0}}
ENCODING_NAMES: tuple[str, ...] = tuple(ENCODINGS)
TEXT_ENCODINGS: tuple[str, ...] = ("none", "ape", "rope1d")


def make_pos_embed(name: str | PosEmbedConfig, **options: Any) -> PosEmbedConfig:
    """The config of the encoding ``name`` with ``options``, e.g. ``make_pos_embed("rope_axial", base=10)``."""
    if isinstance(name, PosEmbedConfig):
        return dataclasses.replace(name, **options) if options else name
    if name not in ENCODINGS:
        raise PositionConfigError(f"Unknown position encoding '{name}'; choose one of {', '.join(ENCODING_NAMES)}.")
    return build_dataclass(ENCODINGS[name], {"name": name, **PRESETS.get(name, {}), **options}, "pos_embed", what=name)


def build_pos_embed(node: Mapping[str, Any]) -> PosEmbedConfig:
    """The config from a ``pos_embed`` group (``_target_`` names the family); any key that is not
    an option of that family ends in one sentence naming it and the valid keys."""
    node = dict(node)
    target = node.pop("_target_", None)
    name = node.get("name")
    if target is None:
        return make_pos_embed(node.pop("name", "none"), **node)
    family = next((f for f in FAMILIES if f"{f.__module__}.{f.__qualname__}" == target), None)
    if family is None:
        raise PositionConfigError(f"pos_embed._target_ '{target}' is not an encoding family of this project.")
    return build_dataclass(family, node, "pos_embed", what=str(name))
