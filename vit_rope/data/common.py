"""What every data module shares: error types, size helpers, option checks and the loaders.

Every data module (``shapes``, ``sequences``, ``imagefolder``) exposes the same small interface,
which one evaluation loop drives:

- ``num_classes`` and ``train_resolution`` (image side in pixels, or sequence length for text);
- ``train_dataloader()`` and ``val_dataloader()``;
- ``eval_dataloader(resolution, mode=None)``: the same validation samples at another resolution.
  At the training resolution it gives exactly what ``val_dataloader()`` gives.

"Larger" has two meanings, the ``MODES``. ``zoom``: the same scene at more pixels (or, for
text, the same layout stretched over more tokens). ``canvas``: a larger scene at the same scale
(shapes keep their pixel size and spread over more pixels; markers keep their token distance
and the sequence gets more filler). Real photos can only be zoomed.

Every option is checked once, in the data module's ``__init__`` (or its config dataclass's
``__post_init__``), before any work; a bad one raises a :class:`~vit_rope.errors.ConfigError`
(:class:`DataConfigError` for checks that are specific to the data) whose one sentence names the
key, the value and the fix.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vit_rope.errors import ConfigError, check_range

Size = int | tuple[int, int]
MODES = ("zoom", "canvas")


class DataConfigError(ConfigError):
    """A data setting or file that cannot work; the message names the value and the fix."""


class CorruptImageError(DataConfigError):
    """Image files that PIL cannot decode; the message names the file (or the folder and how many)."""


# -- sizes, modes, splits ----------------------------------------------------------------------


def split_id(split: str) -> int:
    """Stable integer for a split name (Python's ``hash`` is salted per process)."""
    return {"train": 0, "val": 1, "test": 2}.get(split, zlib.crc32(split.encode()))


def as_hw(size: Size) -> tuple[int, int]:
    """``32`` or ``(32, 48)`` -> ``(H, W)``; refuses sizes below one pixel."""
    if isinstance(size, int | np.integer):
        h = w = int(size)
    else:
        h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise DataConfigError(f"Image size {size} is not positive; use a side of at least 1 pixel.")
    return h, w


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else a :class:`DataConfigError` (datasets' ``mode``
    argument; the data modules check ``data.mode`` and ``eval.mode`` by their keys)."""
    if mode not in MODES:
        raise DataConfigError(f"mode='{mode}' is unknown; use one of {', '.join(MODES)}.")
    return mode


def build_config(config_cls: type, kind: str, options: dict[str, Any]) -> Any:
    """``config_cls(**options)``, with an unknown option named in a :class:`DataConfigError`."""
    try:
        return config_cls(**options)
    except TypeError as e:
        names = ", ".join(f.name for f in fields(config_cls))
        raise DataConfigError(f"Unknown {kind} option in {sorted(options)}; the options are {names}.") from e


# -- loaders ----------------------------------------------------------------------------------


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


def check_loader_options(batch_size: Any, num_workers: Any) -> tuple[int, int]:
    """``(data.batch_size, data.num_workers)`` checked, with ``num_workers=None`` resolved by
    :func:`default_num_workers`."""
    batch_size = check_range("data.batch_size", batch_size, 1, integer=True)
    num_workers = check_range("data.num_workers", num_workers, 0, integer=True, optional=True)
    return batch_size, default_num_workers() if num_workers is None else num_workers


class EpochShuffleSampler(Sampler[int]):
    """A random order that depends only on ``(seed, epoch)``. Lightning calls ``set_epoch`` at
    every epoch, so a run resumed from ``last.ckpt`` sees the same batches as one that was never
    interrupted (a plain ``shuffle=True`` would draw from wherever the global RNG stands).

    ``seed=None`` takes Lightning's global seed (``PL_GLOBAL_SEED``, 0 if unset)."""

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


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    shuffle: bool = False,
    persistent: bool = False,
    collate_fn: Any = None,
) -> DataLoader:
    """A DataLoader with the settings every module uses: an :class:`EpochShuffleSampler` and no
    last partial batch when ``shuffle``, pinned memory only when a GPU can use it, persistent
    workers only for loaders that are iterated every epoch (``persistent``)."""
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
