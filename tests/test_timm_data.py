"""A timm model is evaluated with its own data config (mean, std, interpolation, crop)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vit_rope.errors import ConfigError
from vit_rope.eval.timm_data import TimmImageFolderDataModule, timm_data_config


def test_data_config_is_the_models_and_crop_pct_can_be_overridden():
    import timm

    model = timm.create_model("vit_small_patch16_224", pretrained=False, depth=1)  # mean = std = 0.5
    config = timm_data_config(model)
    assert config["mean"] == [0.5, 0.5, 0.5] and config["std"] == [0.5, 0.5, 0.5]
    assert config["crop_pct"] == 0.9 and config["interpolation"] == "bicubic" and config["source"] == "timm"
    assert timm_data_config(model, crop_pct=1.0)["crop_pct"] == 1.0


def test_eval_transform_uses_the_data_config_at_every_resolution(image_tree):
    dm = TimmImageFolderDataModule(
        mean=[0.5, 0.5, 0.5], std=[0.25, 0.5, 0.5], interpolation="bilinear", root=str(image_tree), crop_pct=0.8
    )
    grey = Image.new("RGB", (120, 90), (153, 153, 153))
    for r in (32, 64):
        x = dm.eval_transform(r)(grey)
        assert x.shape == (3, r, r)
        expected = torch.tensor([(0.6 - 0.5) / 0.25, (0.6 - 0.5) / 0.5, (0.6 - 0.5) / 0.5])
        assert torch.allclose(x.mean((1, 2)), expected, atol=1e-5)
        # resize to r / crop_pct, then centre-crop r: a 4:3 image's short side becomes int(r / 0.8)
        resize = next(t for t in dm.eval_transform(r).transforms if type(t).__name__ == "Resize")
        assert resize.size in (int(r / 0.8), [int(r / 0.8)])


def test_bad_data_config_values_are_named(image_tree):
    with pytest.raises(ConfigError, match=r"data\.mean=\[0\.5, 0\.5\] needs one value per RGB channel"):
        TimmImageFolderDataModule(mean=[0.5, 0.5], std=[0.5] * 3, root=str(image_tree))
    with pytest.raises(ConfigError, match=r"Unknown data\.interpolation 'lanczos9'"):
        TimmImageFolderDataModule(mean=[0.5] * 3, std=[0.5] * 3, interpolation="lanczos9", root=str(image_tree))
    with pytest.raises(ConfigError, match=r"data\.cache=ram would normalise with ImageNet's mean and std"):
        TimmImageFolderDataModule(mean=[0.5] * 3, std=[0.5] * 3, root=str(image_tree), cache="ram")
