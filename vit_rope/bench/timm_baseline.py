"""``python -m vit_rope.bench.timm_baseline``: a plain timm training script, as the yardstick for
the ``imagefolder`` short-schedule defaults.

It trains timm's own ``VisionTransformer`` with timm's own pieces (``create_transform`` with
random-resized-crop area 0.35-1 and flip, ``create_optimizer_v2``, ``CosineLRScheduler``, label
smoothing) on torchvision's ``ImageFolder``, then reports top-1 on ``val/`` with timm's
resize + centre-crop transform. Nothing of vit_rope's model, data or training code is used, so
the number says what a researcher gets without this project. The model and the optimiser
settings default to those of ``experiment=imagenette_extrapolation`` (``model=vit_mini``:
dim 192, depth 6, 3 heads, patch 8; AdamW lr 2e-3, weight decay 0.05, one warm-up epoch,
cosine to 1% of the rate, label smoothing 0.1, gradient clipping at 1, batch 128), so the
comparison isolates the data pipeline and the augmentation:

    python -m vit_rope.bench.timm_baseline --root DIR --img-size 64 --epochs 6 --seed 0
    python train.py experiment=imagenette_extrapolation recipe=ape_plain data.root=DIR seed=0
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import timm
import torch
from timm.data import create_transform
from timm.loss import LabelSmoothingCrossEntropy
from timm.models.vision_transformer import VisionTransformer
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vit_rope.bench.timm_baseline", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="folder with train/ and val/ class folders")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--rrc-scale", type=float, nargs=2, default=[0.35, 1.0], metavar=("MIN", "MAX"))
    p.add_argument("--embed-dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--num-heads", type=int, default=3)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    return p.parse_args(argv)


def _folders(root: Path) -> tuple[Path, Path]:
    train, val = root / "train", root / "val"
    for split in (train, val):
        if not split.is_dir():
            sys.exit(f"--root {root} has no {split.name}/ folder; give a folder with train/ and val/ class folders.")
    return train, val


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.img_size % args.patch_size:
        sys.exit(f"--img-size {args.img_size} is not a multiple of --patch-size {args.patch_size}; pick one that is.")
    train_dir, val_dir = _folders(Path(args.root))
    torch.manual_seed(args.seed)

    try:
        train_set = ImageFolder(
            str(train_dir),
            create_transform(
                args.img_size, is_training=True, scale=tuple(args.rrc_scale), hflip=0.5, color_jitter=None
            ),
        )
        val_set = ImageFolder(str(val_dir), create_transform(args.img_size, is_training=False, crop_pct=0.875))
    except FileNotFoundError as e:  # torchvision: no class folder, or a class folder without images
        sys.exit(f"--root {args.root}: {str(e).rstrip('.')}; give train/ and val/ one folder of images per class.")
    if train_set.classes != val_set.classes:
        sys.exit(f"train/ and val/ under {args.root} hold different class folders; give both the same ones.")
    gen = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(
        train_set, args.batch_size, shuffle=True, drop_last=True, num_workers=args.num_workers, generator=gen
    )
    val_loader = DataLoader(val_set, 256, num_workers=args.num_workers)

    model = VisionTransformer(
        img_size=args.img_size,
        patch_size=args.patch_size,
        embed_dim=args.embed_dim,
        depth=args.depth,
        num_heads=args.num_heads,
        num_classes=len(train_set.classes),
        drop_path_rate=args.drop_path,
    )
    optimizer = create_optimizer_v2(model, "adamw", lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = len(train_loader)
    warmup = math.ceil(args.warmup_epochs * steps_per_epoch)
    scheduler = CosineLRScheduler(  # warm-up steps come before the cosine's (warmup_prefix)
        optimizer,
        t_initial=max(1, args.epochs * steps_per_epoch - warmup),
        lr_min=args.lr * 0.01,
        warmup_t=warmup,
        warmup_lr_init=args.lr / max(1, steps_per_epoch),
        warmup_prefix=True,
        t_in_epochs=False,
    )
    criterion = LabelSmoothingCrossEntropy(args.smoothing)

    start = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_loader:
            loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            scheduler.step_update(step)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f}", file=sys.stderr)
    train_s = time.perf_counter() - start

    model.eval()
    correct = n = 0
    with torch.inference_mode():
        for x, y in val_loader:
            correct += (model(x).argmax(-1) == y).sum().item()
            n += y.numel()
    result = {
        "top1": round(100.0 * correct / n, 4),
        "n": n,
        "classes": len(train_set.classes),
        "train_images": len(train_set),
        "epochs": args.epochs,
        "img_size": args.img_size,
        "seed": args.seed,
        "train_seconds": round(train_s, 1),
        "timm": timm.__version__,
    }
    print(json.dumps(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
