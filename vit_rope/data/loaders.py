"""The loaders every data module builds: a seeded per-epoch shuffle, multi-resolution training
batches (one side per batch, as in ResFormer and FlexiViT), the worker count and its threads."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from vit_rope.data.common import DataConfigError
from vit_rope.errors import check_divisible, check_range


def check_train_resolutions(value: Any, patch_size: int | None) -> tuple[int, ...] | None:
    """``data.train_resolutions`` checked: ``None`` (off), or a non-empty list of image sides,
    each a whole number >= 1 and, with ``patch_size``, a multiple of it. An entry listed twice
    is drawn twice as often."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise DataConfigError(
            f"data.train_resolutions={value!r} is not a list; set it to a list of image sides such as "
            "[16, 24, 32], or to null to train at data.img_size only."
        )
    sides = list(value)
    if not sides:
        raise DataConfigError(
            "data.train_resolutions is an empty list; list at least one image side (e.g. [data.img_size]), "
            "or set it to null to train at data.img_size only."
        )
    checked = []
    for k, side in enumerate(sides):
        side = check_range(f"data.train_resolutions[{k}]", side, 1, integer=True)
        if patch_size is not None:
            check_divisible("data.train_resolutions entry", side, patch_size, "the patch size")
        checked.append(side)
    return tuple(checked)


# -- loaders ----------------------------------------------------------------------------------


def default_num_workers() -> int:
    """Loader workers when ``num_workers=None``: up to 8 with a GPU, which the loader must keep
    fed; none on a CPU-only machine of at most 2 cores, where a worker only takes a core from the
    training step and the cached images are cheap to augment in the main process (compare with
    ``python -m vit_rope.bench --data imagefolder``, which runs the loader at several worker
    counts); up to 2 on larger CPUs."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    if torch.cuda.is_available():
        return min(8, cpus)
    return 0 if cpus <= 2 else min(2, cpus - 1)


def check_loader_options(batch_size: Any, num_workers: Any) -> tuple[int, int]:
    """``(data.batch_size, data.num_workers)`` checked, with ``num_workers=None`` resolved by
    :func:`default_num_workers`."""
    batch_size = check_range("data.batch_size", batch_size, 1, integer=True)
    num_workers = check_range("data.num_workers", num_workers, 0, integer=True, optional=True)
    return batch_size, default_num_workers() if num_workers is None else num_workers


def set_worker_threads(threads: int, worker_id: int = 0) -> None:
    """A loader worker's ``worker_init_fn`` (with ``functools.partial``): ``threads`` intra-op
    threads in each worker, so that workers and the training process do not oversubscribe the cores."""
    torch.set_num_threads(threads)


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


class MultiResolutionDataset(Dataset):
    """The same samples at several sides: ``datasets[side]`` holds them made at ``side``. Items
    are addressed by ``(index, side)`` pairs, as :class:`ResolutionBatchSampler` yields them.

    Args:
        datasets: ``{side: dataset}``, all of one length.
    """

    def __init__(self, datasets: Mapping[int, Dataset]) -> None:
        self.datasets = dict(datasets)
        lengths = {len(d) for d in self.datasets.values()}
        if len(lengths) != 1:
            raise ValueError(f"MultiResolutionDataset needs datasets of one length, got lengths {sorted(lengths)}")
        self.num_samples = lengths.pop()

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, side = item
        return self.datasets[side][index]

    def __getitems__(self, items: Sequence[tuple[int, int]]) -> list[Any]:
        """A batch, fetched per side with the dataset's own ``__getitems__`` where it has one (the
        synthetic datasets make a batch at once); the items keep their order."""
        out: list[Any] = [None] * len(items)
        by_side: dict[int, list[int]] = {}
        for k, (_, side) in enumerate(items):
            by_side.setdefault(side, []).append(k)
        for side, ks in by_side.items():
            ds, indices = self.datasets[side], [items[k][0] for k in ks]
            got = ds.__getitems__(indices) if hasattr(ds, "__getitems__") else [ds[i] for i in indices]
            for k, item in zip(ks, got, strict=True):
                out[k] = item
        return out


class ResolutionBatchSampler(BatchSampler):
    """``sampler``'s indices in batches, as ``BatchSampler`` makes them, each index paired with
    one side for the whole batch: ``[(index, side), ...]``, for a :class:`MultiResolutionDataset`.

    Each batch's side is drawn uniformly from ``resolutions`` by a generator seeded with
    ``(seed, epoch)`` only, so a resumed run sees the same sides and all devices draw the same
    side at each step. The epoch is the wrapped sampler's: an :class:`EpochShuffleSampler`, or on
    several devices the shuffling ``DistributedSampler`` that Lightning puts in its place;
    Lightning's ``set_epoch`` reaches either. The number of batches is ``BatchSampler``'s, so the
    epoch length and the learning-rate schedule do not change.

    Args:
        sampler, batch_size, drop_last: As for ``BatchSampler`` (Lightning swaps ``sampler`` for
            a ``DistributedSampler`` on several devices and keeps the other arguments).
        resolutions: Sides to draw from (an entry listed twice is drawn twice as often).
        seed: ``None`` takes Lightning's global seed (``PL_GLOBAL_SEED``, 0 if unset).
    """

    _STREAM = 0x5E5  # keeps the draw of sides apart from other uses of the same seed

    def __init__(
        self,
        sampler: Sampler[int] | Iterable[int],
        batch_size: int,
        drop_last: bool,
        resolutions: Sequence[int],
        seed: int | None = None,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.resolutions = tuple(int(r) for r in resolutions)
        if not self.resolutions:
            raise ValueError("ResolutionBatchSampler needs at least one resolution")
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else int(seed)

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def set_epoch(self, epoch: int) -> None:
        """Set the wrapped sampler's epoch (which selects both the order and the sides)."""
        self.sampler.set_epoch(epoch)

    def sides(self) -> list[int]:
        """The side of every batch of the current epoch, in order."""
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch & 0xFFFFFFFF, self._STREAM])
        return [self.resolutions[k] for k in rng.integers(len(self.resolutions), size=len(self))]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch, side in zip(super().__iter__(), self.sides(), strict=True):
            yield [(index, side) for index in batch]


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    shuffle: bool = False,
    persistent: bool = False,
    collate_fn: Any = None,
    resolutions: Sequence[int] | None = None,
    seed: int | None = None,
    worker_init_fn: Any = None,
) -> DataLoader:
    """A DataLoader with the settings every module uses: an :class:`EpochShuffleSampler` and no
    last partial batch when ``shuffle``, pinned memory only when a GPU can use it, persistent
    workers only for loaders that are iterated every epoch (``persistent``).

    With ``resolutions`` (training only: ``shuffle``), ``dataset`` is a
    :class:`MultiResolutionDataset` and a :class:`ResolutionBatchSampler` (seeded with ``seed``)
    makes each batch at one side drawn from ``resolutions``; the order of the samples and the
    number of batches are those without it. ``worker_init_fn`` runs in each worker at its start
    (e.g. :func:`set_worker_threads`)."""
    # A last partial training batch adds noise and, under DDP, uneven steps.
    drop_last = shuffle and len(dataset) > batch_size
    workers = dict(
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=persistent and num_workers > 0,
        collate_fn=collate_fn,
        worker_init_fn=worker_init_fn,
    )
    if resolutions is None:
        sampler = EpochShuffleSampler(len(dataset)) if shuffle else None
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **workers)
    if not shuffle or not isinstance(dataset, MultiResolutionDataset):
        raise ValueError("make_loader: resolutions are for a shuffled MultiResolutionDataset (a training loader)")
    batches = ResolutionBatchSampler(EpochShuffleSampler(len(dataset)), batch_size, drop_last, resolutions, seed)
    return DataLoader(dataset, batch_sampler=batches, **workers)
