"""The encoder trunk shared by the ViT and the text encoder: prefix tokens, the position
encoding, the blocks, pooling and the head, and the switch between test-time strategies.

A subclass only says how inputs become a grid of tokens (:meth:`Transformer.embed`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from timm.models import named_apply
from timm.models.vision_transformer import init_weights_vit_timm
from torch import nn

from vit_rope.errors import ConfigError, PositionConfigError, check_choice, check_range
from vit_rope.extrapolate import (
    ENSEMBLE_ALPHAS,
    Calibration,
    check_strategy,
    ensemble_logits,
    local_window_mask,
    logn_attention_factor,
    visible_keys,
    window_reach,
)
from vit_rope.layers.abs_pos import LearnedPosEmbed
from vit_rope.layers.attention import Block
from vit_rope.models.encodings import PosEmbedConfig


@dataclass(frozen=True)
class TrunkConfig:
    """Size and options of the trunk (the ``model`` config group, less what is specific to the input).

    Args:
        name: The size's name (``vit_micro``, ``vit_small``, ``text_micro``, ...).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: Transformer size.
        class_token, num_reg_tokens, global_pool: Prefix tokens and pooling (``token`` or ``avg``).
        init_values: LayerScale init (``None`` disables LayerScale).
        abs_init_std: Std of the normal init of a learned absolute table (timm: 0.02).
        drop_rate, drop_path_rate, attn_drop_rate, proj_drop_rate: Regularisation.
        logn_attention: Log-n scaling in training as well as at test time (Su, 2021): attention
            logits times ``log N / log N_train`` for every input, so that a model trained at
            several resolutions and tested at others sees one rule throughout.
    """

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    num_reg_tokens: int = 0
    global_pool: str = "token"
    init_values: float | None = None
    abs_init_std: float = 0.02
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    attn_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    logn_attention: bool = False

    def __post_init__(self) -> None:
        check_range("model.embed_dim", self.embed_dim, 1, integer=True)
        check_range("model.depth", self.depth, 1, integer=True)
        check_range("model.num_heads", self.num_heads, 1, integer=True)
        if self.embed_dim % self.num_heads != 0:
            raise ConfigError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}; "
                "pick num_heads that divides it."
            )
        check_range("model.mlp_ratio", self.mlp_ratio, 0.0, low_open=True)
        check_range("model.num_reg_tokens", self.num_reg_tokens, 0, integer=True)
        check_choice("model.global_pool", self.global_pool, ("token", "avg"))
        if self.global_pool == "token" and not self.class_token:
            raise ConfigError("global_pool=token needs class_token=true; set one of them differently.")
        check_range("model.init_values", self.init_values, 0.0, low_open=True, optional=True)
        check_range("model.abs_init_std", self.abs_init_std, 0.0, low_open=True)
        for key in ("drop_rate", "drop_path_rate", "attn_drop_rate", "proj_drop_rate"):
            check_range(f"model.{key}", getattr(self, key), 0.0, 1.0, high_open=True)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.num_reg_tokens


class Transformer(nn.Module):
    """Encoder trunk: tokens on a grid -> prefix tokens, positions, blocks, pooled logits.

    Args:
        cfg: Size and options.
        encoding: The position encoding.
        train_grid: Token grid of the training input, ``(H, W)`` or ``(L,)``; the reference for
            learned tables and test-time strategies.
        num_classes: Classifier outputs (0 for features only).
    """

    def __init__(self, cfg: TrunkConfig, encoding: PosEmbedConfig, train_grid: Sequence[int], num_classes: int) -> None:
        super().__init__()
        check_range("num_classes", num_classes, 0, integer=True)
        self.cfg = cfg
        self.encoding = encoding
        self.train_grid = tuple(int(g) for g in train_grid)
        self.num_classes = num_classes
        self.embed_dim = self.num_features = cfg.embed_dim
        self.global_pool = cfg.global_pool
        self.num_prefix_tokens = cfg.num_prefix_tokens
        self.head_dim = cfg.head_dim
        self.strategy = "extrapolate"
        self.logn = False
        self.window = False
        self._masks: dict[tuple, torch.Tensor | None] = {}
        # ``calibrate``: the choice per layer and head for each test grid (vit_rope.eval.calibrate)
        self.calibrations: dict[tuple[int, ...], Calibration] = {}

        D = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.num_reg_tokens, D)) if cfg.num_reg_tokens else None
        self.abs_pos = encoding.build_absolute(D, self.train_grid, self.num_prefix_tokens, cfg.abs_init_std)
        self.rope = encoding.build_rotary(
            cfg.head_dim, cfg.num_heads, cfg.depth, self.train_grid, self.num_prefix_tokens
        )

        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # stochastic depth rule
        self.blocks = nn.ModuleList(
            [
                Block(
                    D,
                    cfg.num_heads,
                    cfg.mlp_ratio,
                    cfg.qkv_bias,
                    cfg.init_values,
                    dpr[i],
                    cfg.proj_drop_rate,
                    cfg.attn_drop_rate,
                    norm_layer,
                )
                for i in range(cfg.depth)
            ]
        )
        # timm: average pooling normalises after pooling, token pooling before it.
        self.norm = norm_layer(D) if cfg.global_pool == "token" else nn.Identity()
        self.fc_norm = norm_layer(D) if cfg.global_pool == "avg" else nn.Identity()
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(D, num_classes) if num_classes > 0 else nn.Identity()

    def init_weights(self) -> None:
        """timm's ViT init: truncated normal linears, tiny prefix tokens."""
        named_apply(init_weights_vit_timm, self)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)
        if isinstance(self.abs_pos, LearnedPosEmbed):
            self.abs_pos.reset_parameters()

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Input -> grid tokens ``(B, N, D)`` in raster order, and the grid shape."""
        raise NotImplementedError

    # -- test-time strategies ------------------------------------------------------------------

    def strategy_applies(self, strategy: str, window: bool = False) -> bool:
        """False where ``strategy`` does not apply to this encoding (the result is n/a). The local
        window under ``calibrate`` is n/a too: the reach a head met in training depends on its
        own alpha (``s^alpha (T - 1)``), and one mask serves every head."""
        return self.encoding.strategy_applies(strategy) and not (window and strategy == "calibrate")

    def set_strategy(self, strategy: str = "extrapolate", logn: bool = False, window: bool = False) -> None:
        """Select how positions behave on grids other than the training grid; a strategy that
        does not apply is refused, never replaced by another. ``window``: local attention within
        the training grid's extent (:func:`vit_rope.extrapolate.local_window_mask`)."""
        check_strategy(strategy)
        if not self.strategy_applies(strategy):
            raise PositionConfigError(
                f"Strategy '{strategy}' does not apply to pos_embed={self.encoding.name}; "
                "record it as n/a or choose another strategy."
            )
        if not self.strategy_applies(strategy, window):
            raise PositionConfigError(
                f"Strategy '{strategy}' with the local window does not apply (each head has its own "
                "reach); record it as n/a or evaluate it without the window."
            )
        self.strategy, self.logn, self.window = strategy, bool(logn), bool(window)
        for part in (self.rope, self.abs_pos):
            if hasattr(part, "set_strategy"):
                part.set_strategy(strategy)

    @contextlib.contextmanager
    def use_strategy(self, strategy: str = "extrapolate", logn: bool = False, window: bool = False) -> Iterator[None]:
        """``with model.use_strategy("ntk", logn=True): ...`` restores the previous one after."""
        before = (self.strategy, self.logn, self.window)
        self.set_strategy(strategy, logn, window)
        try:
            yield
        finally:
            self.set_strategy(*before)

    def logit_scale(self, grid: Sequence[int], alpha: float | None = None) -> float:
        """Attention-logit multiplier on ``grid``: the log-n factor when log-n is on (at test time,
        or always with ``logn_attention``), else YaRN's temperature (1 for other strategies); the two never multiply (:mod:`vit_rope.extrapolate`)."""
        if self.logn or self.cfg.logn_attention:
            # Under the window a query sees only the keys within its reach, so log-n counts those.
            keys = visible_keys(tuple(grid), self.window_reach(grid, alpha)) if self.window else math.prod(grid)
            return logn_attention_factor(keys, math.prod(self.train_grid))
        return self.rope.attention_factor(grid) if self.rope is not None else 1.0

    def window_reach(self, grid: Sequence[int], alpha: float | None = None) -> tuple[float, ...]:
        """The local window's reach per axis on ``grid``, in grid steps: the offsets met in
        training, in position units (:func:`vit_rope.extrapolate.window_reach`), for the current
        strategy or, under ``ensemble``, for the member's frequency scale ``s^(-alpha)``."""
        if alpha is None:
            alpha = 1.0 if self.encoding.compresses_positions(self.strategy) else 0.0
        return window_reach(tuple(grid), self.train_grid, alpha)

    def attention_mask(
        self, grid: Sequence[int], device: torch.device, alpha: float | None = None
    ) -> torch.Tensor | None:
        """The local-window mask for ``grid`` when the window is on (built once per grid and
        reach), else None."""
        if not self.window:
            return None
        reach = self.window_reach(grid, alpha)
        key = (tuple(grid), reach, device)
        if key not in self._masks:
            mask = local_window_mask(tuple(grid), self.train_grid, self.num_prefix_tokens, reach)
            self._masks[key] = None if mask is None else mask.to(device)
        return self._masks[key]

    # -- forward -------------------------------------------------------------------------------

    def _prefix(self, batch: int) -> torch.Tensor | None:
        parts = [t.expand(batch, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        return torch.cat(parts, dim=1) if parts else None

    def set_calibration(self, grid: Sequence[int], calibration: Calibration) -> None:
        """Keep ``calibrate``'s choice for ``grid`` (alpha and temperature per layer and head)."""
        shape = (self.cfg.depth, self.cfg.num_heads)
        if tuple(calibration.alpha.shape) != shape or tuple(calibration.temperature.shape) != shape:
            raise ValueError(f"A calibration of this model is {shape} (layers, heads) per value.")
        self.calibrations[tuple(int(g) for g in grid)] = calibration

    def _calibration(self, grid: tuple[int, ...]) -> Calibration | None:
        """Under ``calibrate``, the choice for ``grid``: none at the training grid (identity)."""
        if self.strategy != "calibrate" or grid == self.train_grid:
            return None
        if grid not in self.calibrations:
            raise PositionConfigError(
                f"Strategy 'calibrate' has no calibration for the grid {grid}; calibrate the model on that grid "
                "first (vit_rope.eval.calibrate.calibrate_model)."
            )
        return self.calibrations[grid]

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Input -> the tokens that enter the first block ``(B, P + N, D)`` (prefix tokens, the
        absolute table), and the grid."""
        tokens, grid = self.embed(x)  # (B, N, D)
        grid = tuple(int(g) for g in grid)
        prefix = self._prefix(tokens.shape[0])
        if self.abs_pos is not None:
            x = self.abs_pos(tokens, prefix, grid)
        else:
            x = tokens if prefix is None else torch.cat([prefix, tokens], dim=1)
        return x, grid

    def forward_blocks(
        self,
        x: torch.Tensor,
        grid: tuple[int, ...],
        start: int = 0,
        stop: int | None = None,
        alpha: float | torch.Tensor | None = None,
        temperature: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Blocks ``start`` to ``stop`` (all by default) on ``x`` of ``grid``.

        ``alpha``: frequency scale ``G = s^(-alpha)`` (one exponent, or ``(depth, heads)``);
        ``temperature``: ``(depth, heads)`` logit temperatures. Both default to the strategy's own.
        """
        if alpha is None and temperature is None:
            calibration = self._calibration(grid)
            if calibration is not None:
                alpha, temperature = calibration.alpha, calibration.temperature
        member = alpha if isinstance(alpha, float | int) else None  # one scale for every head (ensemble)
        logit_scale = self.logit_scale(grid, member)
        # Fixed frequencies: one cached (cos, sin) for every layer. Per layer (learned, or one
        # scale per layer and head): the angles of all layers in one batched op, and each layer's
        # cos, sin in its turn, so that only the angles, not cos and sin of every layer, are held.
        per_layer = self.rope is not None and self.rope.per_layer(alpha)
        tables = self.rope(grid, alpha=alpha) if self.rope is not None and not per_layer else None
        angles = self.rope.angles(grid, alpha) if per_layer else None
        basis = self.rope.basis() if per_layer else None
        mask = self.attention_mask(grid, x.device, member)
        stop = len(self.blocks) if stop is None else stop
        for i in range(start, stop):
            if per_layer:
                tables = self.rope.layer_tables(angles, i, basis)
            head_scale = None if temperature is None else temperature[i].to(x.device)
            x = self.blocks[i](x, tables, logit_scale, mask, head_scale)
        return x

    def forward_features(self, x: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        x, grid = self.forward_tokens(x)
        return self.norm(self.forward_blocks(x, grid, alpha=alpha))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, self.num_prefix_tokens :].mean(dim=1) if self.global_pool == "avg" else x[:, 0]
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.strategy == "ensemble":
            return self.forward_ensemble(x)
        return self.forward_head(self.forward_features(x))

    def forward_ensemble(self, x: torch.Tensor) -> torch.Tensor:
        """``ensemble``: the log of the softmax predictions averaged over the position scales
        ``G = s^(-alpha)``, alpha in :data:`vit_rope.extrapolate.ENSEMBLE_ALPHAS` (one forward of
        the blocks each; the patch embedding is shared). At the training grid every member is the
        plain model, so the plain logits are returned."""
        x, grid = self.forward_tokens(x)
        if grid == self.train_grid:
            return self.forward_head(self.norm(self.forward_blocks(x, grid)))
        members = [self.forward_head(self.norm(self.forward_blocks(x, grid, alpha=a))) for a in ENSEMBLE_ALPHAS]
        return ensemble_logits(members).to(members[0].dtype)

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay: prefix tokens, absolute tables, frequencies."""
        names = {"cls_token", "reg_token", "abs_pos.pos_embed", "rope.freqs", "rope.basis_params"}
        return {n for n, _ in self.named_parameters() if n in names}
