"""LightningModule for classification: loss, optimiser, schedule, Mixup/CutMix and metrics.

The same module trains and evaluates images and text. It receives a built network (the task
builds it from the ``model`` and ``pos_embed`` groups) and the typed ``optim`` group.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from vit_rope.errors import ConfigError, check_range
from vit_rope.models.trunk import Transformer


@dataclass(frozen=True)
class OptimConfig:
    """The ``optim`` config group: AdamW, its schedule, and the training loss's regularisers.

    Args:
        lr: Peak learning rate.
        weight_decay: AdamW decay; none on norms, biases, prefix tokens, absolute tables and
            rotary frequencies.
        betas: AdamW betas.
        warmup_epochs: Linear warmup length (fractions allowed), then cosine decay, per step.
        min_lr_ratio: Final learning rate as a fraction of ``lr``.
        label_smoothing: Smoothing of the hard-label loss (and of Mixup targets).
        mixup, cutmix: timm Mixup/CutMix alphas (0 disables).
    """

    lr: float = 2.0e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 0.3
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self) -> None:
        check_range("optim.lr", self.lr, 0.0, low_open=True)
        check_range("optim.weight_decay", self.weight_decay, 0.0)
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas={list(self.betas)} must hold two numbers, e.g. [0.9, 0.999].")
        for i, beta in enumerate(self.betas):
            check_range(f"optim.betas[{i}]", beta, 0.0, 1.0, high_open=True)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        check_range("optim.warmup_epochs", self.warmup_epochs, 0.0)
        check_range("optim.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_range("optim.label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        check_range("optim.mixup", self.mixup, 0.0)
        check_range("optim.cutmix", self.cutmix, 0.0)


def cosine_with_warmup(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup from 0 to 1 over ``warmup`` steps, then cosine to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class ClassificationModule(L.LightningModule):
    """Trains and validates a classifier network (images or text).

    Args:
        net: The built network (a :class:`vit_rope.models.trunk.Transformer`).
        optim: Optimiser, schedule and loss settings; the YAML defaults when omitted.
        compile: Run ``torch.compile`` on the network for training and validation.
    """

    def __init__(self, net: Transformer, optim: OptimConfig | None = None, compile: bool = False) -> None:
        super().__init__()
        optim = optim if optim is not None else OptimConfig()
        self.optim = optim
        num_classes = net.num_classes
        # Plain values only, so that checkpoints and every logger's hparams read them.
        self.save_hyperparameters(
            {"optim": dataclasses.asdict(optim), "num_classes": num_classes, "compile": bool(compile)}
        )
        self.model = net
        self.mixup = None
        if optim.mixup > 0 or optim.cutmix > 0:
            self.mixup = Mixup(
                mixup_alpha=optim.mixup,
                cutmix_alpha=optim.cutmix,
                label_smoothing=optim.label_smoothing,
                num_classes=num_classes,
            )
            self.train_loss = SoftTargetCrossEntropy()
        elif optim.label_smoothing > 0:
            self.train_loss = LabelSmoothingCrossEntropy(optim.label_smoothing)
        else:
            self.train_loss = nn.CrossEntropyLoss()
        self.val_loss = nn.CrossEntropyLoss(reduction="sum")
        self.top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        # Top-1 of the averaged weights (val/top1_ema) when an EMA callback hands them over.
        self.top1_ema = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        object.__setattr__(self, "_ema_net", None)  # not a submodule: checkpoints keep their keys
        self._loss_sum = 0.0
        self._count = 0
        # Compiled forward kept outside the module tree so checkpoints keep plain parameter names.
        object.__setattr__(self, "_forward", torch.compile(self.model) if compile else self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    def set_ema_net(self, net: nn.Module | None) -> None:
        """The averaged network that validation also scores (``val/top1_ema``); ``None``: none."""
        object.__setattr__(self, "_ema_net", net)

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
        eps = self.optim.label_smoothing
        n = self.model.num_classes
        return torch.full((y.shape[0], n), eps / n, device=y.device).scatter_(1, y[:, None], 1 - eps + eps / n)

    def configure_optimizers(self):
        skip = self.model.no_weight_decay()
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
        hp = self.optim
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
        self.top1_ema.reset()
        self._loss_sum = torch.zeros((), device=self.device)
        self._count = torch.zeros((), device=self.device)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self._loss_sum = self._loss_sum + self.val_loss(logits.float(), y)
        self._count = self._count + y.numel()
        self.top1.update(logits, y)
        self.top5.update(logits, y)
        if self._ema_net is not None:
            self.top1_ema.update(self._ema_net(x), y)

    def on_validation_epoch_end(self) -> None:
        loss_sum = self.all_gather(self._loss_sum).sum()
        count = self.all_gather(self._count).sum()
        self.log("val/loss", loss_sum / count.clamp_min(1), prog_bar=True)
        self.log("val/top1", self.top1.compute() * 100, prog_bar=True)
        self.log("val/top5", self.top5.compute() * 100)
        if self._ema_net is not None:
            self.log("val/top1_ema", self.top1_ema.compute() * 100, prog_bar=True)
        self.log("val/n", count.float())
