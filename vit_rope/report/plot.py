"""The comparison as a picture: top-1 against test resolution, one panel per comparison table.

Colour is the encoding, marker the strategy, a dashed line the log-n scaling; error bars are
the std over runs; ``n/a`` and missing points are not drawn; the training resolution is a
dotted vertical line; the x axis names its unit (pixels, or tokens for sequence data).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vit_rope.report.collect import RunResult
from vit_rope.report.tables import axis_name, cell_summary, comparison_tables, known_encodings, row_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MARKERS = {"extrapolate": "o", "interpolate": "s", "ntk": "^", "yarn": "D"}  # other strategies: "x"


def comparison_figure(runs: Sequence[RunResult]) -> Figure:
    """The figure of ``comparison.png`` (Agg canvas: no display, no pyplot state); panels in the
    order of the markdown tables, up to two per row; an empty panel says so when no run finished."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tables = comparison_tables(runs)
    ncols = min(max(len(tables), 1), 2)
    nrows = max(math.ceil(len(tables) / ncols), 1)
    fig = Figure(figsize=(7.5 * ncols, 4.8 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    encodings = list(known_encodings())
    for ax, table in zip(axes[: len(tables)], tables, strict=True):
        train_res = table.group[3]
        for key in table.keys():
            pos_embed, strategy, logn = key
            points = sorted((res, *cell_summary(e)[:2]) for res, e in table.cells[key].items())
            points = [p for p in points if p[1] is not None]
            if not points:
                continue  # n/a everywhere: nothing to draw
            xs, ys, stds = zip(*points, strict=True)
            color_index = encodings.index(pos_embed) if pos_embed in encodings else len(encodings)
            ax.errorbar(
                xs,
                ys,
                yerr=[s or 0.0 for s in stds] if any(stds) else None,
                color=f"C{color_index % 10}",
                marker=MARKERS.get(strategy, "x"),
                linestyle="--" if logn else "-",
                markersize=5,
                capsize=3,
                label=f"{pos_embed} · {row_label(strategy, logn)}",
            )
        if train_res is not None:
            ax.axvline(train_res, color="0.4", linestyle=":", label=f"training resolution ({train_res})")
        ax.set_xticks(table.resolutions)
        ax.set_xlabel(axis_name(table.unit))
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(table.title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    for ax in axes[len(tables) :]:
        ax.set_axis_off()
    if not tables:
        axes[0].text(0.5, 0.5, "no finished runs", ha="center", va="center")
    fig.suptitle("Top-1 accuracy against test resolution")
    return fig


def plot_comparison(runs: Sequence[RunResult], path: str | Path) -> Path:
    """Write :func:`comparison_figure` to ``path`` as a PNG, atomically; returns ``path``."""
    path = Path(path)
    fig = comparison_figure(runs)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    tmp.replace(path)
    return path
