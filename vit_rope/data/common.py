"""What every data module shares: error types, size helpers and option checks (the loaders are in
:mod:`vit_rope.data.loaders`).

Every data module (``shapes``, ``sequences``, ``imagefolder``) exposes the same small interface,
which one evaluation loop drives:

- ``num_classes`` and ``train_resolution`` (image side in pixels, or sequence length for text);
- ``train_dataloader()`` and ``val_dataloader()``;
- ``eval_dataloader(resolution, mode=None)``: the same validation samples at another resolution.
  At the training resolution it gives exactly what ``val_dataloader()`` gives.

The image modules also take ``train_resolutions`` (multi-resolution training, as in ResFormer
and FlexiViT): every training batch is made at one side drawn from that list
(:mod:`vit_rope.data.loaders`); ``train_resolution`` stays ``img_size``, and validation and
evaluation do not change.

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

import zlib
from dataclasses import fields
from typing import Any

import numpy as np

from vit_rope.errors import ConfigError

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
