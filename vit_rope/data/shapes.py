"""The ``shapes`` data: synthetic scenes whose label needs 2D relational position, as a dataset
and as the embedded default data module (rendered on the fly, no download)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import torch

from vit_rope.data.common import DataConfigError, Size, as_hw
from vit_rope.data.loaders import check_train_resolutions
from vit_rope.data.shapes_scenes import (
    SHAPES_MEAN,
    SHAPES_STD,
    ShapeScenes,
    ShapesConfig,
    render_scenes,
    sample_scene,
)
from vit_rope.data.synthetic import SyntheticDataModule, SyntheticDataset
from vit_rope.errors import check_divisible, check_range


class ShapesDataset(SyntheticDataset):
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
        self.img_size = as_hw(img_size)
        self.train_size = as_hw(train_size) if train_size is not None else self.img_size
        self._scenes: ShapeScenes | None = None
        self._mean = torch.tensor(SHAPES_MEAN).view(3, 1, 1)
        self._std = torch.tensor(SHAPES_STD).view(3, 1, 1)

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


class ShapesDataModule(SyntheticDataModule):
    """The embedded default data: synthetic ``shapes`` scenes, rendered on the fly (no download).
    Defaults are those of ``conf/data/shapes.yaml``.

    Args:
        img_size: Training image side (``train_resolution``), a whole number >= 1 and, with
            ``patch_size``, a multiple of it.
        num_train, num_val: Number of training / validation scenes.
        batch_size: Per step (also for evaluation unless ``eval_dataloader`` is given one).
        num_workers: Loader workers; 0 is right here, the images are rendered once and cached.
        seed: Selects the scenes.
        mode: Default ``eval_dataloader`` mode, ``zoom`` or ``canvas``.
        patch_size: If given, refuse an ``img_size`` (or ``train_resolutions`` entry) that is not
            a multiple of it and settings where one patch can hold pixels of both shapes at a
            training resolution (a model without positions could then beat chance).
        train_resolutions: Multi-resolution training: each training batch is rendered at one side
            drawn uniformly from this list (seeded with ``seed`` and the epoch); ``None``: all at
            ``img_size``. ``img_size`` stays the training resolution of record, and validation
            and evaluation do not change. The scenes are the same at every side (``zoom``: the
            shapes scale with the image); each listed side is rendered once and cached, like
            ``img_size`` (``3 * side**2`` bytes per scene).
        **scene: :class:`ShapesConfig` fields: ``num_classes`` (4), ``relation`` (orientation),
            ``distractors`` (0), ``shape_size``, ``size_jitter``, ``min_sep``, ``max_sep``,
            ``align_tol``, ``border``, ``colour_jitter``.
    """

    def __init__(
        self,
        img_size: int = 32,
        num_train: int = 20000,
        num_val: int = 1000,
        batch_size: int = 64,
        num_workers: int | None = 0,
        seed: int = 0,
        mode: str = "zoom",
        patch_size: int | None = None,
        train_resolutions: Sequence[int] | None = None,
        **scene: Any,
    ) -> None:
        super().__init__(num_train, num_val, batch_size, num_workers, seed, mode)
        self.img_size = check_range("data.img_size", img_size, 1, integer=True)
        patch_size = check_range("data.patch_size", patch_size, 1, integer=True, optional=True)
        if patch_size is not None:
            check_divisible("data.img_size", self.img_size, patch_size, "the patch size")
        self.train_resolutions = check_train_resolutions(train_resolutions, patch_size)
        self._scene = scene
        self.train_set = ShapesDataset(self.num_train, self.img_size, self.seed, "train", "zoom", cache=True, **scene)
        self.config = self.train_set.config
        if patch_size is not None and patch_size / self.img_size > self.config.min_gap + 1e-9:
            need = 2 * self.config.max_size + patch_size / self.img_size
            raise DataConfigError(
                f"With patch_size={patch_size} at img_size={self.img_size} one patch can hold pixels of both "
                f"shapes, so a model without positions could beat chance; set data.min_sep to at least "
                f"{need:.3f} (and data.max_sep to match) or use a larger img_size."
            )
        if patch_size is not None and self.train_resolutions is not None:
            self._check_patch_leak(patch_size, min(self.train_resolutions))
        self._train_sets = {self.img_size: self.train_set}
        self.val_set = ShapesDataset(self.num_val, self.img_size, self.seed, "val", self.mode, cache=True, **scene)

    def _check_patch_leak(self, patch_size: int, side: int) -> None:
        """Refuse a training side at which one patch can hold pixels of both shapes."""
        if patch_size / side <= self.config.min_gap + 1e-9:
            return
        smallest = patch_size * math.ceil(1 / (self.config.min_gap + 1e-9))
        need = 2 * self.config.max_size + patch_size / side
        raise DataConfigError(
            f"With patch_size={patch_size} at data.train_resolutions entry {side} one patch can hold pixels of "
            f"both shapes, so a model without positions could beat chance on those batches; use sides of at "
            f"least {smallest} in data.train_resolutions or set data.min_sep to at least {need:.3f} (and "
            "data.max_sep to match)."
        )

    @property
    def train_resolution(self) -> int:
        return self.img_size

    def _train_set_at(self, resolution: int) -> ShapesDataset:
        # Each side is rendered from the scenes (not resized from img_size), so the shapes are
        # as sharp and their edges as exact as at img_size, and cached like the img_size set.
        if resolution not in self._train_sets:
            ds = ShapesDataset(self.num_train, resolution, self.seed, "train", "zoom", cache=True, **self._scene)
            ds._scenes = self.train_set.scenes  # same scenes; saves sampling them again
            self._train_sets[resolution] = ds
        return self._train_sets[resolution]

    def _eval_set(self, resolution: Any, mode: str) -> ShapesDataset:
        ds = ShapesDataset(self.num_val, resolution, self.seed, "val", mode, train_size=self.img_size, **self._scene)
        ds._scenes = self.val_set.scenes  # same scenes; saves sampling them again
        return ds
