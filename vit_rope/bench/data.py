"""``python -m vit_rope.bench --data imagefolder --root DIR``: where the time of training on real
images goes, for one model and each loader setting (``--cache`` x ``--num-workers``), in one run.

- ``model``: train steps (forward, backward, AdamW) on random tensors of the batch's shape;
- ``data``: the training loader alone (decode or cache read, augmentation, collation, workers),
  through the real :class:`~vit_rope.data.imagefolder.ImageFolderDataModule`;
- ``end to end``: the same loader feeding the same train step; ``end_to_end_ratio`` is its
  images/s over the model's (1.0: the loader keeps up). For each setting, model-only and
  end-to-end batches alternate in ``--rounds`` blocks and the ratio uses that setting's own
  model-only batches, so that a change of machine load hits both (a shared CPU is noisy);
- ``eval``: per resolution, the evaluation loader plus a forward under ``inference_mode``, with
  the time one evaluation cell (the whole validation set) takes at that rate.

Every phase takes ``--batches`` timed batches (``--eval-batches`` for evaluation) after one
untimed batch (worker start, warm-up); ``setup_s`` is the data module's setup, which builds or
reuses the cache. Each call is timed with :func:`vit_rope.bench.steps.timed`.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
import yaml

from vit_rope.bench.steps import make_train_step, progress, timed
from vit_rope.data.imagefolder import ImageFolderDataModule
from vit_rope.eval.loop import default_resolutions
from vit_rope.models.vit import create_model


def model_patch_size(model: str) -> int:
    """The patch side of ``conf/model/<model>.yaml`` (16 if it has none)."""
    path = Path(__file__).resolve().parents[1] / "conf" / "model" / f"{model}.yaml"
    return int(yaml.safe_load(path.read_text()).get("patch_size", 16)) if path.exists() else 16


def _batches(loader: Iterable) -> Iterator:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def _rate(images: int, seconds: list[float]) -> float:
    return images * len(seconds) / sum(seconds)


def _phase(name: str, turns: int, call: Callable[[], None], device: torch.device) -> list[float]:
    progress(f"{name}: {turns} timed batches")
    call()  # untimed: workers start, first compilation
    return [timed(call, device) for _ in range(turns)]


def run_data_bench(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    """All phases for every loader setting; returns the JSON result (see the module docstring)."""
    patch = args.patch_size or model_patch_size(args.model)
    first = ImageFolderDataModule(
        args.root, img_size=args.img_size, classes=args.classes, patch_size=patch, num_workers=0
    )
    torch.manual_seed(0)
    model = create_model(
        args.model, args.pos_embed, num_classes=first.num_classes, img_size=args.img_size, patch_size=patch
    ).to(device)
    train = make_train_step(model, device, dtype, args.compile)
    resolutions = args.eval_resolutions or default_resolutions(model, args.img_size)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g).to(device)
    y = torch.randint(0, first.num_classes, (args.batch_size,), generator=g).to(device)
    train(x, y)  # warm-up (and compilation)
    model_s: list[float] = []

    settings = []
    for cache, workers in itertools.product(args.cache, args.num_workers):
        label = f"cache={cache} workers={'default' if workers is None else workers}"
        start = time.perf_counter()
        dm = ImageFolderDataModule(
            args.root,
            img_size=args.img_size,
            classes=args.classes,
            batch_size=args.batch_size,
            num_workers=workers,
            patch_size=patch,
            cache=cache,
            cache_dir=args.cache_dir,
            cache_eval_resolutions=resolutions,
            threads_per_worker=args.threads_per_worker,
        )
        dm.setup()
        setup_s = time.perf_counter() - start
        loader = dm.train_dataloader()
        it = _batches(loader)
        data_s = _phase(f"{label}: data only", args.batches, lambda it=it: next(it), device)
        it = _batches(loader)

        def end_to_end(it=it) -> None:
            xb, yb = next(it)
            train(xb.to(device, non_blocking=True), yb.to(device, non_blocking=True))

        per_block = math.ceil(args.batches / args.rounds)
        progress(f"{label}: model only and end to end in turn, {args.rounds} x {per_block} timed batches each")
        end_to_end()  # untimed: workers start
        e2e_s, own_model_s = [], []
        for _ in range(args.rounds):  # model-only and end-to-end blocks in turn
            own_model_s += [timed(lambda: train(x, y), device) for _ in range(per_block)]
            e2e_s += [timed(end_to_end, device) for _ in range(per_block)]
        model_s += own_model_s
        evals = [_eval_row(model, dm, res, args, device, dtype, label) for res in resolutions]
        model.train()
        settings.append(
            {
                "cache": cache,
                "num_workers": dm.num_workers,
                "threads_per_worker": dm.threads_per_worker,
                "setup_s": round(setup_s, 2),
                "cache_mib": {s: round(st.nbytes / 2**20, 1) for s, st in dm._stores.items()},
                "cache_side": {s: dm.cache_side(s) for s in dm._stores},
                "data_img_per_s": _rate(args.batch_size, data_s),
                "end_to_end_img_per_s": _rate(args.batch_size, e2e_s),
                "model_img_per_s": _rate(args.batch_size, own_model_s),
                "end_to_end_ratio": _rate(args.batch_size, e2e_s) / _rate(args.batch_size, own_model_s),
                "eval": evals,
            }
        )
    model_rate = _rate(args.batch_size, model_s)
    last = settings[-1]
    return {
        "model_img_per_s": model_rate,
        "data_img_per_s": last["data_img_per_s"],
        "end_to_end_img_per_s": last["end_to_end_img_per_s"],
        "end_to_end_ratio": last["end_to_end_ratio"],
        "eval": last["eval"],
        "settings": settings,
        "train_images": len(first._dataset("train")),
        "val_images": len(first._dataset("val")),
        "patch_size": patch,
        "eval_resolutions": list(resolutions),
    }


def _eval_row(
    model: torch.nn.Module,
    dm: ImageFolderDataModule,
    res: int,
    args: argparse.Namespace,
    device: torch.device,
    dtype: torch.dtype,
    label: str,
) -> dict:
    """Evaluation loader + inference forward at ``res``; ``seconds``: one cell over the val set."""
    loader = dm.eval_dataloader(res, batch_size=args.eval_batch_size)
    model.eval()
    forward = torch.compile(model) if args.compile else model
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    it = _batches(loader)
    sizes: list[int] = []

    def step() -> None:
        xb, _ = next(it)
        sizes.append(len(xb))
        with torch.inference_mode(), autocast:
            forward(xb.to(device, non_blocking=True))

    turns = min(args.eval_batches, len(loader)) if args.eval_batches else len(loader)
    times = _phase(f"{label}: eval at {res} px", turns, step, device)
    rate = sum(sizes[1:]) / sum(times)
    return {
        "resolution": res,
        "img_per_s": rate,
        "seconds": math.ceil(10 * len(loader.dataset) / rate) / 10,
        "images_timed": sum(sizes[1:]),
        "from_cache": type(loader.dataset).__name__ == "CachedImages",
    }


def print_data_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg = result["config"]
    console = Console(width=max(120, Console().width))
    console.print(
        f"[bold]vit_rope.bench --data imagefolder[/]  {cfg['model']} patch {result['patch_size']} at "
        f"{cfg['img_size']} px, batch {cfg['batch_size']}, {cfg['dtype']}, {'compiled' if cfg['compile'] else 'eager'}, "
        f"{cfg['device_name']} ({cfg['threads']} threads); {result['train_images']} train and "
        f"{result['val_images']} val images; {cfg['batches']} timed batches per phase"
    )
    console.print(
        f"model only (train step on random tensors), all settings pooled: {result['model_img_per_s']:.1f} img/s"
    )
    table = Table()
    cols = (
        "cache",
        "workers",
        "setup s",
        "cache MiB",
        "data img/s",
        "model img/s",
        "end-to-end img/s",
        "end_to_end_ratio",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "cache" else "right")
    for s in result["settings"]:
        table.add_row(
            s["cache"],
            str(s["num_workers"]),
            f"{s['setup_s']:.1f}",
            " + ".join(f"{v:.1f}" for v in s["cache_mib"].values()) or "-",
            f"{s['data_img_per_s']:.1f}",
            f"{s['model_img_per_s']:.1f}",
            f"{s['end_to_end_img_per_s']:.1f}",
            f"{s['end_to_end_ratio']:.3f}",
        )
    console.print(table)
    table = Table(title=f"evaluation (loader + forward; seconds: one cell over the {result['val_images']} val images)")
    for col in ("cache", "workers", "px", "img/s", "seconds", "from cache"):
        table.add_column(col, justify="left" if col == "cache" else "right")
    for s in result["settings"]:
        for e in s["eval"]:
            table.add_row(
                s["cache"],
                str(s["num_workers"]),
                str(e["resolution"]),
                f"{e['img_per_s']:.1f}",
                f"{e['seconds']:.1f}",
                "yes" if e["from_cache"] else "no",
            )
    console.print(table)
