"""LightningModule for classification: loss, optimiser, schedule, Mixup/CutMix and metrics.

The same module trains and evaluates images and text; :func:`build_model` turns the
``model`` and ``pos_embed`` config groups into a :class:`vit_rope.vit.Transformer`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from vit_rope.errors import ConfigError
from vit_rope.text import create_text_model
from vit_rope.vit import Transformer, create_model

# pos_embed group keys -> Transformer arguments
_POS_ARGS = {
    "base": "rope_base",
    "layout": "rope_layout",
    "coords": "rope_coords",
    "shift": "rope_shift",
    "jitter": "rope_jitter",
    "rescale": "rope_rescale",
    "yarn_alpha": "yarn_alpha",
    "yarn_beta": "yarn_beta",
}


def build_model(
    model: dict, pos_embed: dict, num_classes: int, resolution: int, vocab_size: int | None = None
) -> Transformer:
    """Model from the ``model`` and ``pos_embed`` config groups.

    Args:
        model: ``name``, ``kind`` (``vit`` or ``text``), and model options (``patch_size``,
            ``drop_path_rate``, ``init_values``, size overrides, ...).
        pos_embed: ``name`` and the encoding's options (``base``, ``layout``, ``coords``, ...).
        num_classes: Classifier outputs.
        resolution: Training image side (or sequence length for text).
        vocab_size: Token ids, for text models.
    """
    model = dict(model)
    name, kind = model.pop("name"), model.pop("kind", "vit")
    pos = dict(pos_embed)
    args = {_POS_ARGS[k]: v for k, v in pos.items() if k in _POS_ARGS and v is not None}
    args.update({k: v for k, v in model.items() if v is not None})
    if kind == "text":
        if vocab_size is None:
            raise ConfigError("A text model needs token data; use data=sequences with model=text_micro.")
        args.pop("patch_size", None)
        return create_text_model(name, vocab_size, resolution, num_classes, pos_embed=pos["name"], **args)
    if vocab_size is not None:
        raise ConfigError(f"model={name} takes images but the data holds token sequences; use model=text_micro.")
    return create_model(name, pos_embed=pos["name"], num_classes=num_classes, img_size=resolution, **args)


def cosine_with_warmup(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup from 0 to 1 over ``warmup`` steps, then cosine to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class ClassificationModule(L.LightningModule):
    """Trains and validates a :class:`Transformer` classifier.

    Args:
        model, pos_embed: Config groups (plain dicts), see :func:`build_model`.
        num_classes, resolution, vocab_size: From the data module.
        lr, weight_decay, betas: AdamW; no decay on norms, biases, prefix tokens, absolute
            tables and rotary frequencies.
        warmup_epochs, min_lr_ratio: Linear warmup, then cosine decay, per optimiser step.
        label_smoothing: Smoothing of the hard-label loss (and of Mixup targets).
        mixup, cutmix: timm Mixup/CutMix alphas (0 disables).
        compile: Run ``torch.compile`` on the model for training and validation.
        net: Use this model instead of building one from ``model`` and ``pos_embed``.
    """

    def __init__(
        self,
        model: dict,
        pos_embed: dict,
        num_classes: int,
        resolution: int,
        vocab_size: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.1,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        compile: bool = False,
        net: Transformer | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        # ``net``: an already built model (e.g. converted from timm) instead of the config's.
        self.model = net if net is not None else build_model(model, pos_embed, num_classes, resolution, vocab_size)
        self.mixup = None
        if mixup > 0 or cutmix > 0:
            self.mixup = Mixup(
                mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes
            )
            self.train_loss = SoftTargetCrossEntropy()
        else:
            self.train_loss = (
                LabelSmoothingCrossEntropy(label_smoothing) if label_smoothing > 0 else nn.CrossEntropyLoss()
            )
        self.val_loss = nn.CrossEntropyLoss(reduction="sum")
        self.top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        self._loss_sum = 0.0
        self._count = 0
        # Compiled forward kept outside the module tree so checkpoints keep plain parameter names.
        object.__setattr__(self, "_forward", torch.compile(self.model) if compile else self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    # -- training ------------------------------------------------------------------------------

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.mixup is not None and x.shape[0] % 2 == 0:
            x, y = self.mixup(x, y)
            loss = self.train_loss(self(x), y)
        elif self.mixup is not None:  # Mixup needs an even batch; the last odd one trains unmixed
            loss = SoftTargetCrossEntropy()(self(x), self._smooth(y))
        else:
            loss = self.train_loss(self(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"Training loss became {loss.item()} at step {self.global_step}; lower optim.lr or enable "
                "gradient clipping (trainer.gradient_clip_val); the last good checkpoint is kept."
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def _smooth(self, y: torch.Tensor) -> torch.Tensor:
        eps = self.hparams.label_smoothing
        n = self.hparams.num_classes
        return torch.full((y.shape[0], n), eps / n, device=y.device).scatter_(1, y[:, None], 1 - eps + eps / n)

    def configure_optimizers(self):
        skip = self.model.no_weight_decay()
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr,
            betas=tuple(hp.betas),
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        max_epochs = max(1, self.trainer.max_epochs or 1)
        warmup = int(round(hp.warmup_epochs * total / max_epochs))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_with_warmup(step, warmup, total, hp.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- validation (also the evaluation loop at other resolutions) ---------------------------

    def on_validation_epoch_start(self) -> None:
        self.top1.reset()
        self.top5.reset()
        self._loss_sum = torch.zeros((), device=self.device)
        self._count = torch.zeros((), device=self.device)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self._loss_sum = self._loss_sum + self.val_loss(logits.float(), y)
        self._count = self._count + y.numel()
        self.top1.update(logits, y)
        self.top5.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        loss_sum = self.all_gather(self._loss_sum).sum()
        count = self.all_gather(self._count).sum()
        self.log("val/loss", loss_sum / count.clamp_min(1), prog_bar=True)
        self.log("val/top1", self.top1.compute() * 100, prog_bar=True)
        self.log("val/top5", self.top5.compute() * 100)
        self.log("val/n", count.float())
