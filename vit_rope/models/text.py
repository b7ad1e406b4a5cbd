"""A small 1D text encoder on the same trunk, blocks, attention and rotary core as the ViT.

Tokens form a ``(L,)`` grid; ``rope1d`` rotates by token index, ``ape`` is a learned table
(resampled to other lengths), ``none`` has no position signal. The sequence length plays the
part that resolution plays for images, so the same test-time strategies apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vit_rope.errors import ConfigError, PositionConfigError
from vit_rope.models.encodings import ENCODINGS, PosEmbedConfig, make_pos_embed
from vit_rope.models.trunk import Transformer, TrunkConfig
from vit_rope.models.vit import MODEL_SIZES


@dataclass(frozen=True)
class TextConfig(TrunkConfig):
    """A text encoder's options (the trunk's); the vocabulary comes from the data."""

    def build(
        self, encoding: PosEmbedConfig, num_classes: int, resolution: int | Sequence[int], vocab_size: int | None = None
    ) -> TextEncoder:
        """The network for token data with ``vocab_size`` ids and training length ``resolution``."""
        if vocab_size is None:
            raise ConfigError(f"model={self.name} is a text model and needs token data; use data=sequences.")
        return TextEncoder(self, encoding, vocab_size, int(resolution), num_classes)


class TextEncoder(Transformer):
    """Sequence classifier over token ids ``(B, L)``.

    Args:
        cfg: Size and options.
        encoding: Position encoding: a family the text encoder takes (``none``, ``ape``, ``rope1d``).
        vocab_size: Number of token ids.
        max_len: Training sequence length; sets the training grid ``(L,)``.
        num_classes: Classifier outputs.
    """

    def __init__(
        self, cfg: TextConfig, encoding: PosEmbedConfig, vocab_size: int, max_len: int, num_classes: int
    ) -> None:
        if not encoding.text:
            names = ", ".join(n for n, family in ENCODINGS.items() if family.text)
            raise PositionConfigError(f"Unknown position encoding '{encoding.name}'; choose one of {names}.")
        super().__init__(cfg, encoding, (max_len,), num_classes)
        self.vocab_size = vocab_size
        self.token_embed = nn.Embedding(vocab_size, self.embed_dim)
        self.init_weights()
        nn.init.trunc_normal_(self.token_embed.weight, std=0.02)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        return self.token_embed(x), (x.shape[1],)


def create_text_model(
    name: str,
    vocab_size: int,
    max_len: int,
    num_classes: int,
    pos_embed: str | PosEmbedConfig = "rope1d",
    pos_options: dict | None = None,
    **kwargs,
) -> TextEncoder:
    """Build a text encoder by size name, e.g. ``create_text_model("text_micro", 32, 64, 4)``."""
    if not name.startswith("text_") or name not in MODEL_SIZES:
        names = sorted(n for n in MODEL_SIZES if n.startswith("text_"))
        raise ConfigError(f"Unknown text model '{name}'; choose one of {', '.join(names)}.")
    cfg = TextConfig(name=name, **{**MODEL_SIZES[name], **kwargs})
    return TextEncoder(cfg, make_pos_embed(pos_embed, **(pos_options or {})), vocab_size, max_len, num_classes)
