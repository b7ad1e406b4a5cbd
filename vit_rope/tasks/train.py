"""``train.py``: train one model as configured, then evaluate it at larger resolutions."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import torch
from omegaconf import DictConfig

from vit_rope.config import build_dataclass, plain
from vit_rope.errors import ConfigError, check_choice, check_range
from vit_rope.eval.config import EvalConfig
from vit_rope.eval.results import CONFIG_TREE_FILE, RESULTS_FILE, atomic_write_text
from vit_rope.lit_module import OptimConfig
from vit_rope.models import TextConfig, ViTConfig, build_model_config, build_pos_embed
from vit_rope.models.encodings import PosEmbedConfig
from vit_rope.report.collect import TRAINED_FILE, write_trained
from vit_rope.tasks.common import (
    check_options,
    hydra_runtime,
    instantiate_all,
    instantiate_group,
    output_dir,
    task_overrides,
)
from vit_rope.tasks.evaluate import build_module, checked_state, resolve_checkpoint, run_evaluation, run_info
from vit_rope.weights import EMAConfig, read_checkpoint


def _guard_output_dir(out: Path, resuming: bool) -> None:
    """Never train over the results or checkpoints of another run."""
    taken = [p for p in (out / RESULTS_FILE, out / "checkpoints" / "last.ckpt") if p.exists()]
    if taken and not resuming:
        raise ConfigError(
            f"Run directory '{out}' already holds {taken[0].name}; choose a new hydra.run.dir "
            f"or resume with ckpt_path={out}."
        )


def _requeued_checkpoint(out: Path, resume: str, announce: bool = True) -> str | None:
    """With ``resume=auto``, the same command run again in a run directory whose training was
    cut off (a preempted or requeued job: ``last.ckpt``, no results.json) continues from it."""
    check_choice("resume", resume, ("auto", "never"))
    last = out / "checkpoints" / "last.ckpt"
    if resume == "auto" and last.is_file() and not (out / RESULTS_FILE).exists():
        if announce:
            print(f"Resuming the interrupted run in {out} from {last.name} (resume=auto).")
        return str(last)
    return None


class RunPlan(NamedTuple):
    """A training command, checked and built once by :func:`plan_run`: the typed groups, the
    schedule in images seen, and the checkpoint that training resumes from."""

    pos_embed: PosEmbedConfig
    model: ViTConfig | TextConfig
    optim: OptimConfig
    ema: EMAConfig
    eval: EvalConfig | None  # None: evaluate=false, the eval group is not used
    schedule: tuple[int, int | None] | None  # (train_images, warmup_images), or None: in epochs
    ckpt: str | None  # resume from this checkpoint, or None: start afresh


def plan_run(cfg: DictConfig, out: Path, overrides: list[str], announce: bool = True) -> RunPlan:
    """Everything that refuses a training command, each check once, before anything is read or
    written: every option (each typed group is built and checked by its dataclass), what ties
    two groups together (``eval.weights`` against ``ema`` and the callbacks), the schedule, the
    checkpoint to resume from, and a run directory that holds another run. The command line runs
    this before Hydra writes into the run directory (:class:`vit_rope.tasks.precheck.CheckBeforeRun`),
    so that a refused command leaves an existing run directory as it was; :func:`train` runs it
    again for each job (also of a ``-m`` sweep) and keeps what it built."""
    check_options(cfg, "train", overrides)  # mandatory values, booleans, seed, precision, trainer
    pos_embed = build_pos_embed(cfg.pos_embed)
    model = build_model_config(cfg.model)
    optim = build_dataclass(OptimConfig, cfg.optim, "optim")
    ema = build_dataclass(EMAConfig, cfg.ema, "ema")
    evaluating = check_choice("evaluate", cfg.evaluate, (True, False))
    settings = build_dataclass(EvalConfig, cfg.eval, "eval") if evaluating else None
    if settings is not None:
        _check_weights(settings.weights, ema, cfg.get("callbacks"))
    schedule = _check_schedule(cfg, overrides)
    ckpt = resolve_checkpoint(cfg.ckpt_path) or _requeued_checkpoint(out, cfg.resume, announce)
    _guard_output_dir(out, resuming=ckpt is not None)
    return RunPlan(pos_embed, model, optim, ema, settings, schedule, ckpt)


def check_before_run(cfg: DictConfig, out: Path, overrides: list[str]) -> None:
    """The pre-run check of the command line (:func:`plan_run`, nothing announced)."""
    plan_run(cfg, out, overrides, announce=False)


def show_config(cfg: DictConfig, out: Path) -> None:
    """Print the resolved config as a tree (rank 0) and save it to the run dir as config_tree.txt."""
    import os

    from rich.console import Console
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for group, node in plain(cfg).items():
        branch = tree.add(f"[bold]{group}[/bold]" + ("" if isinstance(node, dict) else f": {node}"))
        for key, value in node.items() if isinstance(node, dict) else ():
            branch.add(f"{key}: {value}")
    console = Console(record=True, width=120, quiet=os.environ.get("LOCAL_RANK", "0") != "0")
    console.print(tree)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG_TREE_FILE, console.export_text())


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v if isinstance(v, int | float | str | bool) else str(v)
    return flat


def _check_weights(weights: str, ema: EMAConfig, callbacks: DictConfig | None) -> None:
    """``eval.weights`` checked against the run's settings before anything is trained."""
    if weights == "ema" and not ema.enabled:
        raise ConfigError("eval.weights=ema needs the moving average; add ema.enabled=true or use eval.weights=last.")
    monitors = [c.get("monitor") for c in (callbacks or {}).values() if isinstance(c, DictConfig)]
    if weights == "best" and "val/top1" not in monitors:
        raise ConfigError(
            "eval.weights=best needs a ModelCheckpoint that monitors val/top1 (callbacks.best_checkpoint); "
            "keep callbacks=default or use eval.weights=last."
        )


def _pick_weights(trainer: L.Trainer, module: L.LightningModule, weights: str, ema_cb: object) -> dict:
    """Load the weights that ``eval.weights`` names into ``module`` (it holds the last ones);
    returns what results.json records about them."""
    if weights == "ema":
        module.load_state_dict(ema_cb.average_state())
    elif weights == "best":
        best = next(cb.best_model_path for cb in trainer.checkpoint_callbacks if cb.monitor == "val/top1")
        if not best:
            raise ConfigError(
                "eval.weights=best but no best checkpoint was saved (validation never ran); use eval.weights=last."
            )
        module.load_state_dict(read_checkpoint(best)["state_dict"])
        return {"weights": weights, "checkpoint": Path(best).name}
    last = _last_checkpoint(trainer)  # holds these weights (and the average, for ema)
    return {"weights": weights, **({"checkpoint": last} if last else {})}


def _last_checkpoint(trainer: L.Trainer) -> str | None:
    """The name of the checkpoint saved at the trainer's last step by a callback without a
    monitor (``last.ckpt``), or None when no such file holds the weights of the end of training."""
    for cb in trainer.checkpoint_callbacks:
        if cb.monitor is None and cb.best_model_path and cb._last_global_step_saved == trainer.global_step:
            return Path(cb.best_model_path).name
    return None


def _check_schedule(cfg: DictConfig, overrides: list[str]) -> tuple[int, int | None] | None:
    """``(train_images, warmup_images)`` when the schedule is counted in images seen, else ``None``."""
    total = check_range("train_images", cfg.train_images, 1, integer=True, optional=True)
    warmup = check_range("warmup_images", cfg.warmup_images, 0, integer=True, optional=True)
    if total is None and warmup is not None:
        raise ConfigError(f"warmup_images={warmup} needs train_images; set train_images too, or drop warmup_images.")
    epochs = next((o for o in overrides if o.split("=")[0].lstrip("+") == "trainer.max_epochs"), None)
    if total is not None and epochs is not None:  # one schedule, not two that silently override each other
        raise ConfigError(
            f"{epochs} and train_images={total} both set the schedule; give it in images seen "
            f"(train_images=N) or in epochs ({epochs} train_images=null warmup_images=null)."
        )
    return None if total is None else (total, warmup)


def _schedule_in_images(
    cfg: DictConfig, datamodule: Any, optim: OptimConfig, total: int, warmup: int | None
) -> OptimConfig:
    """A schedule counted in training images seen, so that it does not shrink with the folder:
    ``trainer.max_epochs`` becomes ``round(total / n)`` (at least 1) for a training set of ``n``
    images, and the warmup ``warmup / n`` epochs. Prints what it derived."""
    datamodule.setup("fit")
    n = len(datamodule.train_dataloader().dataset)
    epochs = max(1, round(total / n))
    cfg.trainer.max_epochs = epochs
    if warmup is not None:
        optim = dataclasses.replace(optim, warmup_epochs=warmup / n)
    print(
        f"Schedule: train_images={total:,} over {n:,} training images -> {epochs} epochs ({epochs * n:,} images "
        f"seen), warmup {optim.warmup_epochs:.2f} epochs."
    )
    return optim


def train(cfg: DictConfig) -> dict:
    """Train one model as configured; returns the final validation metrics (and the results).

    Also for a config composed in Python: ``hydra.compose("train", overrides, return_hydra_config=True)``
    (see :func:`vit_rope.tasks.common.hydra_runtime`).
    """
    with hydra_runtime(cfg, precheck=check_before_run) as task_cfg:
        return _train(task_cfg)


def _train(cfg: DictConfig) -> dict:
    out = output_dir()
    plan = plan_run(cfg, out, task_overrides())  # also for each job of a -m sweep
    optim, settings = plan.optim, plan.eval
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # the config tree shows the seed
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    show_config(cfg, out)

    datamodule = instantiate_group(cfg.data, "data")
    if plan.schedule is not None:
        optim = _schedule_in_images(cfg, datamodule, optim, *plan.schedule)
    module = build_module(plan.pos_embed, plan.model, datamodule, optim, compile=bool(cfg.compile))
    if settings is not None:  # refuse resolutions the model cannot take now, not after hours of training
        settings.check_model(module.model)
        settings.check_data(datamodule)
    if plan.ckpt is not None:
        checked_state(module, plan.ckpt)  # refuses a checkpoint of another model; Trainer.fit loads it
    n_params = sum(p.numel() for p in module.model.parameters())
    print(f"{cfg.model.name} + {cfg.pos_embed.name}: {n_params / 1e6:.2f}M parameters")

    callbacks = instantiate_all(cfg.get("callbacks"), "callbacks")
    # Lightning runs the checkpoint callbacks in list order: the monitored ones first, so that
    # last.ckpt saves their updated state (which best checkpoint exists, and its score) and a
    # resumed run knows its best instead of writing a second one.
    callbacks.sort(key=lambda cb: isinstance(cb, L.pytorch.callbacks.ModelCheckpoint) and cb.monitor is None)
    ema_cb = plan.ema.callback()
    callbacks += [ema_cb] if ema_cb is not None else []
    loggers = instantiate_all(cfg.get("logger"), "logger")
    if not loggers:  # the learning-rate monitor needs a logger; with logger=none there is nothing to log to
        callbacks = [cb for cb in callbacks if not isinstance(cb, L.pytorch.callbacks.LearningRateMonitor)]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress bar callback then
        callbacks = [cb for cb in callbacks if not isinstance(cb, L.pytorch.callbacks.ProgressBar)]
    trainer: L.Trainer = instantiate_group(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, default_root_dir=out
    )
    for lg in loggers:
        lg.log_hyperparams(_flatten(plain(cfg)))
    (out / TRAINED_FILE).unlink(missing_ok=True)  # a resumed run is unfinished until it ends again
    trainer.fit(module, datamodule=datamodule, ckpt_path=plan.ckpt)
    if trainer.interrupted:
        raise ConfigError("Training was interrupted; resume with ckpt_path pointing at this run directory.")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if cfg.trainer.get("fast_dev_run") or settings is None:
        if not cfg.trainer.get("fast_dev_run"):  # the sweep report tells this run from an unfinished one
            run = {"pos_embed": cfg.pos_embed.name, "model": cfg.model.name, "data": cfg.data.get("name", "?"),
                   "train_resolution": int(datamodule.train_resolution), "seed": int(cfg.seed),
                   "overrides": task_overrides()}  # fmt: skip
            write_trained(out, run, metrics, _last_checkpoint(trainer))
        return {"val": metrics}
    run = {
        **run_info(cfg, datamodule, module.model, settings),
        **_pick_weights(trainer, module, settings.weights, ema_cb),
    }
    return {"val": metrics, **run_evaluation(settings, cfg.trainer, module, datamodule, loggers, run)}
