"""Shared helpers: run the real command lines in a subprocess, with a tiny model and data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

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
