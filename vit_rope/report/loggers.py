"""What the experiment trackers get from an evaluation, through Lightning's logger API.

Every logger already gets top-1 per strategy at each resolution as metrics (the evaluation loop
logs them). At the end of an evaluation, :func:`log_report` adds:

- the comparison plot, to the loggers that take images: TensorBoard (``add_figure``), W&B
  (``log_image``) and MLflow (``log_figure``); the CSV logger and others are skipped;
- TensorBoard's HPARAMS tab: the run's overrides (and encoding, model, data, training
  resolution, seed) as hyperparameters, and top-1 at each resolution and strategy as its
  metrics (``log_hyperparams(params, metrics)``; the logger is built with
  ``default_hp_metric=False`` so that no placeholder metric is written first).

:func:`wandb_logger` and :func:`mlflow_logger` are the ``_target_`` of ``logger=wandb`` and
``logger=mlflow``: W&B runs offline unless a project is named, MLflow writes a local file store,
and a missing package ends in one sentence naming the extra to install.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import TYPE_CHECKING, Any

from vit_rope.errors import ConfigError

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

EXTRA = 'pip install -e ".[loggers]"'


def _require(module: str, logger: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"logger={logger} needs the '{module}' package, which is not installed; {EXTRA} (or pip install {module})."
        ) from None


def wandb_logger(project: str | None = None, offline: bool | None = None, **kwargs: Any) -> WandbLogger:
    """A Lightning ``WandbLogger`` that stays offline (no network, no login) unless ``project``
    is given; an offline run is uploaded later with ``wandb sync <run dir>/wandb/offline-run-*``.

    Args:
        project: W&B project; ``None`` runs offline under the project name ``vit_rope``.
        offline: Force offline (True) or online (False); ``None``: offline exactly when no project.
        kwargs: Passed to ``WandbLogger`` (``save_dir``, ``name``, ``entity``, ``tags``, ...).
    """
    _require("wandb", "wandb")
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(project=project or "vit_rope", offline=project is None if offline is None else offline, **kwargs)


def mlflow_logger(tracking_uri: str | None = None, **kwargs: Any) -> MLFlowLogger:
    """A Lightning ``MLFlowLogger`` (its arguments); without a ``tracking_uri`` it writes a local
    file store in ``save_dir``. MLflow 3 refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE``
    is set (it keeps them in maintenance mode), so that is set for this process when a file
    store is used; a ``sqlite:///...`` or server ``tracking_uri`` is used as given."""
    _require("mlflow", "mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    if tracking_uri is None or tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(tracking_uri=tracking_uri, **kwargs)


def hparams_of(run: dict) -> dict[str, Any]:
    """The hyperparameters of a run for a tracker: the identity of the run (encoding, model,
    data, training resolution, seed), then each override ``key=value`` as ``key: value``."""
    params: dict[str, Any] = {k: run[k] for k in ("pos_embed", "model", "data", "train_resolution", "seed") if k in run}
    for override in run.get("overrides") or []:
        key, sep, value = str(override).lstrip("+~").partition("=")
        if sep:
            params[key] = _plain(value)
    return params


def _plain(value: str) -> Any:
    """A number stays a number in the HPARAMS table (so that it sorts and plots as one)."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def hparam_metrics(rows: list[dict]) -> dict[str, float]:
    """``hp/top1_<resolution>/<strategy>[_logn][_window]`` for each evaluated cell with a number."""
    metrics = {}
    for m in rows:
        if m.get("top1") is not None:
            name = m["strategy"] + ("_logn" if m["logn"] else "") + ("_window" if m.get("window") else "")
            metrics[f"hp/top1_{m['resolution']}/{name}"] = float(m["top1"])
    return metrics


def log_figure(loggers: list[Logger], fig: Figure, name: str = "eval/comparison") -> list[str]:
    """Give ``fig`` to each logger that takes images; returns the kinds that got it. A logger
    that fails here is logged as a warning: the files on disk are the record."""
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    done = []
    for lg in loggers:
        try:
            if isinstance(lg, TensorBoardLogger):
                lg.experiment.add_figure(name, fig, close=False)
            elif isinstance(lg, WandbLogger):
                lg.log_image(key=name, images=[_rgb(fig)])
            elif isinstance(lg, MLFlowLogger):
                lg.experiment.log_figure(lg.run_id, fig, f"{name.replace('/', '_')}.png")
            else:
                continue  # CSV and other loggers without images
            done.append(type(lg).__name__)
        except Exception as e:  # noqa: BLE001  a tracker must never cost the run its results
            log.warning("Could not give the plot to %s: %s", type(lg).__name__, e)
    return done


def _rgb(fig: Figure) -> Any:
    """The figure as an (H, W, 3) uint8 array."""
    import numpy as np

    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def log_report(loggers: list[Logger], run: dict, rows: list[dict], fig: Figure | None) -> None:
    """The plot to the loggers that take images, and TensorBoard's HPARAMS (see the module)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if fig is not None:
        log_figure(loggers, fig)
    metrics = hparam_metrics(rows)
    for lg in loggers:
        if isinstance(lg, TensorBoardLogger) and metrics:
            lg.log_hyperparams(hparams_of(run), metrics)
            lg.save()
