"""The comparison as a picture: top-1 against test resolution, one panel per strategy with a
shared y axis, one block of panels per comparison table; when the runs recorded attention
diagnostics, two more rows of panels per table: the mean attention entropy (over layers,
normalised by log N) and the mean attention distance (in patches, or tokens).

Colour is the encoding (with the overrides that split its rows), a dashed line the log-n
scaling; error bars are the std over runs; ``n/a`` and missing points are not drawn; the training
resolution is a dotted vertical line; the x axis names its unit (pixels, or tokens for sequence
data). A row of one encoding that repeats an earlier row number for number at every resolution,
in top-1 and in every attention diagnostic (APE's ``interpolate`` is its ``extrapolate``;
``+logn`` of a model that always applies log-n), is one computation of the evaluation, so it is
drawn once, and the legend names what it repeats. When every row has a single strategy (a
recipe sweep: each recipe evaluates its own), the rows share one panel, labelled with their
strategy, so that the comparison asked for is on one axis. Long labels are wrapped in the legend,
which sits beside the panels.
"""

from __future__ import annotations

import os
import statistics
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vit_rope.report.collect import RunResult
from vit_rope.report.tables import GRID_STEPS, Table, axis_name, cell_summary, comparison_tables, row_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Key = tuple[str, str, bool]  # (encoding label, strategy, logn): a row of a table
# A series: (table, row key) -> [(resolution, mean or None, std or None)]
Series = Callable[[Table, Key], list[tuple[int, float | None, float | None]]]


def _top1(table: Table, key: Key) -> list[tuple[int, float | None, float | None]]:
    return [(res, *cell_summary(e)[:2]) for res, e in table.cells[key].items()]


def _attention(index: int) -> Series:
    """Entropy (0) or distance (1), mean over layers, then mean and sample std over runs."""

    def series(table: Table, key: Key) -> list[tuple[int, float | None, float | None]]:
        points = []
        for res, entries in table.attention.get(key, {}).items():
            values = [e[index] for e in entries]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else None
                points.append((res, statistics.fmean(values), std))
        return points

    return series


LEGEND_WIDTH = 44  # characters per legend line; longer labels wrap


def repeated_rows(table: Table) -> dict[Key, Key]:
    """``{row: earlier row}`` for each row whose runs give the same (top1, top5, loss, n) and the
    same attention diagnostics as an earlier row of the same encoding label at every resolution
    (rows in table order): only rows equal in every plotted quantity are drawn once."""

    def numbers(key: Key) -> tuple[dict, dict]:
        return dict(table.exact.get(key, {})), {r: v for r, v in table.attention.get(key, {}).items() if v}

    kept: list[Key] = []
    repeats: dict[Key, Key] = {}
    for key in table.keys():
        exact = dict(table.exact.get(key, {}))
        if not any(v[0] is not None for values in exact.values() for v in values):
            continue  # n/a everywhere: nothing is drawn anyway
        earlier = next((k for k in kept if k[0] == key[0] and numbers(k) == numbers(key)), None)
        if earlier is None:
            kept.append(key)
        else:
            repeats[key] = earlier
    return repeats


def strategies(table: Table) -> list[str]:
    """The table's strategies, in row order."""
    return list(dict.fromkeys(k[1] for k in table.keys()))


def one_strategy_per_row(table: Table) -> bool:
    """Each encoding label has a single strategy, and they differ (a sweep over recipes)."""
    per_label: dict[str, set[str]] = {}
    for label, strategy, _ in table.keys():
        per_label.setdefault(label, set()).add(strategy)
    return len(strategies(table)) > 1 and all(len(s) == 1 for s in per_label.values())


def panels(table: Table) -> list[tuple[str, tuple[str, ...]]]:
    """(title, strategies drawn) of each column of panels: one per strategy, or one for all rows
    when each row has its own strategy."""
    if one_strategy_per_row(table):
        return [("each row's strategy", tuple(strategies(table)))]
    return [(s, (s,)) for s in strategies(table)]


MARKERS = "osD^vP*Xph"


def series_styles(labels: Sequence[str]) -> dict[str, tuple[str, str]]:
    """A (colour, marker) pair per label, no two alike: the ten colours of matplotlib's cycle with
    circles, then with squares, and so on, so that an 11th series is not mistaken for the 1st."""
    return {label: (f"C{i % 10}", MARKERS[(i // 10) % len(MARKERS)]) for i, label in enumerate(labels)}


def label_styles(table: Table) -> dict[str, tuple[str, str]]:
    """A (colour, marker) per encoding label, in row order."""
    return series_styles(list(dict.fromkeys(k[0] for k in table.keys())))


def _panel(ax: Axes, table: Table, drawn: tuple[str, ...], series: Series, repeats: dict[Key, Key]) -> None:
    """The rows of ``table`` whose strategy is in ``drawn`` through ``series`` (repeated rows
    left out), and the training resolution."""
    styles = label_styles(table)
    for key in [k for k in table.keys() if k[1] in drawn]:
        label, strategy, logn = key
        if key in repeats:
            continue
        points = sorted(p for p in series(table, key) if p[1] is not None)
        if not points:
            continue  # n/a everywhere: nothing to draw
        xs, ys, stds = zip(*points, strict=True)
        colour, marker = styles[label]
        ax.errorbar(
            xs,
            ys,
            yerr=[s or 0.0 for s in stds] if any(stds) else None,
            color=colour,
            marker=marker,
            linestyle="--" if logn else "-",
            markersize=4,
            capsize=3,
            label=f"{label} · {row_label(strategy, logn)}",
        )
    train_res = table.group[3]
    if train_res is not None:
        ax.axvline(train_res, color="0.4", linestyle=":", label=f"training resolution ({train_res})")
    ax.set_xticks(table.resolutions)
    ax.grid(alpha=0.3)


def _wrap(text: str) -> str:
    return textwrap.fill(text, LEGEND_WIDTH, subsequent_indent="  ", break_on_hyphens=False)


def _legend(fig: Figure, table: Table, repeats: dict[Key, Key]) -> None:
    """Beside the block's panels: a colour per row label (with its strategy when the rows share
    one panel), the line styles of log-n, and the rows drawn once with what they repeat."""
    from matplotlib.lines import Line2D

    own = {k[0]: k[1] for k in table.keys()} if one_strategy_per_row(table) else {}
    handles = [
        Line2D([], [], color=c, marker=m, label=_wrap(f"{label} · {own[label]}" if own else label))
        for label, (c, m) in label_styles(table).items()
    ]
    if any(k[2] for k in table.keys()):
        handles += [Line2D([], [], color="k", label="log-n off"), Line2D([], [], color="k", ls="--", label="+logn")]
    if repeats:
        handles.append(Line2D([], [], linestyle="none", label="drawn once (same numbers):"))
        handles += [
            Line2D([], [], linestyle="none", label=_wrap(f"{k[0]} {row_label(k[1], k[2])} = {row_label(*e[1:])}"))
            for k, e in repeats.items()
        ]
    fig.legend(handles=handles, fontsize="small", loc="outside right upper", handlelength=1.5)


def _table_block(fig: Figure, table: Table) -> None:
    """Rows top-1 (and attention entropy, distance) x one column per strategy, y shared per row."""
    steps = GRID_STEPS.get(table.unit, "grid steps")
    rows: list[tuple[Series, str]] = [(_top1, "top-1 accuracy (%)")]
    if table.has_attention:
        rows += [(_attention(0), "entropy / log N"), (_attention(1), f"attention distance ({steps})")]
    columns = panels(table)
    axes = fig.subplots(len(rows), len(columns), squeeze=False, sharey="row")
    repeats = repeated_rows(table)
    for r, (series, ylabel) in enumerate(rows):
        for c, (title, drawn) in enumerate(columns):
            ax = axes[r][c]
            _panel(ax, table, drawn, series, repeats)
            if r == 0:
                ax.set_title(title)
            if r == len(rows) - 1:
                ax.set_xlabel(axis_name(table.unit))
            if c == 0:
                ax.set_ylabel(ylabel)
        if series is not _top1:
            axes[r][0].set_ylim(*((0.0, 1.02) if r == 1 else (0.0, None)))
    _legend(fig, table, repeats)
    fig.suptitle(table.title, x=0.01, ha="left")  # left: clear of the legend at the top right


def comparison_figure(runs: Sequence[RunResult]) -> Figure:
    """The figure of ``comparison.png`` (Agg canvas: no display, no pyplot state): one block per
    markdown table, in their order, each with a panel per strategy (see the module's text); an
    empty panel says so when no run finished."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tables = comparison_tables(runs)
    heights = [3 if t.has_attention else 1 for t in tables] or [1]
    ncols = max((len(panels(t)) for t in tables), default=1)
    fig = Figure(figsize=(3.8 * ncols + 3.6, 3.4 * sum(heights) + 0.8 * len(heights)), layout="constrained")
    FigureCanvasAgg(fig)
    if not tables:
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center")
        return fig
    blocks = fig.subfigures(len(tables), 1, height_ratios=heights, squeeze=False)[:, 0]
    for block, table in zip(blocks, tables, strict=True):
        _table_block(block, table)
    return fig


def plot_comparison(runs: Sequence[RunResult], path: str | Path) -> Path:
    """Write :func:`comparison_figure` to ``path`` as a PNG, atomically; returns ``path``."""
    path = Path(path)
    fig = comparison_figure(runs)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    tmp.replace(path)
    return path


# -- calibrate's choice ------------------------------------------------------------------------

CalibrationKey = tuple[str, str, int, bool]  # (encoding, model, test resolution, logn)


def calibration_means(runs: Sequence[RunResult]) -> dict[CalibrationKey, tuple[list, list, int]]:
    """The alpha and temperature that ``calibrate`` chose per layer and head (``[layer][head]``),
    averaged over the finished runs of one encoding and model at one test resolution (and log-n
    setting), with the number of runs; empty when no run has a ``calibrate`` cell."""
    import numpy as np

    found: dict[CalibrationKey, list[dict]] = {}
    for run in runs:
        if run.status != "ok":
            continue
        for m in run.metrics:
            if m.get("strategy") == "calibrate" and m.get("calibration"):
                key = (
                    str(run.run.get("pos_embed", "")),
                    str(run.run.get("model", "")),
                    int(m["resolution"]),
                    bool(m.get("logn")),
                )
                found.setdefault(key, []).append(m["calibration"])
    return {
        key: (
            np.mean([c["alpha"] for c in cals], axis=0).tolist(),
            np.mean([c["temperature"] for c in cals], axis=0).tolist(),
            len(cals),
        )
        for key, cals in sorted(found.items())
    }


def plot_calibration(runs: Sequence[RunResult], path: str | Path) -> Path | None:
    """``calibration.png``: the alpha ``calibrate`` chose per layer (rows) and head (columns), one
    panel per encoding, model, test resolution and log-n setting, averaged over runs
    (:func:`calibration_means`); each cell also names the mean temperature. Written atomically;
    ``None`` (nothing written) when no run has a ``calibrate`` cell."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    means = calibration_means(runs)
    if not means:
        return None
    fig = Figure(figsize=(2.8 * len(means) + 1.2, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(means), squeeze=False)[0]
    image = None
    for ax, ((encoding, model, res, logn), (alpha, temperature, n)) in zip(axes, means.items(), strict=True):
        image = ax.imshow(alpha, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        for layer, (a_row, t_row) in enumerate(zip(alpha, temperature, strict=True)):
            for head, (a, t) in enumerate(zip(a_row, t_row, strict=True)):
                ax.text(
                    head,
                    layer,
                    f"{a:.2f}\n{t:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="k" if a > 0.6 else "w",
                )
        ax.set_title(
            f"{encoding} ({model}) at {res}{' +logn' if logn else ''}, {n} run{'s' if n > 1 else ''}", fontsize=8
        )
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(len(alpha[0])))
        ax.set_yticks(range(len(alpha)))
    fig.colorbar(image, ax=list(axes), label="alpha (0 extrapolate, 1 interpolate)")
    fig.suptitle("calibrate: mean alpha (top line) and temperature (bottom line) per layer and head", fontsize=9)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    tmp.replace(path)
    return path
