"""results.json files -> one comparison table and one plot (DESIGN section 5).

Point it at any directory tree of runs (a Hydra sweep directory, an ``outputs/`` folder, one
run)::

    python -m vit_rope.report multirun/2026-11-23/10-00-00

A run directory is one that holds ``results.json``, a Hydra ``.hydra/`` folder or an
``error.txt``. Runs without ``results.json`` are listed as ``failed`` (``error.txt``, whose first
line is the error) or ``unfinished`` (neither: still running, killed, or died before writing
anything); they are never dropped. Written next to the runs (or into ``out_dir``):

- ``comparison.csv``: one row per run x resolution x strategy x logn, plus one row per
  failed or unfinished run; columns are ``CSV_COLUMNS``.
- ``comparison.md``: one table per (data, model, mode, training resolution); rows are
  encoding and strategy (``+logn`` appended when the log-n scaling is on, ``extrapolate``
  rows first), columns are test resolutions, cells top-1 in percent (mean ± std over runs
  that share encoding, strategy and resolution); then the list of failed/unfinished runs.
- ``comparison.png``: top-1 against resolution, one line per encoding and strategy, the
  training resolution marked.

``ComparisonCallback`` does the same at the end of a Hydra multirun (and after each job, so
that a sweep aborted by a failing job still leaves a comparison that names the failure).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

from vit_rope.errors import ConfigError
from vit_rope.pos_embed import ENCODINGS
from vit_rope.rope import STRATEGIES

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
ERROR_FILE = "error.txt"
CSV_COLUMNS = (
    "run_dir", "pos_embed", "model", "data", "mode", "train_resolution", "seed",
    "resolution", "strategy", "logn", "top1", "top5", "loss", "n", "retention", "note",
    "status", "error",
)  # fmt: skip
OUTPUT_NAMES = {"csv": "comparison.csv", "md": "comparison.md", "png": "comparison.png"}
NO_RUNS_HINT = (
    "pass the sweep directory of a `python train.py -m ...` run (e.g. multirun/2026-11-23/10-00-00) "
    "or any folder that holds run directories with results.json"
)


class ResultsFormatError(ConfigError):
    """A results.json that does not follow the schema of DESIGN section 5 (the message names the file)."""


@dataclass
class RunResult:
    """One run directory: its ``run`` block, its metric rows and whether it finished."""

    run_dir: Path
    status: str  # "ok", "failed" (error.txt or a malformed results.json) or "unfinished"
    run: dict[str, Any] = field(default_factory=dict)  # results.json "run"; for failed runs read from .hydra/
    metrics: list[dict[str, Any]] = field(default_factory=list)  # results.json "metrics"; empty unless ok
    error: str = ""  # one sentence: why the run has no results

    @property
    def overrides(self) -> list[str]:
        return [str(o) for o in self.run.get("overrides") or []]

    @property
    def group(self) -> tuple[str, str, str, int | None]:
        """Runs are compared in one table only when these agree: (data, model, mode, train_resolution)."""
        r = self.run
        return (str(r.get("data", "")), str(r.get("model", "")), str(r.get("mode") or ""), r.get("train_resolution"))


# --------------------------------------------------------------------------- reading runs


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and check one ``results.json``; returns ``{"run": {...}, "metrics": [...]}``.

    Args:
        path: the file, or the run directory that holds it.

    Raises:
        ResultsFormatError: the file is missing, not JSON, or does not follow DESIGN section 5.
            Required: ``run.pos_embed``, ``run.model``, ``run.data`` (strings),
            ``run.train_resolution`` (int); per metric ``resolution`` (int), ``strategy`` (str),
            ``logn`` (bool) and ``top1`` (number, or null with a ``note`` such as "n/a").
            ``top5``, ``loss``, ``n``, ``retention`` may be absent or null, else numbers.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE

    def bad(what: str) -> ResultsFormatError:
        return ResultsFormatError(
            f"Malformed results file {path}: {what}; rewrite it with `python eval.py` or delete it."
        )

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsFormatError(f"No results file at {path}; run `python eval.py` for that run first.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"not readable as JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("run"), dict) or not isinstance(data.get("metrics"), list):
        raise bad('expected an object with "run" (an object) and "metrics" (a list)')
    run = data["run"]
    for key in ("pos_embed", "model", "data"):
        if not isinstance(run.get(key), str):
            raise bad(f"run.{key} must be a string, got {run.get(key)!r}")
    if not _is_int(run.get("train_resolution")):
        raise bad(f"run.train_resolution must be an integer, got {run.get('train_resolution')!r}")
    if not isinstance(run.get("overrides", []), list):
        raise bad(f"run.overrides must be a list, got {run.get('overrides')!r}")
    for i, m in enumerate(data["metrics"]):
        where = f"metrics[{i}]"
        if not isinstance(m, dict):
            raise bad(f"{where} must be an object")
        if not _is_int(m.get("resolution")):
            raise bad(f"{where}.resolution must be an integer, got {m.get('resolution')!r}")
        if not isinstance(m.get("strategy"), str):
            raise bad(f"{where}.strategy must be a string, got {m.get('strategy')!r}")
        if not isinstance(m.get("logn"), bool):
            raise bad(f"{where}.logn must be true or false, got {m.get('logn')!r}")
        if "top1" not in m or not (m["top1"] is None or _is_number(m["top1"])):
            raise bad(f"{where}.top1 must be a number or null, got {m.get('top1')!r}")
        if m["top1"] is None and not m.get("note"):
            raise bad(f'{where}.top1 is null without a "note" (such as "n/a") saying why')
        for key in ("top5", "loss", "n", "retention"):
            if m.get(key) is not None and not _is_number(m[key]):
                raise bad(f"{where}.{key} must be a number or null, got {m[key]!r}")
    return data


def _natural_key(path: Path) -> list:
    """Sort ``2_ape`` before ``10_ape``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _hydra_run_info(run_dir: Path) -> dict[str, Any]:
    """What a run without results.json was meant to be, from its ``.hydra/`` files (best effort)."""
    hydra_dir = run_dir / ".hydra"
    overrides = _read_yaml(hydra_dir / "overrides.yaml")
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    hydra_cfg = _read_yaml(hydra_dir / "hydra.yaml")
    choices = {}
    if isinstance(hydra_cfg, dict):
        choices = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    cfg = _read_yaml(hydra_dir / "config.yaml")
    cfg = cfg if isinstance(cfg, dict) else {}

    def select(*keys: str) -> Any:
        node: Any = cfg
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        return None if isinstance(node, str) and "${" in node else node  # unresolved interpolation

    plain = {}
    for o in overrides:  # "pos_embed=ape", "+seed=1", "~x" ...
        key, sep, value = o.lstrip("+~").partition("=")
        if sep:
            plain[key] = value
    pos_embed = select("pos_embed", "name")
    return {
        "pos_embed": pos_embed if isinstance(pos_embed, str) else choices.get("pos_embed", plain.get("pos_embed", "")),
        "model": choices.get("model", plain.get("model", "")),
        "data": choices.get("data", plain.get("data", "")),
        "mode": select("eval", "mode"),
        "train_resolution": select("data", "img_size"),
        "seed": select("seed"),
        "overrides": overrides,
    }


def _read_run(run_dir: Path) -> RunResult:
    results = run_dir / RESULTS_FILE
    if results.is_file():
        try:
            data = load_results(results)
        except ResultsFormatError as e:
            return RunResult(run_dir, "failed", _hydra_run_info(run_dir), [], str(e))
        return RunResult(run_dir, "ok", data["run"], data["metrics"])
    info = _hydra_run_info(run_dir)
    error_file = run_dir / ERROR_FILE
    if error_file.is_file():
        try:
            lines = [s.strip() for s in error_file.read_text(errors="replace").splitlines() if s.strip()]
        except OSError as e:
            lines = [f"{ERROR_FILE} unreadable ({e})"]
        return RunResult(run_dir, "failed", info, [], lines[0] if lines else f"empty {ERROR_FILE}")
    logs = sorted(p.name for p in run_dir.glob("*.log"))
    hint = f"; see {', '.join(logs)}" if logs else ""
    return RunResult(run_dir, "unfinished", info, [], f"no {RESULTS_FILE} (still running, or killed){hint}")


def collect_runs(root: str | Path) -> list[RunResult]:
    """Every run under ``root`` (``root`` itself included), finished or not, in natural path order.

    Raises:
        ConfigError: ``root`` does not exist, is not a directory, or holds no run at all.
    """
    root = Path(root)
    if root.is_file() and root.name == RESULTS_FILE:
        root = root.parent
    if not root.exists():
        raise ConfigError(f"Directory '{root}' does not exist; {NO_RUNS_HINT}.")
    if not root.is_dir():
        raise ConfigError(f"'{root}' is not a directory; {NO_RUNS_HINT}.")
    run_dirs = []
    for d in [root, *root.rglob("*")]:
        if not d.is_dir() or any(part.startswith(".") for part in d.relative_to(root).parts):
            continue  # .hydra/ and other hidden folders are parts of a run, not runs
        if (d / RESULTS_FILE).is_file() or (d / ".hydra").is_dir() or (d / ERROR_FILE).is_file():
            run_dirs.append(d)
    if not run_dirs:
        raise ConfigError(f"No runs under '{root}' (no {RESULTS_FILE}, .hydra/ or {ERROR_FILE} in it); {NO_RUNS_HINT}.")
    return [_read_run(d) for d in sorted(run_dirs, key=_natural_key)]


# --------------------------------------------------------------------------- tables


def _order(names: Sequence[str], known: Sequence[str]) -> list[str]:
    """Known names in their canonical order, then the others alphabetically."""
    rank = {n: i for i, n in enumerate(known)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def _label(strategy: str, logn: bool) -> str:
    return f"{strategy}+logn" if logn else strategy


def _rel(run_dir: Path, root: Path) -> str:
    rel = run_dir.relative_to(root).as_posix()
    return rel if rel != "." else run_dir.name or "."


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def comparison_rows(runs: Sequence[RunResult], root: str | Path) -> list[dict[str, Any]]:
    """The rows of ``comparison.csv``: one per metric row of each finished run, one per other run."""
    root = Path(root)
    rows = []
    for r in runs:
        base = {k: r.run.get(k) for k in ("pos_embed", "model", "data", "mode", "train_resolution", "seed")}
        base.update(run_dir=_rel(r.run_dir, root), status=r.status, error=r.error)
        for m in r.metrics or [{}]:
            row = dict(base)
            row.update(
                {k: m.get(k) for k in ("resolution", "strategy", "logn", "top1", "top5", "loss", "n", "retention")}
            )
            row["note"] = m.get("note")
            rows.append({k: _csv_value(row.get(k)) for k in CSV_COLUMNS})
    return rows


@dataclass
class _Table:
    """One comparison table: cells[(pos_embed, strategy, logn)][resolution] -> entries of all runs."""

    group: tuple[str, str, str, int | None]
    cells: dict[tuple[str, str, bool], dict[int, list[tuple[float | None, str]]]]
    seeds: list[Any]

    @property
    def resolutions(self) -> list[int]:
        return sorted({res for by_res in self.cells.values() for res in by_res})

    def keys(self) -> list[tuple[str, str, bool]]:
        """Row order: strategy (extrapolate first), logn off before on, then encoding."""
        strategies = _order([k[1] for k in self.cells], STRATEGIES)
        encodings = _order([k[0] for k in self.cells], list(ENCODINGS))
        return sorted(self.cells, key=lambda k: (strategies.index(k[1]), k[2], encodings.index(k[0])))

    def runs_per_cell(self) -> set[int]:
        return {sum(v is not None for v, _ in e) for by_res in self.cells.values() for e in by_res.values()} - {0}


def _tables(runs: Sequence[RunResult]) -> list[_Table]:
    groups: dict[tuple, _Table] = {}
    for r in runs:
        if r.status != "ok":
            continue
        table = groups.setdefault(r.group, _Table(r.group, defaultdict(lambda: defaultdict(list)), []))
        table.seeds.append(r.run.get("seed"))
        for m in r.metrics:
            key = (r.run["pos_embed"], m["strategy"], m["logn"])
            table.cells[key][m["resolution"]].append((m["top1"], m.get("note") or ""))
    return [groups[g] for g in sorted(groups, key=lambda g: tuple(str(x) for x in g))]


def _summary(entries: list[tuple[float | None, str]]) -> tuple[float | None, float | None, str]:
    """(mean, std or None, text) of one cell; std is the sample std (n - 1) over runs."""
    values = [float(v) for v, _ in entries if v is not None]
    if not values:
        notes = [n for _, n in entries if n]
        return None, None, notes[0] if notes else "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return mean, None, f"{mean:.1f}"
    std = statistics.stdev(values)
    return mean, std, f"{mean:.1f} ± {std:.1f}"


def _group_title(group: tuple[str, str, str, int | None]) -> str:
    data, model, mode, train_res = group
    parts = [p for p in (data, model, f"{mode} mode" if mode else "") if p]
    return " · ".join(parts) + f", trained at {train_res}"


def comparison_markdown(runs: Sequence[RunResult], root: str | Path) -> str:
    """The text of ``comparison.md``."""
    root = Path(root)
    counts = {s: sum(r.status == s for r in runs) for s in ("ok", "failed", "unfinished")}
    out = [
        f"# Position encodings at larger resolutions: {root.name or root}",
        "",
        f"{len(runs)} runs: {counts['ok']} finished, {counts['failed']} failed, {counts['unfinished']} unfinished.",
        "",
    ]
    for table in _tables(runs):
        res_list, train_res = table.resolutions, table.group[3]
        out += [f"## {_group_title(table.group)}", ""]
        out.append(
            "Top-1 accuracy (%) at each test resolution; `n/a`: the strategy does not apply to the encoding; "
            "`-`: not evaluated."
        )
        per_cell = table.runs_per_cell()
        if max(per_cell, default=1) > 1:
            n_runs = "-".join(str(n) for n in sorted({min(per_cell), max(per_cell)}))
            seeds = ", ".join(str(s) for s in sorted({s for s in table.seeds if s is not None}, key=str))
            out.append(
                f"Cells are mean ± std (sample std) over the {n_runs} runs that share encoding, strategy and "
                f"resolution (seeds {seeds or 'unknown'})."
            )
        out.append("")
        header = [f"{res} (train)" if res == train_res else str(res) for res in res_list]
        out.append("| encoding | strategy | " + " | ".join(header) + " |")
        out.append("|---|---|" + "---:|" * len(res_list))
        for key in table.keys():
            by_res = table.cells[key]
            cells = [_summary(by_res[res])[2] if res in by_res else "-" for res in res_list]
            out.append(f"| {key[0]} | {_label(key[1], key[2])} | " + " | ".join(cells) + " |")
        out.append("")
    if not any(r.status == "ok" for r in runs):
        out += ["No run has finished yet, so there is no table.", ""]
    others = [r for r in runs if r.status != "ok"]
    if others:
        out += [f"## Failed or unfinished runs ({len(others)})", ""]
        for r in others:
            overrides = " ".join(r.overrides) or "(no overrides)"
            error = r.error.replace("\n", " ")
            out.append(f"- `{_rel(r.run_dir, root)}` **{r.status}**: `{overrides}`: {error}")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- plot

_MARKERS = {"extrapolate": "o", "interpolate": "s", "ntk": "^", "yarn": "D"}


def plot_comparison(runs: Sequence[RunResult], path: str | Path) -> Path:
    """Write ``comparison.png``: top-1 against resolution, one panel per table, one line per row.

    Colour = encoding, marker = strategy, dashed = with log-n scaling; error bars = std over runs;
    ``n/a`` and missing points are not drawn; the training resolution is a dotted vertical line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display, no pyplot state
    from matplotlib.figure import Figure

    tables = _tables(runs)
    ncols = min(max(len(tables), 1), 2)
    nrows = max(math.ceil(len(tables) / ncols), 1)
    fig = Figure(figsize=(7.5 * ncols, 4.8 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    encodings = list(ENCODINGS)
    for ax, table in zip(axes[: len(tables)], tables, strict=True):
        data, model, _, train_res = table.group
        for key in table.keys():
            pos_embed, strategy, logn = key
            points = sorted((res, *_summary(e)[:2]) for res, e in table.cells[key].items())
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
                marker=_MARKERS.get(strategy, "x"),
                linestyle="--" if logn else "-",
                markersize=5,
                capsize=3,
                label=f"{pos_embed} · {_label(strategy, logn)}",
            )
        if train_res is not None:
            ax.axvline(train_res, color="0.4", linestyle=":", label=f"training resolution ({train_res})")
        ax.set_xticks(table.resolutions)
        ax.set_xlabel("sequence length" if "text" in data else "test resolution (pixels)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(_group_title(table.group))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    for ax in axes[len(tables) :]:
        ax.set_axis_off()
    if not tables:
        axes[0].text(0.5, 0.5, "no finished runs", ha="center", va="center")
    fig.suptitle("Top-1 accuracy against test resolution")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- entry points


def _write_text(path: Path, text: str) -> None:
    """Write atomically: a crash (or a second writer) never leaves half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_comparison(root: str | Path, out_dir: str | Path | None = None, echo: bool = True) -> dict[str, Path]:
    """Collect the runs under ``root`` and write comparison.csv, comparison.md and comparison.png.

    Args:
        root: a sweep directory or any directory tree of runs.
        out_dir: where to write (created if needed); default ``root``.
        echo: print the markdown to the terminal (rich).

    Returns:
        ``{"csv": path, "md": path, "png": path}``.

    Raises:
        ConfigError: ``root`` does not exist or holds no run.
    """
    root = Path(root)
    runs = collect_runs(root)
    if root.is_file():
        root = root.parent
    out = Path(out_dir) if out_dir is not None else root
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in OUTPUT_NAMES.items()}

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(comparison_rows(runs, root))
    _write_text(paths["csv"], buf.getvalue())
    markdown = comparison_markdown(runs, root)
    _write_text(paths["md"], markdown)
    plot_comparison(runs, paths["png"])
    if echo:
        from rich.console import Console
        from rich.markdown import Markdown

        console = Console()
        console.print(Markdown(markdown))
        console.print(f"Wrote {', '.join(str(p) for p in paths.values())}")
    return paths


class ComparisonCallback(Callback):
    """Hydra callback: writes the comparison into the sweep directory; never fails the sweep.

    Register with ``hydra.callbacks.comparison._target_: vit_rope.report.ComparisonCallback``.
    Hydra skips ``on_multirun_end`` when a job raised (its sweeper re-raises after the batch),
    so with ``after_each_job`` the comparison is also rewritten after every job, and a job that
    raised without writing ``error.txt`` gets one holding the exception's first line.

    Args:
        after_each_job: also rewrite the comparison after each multirun job.
    """

    def __init__(self, after_each_job: bool = True) -> None:
        self.after_each_job = after_each_job

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        try:
            from hydra.core.utils import JobStatus
            from hydra.types import RunMode

            if config.hydra.mode != RunMode.MULTIRUN:
                return
            error_file = Path(config.hydra.runtime.output_dir) / ERROR_FILE
            if job_return.status == JobStatus.FAILED and not error_file.exists():
                e = job_return._return_value  # .return_value would re-raise it
                first = (str(e).strip().splitlines() or [""])[0]
                _write_text(error_file, f"{type(e).__name__}: {first}\n" if first else f"{type(e).__name__}\n")
            if self.after_each_job:
                write_comparison(config.hydra.sweep.dir, echo=False)
        except Exception as e:  # the report must never fail a job
            log.warning("Could not update the comparison after this job: %s", e)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        try:
            write_comparison(config.hydra.sweep.dir)
        except Exception as e:  # the report must never fail a sweep
            log.warning("Could not write the comparison for the sweep: %s", e)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vit_rope.report",
        description="Build comparison.csv, comparison.md and comparison.png from a directory tree of runs.",
    )
    parser.add_argument("dir", help="a sweep directory (multirun/DATE/TIME) or any folder of runs")
    parser.add_argument("--out", default=None, help="where to write the three files (default: DIR)")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    args = parser.parse_args(argv)
    try:
        write_comparison(args.dir, out_dir=args.out, echo=not args.quiet)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
