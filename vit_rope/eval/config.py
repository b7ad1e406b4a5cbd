"""The ``eval`` config group, typed: what is evaluated after training and by ``eval.py``.

Its defaults live in ``conf/eval/default.yaml`` only; :func:`vit_rope.config.build_dataclass`
builds it once at the start of a task, and the evaluation receives the built object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vit_rope.data.common import MODES
from vit_rope.errors import ConfigError, check_choice, check_divisible, check_range
from vit_rope.extrapolate import check_strategy
from vit_rope.models.vit import VisionTransformer
from vit_rope.weights import WEIGHTS


def _flags(key: str, values: Sequence[Any]) -> tuple[bool, ...]:
    for v in values:
        if not isinstance(v, bool):
            raise ConfigError(f"{key} entry {v!r} is not true or false; use {key}=[false,true].")
    return tuple(values)


@dataclass(frozen=True)
class EvalConfig:
    """The ``eval`` config group (each field is documented in ``conf/eval/default.yaml``).

    Args:
        weights: Which weights to evaluate: ``last``, ``best`` or ``ema`` (:mod:`vit_rope.weights`).
        resolutions: Image sides or sequence lengths; ``None`` for the data's default ladder.
        strategies: Test-time strategies (:mod:`vit_rope.extrapolate`).
        logn: Run each cell without and/or with log-n attention scaling.
        mode: ``zoom`` or ``canvas``; ``None`` takes the data's default.
        diagnostics_images: Validation samples the attention diagnostics of each cell run on; 0: off.
        batch_size: Evaluation batch size; ``None`` takes the data's.
        window: Run each cell without and/or with local attention.
        subset: Evaluate every cell on the same fixed subset of this many validation samples
            (:func:`vit_rope.eval.loop.eval_subset`); ``None``: all of them.
        calibration_images: Validation inputs (no labels) that ``calibrate`` chooses its alpha and
            temperature per layer and head on (:mod:`vit_rope.eval.calibrate`).
    """

    weights: str
    resolutions: tuple[int, ...] | None
    strategies: tuple[str, ...]
    logn: tuple[bool, ...]
    mode: str | None
    diagnostics_images: int
    batch_size: int | None
    window: tuple[bool, ...]
    subset: int | None
    calibration_images: int

    def __post_init__(self) -> None:
        check_choice("eval.weights", self.weights, WEIGHTS)
        if self.resolutions is not None:
            for r in self.resolutions:
                check_range("eval.resolutions entry", r, 1, integer=True)
            object.__setattr__(self, "resolutions", tuple(int(r) for r in self.resolutions))
        for s in self.strategies:
            check_strategy(s, where="eval.strategies")
        object.__setattr__(self, "strategies", tuple(self.strategies))
        object.__setattr__(self, "logn", _flags("eval.logn", self.logn))
        if self.mode is not None:
            check_choice("eval.mode", self.mode, MODES)
        check_range("eval.diagnostics_images", self.diagnostics_images, 0, integer=True)
        check_range("eval.batch_size", self.batch_size, 1, integer=True, optional=True)
        object.__setattr__(self, "window", _flags("eval.window", self.window))
        check_range("eval.subset", self.subset, 1, integer=True, optional=True)
        check_range("eval.calibration_images", self.calibration_images, 1, integer=True)

    def check_model(self, model: Any) -> None:
        """Refuse resolutions that the model cannot take (a ViT's side must be a multiple of its
        patch size), before anything runs, so nothing half-written is left behind."""
        if isinstance(model, VisionTransformer):
            for r in self.resolutions or ():
                check_divisible("eval.resolutions entry", r, model.patch_size, "the patch size")

    def check_data(self, datamodule: Any) -> None:
        """Refuse a subset (or, with ``calibrate``, calibration inputs) larger than the validation
        set, before anything is trained or written."""
        if self.subset is None and "calibrate" not in self.strategies:
            return
        n = len(datamodule.eval_dataloader(datamodule.train_resolution).dataset)
        if "calibrate" in self.strategies and self.calibration_images > n:
            raise ConfigError(
                f"eval.calibration_images={self.calibration_images} is larger than the validation set ({n} samples); "
                f"use eval.calibration_images={n} or less."
            )
        if self.subset is not None and self.subset > n:
            raise ConfigError(
                f"eval.subset={self.subset} is larger than the validation set ({n} samples); use "
                f"eval.subset={n} or less, or eval.subset=null for all of them."
            )
