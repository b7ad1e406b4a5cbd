"""The image-folder dataset: :class:`ClassSubsetFolder` (selected class folders, contiguous
labels, a per-class cap, unreadable files named or skipped) and :func:`collate_skip_unreadable`,
which drops the skipped files from their batch."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

from vit_rope.data.common import CorruptImageError, DataConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnreadableImage:
    """The item :class:`ClassSubsetFolder` gives, with ``skip_corrupt``, for a file that cannot
    be read; :func:`collate_skip_unreadable` drops it from its batch."""

    path: str


class ClassSubsetFolder(ImageFolder):
    """``ImageFolder`` over the selected class folders only, with contiguous labels in sorted
    order, at most ``max_per_class`` images per class (the first in sorted order), and corrupt
    files named in an error or, with ``skip_corrupt``, dropped from their batch and counted.

    Args:
        root: A split folder (``.../train`` or ``.../val``).
        classes: Sorted class folder names; class ``classes[i]`` gets label ``i``.
        transform: Applied to the PIL image.
        max_per_class: Cap per class, or ``None``.
        skip_corrupt: Give an :class:`UnreadableImage` for an unreadable file (warned about and
            counted once per file) instead of raising :class:`CorruptImageError`; use
            :func:`collate_skip_unreadable` to drop them.
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

    def __getitem__(self, index: int) -> tuple[Any, int] | UnreadableImage:
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
            return UnreadableImage(path)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample, target

    @property
    def num_skipped(self) -> int:
        """Distinct unreadable files met so far (in any worker)."""
        return int(self.skipped.sum())


def collate_skip_unreadable(batch: list[Any]) -> Any:
    """Default collation of the readable items of ``batch``, without the
    :class:`UnreadableImage` items that stand for skipped files.

    Raises:
        CorruptImageError: every file of the batch is unreadable (an empty batch would make the
            loss NaN); the message says how many, where, and the fix.
    """
    kept = [b for b in batch if not isinstance(b, UnreadableImage)]
    if not kept:
        paths = [b.path for b in batch]
        where = os.path.commonpath([os.path.dirname(p) for p in paths])
        raise CorruptImageError(
            f"All {len(paths)} image files of a batch in '{where}' are unreadable (the first is '{paths[0]}'); "
            "replace or delete the unreadable files there (the warnings above name each one)."
        )
    return torch.utils.data.default_collate(kept)
