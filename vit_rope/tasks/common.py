"""What every task shares: the run directory, building the parts from config groups, and ending
a bad setting in one sentence (exit status 2) instead of a traceback."""

from __future__ import annotations

import copy
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from vit_rope.config import plain
from vit_rope.errors import ConfigError, check_range
from vit_rope.eval.results import ERROR_FILE, atomic_write_text

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the configs, shipped in the package


def output_dir() -> Path:
    """The Hydra run directory of this job."""
    return Path(HydraConfig.get().runtime.output_dir)


def config_groups(config_name: str) -> dict[str, list[str]]:
    """The config groups that the primary config ``config_name`` composes (its defaults list,
    Hydra's own left out), each with its options."""
    import yaml

    groups = {}
    for entry in yaml.safe_load((CONF_DIR / f"{config_name}.yaml").read_text()).get("defaults", []):
        if isinstance(entry, dict):
            group = next(iter(entry)).split()[-1].split("@")[0]  # "optional data@x" -> "data"
            if group != "hydra" and (CONF_DIR / group).is_dir():
                options = (CONF_DIR / group).rglob("*.yaml")
                groups[group] = sorted(p.relative_to(CONF_DIR / group).with_suffix("").as_posix() for p in options)
    return groups


@contextmanager
def hydra_runtime(cfg: DictConfig) -> Iterator[DictConfig]:
    """The task's config with Hydra's runtime set, also for a config composed in Python.

    Under ``@hydra.main`` (no ``hydra`` node in ``cfg``) this is ``cfg`` itself. A config from
    ``hydra.compose(..., return_hydra_config=True)`` gets what ``hydra.main`` would give it: the
    run directory ``hydra.run.dir`` (made absolute, created, with ``.hydra/config.yaml``,
    ``hydra.yaml`` and ``overrides.yaml`` as Hydra writes them) and ``${hydra:...}``
    interpolations that resolve; the task sees the config without its ``hydra`` node, and the
    global runtime is cleared afterwards so that a second composed run gets its own.
    """
    if "hydra" not in cfg:
        if not HydraConfig.initialized():
            raise ConfigError(
                "A config composed in Python needs its hydra node for the run directory; compose it with "
                "return_hydra_config=True (and hydra.run.dir=DIR to choose the directory)."
            )
        yield cfg
        return
    cfg = copy.deepcopy(cfg)
    out = Path(os.path.abspath(str(cfg.hydra.run.dir)))
    task = [str(o) for o in cfg.hydra.overrides.task]
    own = [o for o in task if o.lstrip("+~").startswith("hydra.")]  # the command line keeps these apart too
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.overrides.task = [o for o in task if o not in own]
        cfg.hydra.overrides.hydra = [*cfg.hydra.overrides.hydra, *own]
    task_cfg = copy.deepcopy(cfg)
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    hydra_dir = out / str(cfg.hydra.output_subdir or ".hydra")
    hydra_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(task_cfg, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": cfg.hydra}), hydra_dir / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(cfg.hydra.overrides.task)), hydra_dir / "overrides.yaml")
    HydraConfig.instance().set_config(cfg)
    try:
        yield task_cfg
    finally:
        HydraConfig.instance().cfg = None


def instantiate_group(node: Any, group: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` for a config group; a key the target does not take ends in
    one sentence naming it (not Hydra's traceback). The ``data`` group's ``name`` is its label
    (recorded in results.json), not an argument."""
    if group == "data" and "name" in node:
        node = OmegaConf.create({k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "name"})
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        text = str(cause or err)
        if "unexpected keyword argument" in text:
            key = text.split("unexpected keyword argument")[-1].strip(" '\"\n")
            raise ConfigError(
                f"{group}.{key} is not an option of {group}={node.get('name', node.get('_target_'))}; "
                f"remove it or check the spelling in conf/{group}/."
            ) from None
        raise


def instantiate_all(group: Any, name: str) -> list:
    """Every ``_target_`` entry of a dictionary group such as ``callbacks`` or ``logger``."""
    if not group:
        return []
    return [instantiate_group(v, name) for v in group.values() if v is not None and "_target_" in v]


def check_trainer(trainer_cfg: Any) -> None:
    """Range checks of the trainer settings a user types most often, before anything is built."""
    t = plain(trainer_cfg)
    check_range("trainer.max_epochs", t.get("max_epochs"), 1, integer=True, optional=True)
    check_range("trainer.gradient_clip_val", t.get("gradient_clip_val"), 0.0, optional=True)
    check_range("trainer.log_every_n_steps", t.get("log_every_n_steps"), 1, integer=True, optional=True)
    check_range("trainer.check_val_every_n_epoch", t.get("check_val_every_n_epoch"), 1, integer=True, optional=True)
    check_range("trainer.accumulate_grad_batches", t.get("accumulate_grad_batches"), 1, integer=True, optional=True)


def eval_trainer(trainer_cfg: Any) -> L.Trainer:
    """A quiet trainer with the run's hardware settings, used by the evaluation."""
    keep = {"accelerator", "devices", "num_nodes", "strategy", "precision"}
    args = {k: v for k, v in plain(trainer_cfg).items() if k in keep}
    return L.Trainer(
        **args, logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False
    )


def run_main(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Call ``fn(cfg)``; a :class:`ConfigError` (or a non-finite loss) ends in one sentence on
    stderr, an ``error.txt`` in the run directory, and exit status 2 instead of a traceback."""
    try:
        return fn(cfg)
    except (ConfigError, FloatingPointError) as err:
        message = str(err)
    except Exception as err:  # noqa: BLE001  a bug: keep the traceback, also record it for the sweep report
        _record_error(f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}")
        raise
    print(f"error: {message}", file=sys.stderr)
    _record_error(message)
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


def _record_error(text: str) -> None:
    try:
        atomic_write_text(output_dir() / ERROR_FILE, text.rstrip() + "\n")
    except Exception:  # noqa: BLE001  never hide the real error behind this one
        pass
