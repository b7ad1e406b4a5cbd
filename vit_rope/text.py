"""A small 1D text encoder on the same trunk, blocks, attention and rotary core as the ViT.

Tokens form a ``(L,)`` grid; ``rope1d`` rotates by token index, ``ape`` is a learned table
(resampled to other lengths), ``none`` has no position signal. The sequence length plays the
part that resolution plays for images, so the same test-time strategies apply.
"""

from __future__ import annotations

import torch
from torch import nn

from vit_rope.errors import ConfigError
from vit_rope.pos_embed import TEXT_ENCODINGS
from vit_rope.vit import Transformer

TEXT_SIZES: dict[str, dict] = {
    "text_micro": dict(embed_dim=128, depth=4, num_heads=4),
}


class TextEncoder(Transformer):
    """Sequence classifier over token ids ``(B, L)``.

    Args:
        vocab_size: Number of token ids.
        max_len: Training sequence length; sets the training grid ``(L,)``.
        **kwargs: See :class:`vit_rope.vit.Transformer`; ``pos_embed`` is one of ``none``, ``ape``, ``rope1d``.
    """

    def __init__(self, vocab_size: int, max_len: int, **kwargs) -> None:
        kwargs.setdefault("pos_embed", "rope1d")
        super().__init__((max_len,), allowed_encodings=TEXT_ENCODINGS, **kwargs)
        self.vocab_size = vocab_size
        self.token_embed = nn.Embedding(vocab_size, self.embed_dim)
        self.init_weights()
        nn.init.trunc_normal_(self.token_embed.weight, std=0.02)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        return self.token_embed(x), (x.shape[1],)


def create_text_model(
    name: str, vocab_size: int, max_len: int, num_classes: int, pos_embed: str = "rope1d", **kwargs
) -> TextEncoder:
    """Build a text encoder by size name, e.g. ``create_text_model("text_micro", 32, 64, 4)``."""
    if name not in TEXT_SIZES:
        raise ConfigError(f"Unknown text model '{name}'; choose one of {', '.join(sorted(TEXT_SIZES))}.")
    args = {**TEXT_SIZES[name], **kwargs}
    return TextEncoder(vocab_size, max_len, num_classes=num_classes, pos_embed=pos_embed, **args)
