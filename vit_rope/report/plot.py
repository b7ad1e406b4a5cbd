"""The comparison as a picture: top-1 against test resolution, one panel per comparison table;
when the runs recorded attention diagnostics, each table gets a row of three panels: top-1, the
mean attention entropy (over layers, normalised by log N) and the mean attention distance (in
patches, or tokens).

Colour is the encoding, marker the strategy, a dashed line the log-n scaling; error bars are
the std over runs; ``n/a`` and missing points are not drawn; the training resolution is a
dotted vertical line; the x axis names its unit (pixels, or tokens for sequence data).
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vit_rope.report.collect import RunResult
from vit_rope.report.tables import (
    GRID_STEPS,
    Table,
    axis_name,
    cell_summary,
    comparison_tables,
    known_encodings,
    row_label,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MARKERS = {"extrapolate": "o", "interpolate": "s", "ntk": "^", "yarn": "D"}  # other strategies: "x"

# A series: (table, row key) -> [(resolution, mean or None, std or None)]
Series = Callable[[Table, tuple[str, str, bool]], list[tuple[int, float | None, float | None]]]


def _top1(table: Table, key: tuple[str, str, bool]) -> list[tuple[int, float | None, float | None]]:
    return [(res, *cell_summary(e)[:2]) for res, e in table.cells[key].items()]


def _attention(index: int) -> Series:
    """Entropy (0) or distance (1), mean over layers, then mean and sample std over runs."""

    def series(table: Table, key: tuple[str, str, bool]) -> list[tuple[int, float | None, float | None]]:
        points = []
        for res, entries in table.attention.get(key, {}).items():
            values = [e[index] for e in entries]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else None
                points.append((res, statistics.fmean(values), std))
        return points

    return series


def _draw(ax: Axes, table: Table, series: Series, ylabel: str, title: str, legend: bool) -> None:
    """One panel: a line per row key of ``table`` through ``series``, the training resolution,
    axis labels; the legend to the right when ``legend``."""
    encodings = list(known_encodings())
    train_res = table.group[3]
    for key in table.keys():
        pos_embed, strategy, logn = key
        points = sorted(p for p in series(table, key) if p[1] is not None)
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
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))


def comparison_figure(runs: Sequence[RunResult]) -> Figure:
    """The figure of ``comparison.png`` (Agg canvas: no display, no pyplot state); panels in the
    order of the markdown tables, up to two per row, or, when any run has attention diagnostics,
    one row per table (top-1, attention entropy, attention distance); an empty panel says so
    when no run finished."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tables = comparison_tables(runs)
    attention = any(t.has_attention for t in tables)
    if attention:
        ncols, nrows = 3, len(tables)
        fig = Figure(figsize=(18.0, 4.6 * nrows), layout="constrained")
    else:
        ncols = min(max(len(tables), 1), 2)
        nrows = max(math.ceil(len(tables) / ncols), 1)
        fig = Figure(figsize=(7.5 * ncols, 4.8 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    if attention:
        for row, table in zip(axes, tables, strict=True):
            steps = GRID_STEPS.get(table.unit, "grid steps")
            _draw(row[0], table, _top1, "top-1 accuracy (%)", table.title, legend=False)
            if table.has_attention:
                _draw(row[1], table, _attention(0), "entropy / log N", "attention entropy (mean over layers)", False)
                row[1].set_ylim(0.0, 1.02)
                _draw(
                    row[2], table, _attention(1), f"distance ({steps})", "attention distance (mean over layers)", True
                )
                row[2].set_ylim(bottom=0.0)
            else:
                row[0].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
                for ax in row[1:]:
                    ax.set_axis_off()
                row[1].text(0.5, 0.5, "no attention diagnostics", ha="center", va="center")
        fig.suptitle("Top-1 accuracy and attention against test resolution")
        return fig
    axes = axes.ravel()
    for ax, table in zip(axes[: len(tables)], tables, strict=True):
        _draw(ax, table, _top1, "top-1 accuracy (%)", table.title, legend=True)
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
