"""Issue 22.7-8: which runs share a comparison row, how the rows are labelled, and how the plot
draws them (repeated rows, the note, one panel for single-strategy rows)."""

from __future__ import annotations

from pathlib import Path

from tests.test_report import TRAIN_RES, make_job, metric, results, table_rows
from vit_rope.report.collect import collect_runs
from vit_rope.report.write import write_comparison


def test_display_only_overrides_do_not_split_rows_and_overrides_get_a_column(tmp_path: Path) -> None:
    """Issue 22.8: two seeds, one run with the progress bar off, a logger and an output folder of
    its own, are one row (mean ± std); a setting that changes the result (optim.lr) is a row of its
    own, with the override in an overrides column, not glued onto the encoding's name."""
    jobs = [
        (0, 80.0, ["seed=0"]),
        (1, 82.0, ["seed=1", "trainer.enable_progress_bar=false", "~callbacks.progress_bar", "logger=csv",
                   "hydra.run.dir=elsewhere"]),
        (0, 60.0, ["seed=0", "optim.lr=3e-3"]),
    ]  # fmt: skip
    for i, (seed, top1, overrides) in enumerate(jobs):
        res = results("rope_axial", [metric(TRAIN_RES, "extrapolate", False, top1)], seed=seed)
        res["run"]["overrides"] = ["pos_embed=rope_axial", *overrides]
        make_job(tmp_path, f"{i}_rope_axial", res["run"]["overrides"], res)
    md = write_comparison(tmp_path, out_dir=tmp_path / "report", echo=False)["md"].read_text()
    assert "| encoding | overrides | strategy | 32 (train) |" in md
    assert table_rows(md) == [
        ["rope_axial", "-", "extrapolate", "81.0 ± 1.4"],
        ["rope_axial", "optim.lr=3e-3", "extrapolate", "60.0"],
    ]


def test_a_table_without_differing_overrides_has_no_overrides_column(tmp_path: Path) -> None:
    for i, name in enumerate(("ape", "rope_axial")):
        res = results(name, [metric(TRAIN_RES, "extrapolate", False, 50.0 + i)])
        res["run"]["overrides"] = [f"pos_embed={name}", "trainer.enable_progress_bar=false"]
        make_job(tmp_path, f"{i}_{name}", res["run"]["overrides"], res)
    md = write_comparison(tmp_path, out_dir=tmp_path / "report", echo=False)["md"].read_text()
    assert "| encoding | strategy | 32 (train) |" in md
    assert [r[0] for r in table_rows(md)] == ["ape", "rope_axial"]
    assert len(collect_runs(tmp_path)) == 2
