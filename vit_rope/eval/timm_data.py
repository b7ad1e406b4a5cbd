"""The evaluation data of a published timm checkpoint: its own mean, std, interpolation and
crop fraction (``timm.data.resolve_model_data_config``), not this project's ImageNet defaults.

The crop fraction stays the same at every resolution (resize to ``r / crop_pct``, centre-crop
``r``), so that results at different resolutions remain comparable; ``data.crop_pct`` given on
the command line wins over the model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from vit_rope.data.imagefolder import ImageFolderDataModule
from vit_rope.errors import ConfigError, check_choice

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


def timm_data_config(model: nn.Module, crop_pct: float | None = None) -> dict[str, Any]:
    """The preprocessing a timm model was trained with, as results.json records it (``run.data_config``).

    Args:
        model: The timm model (its ``pretrained_cfg`` is read; nothing is downloaded).
        crop_pct: A crop fraction that replaces the model's (``data.crop_pct``), or ``None``.
    """
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    if cfg.get("crop_mode", "center") != "center":
        raise ConfigError(
            f"timm model wants crop_mode={cfg['crop_mode']!r}, which this evaluation does not do (it centre-crops "
            "at every resolution); evaluate a model whose pretrained_cfg uses crop_mode='center'."
        )
    return {
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "interpolation": str(cfg["interpolation"]),
        "crop_pct": float(cfg["crop_pct"] if crop_pct is None else crop_pct),
        "crop_mode": "center",
        "source": "timm" if crop_pct is None else "timm, data.crop_pct",
    }


class TimmImageFolderDataModule(ImageFolderDataModule):
    """An image folder whose evaluation transform is timm's, with a model's data config.

    Args:
        mean, std: Per-channel normalisation.
        interpolation: Resize filter, one of :data:`INTERPOLATIONS`.
        **kwargs: :class:`~vit_rope.data.imagefolder.ImageFolderDataModule` options (``crop_pct`` among them).
    """

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], interpolation: str = "bicubic", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if getattr(self, "cache", "none") != "none":  # the cached path normalises batches with ImageNet's mean/std
            raise ConfigError(
                f"data.cache={self.cache} would normalise with ImageNet's mean and std, not the model's; "
                "evaluate timm models with data.cache=none."
            )
        for key, value in (("mean", mean), ("std", std)):
            if len(value) != 3:
                raise ConfigError(f"data.{key}={list(value)} needs one value per RGB channel; give three numbers.")
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.interpolation = check_choice("data.interpolation", interpolation, INTERPOLATIONS)

    def eval_transform(self, resolution: int) -> Any:
        from timm.data import create_transform

        return create_transform(
            int(resolution),
            is_training=False,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            crop_mode="center",
        )
