"""What every task shares: the run directory, building the parts from config groups, and ending
a bad setting in one sentence (exit status 2) instead of a traceback."""

from __future__ import annotations

import copy
import logging
import os
import re
import sys
import traceback
import typing
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from vit_rope.config import plain
from vit_rope.errors import ConfigError, check_choice, check_range
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
def hydra_runtime(
    cfg: DictConfig, precheck: Callable[[DictConfig, Path, list[str]], None] | None = None
) -> Iterator[DictConfig]:
    """The task's config with Hydra's runtime set, also for a config composed in Python.

    Under ``@hydra.main`` (no ``hydra`` node in ``cfg``) this is ``cfg`` itself. A config from
    ``hydra.compose(..., return_hydra_config=True)`` gets what ``hydra.main`` would give it: the
    run directory ``hydra.run.dir`` (made absolute, created, with ``.hydra/config.yaml``,
    ``hydra.yaml`` and ``overrides.yaml`` as Hydra writes them) and ``${hydra:...}``
    interpolations that resolve; the task sees the config without its ``hydra`` node, and the
    global runtime is cleared afterwards so that a second composed run gets its own.
    ``precheck(task_cfg, run_dir, overrides)`` runs before anything is written (as :class:`vit_rope.tasks.precheck.CheckBeforeRun`
    does on the command line), and what the task prints goes to ``<run dir>/<job name>.log`` too.
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
    if precheck is not None:
        precheck(task_cfg, out, list(cfg.hydra.overrides.task))
    hydra_dir = out / str(cfg.hydra.output_subdir or ".hydra")
    hydra_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(task_cfg, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": cfg.hydra}), hydra_dir / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(cfg.hydra.overrides.task)), hydra_dir / "overrides.yaml")
    HydraConfig.instance().set_config(cfg)
    try:
        with run_log(out / f"{cfg.hydra.job.name}.log"):
            yield task_cfg
    finally:
        HydraConfig.instance().cfg = None


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _Tee:
    """A text stream that also appends what is written to a log file (colour codes removed;
    progress-bar redraws, which start with a carriage return, stay on the console only)."""

    def __init__(self, stream: Any, log: Any) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        if "\r" not in text:
            self._log.write(_ANSI.sub("", text))
            self._log.flush()
        return n

    def flush(self) -> None:
        self._stream.flush()
        self._log.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding ... of the console stream
        return getattr(self._stream, name)


# Lightning's loggers print through their own handler and do not reach Hydra's log file.
_OWN_HANDLER_LOGGERS = ("lightning.pytorch", "lightning.fabric")


class _DropLibraryNotices(logging.Filter):
    """Lightning's advertisement for its cloud logger, printed by every Trainer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_library_notices() -> None:
    """Keep notices that no user of this project can act on off the console, so that a run
    starts with its own lines: Lightning's "litlogger" tip and the deprecation warning that
    Lightning's own use of ``torch.utils._pytree.LeafSpec`` raises (a library's internals)."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # a record passes the filters of the handlers it reaches, not those of its logger's parents
    for name in (*_OWN_HANDLER_LOGGERS, ""):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DropLibraryNotices) for f in handler.filters):
                handler.addFilter(_DropLibraryNotices())


@contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Everything printed to stdout and stderr (the config tree, warnings, Lightning's messages,
    the result table) is also appended to ``path``, the run's log file. Hydra's file handler
    writes only what goes through ``logging`` to the root logger, which this project's prints
    and Lightning's messages do not."""
    quiet_library_notices()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_DropLibraryNotices())
        for name in _OWN_HANDLER_LOGGERS:
            logging.getLogger(name).addHandler(handler)
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(stdout, log), _Tee(stderr, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = stdout, stderr
            for name in _OWN_HANDLER_LOGGERS:
                logging.getLogger(name).removeHandler(handler)


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


def _literal_values(tp: Any) -> list:
    """The values of a ``Literal`` type, also inside a ``Union`` of them."""
    args = typing.get_args(tp)
    return [v for a in args for v in _literal_values(a)] if typing.get_origin(tp) is not typing.Literal else list(args)


def _check_devices(devices: Any) -> None:
    """Lightning's ``devices``: a count (-1: all), ``auto``, a list of device indices or ``"0,1"``."""
    fix = "set trainer.devices to a count such as 1, -1 for all, auto, or a list of indices such as [0,1]"
    if isinstance(devices, bool):
        ok = False
    elif isinstance(devices, int):
        ok = devices == -1 or devices >= 1
    elif isinstance(devices, str):
        ok = devices == "auto" or re.fullmatch(r"\s*(-1|\d+(\s*,\s*\d+)*\s*,?)\s*", devices) is not None
        ok = ok and devices.strip() not in ("0", "0,")
    elif isinstance(devices, list | tuple):
        ok = bool(devices) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
    else:
        ok = False
    if not ok:
        raise ConfigError(f"trainer.devices={devices!r} is not a device count or list; {fix}.")


def check_trainer(trainer_cfg: Any) -> None:
    """Range checks of the trainer settings a user types most often, before anything is built
    (Lightning's own reports of these are several lines)."""
    from lightning.fabric.connector import _PRECISION_INPUT
    from lightning.pytorch.accelerators import AcceleratorRegistry

    t = plain(trainer_cfg)
    if "precision" in t:
        check_choice("trainer.precision", t["precision"], _literal_values(_PRECISION_INPUT))
    if "accelerator" in t and not hasattr(t["accelerator"], "setup_device"):  # an Accelerator object passes
        check_choice(
            "trainer.accelerator",
            t["accelerator"],
            ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())),
        )
    if "devices" in t:
        _check_devices(t["devices"])
    check_range("trainer.num_nodes", t.get("num_nodes"), 1, integer=True, optional=True)
    check_range("trainer.max_epochs", t.get("max_epochs"), 1, integer=True, optional=True)
    check_range("trainer.gradient_clip_val", t.get("gradient_clip_val"), 0.0, optional=True)
    check_range("trainer.log_every_n_steps", t.get("log_every_n_steps"), 1, integer=True, optional=True)
    check_range("trainer.check_val_every_n_epoch", t.get("check_val_every_n_epoch"), 1, integer=True, optional=True)
    check_range("trainer.accumulate_grad_batches", t.get("accumulate_grad_batches"), 1, integer=True, optional=True)


# Options whose default is true or false but that take other values too (Lightning's, the loggers').
BOOLEAN_EXTRAS: dict[str, Callable[[Any], bool]] = {
    "trainer.deterministic": lambda v: v == "warn",
    "trainer.fast_dev_run": lambda v: isinstance(v, int) and v >= 0,  # a number of batches
    "logger.wandb.log_model": lambda v: v == "all",
    "logger.mlflow.log_model": lambda v: v == "all",
}


def check_missing(cfg: DictConfig) -> None:
    """A mandatory value (``???`` in its YAML) that nobody set ends in one sentence naming it."""

    def walk(node: Any, prefix: str) -> Iterator[str]:  # interpolations stay unresolved
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            key = f"{prefix}.{k}" if prefix else str(k)
            yield from [key] if v == "???" else walk(v, key)

    for key in walk(OmegaConf.to_container(cfg, resolve=False), ""):
        raise ConfigError(f"{key} has no value and is required; add {key}=VALUE to the command.")


def reference_config(config_name: str, overrides: list[str]) -> DictConfig:
    """The config that ``config_name`` with only the group choices of ``overrides`` composes:
    the type each option has by default."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    groups = config_groups(config_name)
    choices = [o for o in overrides if o.lstrip("+~").split("=")[0].split("@")[0] in groups]
    if GlobalHydra.instance().is_initialized():
        return compose(config_name, overrides=choices)
    with initialize_config_module("vit_rope.conf", version_base="1.3"):
        return compose(config_name, overrides=choices)


_ABSENT = object()


def check_booleans(cfg: DictConfig, config_name: str, overrides: list[str]) -> None:
    """Every option whose default is ``true`` or ``false`` (or a list of them) holds true or false;
    Hydra reads ``evaluate=yes`` as the string "yes", which Python would take as true."""
    if not any("=" in o for o in overrides):
        return
    reference = OmegaConf.to_container(reference_config(config_name, overrides), resolve=False)

    def walk(node: Any, prefix: str) -> Iterator[tuple[str, bool]]:  # (key, is a list of booleans)
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{prefix}{k}.")
        elif isinstance(node, bool):
            yield prefix[:-1], False
        elif isinstance(node, list) and node and all(isinstance(v, bool) for v in node):
            yield prefix[:-1], True

    for key, is_list in walk(reference, ""):
        if key.startswith("hydra."):
            continue
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
        if value is _ABSENT:  # removed on the command line (~callbacks.best_checkpoint)
            continue
        values = list(value) if is_list and isinstance(value, list | tuple | ListConfig) else [value]
        extra = BOOLEAN_EXTRAS.get(key, lambda v: False)
        bad = [v for v in values if not isinstance(v, bool) and not extra(v)]
        if bad:
            fix = f"{key}=[false,true]" if is_list else f"{key}=true or {key}=false"
            raise ConfigError(f"{key}={bad[0]!r} is not true or false; set {fix}.")


def check_options(cfg: DictConfig, config_name: str, overrides: list[str]) -> None:
    """The checks every task's config goes through before anything is built or written: mandatory
    values, booleans, the seed, the matmul precision and the trainer settings."""
    check_missing(cfg)
    check_booleans(cfg, config_name, overrides)
    # Lightning's seed_everything takes numpy's range, and refuses others with a traceback
    check_range("seed", cfg.get("seed"), 0, 2**32 - 1, integer=True)
    check_choice("float32_matmul_precision", cfg.get("float32_matmul_precision"), ("highest", "high", "medium"))
    check_trainer(cfg.trainer)


def task_overrides() -> list[str]:
    """The command line's overrides of this job (Hydra's own left out)."""
    try:
        return [str(o) for o in HydraConfig.get().overrides.task]
    except ValueError:
        return []


# Whether the run directory held anything before this command (noted by the pre-run check,
# :mod:`vit_rope.tasks.precheck`): a refused command then writes nothing into it, not even error.txt.
_RUN_DIR_EXISTED = False


def note_run_dir(out: Path | None) -> None:
    """Remember whether ``out`` held anything before this command (an empty folder is no run yet);
    ``None`` for a sweep, whose jobs' directories are new."""
    global _RUN_DIR_EXISTED
    _RUN_DIR_EXISTED = out is not None and out.is_dir() and any(out.iterdir())


def eval_trainer(trainer_cfg: Any) -> L.Trainer:
    """A quiet trainer with the run's hardware settings, used by the evaluation."""
    keep = {"accelerator", "devices", "num_nodes", "strategy", "precision"}
    args = {k: v for k, v in plain(trainer_cfg).items() if k in keep}
    return L.Trainer(
        **args, logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False
    )


def run_main(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Call ``fn(cfg)``; a :class:`ConfigError` (or a non-finite loss) ends in one sentence on
    stderr, an ``error.txt`` in the run directory, and exit status 2 instead of a traceback.
    What the task prints also goes to the run's log file (``<job name>.log``)."""
    with run_log(output_dir() / f"{HydraConfig.get().job.name}.log"):
        try:
            return fn(cfg)
        except (ConfigError, FloatingPointError) as err:
            message = str(err)
        except Exception as err:  # noqa: BLE001  a bug: keep the traceback, also record it for the sweep report
            _record_error(f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}")
            raise
        print(f"error: {message}", file=sys.stderr)
    if not _RUN_DIR_EXISTED:  # a refused command writes nothing into an existing run directory
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
