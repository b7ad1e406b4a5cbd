"""A timm-style Vision Transformer whose position encoding is one config, and the size table.

``create_model("vit_small", pos_embed="rope_mixed")`` builds one from Python; the ``model``
config group (``conf/model/vit_*.yaml``) builds one from the command line through
:class:`ViTConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from timm.layers import PatchEmbed

from vit_rope.errors import ConfigError, check_divisible, check_range
from vit_rope.models.encodings import PosEmbedConfig, make_pos_embed
from vit_rope.models.trunk import Transformer, TrunkConfig

# The one size table: name -> (embed_dim, depth, num_heads). conf/model/<name>.yaml spells the
# same dims out for the command line (a test keeps the two equal).
MODEL_SIZES: dict[str, dict[str, int]] = {
    "vit_micro": dict(embed_dim=64, depth=4, num_heads=4),  # CPU-sized: the default run takes minutes
    "vit_mini": dict(embed_dim=192, depth=6, num_heads=3),  # ViT-Ti width, half depth: real images on a CPU
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16),
    "text_micro": dict(embed_dim=128, depth=4, num_heads=4),
}


@dataclass(frozen=True)
class ViTConfig(TrunkConfig):
    """A ViT's options: the trunk's, plus ``patch_size`` (pixels) and ``in_chans``."""

    patch_size: int = 16
    in_chans: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("model.patch_size", self.patch_size, 1, integer=True)
        check_range("model.in_chans", self.in_chans, 1, integer=True)

    def build(
        self, encoding: PosEmbedConfig, num_classes: int, resolution: int | Sequence[int], vocab_size: int | None = None
    ) -> VisionTransformer:
        """The network for data with ``num_classes`` at training side ``resolution``."""
        if vocab_size is not None:
            raise ConfigError(
                f"model={self.name} takes images but the data holds token sequences; use model=text_micro."
            )
        return VisionTransformer(self, encoding, img_size=resolution, num_classes=num_classes)


class VisionTransformer(Transformer):
    """ViT over a patch grid; any input whose sides are multiples of the patch size, square or not.

    Args:
        cfg: Size and options (:class:`ViTConfig`).
        encoding: Position encoding.
        img_size: Training resolution (int or ``(H, W)``); sets the training grid.
        num_classes: Classifier outputs.
    """

    def __init__(
        self, cfg: ViTConfig, encoding: PosEmbedConfig, img_size: int | Sequence[int] = 224, num_classes: int = 1000
    ):
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        for side in img_size:
            check_divisible("data.img_size", side, cfg.patch_size, "the patch size")
        train_grid = (img_size[0] // cfg.patch_size, img_size[1] // cfg.patch_size)
        super().__init__(cfg, encoding, train_grid, num_classes)
        self.img_size = img_size
        self.patch_size = cfg.patch_size
        self.patch_embed = PatchEmbed(
            img_size=img_size,
            patch_size=cfg.patch_size,
            in_chans=cfg.in_chans,
            embed_dim=self.embed_dim,
            strict_img_size=False,
            output_fmt="NHWC",
        )
        self.init_weights()

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        H, W = x.shape[-2:]
        check_divisible("input height", H, self.patch_size, "the patch size")
        check_divisible("input width", W, self.patch_size, "the patch size")
        x = self.patch_embed(x)  # (B, H/p, W/p, D)
        B, gh, gw, D = x.shape
        return x.reshape(B, gh * gw, D), (gh, gw)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(n for n in MODEL_SIZES if n.startswith("vit_"))


def create_model(
    name: str,
    pos_embed: str | PosEmbedConfig = "rope_axial",
    num_classes: int = 1000,
    img_size: int | Sequence[int] = 224,
    patch_size: int = 16,
    pos_options: dict | None = None,
    **kwargs,
) -> VisionTransformer:
    """Build a ViT by size name, e.g. ``create_model("vit_small", pos_embed="rope_mixed")``.

    Args:
        name: One of :func:`list_models`.
        pos_embed: An encoding name or config (:mod:`vit_rope.models.encodings`).
        num_classes, img_size, patch_size: Head, training resolution and patch side.
        pos_options: Options of the encoding, e.g. ``{"base": 10.0}``.
        **kwargs: :class:`ViTConfig` fields; they override the size's dims.
    """
    if name not in list_models():
        raise ConfigError(f"Unknown model '{name}'; choose one of {', '.join(list_models())}.")
    cfg = ViTConfig(name=name, **{**MODEL_SIZES[name], "patch_size": patch_size, **kwargs})
    encoding = make_pos_embed(pos_embed, **(pos_options or {}))
    return VisionTransformer(cfg, encoding, img_size=img_size, num_classes=num_classes)
