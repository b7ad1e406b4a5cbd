"""Networks: the encoding configs, the shared trunk, the ViT, the text encoder, timm conversion."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vit_rope.config import build_dataclass, plain
from vit_rope.errors import ConfigError
from vit_rope.models.encodings import ENCODINGS, build_pos_embed, make_pos_embed
from vit_rope.models.from_timm import from_timm
from vit_rope.models.text import TextConfig, TextEncoder, create_text_model
from vit_rope.models.trunk import Transformer, TrunkConfig
from vit_rope.models.vit import MODEL_SIZES, VisionTransformer, ViTConfig, create_model, list_models

MODEL_CONFIGS = {f"{c.__module__}.{c.__qualname__}": c for c in (ViTConfig, TextConfig)}


def build_model_config(node: Mapping[str, Any]) -> ViTConfig | TextConfig:
    """The typed config of a ``model`` group; ``_target_`` names :class:`ViTConfig` or :class:`TextConfig`."""
    node = dict(plain(node))
    target = node.get("_target_")
    if target not in MODEL_CONFIGS:
        raise ConfigError(f"model._target_ '{target}' is not one of {', '.join(MODEL_CONFIGS)}.")
    return build_dataclass(MODEL_CONFIGS[target], node, "model", what=node.get("name"))


__all__ = [
    "ENCODINGS",
    "MODEL_SIZES",
    "TextConfig",
    "TextEncoder",
    "Transformer",
    "TrunkConfig",
    "ViTConfig",
    "VisionTransformer",
    "build_model_config",
    "build_pos_embed",
    "create_model",
    "create_text_model",
    "from_timm",
    "list_models",
    "make_pos_embed",
]
