"""The bases of the synthetic data (``shapes``, ``sequences``): a dataset whose samples are a pure
function of ``(seed, split, index)``, and a data module that re-makes its validation samples at
any resolution for evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vit_rope.data.common import MODES, as_hw, build_config, check_mode
from vit_rope.data.loaders import MultiResolutionDataset, check_loader_options, make_loader
from vit_rope.errors import check_choice, check_range


class SyntheticDataset(Dataset):
    """Samples made in batches by ``_make`` (vectorised), served one by one or a batch at a time
    (``__getitems__``, which DataLoader uses), and, with ``cache``, kept whole after the first
    use. A subclass names its ``kind`` and passes its options dataclass; an unknown option is a
    :class:`~vit_rope.data.common.DataConfigError` that lists the known ones.

    Args:
        num_samples: Dataset length, at least 1.
        cache: Make every sample on first use and keep it.
        seed, split: Select the samples.
        mode: ``zoom`` or ``canvas`` (see :mod:`vit_rope.data.common`).
        config_cls, options: The options dataclass and its fields' values.
    """

    kind = "synthetic"

    def __init__(
        self, num_samples: int, cache: bool, seed: int, split: str, mode: str, config_cls: type, options: dict
    ) -> None:
        self.num_samples = check_range("num_samples", num_samples, 1, integer=True)
        self.cache = cache
        self._data: torch.Tensor | None = None
        self.mode = check_mode(mode)
        self.seed, self.split = int(seed), split
        self.config = build_config(config_cls, self.kind, options)

    def __len__(self) -> int:
        return self.num_samples

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def _make(self, indices: np.ndarray) -> torch.Tensor:
        """The raw samples at ``indices`` (what the cache holds)."""
        raise NotImplementedError

    def _finish(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw samples -> model inputs (e.g. uint8 -> normalised float)."""
        return raw

    @property
    def labels(self) -> torch.Tensor:
        """Labels of all samples, ``(num_samples,)`` int64."""
        raise NotImplementedError

    def prerender(self) -> SyntheticDataset:
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


class SyntheticDataModule(L.LightningDataModule):
    """A cached training and validation set, and the validation samples re-made at another
    resolution (or length) for evaluation.

    ``__init__`` checks the options every synthetic module has; a subclass then sets
    ``train_set``, ``val_set`` and ``config`` and implements :attr:`train_resolution` and
    :meth:`_eval_set`. A subclass that sets :attr:`train_resolutions` (multi-resolution training)
    also implements :meth:`_train_set_at`.

    Args:
        num_train, num_val: Number of training / validation samples (``data.num_train``, ``data.num_val``).
        batch_size: Per step, also for evaluation unless ``eval_dataloader`` is given one.
        num_workers: Loader workers; ``None`` picks :func:`~vit_rope.data.loaders.default_num_workers`.
        seed: Selects the samples (``data.seed``, a whole number >= 0).
        mode: Default ``eval_dataloader`` mode, ``zoom`` or ``canvas``.
    """

    train_set: SyntheticDataset
    val_set: SyntheticDataset
    #: Sides to draw each training batch's from (``data.train_resolutions``), or ``None``: all at
    #: :attr:`train_resolution`.
    train_resolutions: tuple[int, ...] | None = None

    def __init__(
        self, num_train: int, num_val: int, batch_size: int, num_workers: int | None, seed: int, mode: str
    ) -> None:
        super().__init__()
        self.num_train = check_range("data.num_train", num_train, 1, integer=True)
        self.num_val = check_range("data.num_val", num_val, 1, integer=True)
        self.batch_size, self.num_workers = check_loader_options(batch_size, num_workers)
        self.seed = check_range("data.seed", seed, 0, integer=True)
        self.mode = check_choice("data.mode", mode, MODES)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @property
    def train_resolution(self) -> int:
        raise NotImplementedError

    def _eval_set(self, resolution: Any, mode: str) -> SyntheticDataset:
        """The validation samples at ``resolution`` in ``mode``, made on demand (not cached)."""
        raise NotImplementedError

    def _train_set_at(self, resolution: int) -> SyntheticDataset:
        """The training samples made at ``resolution`` (for :attr:`train_resolutions`)."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        if self.train_resolutions is None:
            if self.num_workers > 0:
                self.train_set.prerender()  # before the workers fork, so they share one copy
            return make_loader(self.train_set, self.batch_size, self.num_workers, shuffle=True, persistent=True)
        sets = {side: self._train_set_at(side) for side in self.train_resolutions}
        if self.num_workers > 0:
            for ds in sets.values():
                ds.prerender()
        return make_loader(
            MultiResolutionDataset(sets),
            self.batch_size,
            self.num_workers,
            shuffle=True,
            persistent=True,
            resolutions=self.train_resolutions,
            seed=self.seed,
        )

    def val_dataloader(self) -> DataLoader:
        if self.num_workers > 0:
            self.val_set.prerender()
        return make_loader(self.val_set, self.batch_size, self.num_workers, persistent=True)

    def eval_dataloader(self, resolution: Any, mode: str | None = None, batch_size: int | None = None) -> DataLoader:
        """The validation samples at ``resolution`` in ``mode`` (default: the module's). At the
        training resolution this is exactly ``val_dataloader()``; other sizes are made a batch at
        a time (not cached), so large sizes cost no memory."""
        mode = check_choice("eval.mode", mode, MODES) if mode else self.mode
        if as_hw(resolution) == as_hw(self.train_resolution):
            return self.val_dataloader()
        return make_loader(self._eval_set(resolution, mode), batch_size or self.batch_size, self.num_workers)
