"""Console scripts ``vit-rope-train`` and ``vit-rope-eval``: ``train.py`` and ``eval.py`` for an
installed package, reading the configs shipped inside it (``vit_rope/conf``), from any directory."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from vit_rope.report.callback import sweep_failures
from vit_rope.tasks.common import run_main
from vit_rope.tasks.compare import compare
from vit_rope.tasks.evaluate import evaluate_model
from vit_rope.tasks.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _train(cfg: DictConfig) -> None:
    run_main(train, cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def _eval(cfg: DictConfig) -> None:
    run_main(lambda c: compare(c) if c.get("compare") else evaluate_model(c), cfg)


def train_main() -> None:
    """``vit-rope-train [overrides]``: the same as ``python train.py [overrides]``."""
    _train()
    if failed := sweep_failures():  # the comparison is written; the exit status says a job failed
        print(
            f"error: {len(failed)} job(s) of the sweep failed or did not finish: {'; '.join(failed)}", file=sys.stderr
        )
        sys.exit(1)


def eval_main() -> None:
    """``vit-rope-eval [overrides]``: the same as ``python eval.py [overrides]``."""
    _eval()
