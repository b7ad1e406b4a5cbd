"""``eval.py compare=DIR``: one comparison table and plot for any tree of runs."""

from __future__ import annotations

from omegaconf import DictConfig


def compare(cfg: DictConfig) -> dict:
    """Write comparison.csv, comparison.md and comparison.png into ``cfg.compare``."""
    from vit_rope.report import write_comparison

    return {"comparison": write_comparison(cfg.compare)}
