"""The ``imagefolder`` data: any ``train/`` + ``val/`` class-folder tree (ImageNet, Imagenette,
your own), with timm's training augmentation and a resize + centre-crop evaluation transform
that is the same at every resolution."""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader
from torchvision import transforms as T

from vit_rope.data.cache import CACHE_KINDS, open_store, resolve_cache_dir
from vit_rope.data.cached_folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CachedImages,
    NormalizeBatch,
    eval_cache_side,
    eval_transform_uint8,
    train_cache_side,
    train_transform_uint8,
)
from vit_rope.data.class_lists import resolve_classes
from vit_rope.data.common import DataConfigError
from vit_rope.data.folder_dataset import ClassSubsetFolder, collate_skip_unreadable
from vit_rope.data.image_store import ImageStore
from vit_rope.data.loaders import (
    MultiResolutionDataset,
    check_loader_options,
    check_train_resolutions,
    make_loader,
    set_worker_threads,
)
from vit_rope.errors import check_choice, check_divisible, check_range

log = logging.getLogger(__name__)


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

    Every option, the root and the class selection are checked when the module is built, so a
    bad setting fails before anything runs; the file lists are read in :meth:`setup` (or on
    first use). Defaults are those of ``conf/data/imagefolder.yaml``.

    Args:
        root: Holds ``train/<class>/*`` and ``val/<class>/*``.
        img_size: Training resolution (``train_resolution``), a whole number >= 1 and, with
            ``patch_size``, a multiple of it.
        classes: Subset, see :func:`~vit_rope.data.class_lists.resolve_classes`; labels are
            ``0..K-1`` in sorted order, the same in train and val.
        max_per_class: At most this many images per class and split (the first in sorted
            order), a whole number >= 1, or ``None`` for all.
        train_per_class: At most this many training images per class (the first in sorted
            order; validation keeps ``max_per_class``): a smaller training set measured on the
            same validation images. ``None``: ``max_per_class``.
        batch_size: Per step and device (also for evaluation unless ``eval_dataloader`` is given one).
        num_workers: Loader workers; ``None`` picks :func:`~vit_rope.data.loaders.default_num_workers`.
        crop_pct: Evaluation centre-crop fraction in (0, 1], fixed across resolutions.
        auto_augment: timm AutoAugment / RandAugment policy string (e.g. ``rand-m9-mstd0.5-inc1``) or ``None``.
        re_prob: Random-erasing probability in [0, 1].
        rrc_scale: Area range of the random-resized crop. The default ``(0.35, 1)`` with no colour
            jitter suits short schedules on small sets (as a plain timm pipeline for them); the
            ImageNet recipe (``experiment=imagenet100_vit_s16``) sets timm's ``(0.08, 1)`` and 0.4.
        color_jitter: Colour-jitter strength (timm), 0 for none.
        skip_corrupt: Skip unreadable image files (counted in :attr:`num_skipped`) instead of
            stopping with an error that names the file; a batch of only unreadable files still
            stops with a :class:`~vit_rope.data.common.CorruptImageError`.
        patch_size: The model's patch side, if known; ``img_size`` and every
            ``train_resolutions`` entry must be multiples of it.
        train_resolutions: Multi-resolution training: each training batch is made at one side
            drawn uniformly from this list (seeded with Lightning's global seed and the epoch),
            the random-resized crop going straight to that side; ``None``: all at ``img_size``.
            ``img_size`` stays the training resolution of record, and validation and evaluation
            do not change.
        cache: ``none`` decodes the files every epoch; ``ram`` or ``disk`` decodes each image once,
            downsized (sizes in :mod:`vit_rope.data.cached_folder`), and augments the small uint8
            images; ``disk`` memory-maps a file that workers share and later runs reuse
            (:mod:`vit_rope.data.cache`).
        cache_dir: Folder of the ``disk`` cache; ``None``: ``<root>/.vit_rope_cache``, or the user
            cache folder when the data folder is read-only.
        cache_train_side: Shorter side of the cached training images; ``None`` for the rule.
        cache_eval_resolutions: The evaluation resolutions the validation cache must serve;
            ``None``: up to 2x ``img_size`` (the evaluation's default).
        threads_per_worker: ``torch.set_num_threads`` in each loader worker.
    """

    def __init__(
        self,
        root: str,
        img_size: int = 224,
        classes: str | Sequence[str] | None = None,
        max_per_class: int | None = None,
        train_per_class: int | None = None,
        batch_size: int = 128,
        num_workers: int | None = None,
        crop_pct: float = 0.875,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        skip_corrupt: bool = False,
        patch_size: int | None = None,
        train_resolutions: Sequence[int] | None = None,
        rrc_scale: Sequence[float] = (0.35, 1.0),
        color_jitter: float = 0.0,
        cache: str = "none",
        cache_dir: str | None = None,
        cache_train_side: int | None = None,
        cache_eval_resolutions: Sequence[int] | None = None,
        threads_per_worker: int = 1,
    ) -> None:
        super().__init__()
        if root is None or str(root).strip() in ("", "???"):
            raise DataConfigError(
                "data.root is not set; set data.root to a folder that holds train/ and val/ class folders."
            )
        self.img_size = check_range("data.img_size", img_size, 1, integer=True)
        patch_size = check_range("data.patch_size", patch_size, 1, integer=True, optional=True)
        if patch_size is not None:
            check_divisible("data.img_size", self.img_size, patch_size, "the patch size")
        self.train_resolutions = check_train_resolutions(train_resolutions, patch_size)
        self.max_per_class = check_range("data.max_per_class", max_per_class, 1, integer=True, optional=True)
        self.train_per_class = check_range("data.train_per_class", train_per_class, 1, integer=True, optional=True)
        self.batch_size, self.num_workers = check_loader_options(batch_size, num_workers)
        self.crop_pct = float(check_range("data.crop_pct", crop_pct, 0, 1, low_open=True))
        self.re_prob = float(check_range("data.re_prob", re_prob, 0, 1))
        if len(rrc_scale) != 2 or not 0 < rrc_scale[0] <= rrc_scale[1] <= 1:
            raise DataConfigError(
                f"data.rrc_scale={list(rrc_scale)} is not an area range; give [low, high] with 0 < low <= high <= 1, "
                "e.g. [0.35, 1.0]."
            )
        self.rrc_scale = (float(rrc_scale[0]), float(rrc_scale[1]))
        self.color_jitter = float(check_range("data.color_jitter", color_jitter, 0.0))
        self.skip_corrupt = bool(check_choice("data.skip_corrupt", skip_corrupt, (True, False)))
        self.auto_augment = auto_augment
        self.cache = check_choice("data.cache", cache, CACHE_KINDS)
        self.cache_train_side = check_range("data.cache_train_side", cache_train_side, 1, integer=True, optional=True)
        evals = [
            check_range("data.cache_eval_resolutions entry", r, 1, integer=True) for r in cache_eval_resolutions or ()
        ]
        self.cache_eval_resolutions = [*evals, self.img_size] if evals else [2 * self.img_size, self.img_size]
        self.threads_per_worker = check_range("data.threads_per_worker", threads_per_worker, 1, integer=True)
        try:
            self.train_transform()  # timm checks the policy name when it builds the pipeline
        except (AssertionError, TypeError, ValueError, KeyError) as e:
            raise DataConfigError(
                f"data.auto_augment={auto_augment!r} is not a timm augmentation policy ({e}); use e.g. "
                "rand-m9-mstd0.5-inc1, augmix-m5-w3, original, or null for none."
            ) from e
        self.root = Path(str(root)).expanduser()
        self.class_names = resolve_classes(self.root, classes)
        self._sets: dict[str, ClassSubsetFolder] = {}
        self._stores: dict[str, ImageStore] = {}
        self.cache_dir = resolve_cache_dir(cache_dir, self.root) if self.cache == "disk" else None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train_resolution(self) -> int:
        return self.img_size

    def train_transform(self, resolution: int | None = None) -> Any:
        """timm's training pipeline at ``resolution`` (default ``img_size``): random-resized
        crop over ``rrc_scale``, flip, optional colour jitter, AutoAugment and random erasing, bicubic."""
        from timm.data import create_transform

        return create_transform(
            self.img_size if resolution is None else resolution,
            is_training=True,
            auto_augment=self.auto_augment,
            re_prob=self.re_prob,
            scale=self.rrc_scale,
            color_jitter=self.color_jitter or None,
            interpolation="bicubic",
        )

    def eval_transform(self, resolution: int) -> T.Compose:
        return eval_transform(resolution, self.crop_pct)

    def _per_class(self, split: str) -> int | None:
        """The cap on images per class of ``split``."""
        if split == "train" and self.train_per_class is not None:
            return min(self.train_per_class, self.max_per_class or self.train_per_class)
        return self.max_per_class

    def _dataset(self, split: str) -> ClassSubsetFolder:
        if split not in self._sets:
            self._sets[split] = ClassSubsetFolder(
                self.root / split, self.class_names, None, self._per_class(split), self.skip_corrupt
            )
        return self._sets[split]

    def setup(self, stage: str | None = None) -> None:
        self._source("val")
        if stage in (None, "fit"):
            self._source("train")
            if self.trainer is None or self.trainer.is_global_zero:
                print(self.summary())

    def summary(self) -> str:
        """What was found: classes, training and validation images, and the images each epoch
        leaves out when the last partial training batch is dropped (as :func:`make_loader` does)."""
        n_train, n_val = len(self._dataset("train")), len(self._dataset("val"))
        text = (
            f"Image folder {self.root}: {self.num_classes} classes, {n_train} training and {n_val} validation images."
        )
        dropped = n_train % self.batch_size if n_train > self.batch_size else 0
        if dropped:
            text += (
                f" Each epoch trains {n_train // self.batch_size} full batches of {self.batch_size} and drops the "
                f"last {dropped} images (a partial batch, different images each epoch); a data.batch_size that "
                f"divides {n_train} keeps them."
            )
        return text

    def cache_side(self, split: str) -> int:
        """Shorter side of the cached images of ``split`` (:mod:`vit_rope.data.cached_folder`)."""
        if split == "train":
            sides = [self.img_size, *(self.train_resolutions or ())]
            return self.cache_train_side or train_cache_side(sides, self.rrc_scale)
        return eval_cache_side(self.cache_eval_resolutions, self.crop_pct)

    def _source(self, split: str, resolution: int | None = None) -> ClassSubsetFolder | CachedImages:
        """The split's samples: from the cache when it is on and (for evaluation at
        ``resolution``) holds enough pixels, else from the files."""
        files = self._dataset(split)
        if self.cache == "none" or (resolution and int(resolution / self.crop_pct) > self.cache_side(split)):
            return files
        if split not in self._stores:
            selection = f"{self.class_names}|{self._per_class(split)}"
            self._stores[split] = open_store(
                self.cache, files.samples, Path(files.root), self.cache_side(split), self.skip_corrupt,
                self.cache_dir, selection,
            )  # fmt: skip
        return CachedImages(self._stores[split], files.samples, None, pil=self.auto_augment is not None)

    @property
    def num_skipped(self) -> int:
        """Distinct unreadable files skipped so far (``skip_corrupt=True``), found by reading the
        files or when the cache was built."""
        return sum(
            max(ds.num_skipped, len(self._stores[s].bad) if s in self._stores else 0) for s, ds in self._sets.items()
        )

    def teardown(self, stage: str) -> None:
        # Lightning calls this when fit / validate ends: one summary line after the per-file warnings.
        if self.num_skipped:
            log.warning(
                "Skipped %d unreadable image file(s) (data.skip_corrupt=true); their names are in the warnings above.",
                self.num_skipped,
            )

    def _with_transform(self, split: str, resolution: int) -> ClassSubsetFolder | CachedImages:
        """The split's samples made at ``resolution`` by the training or the evaluation transform;
        on cached uint8 images the same steps run in torchvision v2 (timm's PIL pipeline with AutoAugment)."""
        ds = copy.copy(self._source(split, None if split == "train" else resolution))  # shares files and cache
        tensors = isinstance(ds, CachedImages) and not ds.pil
        if split == "train":
            ds.transform = (
                train_transform_uint8(resolution, self.rrc_scale, self.color_jitter)
                if tensors
                else self.train_transform(resolution)
            )
        else:
            ds.transform = (
                eval_transform_uint8(resolution, self.crop_pct) if tensors else self.eval_transform(resolution)
            )
        return ds

    def _loader(
        self,
        ds: ClassSubsetFolder | CachedImages | MultiResolutionDataset,
        batch_size: int,
        shuffle: bool = False,
        persistent: bool = False,
        resolutions: Sequence[int] | None = None,
    ) -> DataLoader:
        collate = collate_skip_unreadable if self.skip_corrupt else None
        first = next(iter(ds.datasets.values())) if isinstance(ds, MultiResolutionDataset) else ds
        if isinstance(first, CachedImages) and not first.pil:  # uint8 crops: normalise (and erase) the batch
            collate = NormalizeBatch(self.re_prob if shuffle else 0.0, self.skip_corrupt)
        return make_loader(
            ds,
            batch_size,
            self.num_workers,
            shuffle,
            persistent,
            collate_fn=collate,
            resolutions=resolutions,
            worker_init_fn=functools.partial(set_worker_threads, self.threads_per_worker),
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_resolutions is None:
            ds = self._with_transform("train", self.img_size)
            return self._loader(ds, self.batch_size, shuffle=True, persistent=True)
        # One copy of the training set per side, each with its own random-resized crop to that
        # side (one resampling of the photo, as at img_size); they share the file list.
        sets = {side: self._with_transform("train", side) for side in self.train_resolutions}
        return self._loader(
            MultiResolutionDataset(sets),
            self.batch_size,
            shuffle=True,
            persistent=True,
            resolutions=self.train_resolutions,
        )

    def val_dataloader(self) -> DataLoader:
        ds = self._with_transform("val", self.img_size)
        return self._loader(ds, self.batch_size, persistent=True)

    def eval_dataloader(self, resolution: int, mode: str | None = None, batch_size: int | None = None) -> DataLoader:
        """The validation images at ``resolution`` (resize to ``resolution / crop_pct``, centre crop)."""
        if mode not in (None, "zoom"):
            raise DataConfigError(
                f"eval.mode='{mode}' needs synthetic scenes that can be re-rendered on a larger canvas; "
                "use eval.mode=zoom for image folders."
            )
        ds = self._with_transform("val", int(resolution))
        return self._loader(ds, batch_size or self.batch_size)
