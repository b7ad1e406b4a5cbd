"""The image-folder samples read from the decoded-image cache (:class:`CachedImages`), the
cached sizes, and the augmentation that runs on the small uint8 images (torchvision v2).

Cached sizes (shorter side, pixels; an image already smaller keeps its size):

- training: ``ceil(max training side / sqrt(mean of rrc_scale))``, so that a random-resized
  crop of the mean area is resized down, not up, to the training side (64 px and the default
  area range 0.35-1: 78 px; 224 px and timm's 0.08-1: 305 px);
- validation: ``int(largest evaluation resolution / crop_pct)``, the side the evaluation
  transform resizes to there (default resolutions up to 2x the training side: 146 px at 64).
  An evaluation at a larger resolution reads the files instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD
from torch.utils.data import Dataset, default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2

from vit_rope.data.folder_dataset import UnreadableImage, collate_skip_unreadable
from vit_rope.data.image_store import ImageStore

BICUBIC = v2.InterpolationMode.BICUBIC


def train_cache_side(sides: Sequence[int], rrc_scale: Sequence[float]) -> int:
    """Shorter side of the cached training images (see the module docstring)."""
    return math.ceil(max(sides) / math.sqrt((rrc_scale[0] + rrc_scale[1]) / 2))


def eval_cache_side(resolutions: Sequence[int], crop_pct: float) -> int:
    """Shorter side of the cached validation images (see the module docstring)."""
    return int(max(resolutions) / crop_pct)


def train_transform_uint8(side: int, rrc_scale: Sequence[float], color_jitter: float = 0.0) -> v2.Compose:
    """The per-image part of timm's training pipeline (without AutoAugment) on a uint8 ``(3, H, W)``
    image: random-resized crop (area ``rrc_scale``, aspect 3/4-4/3, bicubic), horizontal flip,
    optional colour jitter (brightness, contrast, saturation). :class:`NormalizeBatch` finishes it."""
    steps: list[Any] = [
        v2.RandomResizedCrop(side, scale=tuple(rrc_scale), ratio=(3 / 4, 4 / 3), interpolation=BICUBIC),
        v2.RandomHorizontalFlip(),
    ]
    if color_jitter:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return v2.Compose(steps)


def eval_transform_uint8(resolution: int, crop_pct: float) -> v2.Compose:
    """The per-image part of the evaluation transform on a uint8 image: shorter side to
    ``int(resolution / crop_pct)`` (bicubic, antialiased), centre crop ``resolution``."""
    return v2.Compose(
        [v2.Resize(int(resolution / crop_pct), interpolation=BICUBIC, antialias=True), v2.CenterCrop(resolution)]
    )


class NormalizeBatch:
    """Collate uint8 images into one float batch normalised with ImageNet mean and std, then
    random erasing with zeros (timm's ``const`` mode) per image with probability ``re_prob``.
    Normalising is done here, on the stacked batch, rather than in the per-image transform:
    one vectorised operation per batch instead of one small one per image.

    Args:
        re_prob: Random-erasing probability (training), 0 for none.
        skip_unreadable: Drop the items of unreadable files first (``data.skip_corrupt``).
    """

    def __init__(self, re_prob: float = 0.0, skip_unreadable: bool = False) -> None:
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
        self.erase = v2.RandomErasing(re_prob, value=0) if re_prob else None
        self.skip_unreadable = skip_unreadable

    def __call__(self, batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = collate_skip_unreadable(batch) if self.skip_unreadable else default_collate(batch)
        x = x.as_subclass(torch.Tensor).float().sub_(self.mean).div_(self.std)  # (B, 3, H, W), in place
        if self.erase is not None:
            x = torch.stack([self.erase(image) for image in x])
        return x, y


class CachedImages(Dataset):
    """``samples[i]``'s label with image ``i`` of ``store`` (built from the same ordered list).

    Args:
        store: The split's decoded images.
        samples: ``(path, label)`` pairs, in the order the store was built from.
        transform: Applied to a uint8 ``tv_tensors.Image`` ``(3, H, W)``, or with ``pil`` to a PIL
            image (timm's pipelines, e.g. with AutoAugment).
        pil: Give the transform PIL images.
    """

    def __init__(self, store: ImageStore, samples: Sequence[tuple[str, int]], transform: Any, pil: bool) -> None:
        if len(store) != len(samples):
            raise ValueError(f"CachedImages: {len(store)} cached images for {len(samples)} samples")
        self.store, self.samples, self.transform, self.pil = store, samples, transform, pil
        self.targets = [t for _, t in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int] | UnreadableImage:
        path, target = self.samples[index]
        if self.store.shapes[index, 0] == 0:  # unreadable at build time (only kept with skip_corrupt)
            return UnreadableImage(path)
        array = self.store.image(index)  # (H, W, 3) uint8
        image = Image.fromarray(array) if self.pil else tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1))
        return (self.transform(image) if self.transform is not None else image), target

    @property
    def num_skipped(self) -> int:
        return len(self.store.bad)
