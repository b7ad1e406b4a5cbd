"""The ``sequences`` data: synthetic token sequences whose label needs relative token order and
distance, for the 1D text path (the sequence length plays the part of the image resolution)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vit_rope.data.common import DataConfigError, split_id
from vit_rope.data.synthetic import SyntheticDataModule, SyntheticDataset
from vit_rope.errors import check_choice, check_range

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
        # Whole numbers are stored as int, so that 4.0 from a config file works as 4.
        object.__setattr__(self, "num_classes", int(check_choice("data.num_classes", self.num_classes, (2, 4))))
        object.__setattr__(
            self, "vocab_size", check_range("data.vocab_size", self.vocab_size, FIRST_FILLER + 2, integer=True)
        )
        for key in ("near", "far"):
            pair = getattr(self, key)
            if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise DataConfigError(
                    f"data.{key}={pair!r} is not a pair of numbers; set data.{key} to [low, high], "
                    "fractions of the training length."
                )
            for i, v in enumerate(pair):
                check_range(f"data.{key}[{i}]", v, 0, 1, low_open=True, high_open=True)
            object.__setattr__(self, key, tuple(pair))
        if not self.near[0] <= self.near[1] < self.far[0] <= self.far[1]:
            raise DataConfigError(
                f"data.near={self.near} and data.far={self.far} must be increasing fractions "
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


class SequenceDataset(SyntheticDataset):
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

    def _draw(self, index: int) -> tuple[np.random.Generator, int, int, int, float]:
        """Label, order (0: A first), distance at the training length, placement; then the rng,
        whose further draws give the filler."""
        rng = np.random.default_rng([self.seed, split_id(self.split), index])
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


class SequenceDataModule(SyntheticDataModule):
    """Synthetic token sequences for the 1D text path; the length plays the part of resolution.
    Defaults are those of ``conf/data/sequences.yaml``.

    Args:
        length: Training sequence length (``train_resolution``), a whole number >= 1 long
            enough to hold the far markers.
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
        super().__init__(num_train, num_val, batch_size, num_workers, seed, mode)
        self.length = check_range("data.length", length, 1, integer=True)
        self._options = options
        self.train_set = SequenceDataset(self.num_train, self.length, self.seed, "train", cache=True, **options)
        self.val_set = SequenceDataset(self.num_val, self.length, self.seed, "val", cache=True, **options)
        self.config = self.train_set.config

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def train_resolution(self) -> int:
        return self.length

    def _eval_set(self, resolution: Any, mode: str) -> SequenceDataset:
        return SequenceDataset(
            self.num_val, int(resolution), self.seed, "val", mode, train_length=self.length, **self._options
        )
