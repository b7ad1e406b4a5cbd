"""vit_rope: Vision Transformers with rotary position embeddings over the 2D patch grid.

Layout (dependencies point down the list):

- ``errors``, ``config``: the one error type and typed configs from Hydra groups;
- ``extrapolate``: the test-time strategies (extrapolate, interpolate, ntk, yarn, logn);
- ``layers/``: the rotary core, rotary and absolute position embeddings, attention;
- ``models/``: encoding configs, the trunk, the ViT, the text encoder, timm conversion;
- ``data/``: shapes, sequences, image folders;
- ``lit_module``: the LightningModule (loss, optimiser, schedule, metrics);
- ``eval/``: the evaluation loop and the results.json schema;
- ``report/``: results.json files -> comparison table and plot;
- ``tasks/``: what ``train.py`` and ``eval.py`` do; ``bench``: the benchmark.
"""

from vit_rope.errors import ConfigError, PositionConfigError
from vit_rope.extrapolate import STRATEGIES
from vit_rope.models import (
    ENCODINGS,
    TextEncoder,
    VisionTransformer,
    create_model,
    create_text_model,
    from_timm,
    list_models,
    make_pos_embed,
)

__all__ = [
    "ENCODINGS",
    "STRATEGIES",
    "ConfigError",
    "PositionConfigError",
    "TextEncoder",
    "VisionTransformer",
    "create_model",
    "create_text_model",
    "from_timm",
    "list_models",
    "make_pos_embed",
]
