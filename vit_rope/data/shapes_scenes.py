"""The ``shapes`` scenes: what they look like (:class:`ShapesConfig`), how one is drawn
(:func:`sample_scene`, a pure function of ``(seed, split, index)``) and how scenes are rendered
into pixels at any size (:func:`render_scenes`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from vit_rope.data.common import DataConfigError, Size, as_hw, split_id
from vit_rope.errors import check_choice, check_range

# Per-axis code (sx, sy) of the target's offset from the reference: +1 / -1 means at least
# min_sep towards +x (right) / -x, 0 means aligned within align_tol. y grows downwards
# (image rows), so north is sy = -1.
_RELATIONS: dict[tuple[str, int], tuple[tuple[str, ...], tuple[tuple[int, int], ...]]] = {
    ("direction", 4): (("NE", "NW", "SW", "SE"), ((1, -1), (-1, -1), (-1, 1), (1, 1))),
    ("direction", 8): (
        ("E", "NE", "N", "NW", "W", "SW", "S", "SE"),
        ((1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1)),
    ),
    # The line through both shapes; the offset's sign is drawn at random, so either shape can
    # be on either side and no single shape's place says much about the label.
    ("orientation", 4): (("horizontal", "vertical", "rising", "falling"), ((1, 0), (0, 1), (1, -1), (1, 1))),
}

# Forms: the reference is a square, the target a circle; distractors take any form but never
# the reference or target colour.
SQUARE, CIRCLE, DIAMOND = 0, 1, 2
_REF_COLOUR = (0.95, 0.25, 0.2)  # red
_TARGET_COLOUR = (0.2, 0.5, 1.0)  # blue
_DISTRACTOR_COLOURS = ((0.25, 0.85, 0.3), (0.95, 0.85, 0.2), (0.85, 0.85, 0.85))  # green, yellow, white

# Per-channel mean and std of the default scenes (zoom, 32 px training images); fixed constants
# so that every resolution and mode is normalised the same way, as ImageNet's mean/std are for
# photos.
SHAPES_MEAN = (0.167, 0.158, 0.164)
SHAPES_STD = (0.118, 0.070, 0.111)


@dataclass(frozen=True)
class ShapesConfig:
    """What a ``shapes`` scene looks like. Lengths are fractions of the image side at the
    training size (``zoom`` scales them with the image, ``canvas`` keeps them in pixels).

    The label is the relation between a reference (red square) and a target (blue circle).
    A model without positions sees only a bag of patches, so it can read the relation only if
    one patch holds pixels of both shapes; that never happens while
    ``patch_size / img_size <= min_gap`` (see :attr:`min_gap`).

    No relation in a bounded frame is free of absolute cues (a shape at the left edge cannot be
    right of its partner), and keeping the shapes a patch apart makes the cue larger. The
    ``orientation`` relation (the default) leaks least through one shape's absolute position;
    4-class ``direction`` leaks most, since its label shifts each shape's mean position by about
    ``min_sep``.

    Each field is checked on construction, named by its key ``data.<field>``.
    """

    num_classes: int = 4  # direction: 4 (NE NW SW SE) or 8 (compass); orientation: 4
    relation: str = "orientation"  # "orientation" (line through both shapes) or "direction" (of target)
    shape_size: float = 0.07  # half-width of a shape
    size_jitter: float = 0.1  # relative +- jitter of shape_size
    min_sep: float = 0.3  # smallest centre offset along a separated axis
    max_sep: float = 0.36  # largest centre offset along a separated axis (wider: more absolute cue)
    align_tol: float = 0.02  # largest centre offset along an aligned axis
    border: float = 0.03  # empty margin between every shape and the image edge
    distractors: int = 0  # extra shapes in other colours that carry no label information
    colour_jitter: float = 0.05  # +- per channel

    def __post_init__(self) -> None:
        check_choice("data.relation", self.relation, sorted({r for r, _ in _RELATIONS}))
        # Whole numbers are stored as int, so that 4.0 from a config file works as 4.
        object.__setattr__(self, "num_classes", check_range("data.num_classes", self.num_classes, 1, integer=True))
        object.__setattr__(self, "distractors", check_range("data.distractors", self.distractors, 0, integer=True))
        if (self.relation, self.num_classes) not in _RELATIONS:
            options = ", ".join(f"relation={r} num_classes={k}" for r, k in _RELATIONS)
            raise DataConfigError(
                f"data.relation='{self.relation}' with num_classes={self.num_classes} is not defined; "
                f"use one of: {options}."
            )
        check_range("data.shape_size", self.shape_size, 0, 0.5, low_open=True, high_open=True)
        check_range("data.size_jitter", self.size_jitter, 0, 1, high_open=True)
        check_range("data.border", self.border, 0, 0.5, high_open=True)
        check_range("data.min_sep", self.min_sep, 0, 1, low_open=True)
        check_range("data.max_sep", self.max_sep, 0, 1, low_open=True)
        check_range("data.align_tol", self.align_tol, 0)
        check_range("data.colour_jitter", self.colour_jitter, 0, 1)
        if not self.min_sep <= self.max_sep <= self.hi - self.lo:
            raise DataConfigError(
                f"data.min_sep={self.min_sep}, data.max_sep={self.max_sep} must satisfy "
                f"0 < min_sep <= max_sep <= {self.hi - self.lo:.3f} (the room between the borders); "
                "lower them or data.shape_size."
            )
        if not self.align_tol < self.min_sep / 2:
            raise DataConfigError(
                f"data.align_tol={self.align_tol} must be in [0, min_sep/2) so that aligned and separated "
                "axes cannot be confused; lower data.align_tol."
            )

    @property
    def max_size(self) -> float:
        return self.shape_size * (1 + self.size_jitter)

    @property
    def lo(self) -> float:
        """Smallest centre coordinate: a shape at ``lo`` still keeps ``border`` from the edge."""
        return self.max_size + self.border

    @property
    def hi(self) -> float:
        return 1.0 - self.lo

    @property
    def min_gap(self) -> float:
        """Smallest gap between the two shapes along a separated axis. With the 1-pixel soft
        edge, no ``p``-pixel patch holds pixels of both when ``min_sep * S >= 2 * r + p``,
        i.e. ``p / S <= min_gap``: 0.146 by default, so patch 4 at 32 px (0.125) is safe."""
        return self.min_sep - 2 * self.max_size

    @property
    def class_names(self) -> tuple[str, ...]:
        return _RELATIONS[(self.relation, self.num_classes)][0]

    @property
    def offset_signs(self) -> tuple[tuple[int, int], ...]:
        """Per class, the sign (-1, 0 or 1) of the target's offset from the reference along x and
        y (y down); 0: aligned within ``align_tol``. For ``orientation`` both signs may flip."""
        return _RELATIONS[(self.relation, self.num_classes)][1]


@dataclass
class ShapeScenes:
    """Scene parameters of ``n`` images with ``k`` shape slots (0 = reference, 1 = target,
    2.. = distractors), in scene units: coordinates in [0, 1] along each image axis."""

    label: np.ndarray  # (n,) int64
    pos: np.ndarray  # (n, k, 2) centre (x, y), y down
    size: np.ndarray  # (n, k) half-width, fraction of the short side at the training size
    form: np.ndarray  # (n, k) SQUARE / CIRCLE / DIAMOND
    colour: np.ndarray  # (n, k, 3) RGB in [0, 1]
    active: np.ndarray  # (n, k) bool; a distractor that found no free place is left out
    background: np.ndarray  # (n,) grey level

    def __getitem__(self, idx: Any) -> ShapeScenes:
        return ShapeScenes(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


def _place_pair(rng: np.random.Generator, s: int, cfg: ShapesConfig) -> tuple[float, float]:
    """Reference and target coordinate along one axis for offset sign ``s``. The offset is
    drawn first, then the pair is placed uniformly among all places where both fit: for a
    fixed offset this is the placement that tells least about the label from one shape alone."""
    u_offset, u_place = rng.random(2)
    if s == 0:
        d = (2 * u_offset - 1) * cfg.align_tol
    else:
        d = s * (cfg.min_sep + u_offset * (cfg.max_sep - cfg.min_sep))
    ref = cfg.lo + max(-d, 0.0) + u_place * (cfg.hi - cfg.lo - abs(d))
    return ref, ref + d


def sample_scene(seed: int, split: str, index: int, cfg: ShapesConfig) -> ShapeScenes:
    """One scene, a pure function of ``(seed, split, index)`` and the config."""
    rng = np.random.default_rng([seed, split_id(split), index])
    k = 2 + cfg.distractors
    label = int(rng.integers(cfg.num_classes))
    sx, sy = cfg.offset_signs[label]
    if cfg.relation == "orientation" and rng.random() < 0.5:
        sx, sy = -sx, -sy
    pos = np.zeros((k, 2))
    pos[0, 0], pos[1, 0] = _place_pair(rng, sx, cfg)
    pos[0, 1], pos[1, 1] = _place_pair(rng, sy, cfg)
    size = cfg.shape_size * (1 + cfg.size_jitter * (2 * rng.random(k) - 1))
    form = np.full(k, DIAMOND)
    form[:2] = SQUARE, CIRCLE
    colour = np.zeros((k, 3))
    colour[0], colour[1] = _REF_COLOUR, _TARGET_COLOUR
    active = np.ones(k, dtype=bool)
    # Distractors: rejection sampling among a fixed number of candidates, so that the random
    # stream (and hence the scene) does not depend on how many tries were needed.
    min_dist = 2 * cfg.max_size + cfg.border
    for j in range(2, k):
        form[j] = rng.integers(3)
        colour[j] = _DISTRACTOR_COLOURS[rng.integers(len(_DISTRACTOR_COLOURS))]
        cand = cfg.lo + rng.random((16, 2)) * (cfg.hi - cfg.lo)
        cheb = np.abs(cand[:, None, :] - pos[None, :j, :]).max(-1).min(-1)  # (16,)
        free = np.flatnonzero(cheb >= min_dist)
        if free.size:
            pos[j] = cand[free[0]]
        else:
            active[j] = False
    colour = np.clip(colour + cfg.colour_jitter * (2 * rng.random((k, 3)) - 1), 0, 1)
    background = 0.05 + 0.2 * rng.random()
    return ShapeScenes(
        label=np.array([label]),
        pos=pos[None],
        size=size[None],
        form=form[None],
        colour=colour[None],
        active=active[None],
        background=np.array([background]),
    )


def _signed_distance(form: int, dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Distance in pixels from the shape's edge (negative inside), given ``|x - cx|``, ``|y - cy|``
    and the half-width ``r``; exact for the circle, and for square and diamond along the edges,
    which is where anti-aliasing happens."""
    if form == SQUARE:
        return torch.maximum(dx, dy) - r
    if form == CIRCLE:
        return torch.sqrt(dx * dx + dy * dy) - r
    return (dx + dy - r) * math.sqrt(0.5)  # diamond with vertices at distance r


def render_scenes(scenes: ShapeScenes, img_size: Size, shape_scale: float, chunk: int = 256) -> torch.Tensor:
    """Anti-aliased rendering of scenes into uint8 images ``(n, 3, H, W)``.

    Args:
        scenes: Scene parameters (scene units).
        img_size: Output ``(H, W)``; scene x spans the width and y the height.
        shape_scale: Pixels per unit of shape size (``zoom``: the short side of the output;
            ``canvas``: the short side of the training size).
        chunk: Scenes rendered at once (bounds the temporaries to ``chunk * H * W`` floats).
    """
    h, w = as_hw(img_size)
    n, k = scenes.form.shape
    out = torch.empty((n, 3, h, w), dtype=torch.uint8)
    xs = torch.arange(w, dtype=torch.float32) + 0.5  # pixel centres
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        m = sl.stop - sl.start
        cx = torch.from_numpy(scenes.pos[sl, :, 0]).float() * w  # (m, k)
        cy = torch.from_numpy(scenes.pos[sl, :, 1]).float() * h
        radius = torch.from_numpy(scenes.size[sl]).float() * shape_scale  # (m, k) pixels
        form = torch.from_numpy(scenes.form[sl])
        colour = torch.from_numpy(scenes.colour[sl]).float()  # (m, k, 3)
        active = torch.from_numpy(scenes.active[sl]).float()
        img = torch.from_numpy(scenes.background[sl]).float().view(m, 1, 1, 1).expand(m, 3, h, w).clone()
        for j in range(k):
            dx = (xs.view(1, 1, w) - cx[:, j].view(m, 1, 1)).abs()  # (m, 1, W)
            dy = (ys.view(1, h, 1) - cy[:, j].view(m, 1, 1)).abs()  # (m, H, 1)
            r = radius[:, j].view(m, 1, 1)
            f = form[:, j].view(m, 1, 1)
            # Signed distance in pixels, computed only for the forms present in this slot.
            sdf = None
            for code in torch.unique(f).tolist():
                d = _signed_distance(code, dx, dy, r)
                sdf = d if sdf is None else torch.where(f == code, d, sdf)
            # Coverage with a 1-pixel soft edge: 1 inside, 0 beyond half a pixel outside.
            alpha = (0.5 - sdf).clamp_(0, 1) * active[:, j].view(m, 1, 1)  # (m, H, W)
            img += alpha.unsqueeze(1) * (colour[:, j].view(m, 3, 1, 1) - img)
        out[sl] = img.mul_(255).round_().to(torch.uint8)
    return out
