"""A study across data regimes: every candidate against the best baseline, paired by seed.

    python -m vit_rope.report.paired SWEEP_DIR [SWEEP_DIR ...] --rows recipe --groups regime \
        --baseline ape_plain,ape_perturb,ape_multires [--out DIR]

Reads the finished runs under each directory (:func:`vit_rope.report.collect.collect_runs`, the
same reader as the comparison) and sorts them by two of their command-line overrides: ``--rows``
names the candidate (e.g. ``recipe=best``), ``--groups`` the regime (e.g. ``regime=full``). In
each regime the baseline is the ``--baseline`` candidate with the highest mean top-1 at twice
the training resolution (the strongest of them there, so a candidate is never measured against
a weak baseline). For each candidate and regime it reports, over seeds, the mean ± sample std
of top-1 at each test resolution, the retention (top-1 at a resolution over top-1 at the
training resolution, per seed), and the paired difference to the baseline: candidate minus
baseline of the same seed, then mean ± std over the seeds that both have. It writes
``paired.md``, ``paired.csv`` and ``paired.png`` into ``--out`` (default: the first directory).
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vit_rope.errors import ConfigError
from vit_rope.eval.results import atomic_write_text
from vit_rope.report.collect import collect_runs
from vit_rope.report.plot import series_styles
from vit_rope.report.tables import row_label


@dataclass
class Candidate:
    """One candidate in one regime: top-1 per seed and test resolution."""

    name: str  # the --rows override's value, with the evaluated strategy
    top1: dict[int, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))  # seed -> res -> top-1

    def mean(self, res: int) -> float | None:
        values = [by_res[res] for by_res in self.top1.values() if res in by_res]
        return statistics.fmean(values) if values else None


def _std(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:+.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:+.1f}"


def _level(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def gather(roots: Sequence[str | Path], rows: str, groups: str) -> tuple[dict[str, dict[str, Candidate]], int]:
    """``{regime: {candidate: Candidate}}`` and the training resolution, from the runs' overrides."""
    regimes: dict[str, dict[str, Candidate]] = defaultdict(dict)
    train_res: set[int] = set()
    for root in roots:
        for run in collect_runs(root):
            if run.status != "ok":
                continue
            # an evaluation of a checkpoint (eval.py) carries its training command's overrides too;
            # its own overrides win where both name a key
            trained = [str(o) for o in run.run.get("trained_with") or []]
            given = dict(o.lstrip("+").split("=", 1) for o in [*trained, *run.overrides] if "=" in o)
            if rows not in given or groups not in given:
                continue
            for m in run.metrics:
                if m.get("top1") is None:
                    continue
                name = f"{given[rows]} ({row_label(m['strategy'], bool(m.get('logn')))})"
                cand = regimes[given[groups]].setdefault(name, Candidate(name))
                cand.top1[int(run.run.get("seed", 0))][int(m["resolution"])] = float(m["top1"])
            train_res.add(int(run.run["train_resolution"]))
    if not regimes:
        raise ConfigError(
            f"No finished run under {', '.join(map(str, roots))} has both a {rows}= and a {groups}= override; "
            f"pass the sweep directories of a study run with {rows}=... {groups}=... on its command line."
        )
    if len(train_res) != 1:
        raise ConfigError(f"The runs were trained at several resolutions ({sorted(train_res)}); compare one at a time.")
    return regimes, train_res.pop()


def baseline_of(cands: dict[str, Candidate], baselines: Sequence[str], at: int) -> Candidate | None:
    """The ``baselines`` candidate with the highest mean top-1 at resolution ``at``."""
    pool = [c for n, c in cands.items() if n.split(" (")[0] in baselines and c.mean(at) is not None]
    return max(pool, key=lambda c: c.mean(at), default=None)


def paired(cand: Candidate, base: Candidate, res: int) -> list[float]:
    """Candidate minus baseline at ``res``, one value per seed that both have."""
    return [
        cand.top1[s][res] - base.top1[s][res]
        for s in sorted(cand.top1)
        if s in base.top1 and res in cand.top1[s] and res in base.top1[s]
    ]


def retention(cand: Candidate, res: int, train_res: int) -> list[float]:
    return [by[res] / by[train_res] for by in cand.top1.values() if res in by and by.get(train_res)]


def report(roots: Sequence[str | Path], rows: str, groups: str, baselines: Sequence[str], out: Path) -> dict[str, Path]:
    regimes, train_res = gather(roots, rows, groups)
    lines = [
        "# Candidates across data regimes, paired by seed",
        "",
        f"Top-1 (%) mean ± std over seeds; retention: top-1 over top-1 at {train_res} (the training "
        "resolution), per seed; Δ: candidate minus the regime's baseline of the same seed, mean ± std "
        f"over seeds. Baseline: the best of {', '.join(baselines)} at {2 * train_res}.",
    ]
    csv_rows = []
    per_regime: dict[str, dict[str, dict[int, float]]] = defaultdict(dict)  # candidate -> regime -> res -> mean Δ
    for regime in sorted(regimes):
        cands = regimes[regime]
        resolutions = sorted({r for c in cands.values() for by in c.top1.values() for r in by})
        ratios = [r for r in resolutions if r > train_res]
        base = baseline_of(cands, baselines, 2 * train_res)
        seeds = sorted({s for c in cands.values() for s in c.top1})
        lines += [
            "",
            f"## {groups}={regime} (seeds {', '.join(map(str, seeds))}; baseline: {base.name if base else '-'})",
            "",
        ]
        head = [f"{r}" + (" (train)" if r == train_res else "") for r in resolutions]
        head += [f"retention {r}" for r in ratios] + [f"Δ {r}" for r in resolutions]
        lines += ["| candidate | seeds | " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(head)]
        for name in sorted(cands, key=lambda n: -(cands[n].mean(2 * train_res) or 0)):
            c = cands[name]
            cells = [_level([by[r] for by in c.top1.values() if r in by]) for r in resolutions]
            cells += [_level(retention(c, r, train_res), 2) for r in ratios]
            cells += ["base" if c is base else _spread(paired(c, base, r)) if base else "-" for r in resolutions]
            lines.append(f"| {name} | {len(c.top1)} | " + " | ".join(cells) + " |")
            for r in resolutions:
                d = paired(c, base, r) if base and c is not base else []
                if c is base or d:
                    per_regime[name].setdefault(regime, {})[r] = statistics.fmean(d) if d else 0.0
                csv_rows.append(
                    {
                        groups: regime, "candidate": name, "resolution": r, "seeds": len(c.top1),
                        "top1_mean": c.mean(r), "top1_std": _std([by[r] for by in c.top1.values() if r in by]),
                        "retention_mean": statistics.fmean(retention(c, r, train_res) or [float("nan")]),
                        "baseline": base.name if base else "", "paired_diff_mean": statistics.fmean(d) if d else None,
                        "paired_diff_std": statistics.stdev(d) if len(d) > 1 else None,
                    }
                )  # fmt: skip
    lines += _overall(per_regime, sorted(regimes), groups, train_res)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "paired.md", "csv": out / "paired.csv", "png": out / "paired.png"}
    atomic_write_text(paths["md"], "\n".join(lines) + "\n")
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(csv_rows[0]))
        writer.writeheader()
        writer.writerows(csv_rows)
    _plot(regimes, train_res, baselines, groups, paths["png"])
    return paths


def _overall(
    per_regime: dict[str, dict[str, dict[int, float]]], regimes: list[str], groups: str, train_res: int
) -> list[str]:
    """The table over all regimes: per candidate and resolution, the mean over regimes of the
    regime's mean paired difference (the baseline of a regime counts 0 there) and the worst regime's.
    Rows are sorted by the worst regime at twice the training resolution, then the mean: a recipe
    meant to win on every data set is judged by the regime where it does worst."""
    if len(regimes) < 2:
        return []
    resolutions = sorted({r for by in per_regime.values() for rs in by.values() for r in rs})
    at = 2 * train_res
    head = [h for r in resolutions for h in (f"Δ {r} mean", f"Δ {r} worst")] + [f"ahead at {at}"]
    lines = [
        "",
        f"## Over all {groups}s ({', '.join(regimes)})",
        "",
        f"Δ: each {groups}'s mean paired difference to its baseline (0 where the candidate is that "
        f"baseline); mean and worst over the {groups}s; sorted by the worst at {at}. Candidates "
        f"missing from a {groups} are listed after the others.",
        "",
        f"| candidate | {groups}s | " + " | ".join(head) + " |",
        "|---|---:|" + "---:|" * len(head),
    ]

    def key(name: str) -> tuple:
        at_res = [rs[at] for rs in per_regime[name].values() if at in rs]
        complete = len(at_res) == len(regimes)
        return (not complete, -min(at_res, default=float("-inf")), -statistics.fmean(at_res or [float("-inf")]))

    for name in sorted(per_regime, key=key):
        by = per_regime[name]
        cells = []
        for r in resolutions:
            values = [rs[r] for rs in by.values() if r in rs]
            cells += [f"{statistics.fmean(values):+.1f}", f"{min(values):+.1f}"] if values else ["-", "-"]
        ahead = sum(rs.get(at, 0.0) > 0 for rs in by.values())
        lines.append(f"| {name} | {len(by)} | " + " | ".join(cells) + f" | {ahead} of {len(by)} |")
    return lines


def _plot(
    regimes: dict[str, dict[str, Candidate]], train_res: int, baselines: Sequence[str], groups: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = series_styles(sorted({n for c in regimes.values() for n in c}))
    fig, axes = plt.subplots(2, len(regimes), figsize=(4.2 * len(regimes), 7), squeeze=False)
    for col, regime in enumerate(sorted(regimes)):
        cands = regimes[regime]
        base = baseline_of(cands, baselines, 2 * train_res)
        top, bottom = axes[0][col], axes[1][col]
        for name, c in sorted(cands.items()):
            res = sorted({r for by in c.top1.values() for r in by})
            mean = [c.mean(r) for r in res]
            std = [
                statistics.stdev(v) if len(v := [by[r] for by in c.top1.values() if r in by]) > 1 else 0 for r in res
            ]
            colour, marker = styles[name]
            top.errorbar(res, mean, yerr=std, marker=marker, capsize=3, color=colour, label=name)
            if base is not None and c is not base:
                d = [paired(c, base, r) for r in res]
                bottom.errorbar(
                    res, [statistics.fmean(v) for v in d], yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in d],
                    marker=marker, capsize=3, color=colour,
                )  # fmt: skip
        top.axvline(train_res, color="grey", lw=0.8, ls=":")
        bottom.axhline(0, color="grey", lw=0.8)
        top.set_title(f"{groups}={regime}")
        top.set_ylabel("top-1 (%)")
        bottom.set_ylabel(f"Δ top-1 vs {base.name if base else '-'}" if col == 0 or base else "")
        bottom.set_xlabel("test resolution (pixels)")
    legend: dict[str, object] = {}  # every candidate once, also those of one regime only
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    labels, handles = list(legend), list(legend.values())
    ncol = min(4, len(labels))
    legend_rows = -(-len(labels) // ncol)
    fig.set_figheight(7 + 0.3 * legend_rows)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)
    fig.tight_layout(rect=(0, (0.3 * legend_rows + 0.2) / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vit_rope.report.paired", description=__doc__.split("\n")[0])
    parser.add_argument("roots", nargs="+", help="sweep directories (or any folders holding run directories)")
    parser.add_argument("--rows", default="recipe", help="the override that names a candidate (default: recipe)")
    parser.add_argument("--groups", default="regime", help="the override that names a regime (default: regime)")
    parser.add_argument("--baseline", default="ape", help="comma-separated candidates the baseline is the best of")
    parser.add_argument("--out", default=None, help="where to write paired.{md,csv,png} (default: the first root)")
    args = parser.parse_args(argv)
    try:
        paths = report(args.roots, args.rows, args.groups, args.baseline.split(","), Path(args.out or args.roots[0]))
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")
    print(paths["md"].read_text())
    print("Wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
