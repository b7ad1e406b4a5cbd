"""Evaluation at many resolutions (or sequence lengths) and test-time strategies.

One loop for images and text: for every (strategy, logn, resolution) it selects the strategy
on the model and runs the module's own ``validation_step`` through ``Trainer.validate`` on the
data module's ``eval_dataloader(resolution, mode)``. At the training resolution with
``extrapolate`` this is exactly the validation that training logs.

Each evaluated cell also gets the attention diagnostics of :mod:`vit_rope.eval.diagnostics`
(per-layer entropy and distance) from one more forward, on rank 0 only, over the first
``diagnostics_images`` validation samples at that resolution (0 turns them off).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from rich.progress import Progress
from torch.utils.data import DataLoader, Subset, default_collate

from vit_rope.errors import ConfigError
from vit_rope.eval.calibrate import calibrate_model
from vit_rope.eval.config import EvalConfig
from vit_rope.eval.diagnostics import attention_diagnostics
from vit_rope.eval.results import add_retention
from vit_rope.models.vit import VisionTransformer


def default_resolutions(model: Any, train_resolution: int) -> list[int]:
    """1x, 1.5x, 2x the training side for images (multiples of the patch size); 1x, 2x, 4x for text."""
    if isinstance(model, VisionTransformer):
        p = model.patch_size
        return sorted({max(p, int(round(train_resolution * f / p)) * p) for f in (1.0, 1.5, 2.0)})
    return [train_resolution * f for f in (1, 2, 4)]


def cell_key(
    model: Any, train_resolution: int, resolution: int, strategy: str, logn: bool, window: bool = False
) -> tuple:
    """Cells with the same key give the same numbers by definition, so each key is computed once:
    every strategy at the training resolution (each is the identity there, and so is log-n); a
    learned table's ``interpolate``, which is its resampled ``extrapolate``; and the ``logn``
    flag of a model that applies log-n always (``logn_attention``); and the local window on a
    grid no larger than the training grid, where it masks nothing."""
    if resolution == train_resolution:
        return (resolution,)
    if resolution < train_resolution:
        window = False
    encoding = getattr(model, "encoding", None)
    if encoding is not None:
        strategy = encoding.equivalent_strategy(strategy)
    if getattr(getattr(model, "cfg", None), "logn_attention", False):
        logn = True
    return (resolution, strategy, logn, window)


class _Batches(torch.utils.data.Dataset):
    """Batches kept in memory, served as they are (``DataLoader(batch_size=None)``)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Any:
        return self.batches[i]


def _decoded_once(loader: DataLoader, trainer: L.Trainer, max_bytes: int) -> DataLoader:
    """The evaluation loader of one resolution, decoded once and kept in memory for all its
    cells when it fits in ``max_bytes`` (one process); else the loader itself."""
    if trainer.world_size > 1 or max_bytes <= 0:
        return _unpadded(loader, trainer)
    batches, size = [], 0
    for batch in loader:
        size += sum(t.numel() * t.element_size() for t in batch if isinstance(t, torch.Tensor))
        if size > max_bytes:
            return loader
        batches.append(batch)
    return DataLoader(_Batches(batches), batch_size=None, num_workers=0)


def evaluate(
    module: L.LightningModule,
    datamodule: Any,
    trainer: L.Trainer,
    settings: EvalConfig,
    loggers: Sequence[Any] = (),
    cache_bytes: int = 2 << 30,
) -> list[dict]:
    """Accuracy of ``module`` at each resolution x strategy x logn.

    Each resolution's samples are decoded once (kept in memory up to ``cache_bytes``) and each
    group of cells that are equal by definition (:func:`cell_key`) is computed once.

    Args:
        module: A :class:`vit_rope.lit_module.ClassificationModule` (its ``model`` takes strategies).
        datamodule: Gives ``train_resolution`` and ``eval_dataloader(resolution, mode, batch_size)``.
        trainer: Runs ``validate``; its devices and precision are used.
        settings: The ``eval`` group, built and checked (:class:`vit_rope.eval.config.EvalConfig`):
            the resolutions (``None``: :func:`default_resolutions`), strategies, logn and window
            flags to combine (a strategy that does not apply is recorded n/a; rows with the
            window carry ``"window": true``), the mode, the batch size and the number of
            samples of the attention diagnostics (0: the rows' ``attention`` is ``null``).
        loggers: Lightning loggers; each gets top-1 (and the layer-mean attention entropy and
            distance) per strategy with the resolution as its step.
        cache_bytes: Most memory that one resolution's decoded samples may take; 0 streams.

    Returns:
        Metric rows of ``results.json`` (:mod:`vit_rope.eval.results`).
    """
    model = module.model
    mode = eval_mode(datamodule, settings.mode)
    train_res = int(datamodule.train_resolution)
    resolutions = list(settings.resolutions or default_resolutions(model, train_res))
    batch_size, diagnostics_images = settings.batch_size, settings.diagnostics_images
    rows: list[dict] = []
    done: dict[tuple, dict] = {}
    show = trainer.is_global_zero and not os.environ.get("VIT_ROPE_NO_PROGRESS")
    with Progress(disable=not show, transient=False) as progress:
        combos = [(st, g, w) for st in settings.strategies for g in settings.logn for w in settings.window]
        task = progress.add_task("evaluating", total=len(combos) * len(resolutions))
        for res in resolutions:
            loader = diag_batches = None  # read at the first cell of this resolution that needs them
            for strategy, use_logn, use_window in combos:
                label = f"{strategy}{'+logn' if use_logn else ''}{'+window' if use_window else ''}"
                progress.update(task, description=f"{label} @ {res}")
                row = {"resolution": res, "strategy": strategy, "logn": use_logn, "mode": mode}
                if use_window:
                    row["window"] = True
                key = cell_key(model, train_res, res, strategy, use_logn, use_window)
                if not model.strategy_applies(strategy, use_window):
                    row.update(top1=None, top5=None, loss=None, n=0, retention=None, note="n/a", attention=None)
                elif key in done:
                    row.update(done[key])
                else:
                    if loader is None:
                        kwargs = {} if batch_size is None else {"batch_size": int(batch_size)}
                        loader = eval_subset(datamodule.eval_dataloader(res, mode=mode, **kwargs), settings.subset)
                        loader = _decoded_once(loader, trainer, cache_bytes)
                    with model.use_strategy(strategy, logn=use_logn, window=use_window):
                        calibration = None
                        if strategy == "calibrate":
                            calibration = _calibrate(model, datamodule, trainer, (train_res, res), mode, settings)
                        out = trainer.validate(module, dataloaders=loader, verbose=False)[0]
                        if diag_batches is None and diagnostics_images > 0 and trainer.is_global_zero:
                            diag_batches = _diagnostic_batches(datamodule, res, mode, diagnostics_images)
                        attention = _diagnostics(model, diag_batches, trainer, diagnostics_images)
                    done[key] = dict(
                        top1=round(float(out["val/top1"]), 4),
                        top5=round(float(out["val/top5"]), 4),
                        loss=round(float(out["val/loss"]), 6),
                        n=int(out["val/n"]),
                        attention=attention,
                    )
                    if calibration is not None:
                        done[key]["calibration"] = calibration
                    row.update(done[key])
                if row.get("top1") is not None:
                    _log(loggers, row, strategy + ("_window" if use_window else ""), use_logn, res)
                rows.append(row)
                progress.advance(task)
    add_retention(rows, train_res)
    for row in rows:
        row["attention"] = row.pop("attention")  # last in each row of results.json: the longest value
    return rows


def _log(loggers: Sequence[Any], row: dict, strategy: str, use_logn: bool, res: int) -> None:
    name = f"{strategy}{'_logn' if use_logn else ''}"
    logged = {f"eval_top1/{name}": row["top1"]}
    attention = row.get("attention")
    for key in ("entropy", "distance") if attention else ():
        values = [v for v in attention[key] if v is not None]
        if values:
            logged[f"eval_attn_{key}/{name}"] = sum(values) / len(values)
    for lg in loggers:
        lg.log_metrics(logged, step=res)


def _diagnostic_batches(datamodule: Any, res: int, mode: str, images: int) -> list:
    """The first ``images`` validation samples at ``res``, collated in batches of 32: read once
    per resolution, in this process (no loader workers to start for a few samples), and shared
    by every cell of that resolution."""
    loader = datamodule.eval_dataloader(res, mode=mode)
    dataset, collate = loader.dataset, loader.collate_fn or default_collate
    n = min(images, len(dataset))
    return [collate([dataset[i] for i in range(s, min(s + 32, n))]) for s in range(0, n, 32)]


def _diagnostics(model: Any, batches: list | None, trainer: L.Trainer, images: int) -> dict | None:
    """Attention diagnostics of one cell (the strategy is already set), on rank 0 and on the
    trainer's device, over ``batches`` (:func:`_diagnostic_batches`); None where they are off."""
    if images <= 0 or not trainer.is_global_zero or batches is None:
        return None
    return attention_diagnostics(model, batches, images, device=trainer.strategy.root_device)


def _first_inputs(datamodule: Any, res: int, mode: str, count: int) -> torch.Tensor:
    """The first ``count`` validation inputs at ``res``, without their labels (read in this process):
    each input goes through the loader's own collate (which may normalise the batch) paired with a
    placeholder label 0, so no label enters."""
    loader = datamodule.eval_dataloader(res, mode=mode)
    dataset, collate = loader.dataset, loader.collate_fn or default_collate
    return collate([(dataset[i][0], 0) for i in range(min(count, len(dataset)))])[0]


def _calibrate(
    model: Any, datamodule: Any, trainer: L.Trainer, resolutions: tuple[int, int], mode: str, settings: EvalConfig
) -> dict | None:
    """``calibrate``'s choice for the test resolution of ``resolutions`` (training, test), kept in
    the model for the cell's forward and returned for results.json; on the first
    ``eval.calibration_images`` validation inputs at both resolutions, never their labels. Every
    rank calibrates on the same inputs, so every rank makes the same choice."""
    train_res, res = resolutions
    if res == train_res:
        return None
    device = trainer.strategy.root_device
    home = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    inputs = [_first_inputs(datamodule, r, mode, settings.calibration_images) for r in (train_res, res)]
    inputs = [x.to(device, dtype=dtype) if x.is_floating_point() else x.to(device) for x in inputs]
    model.to(device)
    try:
        calibration = calibrate_model(model, *inputs)
    finally:
        model.to(home)
    return calibration.as_dict()


def eval_subset(loader: DataLoader, subset: int | None) -> DataLoader:
    """``loader`` over a fixed subset of ``subset`` of its samples: drawn once with a fixed seed (not
    the run's), kept in their original order, so that every cell, resolution, run and seed is
    measured on the same samples (paired comparisons). ``None`` keeps them all."""
    n = len(loader.dataset)
    if subset is None or subset == n:
        return loader
    if subset > n:
        raise ConfigError(
            f"eval.subset={subset} is larger than the validation set ({n} samples); use eval.subset={n} or less, "
            "or eval.subset=null for all of them."
        )
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:subset].sort().values.tolist()
    return DataLoader(
        Subset(loader.dataset, keep),
        batch_size=loader.batch_size,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )


def eval_mode(datamodule: Any, mode: str | None) -> str:
    """The mode an evaluation runs in: the one asked for, else the data's default."""
    return mode or getattr(datamodule, "mode", "zoom")


def _unpadded(loader: DataLoader, trainer: L.Trainer) -> DataLoader:
    """Under DDP, give each rank a disjoint share of the samples without the duplicates that a
    ``DistributedSampler`` pads with, so that every sample counts exactly once (as in one process)."""
    if trainer.world_size <= 1:
        return loader
    sampler = UnrepeatedDistributedSampler(
        loader.dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )
