"""Data modules: synthetic ``shapes`` (2D), synthetic ``sequences`` (1D text) and ``imagefolder`` subsets.

All three expose the same small interface, which one evaluation loop drives:

- ``num_classes`` and ``train_resolution`` (image side in pixels, or sequence length for text);
- ``train_dataloader()`` and ``val_dataloader()``;
- ``eval_dataloader(resolution, mode=None)``: the same validation samples at another resolution.
  At the training resolution it gives exactly what ``val_dataloader()`` gives.

"Larger" has two meanings (DESIGN section 3). ``zoom``: the same scene at more pixels (or, for
text, the same layout stretched over more tokens). ``canvas``: a larger scene at the same scale
(shapes keep their pixel size and spread over more pixels; markers keep their token distance
and the sequence gets more filler). Real photos can only be zoomed.

Every bad setting raises :class:`DataConfigError` with one sentence that names the value and
the fix.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

from vit_rope.errors import ConfigError

log = logging.getLogger(__name__)

Size = int | tuple[int, int]
MODES = ("zoom", "canvas")


class DataConfigError(ConfigError):
    """A data setting or file that cannot work; the message names the value and the fix."""


class CorruptImageError(DataConfigError):
    """An image file that PIL cannot decode; the message names the file."""


# -- helpers shared by the data modules --------------------------------------------------------


def _split_id(split: str) -> int:
    """Stable integer for a split name (Python's ``hash`` is salted per process)."""
    return {"train": 0, "val": 1, "test": 2}.get(split, zlib.crc32(split.encode()))


def _as_hw(size: Size) -> tuple[int, int]:
    """``32`` or ``(32, 48)`` -> ``(H, W)``; refuses sizes below one pixel."""
    if isinstance(size, int | np.integer):
        h = w = int(size)
    else:
        h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise DataConfigError(f"Image size {size} is not positive; use a side of at least 1 pixel.")
    return h, w


def _check_mode(mode: str, allowed: Sequence[str] = MODES) -> str:
    if mode not in allowed:
        raise DataConfigError(f"mode='{mode}' is unknown; use one of {', '.join(allowed)}.")
    return mode


def default_num_workers() -> int:
    """Loader workers when ``num_workers=None``: up to 8 with a GPU, and few on a CPU-only run,
    where every worker takes a core from the training process itself."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    if torch.cuda.is_available():
        return min(8, cpus)
    return min(2, max(cpus - 1, 0))


class EpochShuffleSampler(Sampler[int]):
    """A random order that depends only on ``(seed, epoch)``. Lightning calls ``set_epoch`` at
    every epoch, so a run resumed from ``last.ckpt`` sees the same batches as one that was never
    interrupted (a plain ``shuffle=True`` would draw from wherever the global RNG stands)."""

    def __init__(self, num_samples: int, seed: int | None = None) -> None:
        self.num_samples = num_samples
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


def _loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    shuffle: bool = False,
    persistent: bool = False,
    collate_fn: Any = None,
) -> DataLoader:
    """A DataLoader with the settings every module uses: pinned memory only when a GPU can use it,
    persistent workers only for loaders that are iterated every epoch."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(len(dataset)) if shuffle else None,
        # A last partial training batch adds noise and, under DDP, uneven steps.
        drop_last=shuffle and len(dataset) > batch_size,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=persistent and num_workers > 0,
        collate_fn=collate_fn,
    )


# -- shapes: synthetic 2D relational scenes ----------------------------------------------------

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

# Per-channel mean and std of the default scenes at the training size (measured on 2,000
# training images, zoom, 32 px); fixed constants so that every resolution and mode is normalised
# the same way, as ImageNet's mean/std are for photos.
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
    right of its partner), and keeping the shapes a patch apart makes the cue larger. The best
    classifier from one shape's absolute position alone reaches about 0.40 with the defaults
    (``orientation``, chance 0.25), about 0.39 for 8-class ``direction`` (chance 0.125) and
    about 0.78 for 4-class ``direction`` (chance 0.25), whose label shifts each shape's mean
    position by about ``min_sep``; that is why ``orientation`` is the default.
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
        if (self.relation, self.num_classes) not in _RELATIONS:
            options = ", ".join(f"relation={r} num_classes={k}" for r, k in _RELATIONS)
            raise DataConfigError(
                f"shapes relation='{self.relation}' with num_classes={self.num_classes} is not defined; "
                f"use one of: {options}."
            )
        if not 0 < self.min_sep <= self.max_sep <= self.hi - self.lo:
            raise DataConfigError(
                f"shapes min_sep={self.min_sep}, max_sep={self.max_sep} must satisfy "
                f"0 < min_sep <= max_sep <= {self.hi - self.lo:.3f} (the room between the borders); "
                "lower them or shape_size."
            )
        if not 0 <= self.align_tol < self.min_sep / 2:
            raise DataConfigError(
                f"shapes align_tol={self.align_tol} must be in [0, min_sep/2) so that aligned and separated "
                "axes cannot be confused; lower align_tol."
            )
        if self.distractors < 0:
            raise DataConfigError(f"shapes distractors={self.distractors} is negative; use 0 or more.")

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

    def label_of(self, dx: float, dy: float) -> int:
        """The label of a target at centre offset ``(dx, dy)`` from the reference (scene units,
        y down); the rule every rendered scene obeys."""
        code = tuple(0 if abs(d) <= self.align_tol else int(np.sign(d)) for d in (dx, dy))
        codes = _RELATIONS[(self.relation, self.num_classes)][1]
        if self.relation == "orientation" and code not in codes:
            code = (-code[0], -code[1])
        return codes.index(code)


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
    rng = np.random.default_rng([seed, _split_id(split), index])
    k = 2 + cfg.distractors
    codes = _RELATIONS[(cfg.relation, cfg.num_classes)][1]
    label = int(rng.integers(cfg.num_classes))
    sx, sy = codes[label]
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
    h, w = _as_hw(img_size)
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


class _SyntheticDataset(Dataset):
    """Shared machinery of the synthetic datasets: samples are made in batches by ``_make``
    (vectorised), served one by one or a batch at a time (``__getitems__``, which DataLoader
    uses), and optionally cached whole after the first use. A subclass names its ``kind`` and
    passes its options dataclass, whose unknown fields get a clear error."""

    kind = "synthetic"

    def __init__(
        self, num_samples: int, cache: bool, seed: int, split: str, mode: str, config_cls: type, options: dict
    ) -> None:
        if num_samples < 1:
            raise DataConfigError(f"num_samples={num_samples} must be at least 1; raise it.")
        self.num_samples = int(num_samples)
        self.cache = cache
        self._data: torch.Tensor | None = None
        self.mode = _check_mode(mode)
        self.seed, self.split = int(seed), split
        try:
            self.config = config_cls(**options)
        except TypeError as e:
            names = ", ".join(f.name for f in fields(config_cls))
            raise DataConfigError(f"Unknown {self.kind} option in {sorted(options)}; the options are {names}.") from e

    def __len__(self) -> int:
        return self.num_samples

    def _make(self, indices: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def _finish(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    @property
    def labels(self) -> torch.Tensor:
        """Labels of all samples, ``(num_samples,)`` int64."""
        raise NotImplementedError

    def prerender(self) -> _SyntheticDataset:
        """Make every sample now (in the main process, so forked workers share the result)."""
        if self._data is None:
            self._data = self._make(np.arange(self.num_samples))
        return self

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < -self.num_samples or idx.max() >= self.num_samples):
            raise IndexError(f"index out of range for {self.num_samples} samples")
        idx %= self.num_samples
        if self.cache:
            self.prerender()
        raw = self._data[torch.from_numpy(idx)] if self._data is not None else self._make(idx)
        x = self._finish(raw)
        y = self.labels[torch.from_numpy(idx)].tolist()
        return list(zip(x, y, strict=True))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([index])[0]


class ShapesDataset(_SyntheticDataset):
    """Synthetic scenes whose label needs 2D relational position; see :class:`ShapesConfig`.

    Sample ``i`` is a pure function of ``(seed, split, i)``; ``img_size`` and ``mode`` only
    change how it is rendered, never the scene or the label.

    Args:
        num_samples: Dataset length.
        img_size: Rendered size, ``S`` or ``(H, W)``.
        seed, split: Select the scenes (train and val scenes differ).
        mode: ``zoom`` (shapes scale with the image) or ``canvas`` (shapes keep the pixel size
            they have at ``train_size``; positions spread over the larger image). Equal at
            ``img_size == train_size``.
        train_size: Training size; defaults to ``img_size``.
        cache: Render every image once on first use and keep it (uint8, ``3*H*W`` bytes each).
        **scene: :class:`ShapesConfig` fields (``num_classes``, ``relation``, ``distractors``,
            ``shape_size``, ``min_sep``, ...).

    Items are ``(image (3, H, W) float32 normalised with SHAPES_MEAN/STD, label)``.
    """

    kind = "shapes"

    def __init__(
        self,
        num_samples: int,
        img_size: Size,
        seed: int = 0,
        split: str = "train",
        mode: str = "zoom",
        train_size: Size | None = None,
        cache: bool = False,
        **scene: Any,
    ) -> None:
        super().__init__(num_samples, cache, seed, split, mode, ShapesConfig, scene)
        self.img_size = _as_hw(img_size)
        self.train_size = _as_hw(train_size) if train_size is not None else self.img_size
        self._scenes: ShapeScenes | None = None
        self._mean = torch.tensor(SHAPES_MEAN).view(3, 1, 1)
        self._std = torch.tensor(SHAPES_STD).view(3, 1, 1)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @property
    def scenes(self) -> ShapeScenes:
        """Parameters of all scenes (sampled once, on first use)."""
        if self._scenes is None:
            parts = [sample_scene(self.seed, self.split, i, self.config) for i in range(self.num_samples)]
            self._scenes = ShapeScenes(
                **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(ShapeScenes)}
            )
        return self._scenes

    @property
    def labels(self) -> torch.Tensor:
        return torch.from_numpy(self.scenes.label)

    @property
    def shape_scale(self) -> float:
        """Pixels per unit of shape size at this size and mode."""
        return float(min(self.img_size) if self.mode == "zoom" else min(self.train_size))

    def _make(self, indices: np.ndarray) -> torch.Tensor:
        return render_scenes(self.scenes[indices], self.img_size, self.shape_scale)

    def _finish(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw.float() / 255 - self._mean) / self._std


class _SyntheticDataModule(L.LightningDataModule):
    """What the synthetic data modules share: a cached training and validation set, and the
    validation samples regenerated at another resolution (or length) for evaluation.
    Subclasses set ``train_set``, ``val_set``, ``batch_size``, ``num_workers``, ``mode`` and
    implement :meth:`train_resolution` and :meth:`_eval_set`."""

    train_set: _SyntheticDataset
    val_set: _SyntheticDataset

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @property
    def train_resolution(self) -> int:
        raise NotImplementedError

    def _eval_set(self, resolution: Any, mode: str) -> _SyntheticDataset:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        if self.num_workers > 0:
            self.train_set.prerender()  # before the workers fork, so they share one copy
        return _loader(self.train_set, self.batch_size, self.num_workers, shuffle=True, persistent=True)

    def val_dataloader(self) -> DataLoader:
        if self.num_workers > 0:
            self.val_set.prerender()
        return _loader(self.val_set, self.batch_size, self.num_workers, persistent=True)

    def eval_dataloader(self, resolution: Any, mode: str | None = None, batch_size: int | None = None) -> DataLoader:
        """The validation samples at ``resolution`` in ``mode`` (default: the module's). At the
        training resolution this is exactly ``val_dataloader()``; other sizes are made a batch at
        a time (not cached), so large sizes cost no memory."""
        mode = _check_mode(mode or self.mode)
        if _as_hw(resolution) == _as_hw(self.train_resolution):
            return self.val_dataloader()
        return _loader(self._eval_set(resolution, mode), batch_size or self.batch_size, self.num_workers)


class ShapesDataModule(_SyntheticDataModule):
    """The embedded default data: synthetic ``shapes`` scenes, rendered on the fly (no download).

    Args:
        img_size: Training image side (``train_resolution``).
        num_train, num_val: Number of training / validation scenes.
        batch_size: Per step (also for evaluation unless ``eval_dataloader`` is given one).
        num_workers: Loader workers; 0 is right here, the images are rendered once and cached.
        seed: Selects the scenes.
        mode: Default ``eval_dataloader`` mode, ``zoom`` or ``canvas``.
        patch_size: If given, refuse settings where one patch can hold pixels of both shapes
            (a model without positions could then beat chance).
        **scene: :class:`ShapesConfig` fields: ``num_classes`` (4), ``relation`` (orientation),
            ``distractors`` (0), ``shape_size``, ``size_jitter``, ``min_sep``, ``max_sep``,
            ``align_tol``, ``border``, ``colour_jitter``.
    """

    def __init__(
        self,
        img_size: int = 32,
        num_train: int = 20000,
        num_val: int = 2000,
        batch_size: int = 128,
        num_workers: int | None = 0,
        seed: int = 0,
        mode: str = "zoom",
        patch_size: int | None = None,
        **scene: Any,
    ) -> None:
        super().__init__()
        self.img_size = int(img_size)
        self.batch_size = int(batch_size)
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        self.mode = _check_mode(mode)
        self.train_set = ShapesDataset(num_train, self.img_size, seed, "train", "zoom", cache=True, **scene)
        self.config = self.train_set.config
        self.val_set = ShapesDataset(num_val, self.img_size, seed, "val", self.mode, cache=True, **scene)
        self._seed, self._num_val, self._scene = seed, num_val, scene
        if patch_size is not None and patch_size / self.img_size > self.config.min_gap + 1e-9:
            need = 2 * self.config.max_size + patch_size / self.img_size
            raise DataConfigError(
                f"With patch_size={patch_size} at img_size={self.img_size} one patch can hold pixels of both "
                f"shapes, so a model without positions could beat chance; set data.min_sep to at least "
                f"{need:.3f} (and data.max_sep to match) or use a larger img_size."
            )

    @property
    def train_resolution(self) -> int:
        return self.img_size

    def _eval_set(self, resolution: Any, mode: str) -> ShapesDataset:
        ds = ShapesDataset(self._num_val, resolution, self._seed, "val", mode, train_size=self.img_size, **self._scene)
        ds._scenes = self.val_set.scenes  # same scenes; saves sampling them again
        return ds


# -- sequences: synthetic 1D relational token data ---------------------------------------------

PAD, MARKER_A, MARKER_B = 0, 1, 2
FIRST_FILLER = 3


@dataclass(frozen=True)
class SequenceConfig:
    """What a ``sequences`` sample looks like.

    Filler tokens are i.i.d. uniform over ``[3, vocab_size)``; markers ``A`` (1) and ``B`` (2)
    appear exactly once each, so the bag of tokens has the same law for every label and a
    model without positions stays at chance. The label is which marker comes first and, with
    4 classes, whether their distance is near (``near`` range) or far (``far`` range).
    Distances are fractions of the training length.
    """

    num_classes: int = 4  # 2: order of A and B; 4: order x (near, far)
    vocab_size: int = 32  # token ids: 0 pad (unused), 1 and 2 markers, 3.. filler
    near: tuple[float, float] = (1 / 32, 1 / 8)  # distance range of the near class
    far: tuple[float, float] = (1 / 4, 1 / 2)  # distance range of the far class

    def __post_init__(self) -> None:
        if self.num_classes not in (2, 4):
            raise DataConfigError(f"sequences num_classes={self.num_classes} is not defined; use 2 or 4.")
        if self.vocab_size < FIRST_FILLER + 2:
            raise DataConfigError(
                f"sequences vocab_size={self.vocab_size} leaves fewer than 2 filler ids; use at least 5."
            )
        if not 0 < self.near[0] <= self.near[1] < self.far[0] <= self.far[1] < 1:
            raise DataConfigError(
                f"sequences near={tuple(self.near)} and far={tuple(self.far)} must be increasing fractions "
                "in (0, 1) with near below far; fix the ranges."
            )

    @property
    def class_names(self) -> tuple[str, ...]:
        if self.num_classes == 2:
            return ("A<B", "B<A")
        return ("A<B near", "B<A near", "A<B far", "B<A far")

    def distance_range(self, length: int, far: bool) -> tuple[int, int]:
        """Inclusive range of marker distances in tokens at training length ``length``."""
        lo, hi = self.far if far else self.near
        return max(1, round(lo * length)), max(1, round(hi * length))


class SequenceDataset(_SyntheticDataset):
    """Token sequences whose label needs relative token order and distance.

    Sample ``i`` is a pure function of ``(seed, split, i)``: its label, marker order, marker
    distance ``d`` (tokens at ``train_length``) and relative placement ``v`` in [0, 1). At any
    ``length`` the first marker sits at ``floor(v * (length - d'))`` and the second ``d'``
    tokens later, with ``d' = d`` (``canvas``: a longer text with the same local structure,
    more filler around it) or ``d' = round(d * length / train_length)`` (``zoom``: the same
    layout stretched). The label is unchanged: in ``canvas`` the near/far rule holds in
    tokens, in ``zoom`` as a fraction of the length.

    Args:
        num_samples: Dataset length.
        length: Sequence length ``L`` of the items.
        seed, split: Select the samples.
        mode: ``canvas`` or ``zoom``, see above.
        train_length: Length that distances refer to; defaults to ``length``.
        cache: Make every sequence once on first use and keep it.
        **options: :class:`SequenceConfig` fields (``num_classes``, ``vocab_size``, ``near``, ``far``).

    Items are ``(tokens (L,) int64, label)``.
    """

    kind = "sequences"

    def __init__(
        self,
        num_samples: int,
        length: int,
        seed: int = 0,
        split: str = "train",
        mode: str = "canvas",
        train_length: int | None = None,
        cache: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(num_samples, cache, seed, split, mode, SequenceConfig, options)
        self.length = int(length)
        self.train_length = int(train_length) if train_length is not None else self.length
        far_max = self.config.distance_range(self.train_length, far=True)[1]
        if self.length < self._distance(far_max) + 1:
            raise DataConfigError(
                f"Sequence length {self.length} cannot hold markers {self._distance(far_max)} tokens apart "
                f"({self.mode} mode, training length {self.train_length}); use a length of at least "
                f"{self._distance(far_max) + 1}."
            )
        self._meta: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def _draw(self, index: int) -> tuple[np.random.Generator, int, int, int, float]:
        """Label, order (0: A first), distance at the training length, placement; then the rng,
        whose further draws give the filler."""
        rng = np.random.default_rng([self.seed, _split_id(self.split), index])
        label = int(rng.integers(self.config.num_classes))
        order = label % 2
        far = label >= 2 if self.config.num_classes == 4 else bool(rng.integers(2))
        lo, hi = self.config.distance_range(self.train_length, far)
        d = int(rng.integers(lo, hi + 1))
        v = float(rng.random())
        return rng, label, order, d, v

    @property
    def meta(self) -> np.ndarray:
        """``(num_samples, 4)`` int64: label, order, distance at the training length, and the
        first marker's position at this length."""
        if self._meta is None:
            rows = []
            for i in range(self.num_samples):
                _, label, order, d, v = self._draw(i)
                d_here = self._distance(d)
                rows.append((label, order, d, int(v * (self.length - d_here))))
            self._meta = np.array(rows, dtype=np.int64).reshape(-1, 4)
        return self._meta

    @property
    def labels(self) -> torch.Tensor:
        return torch.from_numpy(self.meta[:, 0])

    def _distance(self, d: int) -> int:
        if self.mode == "canvas":
            return d
        return max(1, round(d * self.length / self.train_length))

    def _make(self, indices: np.ndarray) -> torch.Tensor:
        out = torch.empty((len(indices), self.length), dtype=torch.int64)
        for row, i in enumerate(indices.tolist()):
            rng, _, order, d, v = self._draw(i)
            tokens = rng.integers(FIRST_FILLER, self.config.vocab_size, size=self.length)
            d_here = self._distance(d)
            p = int(v * (self.length - d_here))
            first, second = (MARKER_A, MARKER_B) if order == 0 else (MARKER_B, MARKER_A)
            tokens[p], tokens[p + d_here] = first, second
            out[row] = torch.from_numpy(tokens)
        return out


class SequenceDataModule(_SyntheticDataModule):
    """Synthetic token sequences for the 1D text path; the length plays the part of resolution.

    Args:
        length: Training sequence length (``train_resolution``).
        num_train, num_val: Number of training / validation sequences.
        batch_size: Per step (also for evaluation unless ``eval_dataloader`` is given one).
        num_workers: Loader workers; 0 is right here (sequences are made once and cached).
        seed: Selects the samples.
        mode: Default ``eval_dataloader`` mode: ``canvas`` (same marker distance, more filler)
            or ``zoom`` (layout stretched).
        **options: :class:`SequenceConfig` fields: ``num_classes`` (4), ``vocab_size`` (32),
            ``near``, ``far``.
    """

    def __init__(
        self,
        length: int = 64,
        num_train: int = 20000,
        num_val: int = 2000,
        batch_size: int = 128,
        num_workers: int | None = 0,
        seed: int = 0,
        mode: str = "canvas",
        **options: Any,
    ) -> None:
        super().__init__()
        self.length = int(length)
        self.batch_size = int(batch_size)
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        self.mode = _check_mode(mode)
        self.train_set = SequenceDataset(num_train, self.length, seed, "train", cache=True, **options)
        self.val_set = SequenceDataset(num_val, self.length, seed, "val", cache=True, **options)
        self.config = self.train_set.config
        self._seed, self._num_val, self._options = seed, num_val, options

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def train_resolution(self) -> int:
        return self.length

    def _eval_set(self, resolution: Any, mode: str) -> SequenceDataset:
        return SequenceDataset(
            self._num_val, int(resolution), self._seed, "val", mode, train_length=self.length, **self._options
        )


# -- imagefolder: ImageNet-like class-folder trees ---------------------------------------------

# ImageNet class folders (WordNet ids) of the usual subsets.
IMAGENETTE = (
    "n01440764 n02102040 n02979186 n03000684 n03028079 n03394916 n03417042 n03425413 n03445777 n03888257"
).split()
IMAGEWOOF = (
    "n02086240 n02087394 n02088364 n02089973 n02093754 n02096294 n02099601 n02105641 n02111889 n02115641"
).split()
# ImageNet-100 of CMC (Tian et al., 2019), the list published as imagenet100.txt in HobbitLong/CMC.
IMAGENET100 = """
n02869837 n01749939 n02488291 n02107142 n13037406 n02091831 n04517823 n04589890 n03062245 n01773797
n01735189 n07831146 n07753275 n03085013 n04485082 n02105505 n01983481 n02788148 n03530642 n04435653
n02086910 n02859443 n13040303 n03594734 n02085620 n02099849 n01558993 n04493381 n02109047 n04111531
n02877765 n04429376 n02009229 n01978455 n02106550 n01820546 n01692333 n07714571 n02974003 n02114855
n03785016 n03764736 n03775546 n02087046 n07836838 n04099969 n04592741 n03891251 n02701002 n03379051
n02259212 n07715103 n03947888 n04026417 n02326432 n03637318 n01980166 n02113799 n02086240 n03903868
n02483362 n04127249 n02089973 n03017168 n02093428 n02804414 n02396427 n04418357 n02172182 n01729322
n02113978 n03787032 n02089867 n02119022 n03777754 n04238763 n02231487 n03032252 n02138441 n02104029
n03837869 n03494278 n04136333 n03794056 n03492542 n02018207 n04067472 n03930630 n03584829 n02123045
n04229816 n02100583 n03642806 n04336792 n03259280 n02116738 n02108089 n03424325 n01855672 n02090622
""".split()
CLASS_PRESETS: dict[str, list[str]] = {
    "imagenette": IMAGENETTE,
    "imagewoof": IMAGEWOOF,
    "imagenet100": IMAGENET100,
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def resolve_classes(root: str | Path, classes: str | Sequence[str] | None) -> list[str]:
    """The selected class folders of ``root``, sorted (label ``i`` is the ``i``-th).

    Args:
        root: Holds ``train/<class>/...`` and ``val/<class>/...``.
        classes: ``None`` (all), a preset name (``imagenette``, ``imagewoof``, ``imagenet100``),
            ``first:K`` (the first K folders in sorted order), a path to a text file with one
            folder name per line (``#`` starts a comment), or a list of folder names.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataConfigError(
            f"data.root '{root}' does not exist; set data.root to a folder that holds train/ and val/ class folders."
        )
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise DataConfigError(
            f"data.root '{root}' has no {' or '.join(s + '/' for s in missing)} folder; point data.root at a "
            "folder that holds train/ and val/, each with one folder of images per class."
        )
    available = {s: _class_folders(root / s) for s in ("train", "val")}
    for s, names in available.items():
        if not names:
            raise DataConfigError(
                f"'{root / s}' holds no class folders; put the images of each class in their own folder "
                f"({s}/<class>/<image>)."
            )
    train = available["train"]
    if classes is None:
        selected = train
    elif isinstance(classes, str):
        spec = classes.strip()
        if spec in CLASS_PRESETS:
            selected = CLASS_PRESETS[spec]
        elif spec.startswith("first:"):
            k = spec[len("first:") :].strip()
            if not k.isdigit() or not 1 <= int(k) <= len(train):
                raise DataConfigError(
                    f"data.classes='{classes}' needs a whole number K from 1 to {len(train)} (the class folders "
                    f"in '{root / 'train'}'), for example first:10."
                )
            selected = train[: int(k)]
        elif Path(spec).expanduser().is_file():
            lines = Path(spec).expanduser().read_text().splitlines()
            selected = [ln.split("#")[0].strip() for ln in lines]
            selected = [c for c in selected if c]
            if not selected:
                raise DataConfigError(f"Class list file '{spec}' names no classes; write one class folder per line.")
        else:
            raise DataConfigError(
                f"data.classes='{classes}' is not a preset ({', '.join(CLASS_PRESETS)}), first:K, or an existing "
                "class-list file; use one of these, a list of folder names, or null for all classes."
            )
    else:
        selected = [str(c) for c in classes]
        if not selected:
            raise DataConfigError("data.classes is an empty list; name at least one class folder, or use null for all.")
    selected = sorted(set(selected))
    for s, names in available.items():
        unknown = sorted(set(selected) - set(names))
        if unknown:
            shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise DataConfigError(
                f"data.classes names {len(unknown)} class(es) with no folder in '{root / s}': {shown}; "
                "fix the names (or the list file) or point data.root at a tree that has them."
            )
    return selected


class ClassSubsetFolder(ImageFolder):
    """``ImageFolder`` over the selected class folders only, with contiguous labels in sorted
    order, at most ``max_per_class`` images per class (the first in sorted order), and corrupt
    files named in an error or, with ``skip_corrupt``, dropped from their batch and counted.

    Args:
        root: A split folder (``.../train`` or ``.../val``).
        classes: Sorted class folder names; class ``classes[i]`` gets label ``i``.
        transform: Applied to the PIL image.
        max_per_class: Cap per class, or ``None``.
        skip_corrupt: Return ``None`` for unreadable files instead of raising;
            use :func:`collate_skip_none` to drop them.
    """

    def __init__(
        self,
        root: str | Path,
        classes: Sequence[str],
        transform: Any = None,
        max_per_class: int | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        self._selected = list(classes)
        self.skip_corrupt = skip_corrupt
        # Empty class folders are allowed here and reported below; an empty split is an error.
        super().__init__(str(root), transform=transform, allow_empty=True)
        if max_per_class is not None:
            counts: dict[int, int] = {}
            kept = []
            for path, target in self.samples:  # sorted by class, then file name
                if counts.get(target, 0) < max_per_class:
                    kept.append((path, target))
                    counts[target] = counts.get(target, 0) + 1
            self.samples = kept
        self.imgs = self.samples
        self.targets = [t for _, t in self.samples]
        if not self.samples:
            raise DataConfigError(
                f"'{root}' holds no image files ({', '.join(IMG_EXTENSIONS)}) in the {len(self.classes)} selected "
                "class folders; check data.root and data.classes."
            )
        empty = sorted(set(self.classes) - {self.classes[t] for t in set(self.targets)})
        if empty:
            log.warning("%d class folder(s) in '%s' hold no images: %s", len(empty), root, ", ".join(empty[:10]))
        # One flag per file in shared memory, so that workers' skips are counted once per file.
        self.skipped = torch.zeros(len(self.samples), dtype=torch.uint8).share_memory_()

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return list(self._selected), {c: i for i, c in enumerate(self._selected)}

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path, target = self.samples[index]
        try:
            sample = default_loader(path)
        except Exception as e:  # PIL raises many types for broken data (OSError, SyntaxError, ...)
            if not self.skip_corrupt:
                raise CorruptImageError(
                    f"Image file '{path}' cannot be read ({type(e).__name__}: {e}); replace or delete it, or set "
                    "data.skip_corrupt=true to skip unreadable files."
                ) from e
            if not self.skipped[index]:
                log.warning("Skipping unreadable image file '%s' (%s: %s)", path, type(e).__name__, e)
                self.skipped[index] = 1
            return None
        if self.transform is not None:
            sample = self.transform(sample)
        return sample, target

    @property
    def num_skipped(self) -> int:
        """Distinct unreadable files met so far (in any worker)."""
        return int(self.skipped.sum())


def collate_skip_none(batch: list[Any], image_shape: tuple[int, ...] = (3, 1, 1)) -> Any:
    """Default collation without the ``None`` items that stand for skipped files. A batch whose
    every file was unreadable becomes an empty batch of ``image_shape`` images, not an error."""
    kept = [b for b in batch if b is not None]
    if not kept:
        return torch.empty(0, *image_shape), torch.empty(0, dtype=torch.int64)
    return torch.utils.data.default_collate(kept)


def eval_transform(resolution: int, crop_pct: float = 0.875) -> T.Compose:
    """Resize the shorter side to ``int(resolution / crop_pct)`` (bicubic), centre-crop
    ``resolution``, normalise with ImageNet mean/std. ``crop_pct`` is the same at every
    resolution, so results at different resolutions are comparable."""
    return T.Compose(
        [
            T.Resize(int(resolution / crop_pct), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(resolution),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class ImageFolderDataModule(L.LightningDataModule):
    """Any ``train/`` + ``val/`` class-folder tree (ImageNet, Imagenette, your own).

    The root and the class selection are checked when the module is built, so a bad path fails
    before anything runs; the file lists are read in :meth:`setup` (or on first use).

    Args:
        root: Holds ``train/<class>/*`` and ``val/<class>/*``.
        img_size: Training resolution.
        classes: Subset, see :func:`resolve_classes`; labels are ``0..K-1`` in sorted order, the
            same in train and val.
        max_per_class: At most this many images per class and split (the first in sorted order).
        batch_size: Per step and device (also for evaluation unless ``eval_dataloader`` is given one).
        num_workers: Loader workers; ``None`` picks :func:`default_num_workers`.
        crop_pct: Evaluation centre-crop fraction, fixed across resolutions.
        auto_augment: timm AutoAugment / RandAugment policy string (e.g. ``rand-m9-mstd0.5-inc1``) or ``None``.
        re_prob: Random-erasing probability.
        skip_corrupt: Skip unreadable image files (counted in :attr:`num_skipped`) instead of stopping
            with an error that names the file.
    """

    def __init__(
        self,
        root: str,
        img_size: int = 224,
        classes: str | Sequence[str] | None = None,
        max_per_class: int | None = None,
        batch_size: int = 128,
        num_workers: int | None = None,
        crop_pct: float = 0.875,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__()
        if root is None or str(root).strip() in ("", "???"):
            raise DataConfigError(
                "data.root is not set; set data.root to a folder that holds train/ and val/ class folders."
            )
        self.root = Path(str(root)).expanduser()
        self.class_names = resolve_classes(self.root, classes)
        if max_per_class is not None and int(max_per_class) < 1:
            raise DataConfigError(f"data.max_per_class={max_per_class} must be at least 1, or null for no cap.")
        if not 0 < crop_pct <= 1:
            raise DataConfigError(f"data.crop_pct={crop_pct} must be in (0, 1]; 0.875 is the usual value.")
        self.img_size = int(img_size)
        self.max_per_class = None if max_per_class is None else int(max_per_class)
        self.batch_size = int(batch_size)
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        self.crop_pct = float(crop_pct)
        self.auto_augment = auto_augment
        self.re_prob = float(re_prob)
        self.skip_corrupt = bool(skip_corrupt)
        self._sets: dict[str, ClassSubsetFolder] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train_resolution(self) -> int:
        return self.img_size

    def train_transform(self) -> Any:
        """timm's training pipeline: random-resized crop, flip, colour jitter, optional
        AutoAugment and random erasing, bicubic."""
        from timm.data import create_transform

        return create_transform(
            self.img_size,
            is_training=True,
            auto_augment=self.auto_augment,
            re_prob=self.re_prob,
            interpolation="bicubic",
        )

    def eval_transform(self, resolution: int) -> T.Compose:
        return eval_transform(resolution, self.crop_pct)

    def _dataset(self, split: str) -> ClassSubsetFolder:
        if split not in self._sets:
            self._sets[split] = ClassSubsetFolder(
                self.root / split, self.class_names, None, self.max_per_class, self.skip_corrupt
            )
        return self._sets[split]

    def setup(self, stage: str | None = None) -> None:
        self._dataset("val")
        if stage in (None, "fit"):
            self._dataset("train")

    @property
    def num_skipped(self) -> int:
        """Distinct unreadable files skipped so far (``skip_corrupt=True``)."""
        return sum(ds.num_skipped for ds in self._sets.values())

    def teardown(self, stage: str) -> None:
        # Lightning calls this when fit / validate ends: one summary line after the per-file warnings.
        if self.num_skipped:
            log.warning(
                "Skipped %d unreadable image file(s) (data.skip_corrupt=true); their names are in the warnings above.",
                self.num_skipped,
            )

    def _with_transform(self, split: str, transform: Any) -> ClassSubsetFolder:
        ds = copy.copy(self._dataset(split))  # shares the file list and the skip flags
        ds.transform = transform
        return ds

    def _collate(self, resolution: int) -> Any:
        if not self.skip_corrupt:
            return None
        return functools.partial(collate_skip_none, image_shape=(3, resolution, resolution))

    def train_dataloader(self) -> DataLoader:
        ds = self._with_transform("train", self.train_transform())
        return _loader(
            ds,
            self.batch_size,
            self.num_workers,
            shuffle=True,
            persistent=True,
            collate_fn=self._collate(self.img_size),
        )

    def val_dataloader(self) -> DataLoader:
        ds = self._with_transform("val", self.eval_transform(self.img_size))
        return _loader(ds, self.batch_size, self.num_workers, persistent=True, collate_fn=self._collate(self.img_size))

    def eval_dataloader(self, resolution: int, mode: str | None = None, batch_size: int | None = None) -> DataLoader:
        """The validation images at ``resolution`` (resize to ``resolution / crop_pct``, centre crop)."""
        if mode not in (None, "zoom"):
            raise DataConfigError(
                f"eval.mode='{mode}' needs synthetic scenes that can be re-rendered on a larger canvas; "
                "use eval.mode=zoom for image folders."
            )
        ds = self._with_transform("val", self.eval_transform(int(resolution)))
        return _loader(ds, batch_size or self.batch_size, self.num_workers, collate_fn=self._collate(int(resolution)))


__all__ = [
    "CLASS_PRESETS",
    "ClassSubsetFolder",
    "CorruptImageError",
    "DataConfigError",
    "ImageFolderDataModule",
    "SHAPES_MEAN",
    "SHAPES_STD",
    "SequenceConfig",
    "SequenceDataModule",
    "SequenceDataset",
    "ShapeScenes",
    "ShapesConfig",
    "ShapesDataModule",
    "ShapesDataset",
    "collate_skip_none",
    "default_num_workers",
    "eval_transform",
    "render_scenes",
    "resolve_classes",
    "sample_scene",
]
