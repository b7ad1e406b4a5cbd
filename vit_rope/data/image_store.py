"""Decoded images of one split in one flat uint8 buffer (:class:`ImageStore`), and how they
are decoded (JPEG draft mode, then a bicubic resize to the cached size) and built in memory; the
disk form and the rules for when a cache is reused are in :mod:`vit_rope.data.cache`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vit_rope.data.common import CorruptImageError

log = logging.getLogger(__name__)


def unreadable_message(path: str, e: BaseException) -> str:
    return (
        f"Image file '{path}' cannot be read ({type(e).__name__}: {e}); replace or delete it, or set "
        "data.skip_corrupt=true to skip unreadable files."
    )


def target_hw(h: int, w: int, side: int) -> tuple[int, int]:
    """``(h, w)`` with the shorter side brought down to ``side`` as ``Resize(side)`` computes it
    (the longer side truncated); images already that small keep their size (never upsampled)."""
    short, long = min(h, w), max(h, w)
    if short <= side:
        return h, w
    long = int(side * long / short)
    return (side, long) if h <= w else (long, side)


def decode(path: str, hw: tuple[int, int]) -> np.ndarray:
    """The image at ``path`` as ``(h, w, 3)`` uint8 of size ``hw``: JPEGs are decoded in PIL's
    draft mode (DCT-domain scaling by 1/2, 1/4 or 1/8 to the smallest size still >= ``hw``),
    then resized (bicubic, antialiased) to exactly ``hw``."""
    h, w = hw
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (w, h))
        im = im.convert("RGB")
        if im.size != (w, h):
            im = im.resize((w, h), Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.uint8)


class ImageStore:
    """Decoded images ``0..N-1`` of one split in a flat uint8 buffer (see the module docstring).

    Args:
        pixels: The buffer (a ``np.memmap`` for ``disk``), or ``None`` to map ``folder`` lazily.
        offsets: ``(N + 1,)`` int64 start of each image in ``pixels``.
        shapes: ``(N, 2)`` int32 ``(H, W)`` of each image; ``(0, 0)`` for an unreadable file.
        side: The shorter side the images were brought down to.
        folder: The disk cache's folder, or ``None`` in memory.
    """

    def __init__(
        self, pixels: np.ndarray | None, offsets: np.ndarray, shapes: np.ndarray, side: int, folder: Path | None
    ) -> None:
        self._pixels, self.offsets, self.shapes, self.side, self.folder = pixels, offsets, shapes, side, folder

    @property
    def pixels(self) -> np.ndarray:
        if self._pixels is None:  # a worker started with spawn, or a store just loaded
            self._pixels = np.memmap(self.folder / "pixels.u8", dtype=np.uint8, mode="r")
        return self._pixels

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.folder is not None:
            state["_pixels"] = None  # pickling a memmap would copy the whole file
        return state

    def __len__(self) -> int:
        return len(self.shapes)

    @property
    def bad(self) -> list[int]:
        """Indices of the files that could not be read at build time."""
        return np.flatnonzero(self.shapes[:, 0] == 0).tolist()

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1])

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as a writable ``(H, W, 3)`` uint8 array (a copy of its bytes)."""
        h, w = (int(v) for v in self.shapes[i])
        return np.array(self.pixels[self.offsets[i] : self.offsets[i + 1]]).reshape(h, w, 3)


def plan_shapes(samples: Sequence[tuple[str, int]], side: int) -> tuple[np.ndarray, dict[int, BaseException]]:
    """Each file's cached shape from its header alone (no decoding); header errors by index."""
    shapes, bad = np.zeros((len(samples), 2), dtype=np.int32), {}
    for i, (path, _) in enumerate(samples):
        try:
            with Image.open(path) as im:
                w, h = im.size
            shapes[i] = target_hw(h, w, side)
        except Exception as e:  # PIL raises many types for broken data
            bad[i] = e
    return shapes, bad


def progress_bar(total: int, description: str) -> Any:
    from rich.progress import Progress

    bar = Progress(disable=bool(os.environ.get("VIT_ROPE_NO_PROGRESS")), transient=False)
    return bar, bar.add_task(description, total=total)


def fill(
    samples: Sequence[tuple[str, int]], shapes: np.ndarray, bad: dict, write: Any, skip_corrupt: bool, what: str
) -> None:
    """Decode every readable file in order and ``write(array)`` it; an unreadable one stops the
    build (named) or, with ``skip_corrupt``, is written as zeros and its shape set to (0, 0)."""
    bar, task = progress_bar(len(samples), f"caching {what}")
    with bar:
        for i, (path, _) in enumerate(samples):
            h, w = (int(v) for v in shapes[i])
            if i not in bad:
                try:
                    write(decode(path, (h, w)))
                except Exception as e:
                    bad[i] = e
                    write(np.zeros((h, w, 3), dtype=np.uint8))  # keep the offsets of the others
            if i in bad and not skip_corrupt:
                raise CorruptImageError(unreadable_message(path, bad[i])) from bad[i]
            bar.advance(task)
    for i in bad:
        shapes[i] = 0


def report(store: ImageStore, samples: Sequence[tuple[str, int]], what: str, seconds: float | None) -> None:
    """One line for the build (or the reuse) and one for the unreadable files, if any."""
    where = f"'{store.folder}'" if store.folder else "memory"
    if seconds is None:
        log.info("Reusing the image cache %s (%.1f MiB) for %s.", where, store.nbytes / 2**20, what)
    else:
        log.info(
            "Cached %d images of %s (shorter side <= %d px, %.1f MiB) in %s in %.1f s.",
            *(len(store), what, store.side, store.nbytes / 2**20, where, seconds),
        )
    if store.bad:
        names = ", ".join(Path(samples[i][0]).name for i in store.bad[:5])
        more = f" and {len(store.bad) - 5} more" if len(store.bad) > 5 else ""
        log.warning(
            "Skipped %d unreadable image file(s) in '%s' (data.skip_corrupt=true): %s%s.",
            len(store.bad),
            what,
            names,
            more,
        )


def build_in_memory(samples: Sequence[tuple[str, int]], side: int, skip_corrupt: bool, what: str) -> ImageStore:
    start = time.perf_counter()
    shapes, bad = plan_shapes(samples, side)
    offsets = np.concatenate([[0], np.cumsum(shapes[:, 0].astype(np.int64) * shapes[:, 1] * 3)])
    pixels = np.empty(int(offsets[-1]), dtype=np.uint8)
    pos = [0]

    def write(arr: np.ndarray) -> None:
        pixels[pos[0] : pos[0] + arr.size] = arr.reshape(-1)
        pos[0] += arr.size

    fill(samples, shapes, bad, write, skip_corrupt, what)
    store = ImageStore(pixels, offsets, shapes, side, None)
    report(store, samples, what, time.perf_counter() - start)
    return store
