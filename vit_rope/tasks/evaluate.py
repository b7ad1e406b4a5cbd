"""``eval.py``: evaluate a checkpoint, a run directory or a timm model at larger resolutions;
and the evaluation step that ends every training run. Both write ``results.json`` and the
run's table and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from vit_rope.config import build_dataclass, plain
from vit_rope.errors import ConfigError
from vit_rope.eval.config import EvalConfig
from vit_rope.eval.loop import eval_mode, evaluate
from vit_rope.eval.results import RESULTS_FILE, write_results
from vit_rope.lit_module import ClassificationModule, OptimConfig
from vit_rope.models import TextConfig, VisionTransformer, ViTConfig, build_model_config, build_pos_embed
from vit_rope.models.encodings import PosEmbedConfig
from vit_rope.tasks.common import CONF_DIR, eval_trainer, instantiate_all, instantiate_group, output_dir
from vit_rope.weights import checkpoint_weights, read_checkpoint


def build_module(
    pos_embed: PosEmbedConfig,
    model: ViTConfig | TextConfig,
    datamodule: Any,
    optim: OptimConfig | None = None,
    compile: bool = False,
) -> ClassificationModule:
    """The network of the built ``model`` and ``pos_embed`` groups, sized by the data, in its module."""
    net = model.build(
        pos_embed, datamodule.num_classes, int(datamodule.train_resolution), getattr(datamodule, "vocab_size", None)
    )
    return ClassificationModule(net, optim, compile=compile)


def build_run_module(cfg: DictConfig, datamodule: Any) -> ClassificationModule:
    """The module of a saved training config (``eval.py``, ``export.py``): its groups built once."""
    optim = build_dataclass(OptimConfig, cfg.optim, "optim") if "optim" in cfg else None
    return build_module(
        build_pos_embed(cfg.pos_embed), build_model_config(cfg.model), datamodule, optim, bool(cfg.compile)
    )


def checked_state(module: ClassificationModule, ckpt: str) -> dict:
    """A checkpoint's weights, checked against the model; a file that is unreadable or does not
    fit the model ends in one sentence."""
    state = read_checkpoint(ckpt)["state_dict"]
    check_state_matches(module, state, ckpt)
    return state


def load_weights(module: ClassificationModule, ckpt: str, weights: str = "last") -> dict:
    """Load the checkpoint's ``weights`` (``last``, ``best`` or ``ema``, see :mod:`vit_rope.weights`)
    into ``module``, checked first; returns what results.json records about them."""
    state, path = checkpoint_weights(ckpt, weights)
    check_state_matches(module, state, str(path))
    module.load_state_dict(state, strict=True)
    return {"weights": weights, "checkpoint": path.name}


def check_state_matches(module: ClassificationModule, state: dict, ckpt: str) -> None:
    """Refuse weights that do not fit the configured model, in one sentence."""
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
            f"Checkpoint '{ckpt}' does not match the model config ({what}); use the same "
            "model, pos_embed and data settings as the run that wrote it."
        )


def resolve_checkpoint(path: str | None, key: str = "ckpt_path") -> str | None:
    """A checkpoint file, or a run directory whose ``checkpoints/last.ckpt`` is taken."""
    if not path:
        return None
    p = Path(path)
    if p.is_dir():
        last = p / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(f"{key} '{path}' is a directory without checkpoints/last.ckpt; give a .ckpt file.")
        return str(last)
    if not p.is_file():
        raise ConfigError(f"{key} '{path}' does not exist; give a .ckpt file or a run directory.")
    return str(p)


def run_info(cfg: DictConfig, datamodule: Any, model: Any, settings: EvalConfig | None) -> dict:
    """The ``run`` block of results.json (``settings``: the evaluation's, for its mode; ``None``
    for a run that is not evaluated: the data's default mode)."""
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # not under Hydra
        overrides = []
    subset = {"eval_subset": settings.subset} if settings is not None and settings.subset is not None else {}
    return {
        "pos_embed": cfg.pos_embed.name,
        "model": cfg.model.name,
        "data": cfg.data.get("name", "?"),
        "train_resolution": int(datamodule.train_resolution),
        "mode": eval_mode(datamodule, settings.mode if settings is not None else None),
        "unit": "px" if isinstance(model, VisionTransformer) else "tokens",
        "seed": int(cfg.seed),
        "overrides": overrides,
        **subset,
    }


def run_evaluation(
    settings: EvalConfig,
    trainer_cfg: DictConfig,
    module: ClassificationModule,
    datamodule: Any,
    loggers: list,
    run: dict,
) -> dict:
    """Evaluate at every resolution, strategy and logn as ``settings`` say; write results.json
    once, with ``run`` as its ``run`` block (:func:`run_info` and which weights), then the run's
    table and plot, and give the plot to the loggers that take images."""
    trainer = eval_trainer(trainer_cfg)
    rows = evaluate(module, datamodule, trainer, settings, loggers=loggers if trainer.is_global_zero else ())
    for lg in loggers:  # file-based loggers (CSV) write what they buffered
        lg.save()
    if trainer.is_global_zero:
        out = output_dir()
        write_results(out / RESULTS_FILE, run, rows)
        _report(out, loggers, run, rows)
    return {"run": run, "metrics": rows}


def _report(out: Path, loggers: list, run: dict, rows: list[dict]) -> None:
    """Print the run's table and write its plot; give the plot and the hyperparameters with
    their top-1 to the loggers (:mod:`vit_rope.report.loggers`)."""
    from vit_rope.report import collect_runs, comparison_figure, write_comparison
    from vit_rope.report.loggers import log_report

    write_comparison(out)
    log_report(loggers, run, rows, comparison_figure(collect_runs(out)) if loggers else None)


def _run_config(ckpt: str) -> DictConfig:
    """The training config saved by Hydra next to a checkpoint (``RUN/checkpoints/x.ckpt``)."""
    path = Path(ckpt).resolve().parent.parent / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError(
            f"No training config at '{path}' for checkpoint '{ckpt}'; evaluate a checkpoint inside the "
            "run directory that train.py wrote."
        )
    return OmegaConf.load(path)


def _trained_with(ckpt: str) -> list[str]:
    """The training command's overrides (Hydra's ``overrides.yaml`` beside its config), so that
    an evaluation of a checkpoint can be sorted by how the model was trained (``recipe=``,
    ``regime=``) as well as by how it was evaluated; empty when the file is missing."""
    path = Path(ckpt).resolve().parent.parent / ".hydra" / "overrides.yaml"
    values = OmegaConf.load(path) if path.is_file() else []
    return [str(o) for o in values] if isinstance(values, ListConfig) else []


def _merge_data(run_data: Any, overrides: Any) -> DictConfig:
    data = OmegaConf.to_container(run_data, resolve=False) if isinstance(run_data, DictConfig) else dict(run_data)
    for key, value in (plain(overrides) or {}).items():
        if value is not None:
            data[key] = value
    return OmegaConf.create(data)


def _timm_source(cfg: DictConfig, settings: EvalConfig) -> tuple[DictConfig, Any, ClassificationModule, dict]:
    """A timm model, converted, with an image folder preprocessed by the model's own data config."""
    from vit_rope.eval.timm_data import timm_data_config
    from vit_rope.models import from_timm
    from vit_rope.models.from_timm import create_timm_model

    if not cfg.data.get("root"):
        raise ConfigError("timm models are evaluated on an image folder; set data.root=/path/with/train_and_val.")
    if settings.weights != "last":
        raise ConfigError(
            f"eval.weights={settings.weights} applies to checkpoints of train.py; a timm model has one set of "
            "weights: use eval.weights=last."
        )
    timm_model = create_timm_model(cfg.timm_model, cfg.get("timm_checkpoint"))  # pretrained=False
    data_config = timm_data_config(timm_model, cfg.data.get("crop_pct"))  # the model's pretrained_cfg
    model = from_timm(timm_model)
    target = "vit_rope.eval.timm_data.TimmImageFolderDataModule"
    data = _merge_data({"_target_": target, "name": "imagefolder"}, cfg.data)
    data.img_size = int(model.img_size[0])
    for key in ("mean", "std", "interpolation", "crop_pct"):
        data[key] = data_config[key]
    datamodule = instantiate_group(data, "data")
    train_cfg = OmegaConf.create(
        {"pos_embed": {"name": model.encoding.name}, "model": {"name": cfg.timm_model}, "data": data, "seed": cfg.seed}
    )
    return train_cfg, datamodule, ClassificationModule(model), {"weights": "last", "data_config": data_config}


def _data_choice(cfg: DictConfig) -> str | None:
    """``eval.py data=NAME``: the name, with ``cfg.data`` reduced to the keys set on the command
    line (the group's file holds training defaults; the run's own data settings stay)."""
    name = cfg.data.get("name")
    if not name:
        return None
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / f"{name}.yaml"), resolve=False)
    given = OmegaConf.to_container(cfg.data, resolve=False)
    with open_dict(cfg):
        cfg.data = {
            k: v for k, v in given.items() if k not in ("name", "_target_") and (k not in defaults or defaults[k] != v)
        }
    return str(name)


def _check_data_choice(chosen: str | None, expected: str | None, source: str) -> None:
    if chosen is not None and chosen != expected:
        raise ConfigError(
            f"data={chosen} does not fit {source}, which is evaluated on data={expected}; drop data={chosen} "
            "(data.root and the other data.* keys still change the data settings)."
        )


def evaluate_model(cfg: DictConfig) -> dict:
    """``eval.py``: evaluate a checkpoint, a run directory or a timm model."""
    sources = [k for k in ("ckpt_path", "run_dir", "timm_model") if cfg.get(k)]
    if len(sources) != 1:
        raise ConfigError(
            f"eval.py needs exactly one model source, got {sources or 'none'}; "
            "set one of ckpt_path=PATH, run_dir=DIR or timm_model=NAME (or compare=DIR)."
        )
    settings = build_dataclass(EvalConfig, cfg.eval, "eval")
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    L.seed_everything(cfg.seed, workers=True)
    chosen = _data_choice(cfg)
    if cfg.get("timm_model"):
        _check_data_choice(chosen, "imagefolder", f"timm_model={cfg.timm_model}")
        train_cfg, datamodule, module, extra = _timm_source(cfg, settings)
    else:
        ckpt = resolve_checkpoint(cfg.get("ckpt_path") or cfg.get("run_dir"), sources[0])
        train_cfg = _run_config(ckpt)
        _check_data_choice(chosen, train_cfg.data.get("name"), f"the checkpoint '{ckpt}'")
        train_cfg.data = _merge_data(train_cfg.data, cfg.data)
        datamodule = instantiate_group(train_cfg.data, "data")
        module = build_run_module(train_cfg, datamodule)
        extra = {**load_weights(module, ckpt, settings.weights), "trained_with": _trained_with(ckpt)}
    settings.check_model(module.model)
    settings.check_data(datamodule)
    module.eval()
    run = {**run_info(train_cfg, datamodule, module.model, settings), **extra}
    loggers = instantiate_all(cfg.get("logger"), "logger")
    return run_evaluation(settings, cfg.trainer, module, datamodule, loggers, run)
