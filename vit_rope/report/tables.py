"""The comparison as numbers: the rows of ``comparison.csv`` and the text of ``comparison.md``.

Finished runs are gathered into one :class:`Table` per (data, model, mode, training
resolution). A table's rows are encoding and strategy (``+logn`` appended when the log-n
scaling is on, ``extrapolate`` rows first), its columns test resolutions (in pixels, or tokens
for sequence data), its cells top-1 in percent: mean ± sample std over the runs that share
encoding, strategy and resolution; a last column holds the retention at the largest resolution
(top-1 there over top-1 at the training resolution, same strategy and logn; the mean of the
runs' recorded ``retention``). Failed and unfinished runs are listed after the tables.

The attention diagnostics of a metric row (``"attention"`` in results.json) enter the CSV as
their means over layers (``attn_entropy``, ``attn_distance``) and the tables as
``Table.attention``, which the plot draws next to top-1.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vit_rope.report.collect import RunResult

CSV_COLUMNS = (
    "run_dir", "pos_embed", "model", "data", "mode", "train_resolution", "seed",
    "resolution", "strategy", "logn", "top1", "top5", "loss", "n", "retention", "note",
    "status", "error", "attn_entropy", "attn_distance", "overrides",
)  # fmt: skip
AXIS_NAMES = {"px": "test resolution (pixels)", "tokens": "test sequence length (tokens)"}
GRID_STEPS = {"px": "patches", "tokens": "tokens"}  # what an attention distance counts, by unit
ATTENTION_KEYS = ("entropy", "distance")


def layer_mean(attention: Any, key: str) -> float | None:
    """Mean over layers of a metric row's ``attention[key]``; ``None`` when there is none."""
    if not isinstance(attention, dict) or not isinstance(attention.get(key), list):
        return None
    values = [float(v) for v in attention[key] if isinstance(v, int | float) and not isinstance(v, bool)]
    return sum(values) / len(values) if values else None


def axis_name(unit: str) -> str:
    """What a table's columns (and a plot's x axis) are, with their unit."""
    return AXIS_NAMES.get(unit, f"test size ({unit})")


def known_encodings() -> tuple[str, ...]:
    """Encoding names in display order (the models' registry; imported here so that reading
    results does not load the models until a table is ordered)."""
    from vit_rope.models.encodings import ENCODINGS

    return tuple(ENCODINGS)


def known_strategies() -> tuple[str, ...]:
    """Test-time strategy names in display order."""
    from vit_rope.extrapolate import STRATEGIES

    return tuple(STRATEGIES)


def _order(names: Sequence[str], known: Sequence[str]) -> list[str]:
    """Known names in their canonical order, then the others alphabetically."""
    rank = {n: i for i, n in enumerate(known)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def row_label(strategy: str, logn: bool) -> str:
    """``strategy``, or ``strategy+logn`` with the log-n scaling on."""
    return f"{strategy}+logn" if logn else strategy


def rel_name(run_dir: Path, root: Path) -> str:
    """How a run is named in the outputs: its path relative to the report's root."""
    rel = run_dir.relative_to(root).as_posix()
    return rel if rel != "." else run_dir.name or "."


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def comparison_rows(runs: Sequence[RunResult], root: str | Path) -> list[dict[str, Any]]:
    """The rows of ``comparison.csv`` (keys ``CSV_COLUMNS``, values as written): one per metric
    row of each finished run, one per failed or unfinished run."""
    root = Path(root)
    rows = []
    for r in runs:
        base = {k: r.run.get(k) for k in ("pos_embed", "model", "data", "mode", "train_resolution", "seed")}
        base.update(run_dir=rel_name(r.run_dir, root), status=r.status, error=r.error, overrides=" ".join(r.overrides))
        for m in r.metrics or [{}]:
            row = dict(base)
            row.update(
                {k: m.get(k) for k in ("resolution", "strategy", "logn", "top1", "top5", "loss", "n", "retention")}
            )
            row["note"] = m.get("note")
            for key in ATTENTION_KEYS:
                mean = layer_mean(m.get("attention"), key)
                row[f"attn_{key}"] = None if mean is None else round(mean, 4)
            rows.append({k: _csv_value(row.get(k)) for k in CSV_COLUMNS})
    return rows


Cell = list[tuple[float | None, str]]  # (top1 or None, note) of every run in one cell
AttentionCell = list[tuple[float, float]]  # (entropy, distance), means over layers, of every run that has them


@dataclass
class Table:
    """One comparison table: ``cells[(pos_embed, strategy, logn)][resolution]`` -> entries of all runs."""

    group: tuple[str, str, str, int | None]  # (data, model, mode, train_resolution)
    unit: str  # what the resolutions count: "px" or "tokens"
    cells: dict[tuple[str, str, bool], dict[int, Cell]]
    seeds: list[Any]
    attention: dict[tuple[str, str, bool], dict[int, AttentionCell]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    retention: dict[tuple[str, str, bool], dict[int, list[float | None]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    # (top1, top5, loss, n) of every run: rows of one encoding that agree in all of them at every
    # resolution are one computation (the evaluation computes cells equal by definition once)
    exact: dict[tuple[str, str, bool], dict[int, list[tuple]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    @property
    def has_attention(self) -> bool:
        return any(e for by_res in self.attention.values() for e in by_res.values())

    @property
    def resolutions(self) -> list[int]:
        return sorted({res for by_res in self.cells.values() for res in by_res})

    def keys(self) -> list[tuple[str, str, bool]]:
        """Row order: strategy (extrapolate first), logn off before on, then encoding."""
        strategies = _order([k[1] for k in self.cells], known_strategies())
        known = {n: i for i, n in enumerate(known_encodings())}
        encoding_rank = lambda label: (known.get(label.split(" (")[0], len(known)), label)  # noqa: E731
        return sorted(self.cells, key=lambda k: (strategies.index(k[1]), k[2], encoding_rank(k[0])))

    def runs_per_cell(self) -> set[int]:
        return {sum(v is not None for v, _ in e) for by_res in self.cells.values() for e in by_res.values()} - {0}

    @property
    def title(self) -> str:
        data, model, mode, train_res = self.group
        parts = [p for p in (data, model, f"{mode} mode" if mode else "") if p]
        return " · ".join(parts) + f", trained at {train_res}"


# Override keys that never split a row: the seed, the encoding's group choice (its own column),
# and settings that cannot change a result: Hydra's own and the output folders, loggers,
# progress bars and console output. An encoding option such as pos_embed.base does split rows.
NOT_A_VARIANT = ("seed", "pos_embed", "resume")
DISPLAY_ONLY = (
    "hydra",
    "logger",
    "callbacks.progress_bar",
    "callbacks.lr_monitor",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "data.cache_dir",
)


def _override_items(run: RunResult) -> dict[str, str]:
    items = {}
    for o in run.overrides:
        key, sep, value = o.lstrip("+~").partition("=")
        if o.startswith("~"):  # ~callbacks.progress_bar removes a setting: a variant unless display-only
            key, sep, value = o[1:], "=", "(removed)"
        display_only = any(key == k or key.startswith(f"{k}.") for k in DISPLAY_ONLY)
        if sep and key not in NOT_A_VARIANT and not display_only:
            items[key] = value
    return items


def split_label(label: str) -> tuple[str, str]:
    """(encoding, overrides) of a row label from :func:`variant_labels`."""
    encoding, _, overrides = label.partition(" (")
    return encoding, overrides[:-1].replace(", ", " ") if overrides else ""


def variant_labels(runs: Sequence[RunResult]) -> dict[Path, str]:
    """Row label of each run: its encoding, plus every override that differs between the runs
    (the seed excepted), so that a sweep over ``optim.lr`` or a recipe is not averaged as if
    its jobs were seeds; runs that differ only by seed share a label and are averaged."""
    items = {r.run_dir: _override_items(r) for r in runs}
    keys = sorted({k for d in items.values() for k in d})
    differing = [k for k in keys if len({d.get(k) for d in items.values()}) > 1]
    labels = {}
    for r in runs:
        extra = [f"{k}={items[r.run_dir][k]}" for k in differing if k in items[r.run_dir]]
        labels[r.run_dir] = r.run["pos_embed"] + (f" ({', '.join(extra)})" if extra else "")
    return labels


def comparison_tables(runs: Sequence[RunResult]) -> list[Table]:
    """The tables of the finished runs, ordered by group; runs of other statuses are left out.
    Rows are keyed by :func:`variant_labels`."""
    tables: dict[tuple, Table] = {}
    finished = [r for r in runs if r.status == "ok"]
    labels = variant_labels(finished)
    for r in finished:
        key = (*r.group, r.unit)
        table = tables.setdefault(key, Table(r.group, r.unit, defaultdict(lambda: defaultdict(list)), []))
        table.seeds.append(r.run.get("seed"))
        for m in r.metrics:
            strategy = m["strategy"] + ("+window" if m.get("window") else "")
            cell_key = (labels[r.run_dir], strategy, m["logn"])
            table.cells[cell_key][m["resolution"]].append((m["top1"], m.get("note") or ""))
            table.retention[cell_key][m["resolution"]].append(m.get("retention"))
            table.exact[cell_key][m["resolution"]].append((m["top1"], m.get("top5"), m.get("loss"), m.get("n")))
            ent, dist = (layer_mean(m.get("attention"), key) for key in ATTENTION_KEYS)
            if ent is not None and dist is not None:
                table.attention[cell_key][m["resolution"]].append((ent, dist))
    return [tables[k] for k in sorted(tables, key=lambda k: tuple(str(x) for x in k))]


def cell_summary(entries: Cell) -> tuple[float | None, float | None, str]:
    """(mean, std or None, text) of one cell; std is the sample std (n - 1) over runs. A cell
    without any number shows its first note (such as ``n/a``), else ``-``."""
    values = [float(v) for v, _ in entries if v is not None]
    if not values:
        notes = [n for _, n in entries if n]
        return None, None, notes[0] if notes else "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return mean, None, f"{mean:.1f}"
    std = statistics.stdev(values)
    return mean, std, f"{mean:.1f} ± {std:.1f}"


def retention_summary(values: list[float | None], top1: Cell) -> str:
    """Text of one retention cell: mean ± sample std of the runs' retention; ``n/a`` (or the
    top-1 cell's note) without any."""
    numbers = [float(v) for v in values if v is not None]
    if not numbers:
        return cell_summary(top1)[2] if top1 else "-"
    if len(numbers) == 1:
        return f"{numbers[0]:.2f}"
    return f"{statistics.fmean(numbers):.2f} ± {statistics.stdev(numbers):.2f}"


def _table_markdown(table: Table) -> list[str]:
    res_list, train_res = table.resolutions, table.group[3]
    top = max(res_list, default=None)
    retention_at = top if top is not None and top != train_res else None
    out = [f"## {table.title}", ""]
    out.append(
        f"Top-1 accuracy (%) at each {axis_name(table.unit)}; `n/a`: the strategy does not apply to the "
        "encoding; `-`: not evaluated."
        + (
            f" Retention: top-1 at {retention_at} over top-1 at the training resolution (same strategy)."
            if retention_at is not None
            else ""
        )
    )
    per_cell = table.runs_per_cell()
    if max(per_cell, default=1) > 1:
        n_runs = "-".join(str(n) for n in sorted({min(per_cell), max(per_cell)}))
        seeds = ", ".join(str(s) for s in sorted({s for s in table.seeds if s is not None}, key=str))
        out.append(
            f"Cells are mean ± std (sample std) over the {n_runs} runs that share encoding, overrides, "
            f"strategy and resolution (seeds {seeds or 'unknown'})."
        )
    out.append("")
    header = [f"{res} (train)" if res == train_res else str(res) for res in res_list]
    if retention_at is not None:
        header.append(f"retention {retention_at}")
    # the overrides that split rows get a column of their own (as in the CSV), when there are any
    with_overrides = any(split_label(k[0])[1] for k in table.keys())
    out.append("| encoding | " + ("overrides | " if with_overrides else "") + "strategy | " + " | ".join(header) + " |")
    out.append("|---|" + ("---|" if with_overrides else "") + "---|" + "---:|" * len(header))
    for key in table.keys():
        by_res = table.cells[key]
        cells = [cell_summary(by_res[res])[2] if res in by_res else "-" for res in res_list]
        if retention_at is not None:
            cells.append(retention_summary(table.retention[key].get(retention_at, []), by_res.get(retention_at, [])))
        encoding, overrides = split_label(key[0])
        first = f"| {encoding} | " + (f"{overrides or '-'} | " if with_overrides else "")
        out.append(first + f"{row_label(key[1], key[2])} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def comparison_markdown(runs: Sequence[RunResult], root: str | Path) -> str:
    """The text of ``comparison.md``: a count of runs by status, one table per group, then the
    failed and unfinished runs with their overrides and their one-line error."""
    root = Path(root)
    counts = {s: sum(r.status == s for r in runs) for s in ("ok", "trained", "failed", "unfinished")}
    trained = f", {counts['trained']} trained without evaluation" if counts["trained"] else ""
    out = [
        f"# Position encodings at larger resolutions: {root.name or root}",
        "",
        f"{len(runs)} runs: {counts['ok']} finished{trained}, {counts['failed']} failed, "
        f"{counts['unfinished']} unfinished.",
        "",
    ]
    for table in comparison_tables(runs):
        out += _table_markdown(table)
    if not any(r.status == "ok" for r in runs):
        out += ["No run has finished yet, so there is no table.", ""]
    if counts["trained"]:
        out += [f"## Trained without evaluation ({counts['trained']})", ""]
        for r in runs:
            if r.status == "trained":
                overrides = " ".join(r.overrides) or "(no overrides)"
                out.append(f"- `{rel_name(r.run_dir, root)}`: `{overrides}`: {r.error}")
        out.append("")
    others = [r for r in runs if r.status not in ("ok", "trained")]
    if others:
        out += [f"## Failed or unfinished runs ({len(others)})", ""]
        for r in others:
            overrides = " ".join(r.overrides) or "(no overrides)"
            error = r.error.replace("\n", " ")
            out.append(f"- `{rel_name(r.run_dir, root)}` **{r.status}**: `{overrides}`: {error}")
        out.append("")
    return "\n".join(out)
