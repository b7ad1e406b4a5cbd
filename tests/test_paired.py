"""The study report across data regimes: baseline choice, paired differences, retention, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from vit_rope.errors import ConfigError
from vit_rope.eval.results import add_retention
from vit_rope.report.paired import main, report

TRAIN = 64
# top-1 per (recipe, regime, seed) at 64, 128, 192: chosen so that the best APE differs by regime
TOP1 = {
    ("ape", "full", 0): (50.0, 48.0, 45.0), ("ape", "full", 1): (52.0, 49.0, 46.0),
    ("ape_perturb", "full", 0): (49.0, 49.0, 48.0), ("ape_perturb", "full", 1): (51.0, 51.0, 49.0),
    ("best", "full", 0): (53.0, 53.5, 52.0), ("best", "full", 1): (54.0, 54.0, 52.0),
    ("ape", "small", 0): (40.0, 39.0, 37.0), ("ape", "small", 1): (41.0, 40.0, 38.0),
    ("ape_perturb", "small", 0): (38.0, 37.0, 36.0), ("ape_perturb", "small", 1): (39.0, 38.0, 36.0),
    ("best", "small", 0): (39.0, 39.0, 39.0), ("best", "small", 1): (40.0, 42.0, 41.0),
}  # fmt: skip
STRATEGY = {"ape": "extrapolate", "ape_perturb": "extrapolate", "best": "interpolate"}


def write_run(job: Path, recipe: str, regime: str, seed: int, top1: tuple[float, ...]) -> None:
    metrics = [
        {"resolution": r, "strategy": STRATEGY[recipe], "logn": False, "top1": t, "top5": 99.0, "loss": 1.0, "n": 500}
        for r, t in zip((64, 128, 192), top1, strict=True)
    ]
    add_retention(metrics, TRAIN)
    run = {"pos_embed": "x", "model": "vit_mini", "data": "imagefolder", "mode": "zoom", "train_resolution": TRAIN,
           "seed": seed, "overrides": [f"regime={regime}", f"recipe={recipe}", f"seed={seed}", "eval.subset=500"]}  # fmt: skip
    job.mkdir(parents=True)
    (job / "results.json").write_text(json.dumps({"run": run, "metrics": metrics}))


@pytest.fixture
def sweeps(tmp_path: Path) -> list[Path]:
    roots = []
    for seed in (0, 1):
        root = tmp_path / f"seed{seed}"
        for i, ((recipe, regime, s), top1) in enumerate(TOP1.items()):
            if s == seed:
                write_run(root / f"{i}_{recipe}", recipe, regime, seed, top1)
        roots.append(root)
    return roots


def test_baseline_is_the_best_ape_of_each_regime_and_differences_are_paired(sweeps: list[Path], tmp_path: Path):
    paths = report(sweeps, "recipe", "regime", ["ape", "ape_perturb"], tmp_path / "out")
    rows = list(csv.DictReader(open(paths["csv"])))
    by = {(r["regime"], r["candidate"], int(r["resolution"])): r for r in rows}
    # at 128 (2x) ape_perturb is the better APE on "full" (50.0 vs 48.5), ape on "small" (39.5 vs 37.5)
    assert by[("full", "best (interpolate)", 128)]["baseline"] == "ape_perturb (extrapolate)"
    assert by[("small", "best (interpolate)", 128)]["baseline"] == "ape (extrapolate)"
    # paired by seed: best - ape_perturb at 192 on full = (52-48, 52-49) -> mean 3.5, std 0.707
    d = by[("full", "best (interpolate)", 192)]
    assert float(d["paired_diff_mean"]) == pytest.approx(3.5)
    assert float(d["paired_diff_std"]) == pytest.approx(0.7071, abs=1e-3)
    # retention per seed, then the mean: best on small at 128 = mean(39/39, 42/40)
    assert float(by[("small", "best (interpolate)", 128)]["retention_mean"]) == pytest.approx((1.0 + 1.05) / 2)
    md = paths["md"].read_text()
    assert "## regime=full (seeds 0, 1; baseline: ape_perturb (extrapolate))" in md
    assert "+3.5 ± 0.7" in md
    with Image.open(paths["png"]) as img:
        assert img.size[0] > 400 and img.size[1] > 300


def test_no_study_runs_is_one_sentence_with_exit_2(tmp_path: Path, capsys):
    write_run(tmp_path / "job", "ape", "full", 0, (1.0, 1.0, 1.0))
    with pytest.raises(ConfigError) as err:
        report([tmp_path], "recipe", "dataset", ["ape"], tmp_path)
    assert "dataset=" in str(err.value) and "override" in str(err.value)
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--groups", "dataset"])
    assert exit_.value.code == 2
    assert "dataset=" in capsys.readouterr().err


def test_an_evaluation_of_a_checkpoint_is_sorted_by_its_training_overrides(sweeps: list[Path], tmp_path: Path):
    """eval.py of a study checkpoint with another strategy: recipe= and regime= come from the
    training command (run.trained_with), so the new strategy is a row of its own, paired by seed."""
    for seed, top1 in ((0, (53.0, 55.0, 54.0)), (1, (54.0, 55.0, 53.0))):
        job = tmp_path / "evals" / f"best_full_s{seed}"
        write_run(job, "best", "full", seed, top1)
        data = json.loads((job / "results.json").read_text())
        data["run"]["trained_with"] = data["run"]["overrides"]
        data["run"]["overrides"] = ["ckpt_path=x", "eval.strategies=[ensemble]"]
        for m in data["metrics"]:
            m["strategy"] = "ensemble"
        (job / "results.json").write_text(json.dumps(data))
    paths = report([*sweeps, tmp_path / "evals"], "recipe", "regime", ["ape", "ape_perturb"], tmp_path / "out")
    by = {(r["regime"], r["candidate"], int(r["resolution"])): r for r in csv.DictReader(open(paths["csv"]))}
    d = by[("full", "best (ensemble)", 128)]
    assert d["baseline"] == "ape_perturb (extrapolate)"
    assert float(d["paired_diff_mean"]) == pytest.approx(((55 - 49) + (55 - 51)) / 2)


def test_the_table_over_all_regimes_ranks_by_the_worst_regime(sweeps: list[Path], tmp_path: Path):
    """best: +3.75 at 128 on full (against ape_perturb), +1.0 on small (against ape); ape is the
    baseline on small (0) and -1.5 on full; ape_perturb 0 on full and -2.0 on small."""
    md = report(sweeps, "recipe", "regime", ["ape", "ape_perturb"], tmp_path / "out")["md"].read_text()
    table = md.split("## Over all regimes (full, small)")[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "candidate" not in line]
    assert [r.split(" | ")[0] for r in rows] == [
        "| best (interpolate)",
        "| ape (extrapolate)",
        "| ape_perturb (extrapolate)",
    ]
    cells = rows[0].split(" | ")
    # columns: candidate, regimes, Δ64 mean, Δ64 worst, Δ128 mean, Δ128 worst, Δ192 mean, Δ192 worst, ahead
    assert cells[4:6] == ["+2.4", "+1.0"]
    assert rows[0].endswith("| 2 of 2 |")
    assert rows[1].split(" | ")[4:6] == ["-0.8", "-1.5"] and rows[1].endswith("| 0 of 2 |")


def test_every_series_of_a_plot_has_its_own_colour_and_marker():
    """The study's plot has 12 candidates; matplotlib's cycle has 10 colours, so the 11th would
    look like the 1st: past ten, the marker changes."""
    from vit_rope.report.plot import series_styles

    styles = series_styles([f"candidate {i}" for i in range(25)])
    assert len(set(styles.values())) == 25
    assert styles["candidate 0"][0] == styles["candidate 10"][0]  # same colour, so ...
    assert styles["candidate 0"][1] != styles["candidate 10"][1]  # ... another marker
