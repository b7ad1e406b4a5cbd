"""Shared helpers: run the real command lines in a subprocess, with a tiny model and data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One torch thread per test process (and for the command lines the tests start): the suite runs in
# as many processes as there are cores (pytest-xdist), and the tests' tiny tensors gain nothing from
# intra-op threads, which would only stall at every parallel op while another process holds the core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

# A model small enough for a few seconds of CPU per run, and quiet logs.
MODEL_TINY = [
    "model.embed_dim=32",
    "model.depth=2",
    "model.num_heads=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
]
# ... with a small shapes data set
TINY = [*MODEL_TINY, "data.num_train=256", "data.num_val=128", "data.batch_size=64"]


def run_cli(script: str, *args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python script args`` from the repository root, as a user would."""
    env = {**os.environ, "VIT_ROPE_NO_PROGRESS": "1", "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def run_entry(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python script args`` through its console-script function (``train_main``/``eval_main``)
    in this process, with ``sys.argv``, the exit status, stdout and stderr as the command line has
    them: the same code path as :func:`run_cli` without starting an interpreter and importing
    torch again (about 4 s a call). Hydra's logging setup, the environment and the working
    directory are restored afterwards. What only a new process shows (SIGKILL, DDP, the installed
    console scripts) still goes through :func:`run_cli`."""
    import contextlib
    import io
    import logging
    import warnings

    from hydra.core.global_hydra import GlobalHydra

    from vit_rope.cli import eval_main, train_main

    main = {"train.py": train_main, "eval.py": eval_main}[script]
    out, err = io.StringIO(), io.StringIO()
    env = {"VIT_ROPE_NO_PROGRESS": "1", "HYDRA_FULL_ERROR": "0"}
    saved_env = {k: os.environ.get(k) for k in env}
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    saved_logging = [(lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    os.environ.update(env)
    sys.argv = [script, *args]
    os.chdir(ROOT)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        for key, value in saved_env.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        for lg, handlers, level, propagate, disabled in saved_logging:
            for handler in lg.handlers:
                if handler not in handlers:
                    handler.close()
            lg.handlers[:], lg.level, lg.propagate, lg.disabled = handlers, level, propagate, disabled
        GlobalHydra.instance().clear()
    proc = subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(
            f"{script} {' '.join(args)} failed ({code}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def compose_run(config: str, run_dir: Path, *overrides: str):
    """``train`` or ``eval`` composed as ``python {config}.py OVERRIDES hydra.run.dir=RUN_DIR``
    composes it, with the hydra node that gives the run its directory."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config, overrides=[*overrides, f"hydra.run.dir={run_dir}"], return_hydra_config=True)


def train_run(run_dir: Path, *overrides: str) -> dict:
    """``python train.py OVERRIDES hydra.run.dir=RUN_DIR``, in this process: what ``train`` returns."""
    from vit_rope.tasks.train import train

    return train(compose_run("train", run_dir, *overrides))


def eval_run(run_dir: Path, *overrides: str) -> dict:
    """``python eval.py OVERRIDES hydra.run.dir=RUN_DIR`` for one model, in this process."""
    from vit_rope.tasks.common import hydra_runtime
    from vit_rope.tasks.evaluate import evaluate_model

    with hydra_runtime(compose_run("eval", run_dir, *overrides)) as cfg:
        return evaluate_model(cfg)


def assert_names(message: str, *parts: str) -> None:
    """An error message names each of ``parts`` (the option, the value, the fix), whatever its wording."""
    missing = [p for p in parts if p not in message]
    assert not missing, f"{missing} not in: {message}"


def read_results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


def write_image_tree(root: Path, classes=("cat", "dog", "fox"), per_class: int = 4, size=(40, 50)) -> Path:
    """A tiny train/ + val/ image-folder tree written with PIL."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (size[0], size[1], 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{c}_{i}.png")
    return root


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    return write_image_tree(tmp_path / "images")


# -- data tests --------------------------------------------------------------------------------


def ridge_accuracy(f_train, y_train, f_test, y_test, k: int) -> float:
    """Test accuracy of a ridge-regression probe on standardised features: what a model that
    sees only these features could reach (used to show a position-free view is at chance)."""
    import torch

    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    a = torch.cat([(f_train - mu) / sd, torch.ones(len(f_train), 1, dtype=f_train.dtype)], 1)
    t = torch.cat([(f_test - mu) / sd, torch.ones(len(f_test), 1, dtype=f_test.dtype)], 1)
    ridge = 0.01 * len(a) * torch.eye(a.shape[1], dtype=a.dtype)
    weights = torch.linalg.solve(a.T @ a + ridge, a.T @ torch.nn.functional.one_hot(y_train, k).double())
    return ((t @ weights).argmax(1) == y_test).double().mean().item()


def data_defaults_off_yaml(group: str, *classes: type) -> dict[str, tuple]:
    """``{key: (yaml value, python default)}`` for each key of ``conf/data/<group>.yaml`` whose
    default in the ``__init__`` of ``classes`` (or their dataclass fields) differs; interpolations
    (``${...}``) and required values (``???``) are not compared."""
    import dataclasses
    import inspect

    import yaml

    values = yaml.safe_load((ROOT / "conf" / "data" / f"{group}.yaml").read_text())
    defaults: dict = {}
    for cls in classes:
        if dataclasses.is_dataclass(cls):
            defaults.update({f.name: f.default for f in dataclasses.fields(cls)})
        else:
            params = inspect.signature(cls.__init__).parameters.values()
            defaults.update({p.name: p.default for p in params if p.default is not inspect.Parameter.empty})
    off = {}
    for key, value in values.items():
        if key in ("_target_", "name") or (isinstance(value, str) and (value.startswith("${") or value == "???")):
            continue
        default = defaults.get(key, "<no default>")
        if isinstance(default, tuple):  # YAML has no tuples: a tuple default matches the same list
            default = list(default)
        if default != value:
            off[key] = (value, default)
    return off


# -- model tests -------------------------------------------------------------------------------


def compose_train(*overrides: str):
    """The training config as ``python train.py OVERRIDES`` composes it (without running it)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=False)


def build_net_from_config(cfg, num_classes: int, resolution: int, vocab_size: int | None = None):
    """The network that ``train.py`` builds from a composed config's ``model`` and ``pos_embed``."""
    from vit_rope.models import build_model_config, build_pos_embed

    model_cfg = build_model_config(cfg.model)
    return model_cfg.build(build_pos_embed(cfg.pos_embed), num_classes, resolution, vocab_size)
