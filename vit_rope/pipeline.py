"""What ``train.py`` and ``eval.py`` do, as plain functions of a Hydra config.

``train(cfg)``: seed, build data and model, fit, validate, then run the evaluation of
:mod:`vit_rope.evaluate` and write ``results.json`` and the run's table and plot.
``evaluate_model(cfg)``: the same evaluation for a checkpoint, a run directory or a timm model.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from vit_rope.errors import ConfigError
from vit_rope.evaluate import check_eval_settings, eval_mode, evaluate, write_results
from vit_rope.module import ClassificationModule

RESULTS = "results.json"


def output_dir(cfg: DictConfig) -> Path:
    """The Hydra run directory (or ``cfg.output_dir`` when called outside Hydra)."""
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    return Path(HydraConfig.get().runtime.output_dir)


def build_datamodule(data_cfg: DictConfig | dict) -> Any:
    """Instantiate the data group: ``_target_`` is the class, ``name`` is only a label."""
    args = OmegaConf.to_container(data_cfg, resolve=True) if isinstance(data_cfg, DictConfig) else dict(data_cfg)
    target = args.pop("_target_")
    args.pop("name", None)
    return get_class(target)(**args)


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def resolve_checkpoint(path: str | None) -> str | None:
    """A checkpoint file, or a run directory whose ``checkpoints/last.ckpt`` is taken."""
    if not path:
        return None
    p = Path(path)
    if p.is_dir():
        last = p / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(f"ckpt_path '{path}' is a directory without checkpoints/last.ckpt; give a .ckpt file.")
        return str(last)
    if not p.is_file():
        raise ConfigError(f"ckpt_path '{path}' does not exist; give a .ckpt file or a run directory.")
    return str(p)


def check_checkpoint_matches(module: ClassificationModule, ckpt: str) -> None:
    """Refuse a checkpoint whose weights do not fit the configured model, in one sentence."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    except Exception as err:  # noqa: BLE001  any unreadable file gets the same clear message
        raise ConfigError(
            f"Checkpoint '{ckpt}' cannot be read ({type(err).__name__}); give a .ckpt file from train.py."
        ) from None
    ours = module.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    shapes = [k for k in set(ours) & set(state) if ours[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        what = (
            f"shape of {shapes[0]} is {tuple(state[shapes[0]].shape)}, the config gives {tuple(ours[shapes[0]].shape)}"
            if shapes
            else f"{'missing' if missing else 'unexpected'} weight {(missing or unexpected)[0]}"
        )
        raise ConfigError(
            f"Checkpoint '{ckpt}' does not match the model config ({what}); resume with the same "
            "model, pos_embed and data settings as the run that wrote it."
        )


def _instantiate_all(group: Any) -> list:
    if not group:
        return []
    return [instantiate(v) for v in group.values() if v is not None and "_target_" in v]


def _run_info(cfg: DictConfig, datamodule: Any, mode: str) -> dict:
    overrides = []
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # not under Hydra
        pass
    return {
        "pos_embed": cfg.pos_embed.name,
        "model": cfg.model.name,
        "data": cfg.data.get("name", "?"),
        "train_resolution": int(datamodule.train_resolution),
        "mode": mode,
        "seed": int(cfg.seed),
        "overrides": overrides,
    }


def eval_trainer(trainer_cfg: DictConfig) -> L.Trainer:
    """A quiet trainer with the training run's hardware settings, used by the evaluation."""
    keep = {"accelerator", "devices", "num_nodes", "strategy", "precision"}
    args = {k: v for k, v in _plain(trainer_cfg).items() if k in keep}
    return L.Trainer(
        **args, logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False
    )


def run_evaluation(cfg: DictConfig, module: ClassificationModule, datamodule: Any, out: Path, logger: Any) -> dict:
    """Evaluate, then write results.json, the run's comparison table and plot, and TensorBoard scalars."""
    ev = cfg.eval
    trainer = eval_trainer(cfg.trainer)
    writer = getattr(logger, "experiment", None) if logger is not None else None
    rows = evaluate(
        module,
        datamodule,
        trainer,
        resolutions=list(ev.resolutions) if ev.resolutions else None,
        strategies=list(ev.strategies),
        logn=list(ev.logn),
        mode=ev.mode,
        writer=writer if trainer.is_global_zero else None,
    )
    result = {"run": _run_info(cfg, datamodule, eval_mode(datamodule, ev.mode)), "metrics": rows}
    if trainer.is_global_zero:
        write_results(out / RESULTS, result["run"], rows)
        _report(out, writer)
    return result


def _report(out: Path, writer: Any) -> None:
    """Print the run's table and write its plot; also log the plot to TensorBoard."""
    from vit_rope.report import write_comparison

    paths = write_comparison(out)
    png = paths.get("png") if isinstance(paths, dict) else None
    if writer is not None and png and Path(png).is_file():
        import numpy as np
        from PIL import Image

        image = np.asarray(Image.open(png).convert("RGB"))
        writer.add_image("eval/comparison", image, dataformats="HWC")


def _guard_output_dir(out: Path, resuming: bool) -> None:
    """Never train over the results or checkpoints of another run."""
    taken = [p for p in (out / RESULTS, out / "checkpoints" / "last.ckpt") if p.exists()]
    if taken and not resuming:
        raise ConfigError(
            f"Run directory '{out}' already holds {taken[0].name}; choose a new hydra.run.dir "
            f"or resume with ckpt_path={out}."
        )


def train(cfg: DictConfig) -> dict:
    """Train one model as configured; returns the final validation metrics (and results)."""
    out = output_dir(cfg)
    ckpt = resolve_checkpoint(cfg.get("ckpt_path"))
    _guard_output_dir(out, resuming=ckpt is not None)
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)

    datamodule = build_datamodule(cfg.data)
    module = ClassificationModule(
        model=_plain(cfg.model),
        pos_embed=_plain(cfg.pos_embed),
        num_classes=datamodule.num_classes,
        resolution=int(datamodule.train_resolution),
        vocab_size=getattr(datamodule, "vocab_size", None),
        compile=bool(cfg.compile),
        **_plain(cfg.optim),
    )
    if cfg.get("evaluate", True):  # refuse bad evaluation settings now, not after hours of training
        resolutions = list(cfg.eval.resolutions) if cfg.eval.resolutions else []
        check_eval_settings(module.model, resolutions, list(cfg.eval.strategies))
    if ckpt is not None:
        check_checkpoint_matches(module, ckpt)
    n_params = sum(p.numel() for p in module.model.parameters())
    print(f"{cfg.model.name} + {cfg.pos_embed.name}: {n_params / 1e6:.2f}M parameters")

    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    if not loggers:  # the learning-rate monitor needs a logger; with logger=none there is nothing to log to
        callbacks = [cb for cb in callbacks if not isinstance(cb, L.pytorch.callbacks.LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=out)
    for lg in loggers:
        lg.log_hyperparams(_flatten(_plain(cfg)))
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    if trainer.interrupted:
        raise ConfigError("Training was interrupted; resume with ckpt_path pointing at this run directory.")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if cfg.trainer.get("fast_dev_run") or not cfg.get("evaluate", True):
        return {"val": metrics}
    result = run_evaluation(cfg, module, datamodule, out, loggers[0] if loggers else None)
    result["run"]["val_top1"] = metrics.get("val/top1")
    if trainer.is_global_zero:
        write_results(out / RESULTS, result["run"], result["metrics"])
    return {"val": metrics, **result}


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v if isinstance(v, int | float | str | bool) else str(v)
    return flat


def run_main(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Call ``fn(cfg)``; a :class:`ConfigError` (or a non-finite loss) ends in one sentence on
    stderr, an ``error.txt`` in the run directory, and exit status 2 instead of a traceback."""
    try:
        return fn(cfg)
    except (ConfigError, FloatingPointError) as err:
        message = str(err)
    except Exception as err:  # noqa: BLE001  a bug: keep the traceback, also record it for the sweep report
        _record_error(cfg, f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}")
        raise
    print(f"error: {message}", file=sys.stderr)
    _record_error(cfg, message)
    if _in_multirun():
        # Hydra stops a sweep at a SystemExit; returning lets the other jobs run, and the
        # comparison lists this one as failed from its error.txt.
        return None
    sys.exit(2)


def _in_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _record_error(cfg: DictConfig, text: str) -> None:
    try:
        out = output_dir(cfg)
        out.mkdir(parents=True, exist_ok=True)
        (out / "error.txt").write_text(text.rstrip() + "\n")
    except Exception:  # noqa: BLE001  never hide the real error behind this one
        pass


# ------------------------------------------------------------------------------------------------
# eval.py
# ------------------------------------------------------------------------------------------------


def _run_config(ckpt: str) -> DictConfig:
    """The training config saved by Hydra next to a checkpoint (``RUN/checkpoints/x.ckpt``)."""
    run = Path(ckpt).resolve().parent.parent
    path = run / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError(
            f"No training config at '{path}' for checkpoint '{ckpt}'; evaluate a checkpoint inside the "
            "run directory that train.py wrote."
        )
    return OmegaConf.load(path)


def _merge_data(run_data: DictConfig, overrides: DictConfig | None) -> DictConfig:
    data = OmegaConf.to_container(run_data, resolve=False)
    for key, value in (_plain(overrides) or {}).items():
        if value is not None:
            data[key] = value
    return OmegaConf.create(data)


def _load_module(ckpt: str) -> ClassificationModule:
    try:
        return ClassificationModule.load_from_checkpoint(ckpt, map_location="cpu")
    except RuntimeError as err:
        if "size mismatch" in str(err) or "Missing key" in str(err) or "Unexpected key" in str(err):
            raise ConfigError(
                f"Checkpoint '{ckpt}' does not match the model config saved with it ({str(err).splitlines()[0]}); "
                "evaluate it with the run's own config."
            ) from None
        raise
    except (EOFError, OSError, KeyError) as err:
        raise ConfigError(
            f"Checkpoint '{ckpt}' cannot be read ({type(err).__name__}: {err}); give a .ckpt file."
        ) from None


def evaluate_model(cfg: DictConfig) -> dict:
    """``eval.py``: evaluate a checkpoint, a run directory or a timm model; or compare runs."""
    if cfg.get("compare"):
        from vit_rope.report import write_comparison

        return {"comparison": write_comparison(cfg.compare)}
    sources = [k for k in ("ckpt_path", "run_dir", "timm_model") if cfg.get(k)]
    if len(sources) != 1:
        raise ConfigError(
            f"eval.py needs exactly one model source, got {sources or 'none'}; "
            "set one of ckpt_path=PATH, run_dir=DIR or timm_model=NAME (or compare=DIR)."
        )
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    L.seed_everything(cfg.seed, workers=True)
    out = output_dir(cfg)
    if cfg.get("timm_model"):
        from vit_rope.vit import from_timm

        model = from_timm(cfg.timm_model, cfg.get("timm_checkpoint"))
        if not cfg.data.get("root"):
            raise ConfigError("timm models are evaluated on an image folder; set data.root=/path/with/train_and_val.")
        data = _merge_data(
            OmegaConf.create({"_target_": "vit_rope.data.ImageFolderDataModule", "name": "imagefolder"}), cfg.data
        )
        data.img_size = int(model.img_size[0])
        datamodule = build_datamodule(data)
        module = ClassificationModule(
            model={"name": cfg.timm_model},
            pos_embed={"name": model.encoding_name},
            num_classes=model.num_classes,
            resolution=int(model.img_size[0]),
            net=model,
        )
        train_cfg = OmegaConf.create(
            {
                "pos_embed": {"name": model.encoding_name},
                "model": {"name": cfg.timm_model},
                "data": data,
                "seed": cfg.seed,
            }
        )
    else:
        ckpt = resolve_checkpoint(cfg.get("ckpt_path") or cfg.get("run_dir"))
        train_cfg = _run_config(ckpt)
        train_cfg.data = _merge_data(train_cfg.data, cfg.data)
        datamodule = build_datamodule(train_cfg.data)
        module = _load_module(ckpt)
    if getattr(datamodule, "num_classes", module.hparams.num_classes) != module.hparams.num_classes:
        raise ConfigError(
            f"The data has {datamodule.num_classes} classes but the model predicts {module.hparams.num_classes}; "
            "select the same classes as in training (data.classes)."
        )
    module.eval()
    run_cfg = OmegaConf.merge(train_cfg, {"eval": cfg.eval, "trainer": cfg.trainer})
    loggers = _instantiate_all(cfg.get("logger"))
    return run_evaluation(run_cfg, module, datamodule, out, loggers[0] if loggers else None)
