"""vit_rope: Vision Transformers with rotary position embeddings over the 2D patch grid."""

from vit_rope.pos_embed import ENCODINGS, TEXT_ENCODINGS
from vit_rope.rope import STRATEGIES, PositionConfigError
from vit_rope.text import TextEncoder, create_text_model
from vit_rope.vit import VisionTransformer, create_model, from_timm, list_models

__all__ = [
    "ENCODINGS",
    "STRATEGIES",
    "TEXT_ENCODINGS",
    "PositionConfigError",
    "TextEncoder",
    "VisionTransformer",
    "create_model",
    "create_text_model",
    "from_timm",
    "list_models",
]
