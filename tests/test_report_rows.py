"""Issue 22.7-8: which runs share a comparison row, how the rows are labelled, and how the plot
draws them (repeated rows, the note, one panel for single-strategy rows)."""

from __future__ import annotations

import warnings
from pathlib import Path

from tests.conftest import ROOT
from tests.test_report import RESOLUTIONS, TRAIN_RES, legend_texts, lines_of, make_job, metric, results, table_rows
from vit_rope.report.collect import collect_runs
from vit_rope.report.plot import LEGEND_WIDTH, comparison_figure
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


def attention(top1: float, shift: float) -> dict:
    return {"entropy": [0.5 + top1 / 1000 + shift, 0.6], "distance": [2.0 + top1 / 100 + shift, 3.0]}


def long_label_runs(root: Path, diagnostics_differ: bool) -> None:
    """Two APE runs whose labels differ by several overrides; interpolate repeats extrapolate's
    top-1 (as APE's does), and its attention diagnostics too unless ``diagnostics_differ``."""
    variants = (
        ["optim.lr=1e-3", "model.depth=6", "data.train_resolutions=[48,64,80]", "model.logn_attention=true"],
        ["optim.lr=3e-3", "model.depth=4", "data.train_resolutions=[32]", "model.logn_attention=false"],
    )
    for i, extra in enumerate(variants):
        rows = []
        for r in RESOLUTIONS:
            for s in ("extrapolate", "interpolate"):
                top1 = 90.0 - (r - TRAIN_RES) * (0.4 + 0.1 * i)
                shift = 0.1 if diagnostics_differ and s == "interpolate" else 0.0
                rows.append(metric(r, s, False, top1) | {"attention": attention(top1, shift)})
        res = results("ape", rows)
        res["run"]["overrides"] = ["pos_embed=ape", *extra]
        make_job(root, f"{i}_ape", res["run"]["overrides"], res)


def test_long_labels_and_the_drawn_once_note_stay_beside_the_panels(tmp_path: Path) -> None:
    """Issue 22.7: with long row labels the layout holds (no collapsed axes, panels of one width),
    the "drawn once" note is in the legend beside the panels, not over a plotted line, and long
    entries are wrapped."""
    long_label_runs(tmp_path, diagnostics_differ=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "constrained_layout not applied" and the like
        fig = comparison_figure(collect_runs(tmp_path))
        fig.canvas.draw()
    assert not [t for ax in fig.axes for t in ax.texts]  # nothing written inside a panel
    notes = legend_texts(fig)
    assert "drawn once (same numbers):" in notes
    assert any(
        n.startswith("ape (data.train_resolutions=[32]") and n.endswith("interpolate = extrapolate") for n in notes
    )
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.subfigs[0].legends
    assert max(len(line) for t in legend.get_texts() for line in t.get_text().splitlines()) <= LEGEND_WIDTH
    box = legend.get_window_extent(renderer)
    widths = {round(ax.get_window_extent(renderer).width) for ax in fig.axes}
    assert len(widths) == 1 and widths.pop() > 0.2 * fig.bbox.width  # no panel squeezed
    assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)


def test_rows_equal_in_top1_but_not_in_diagnostics_are_all_drawn(tmp_path: Path) -> None:
    """Issue 22.7: interpolate repeats extrapolate's top-1 but not its attention: it is drawn in
    every panel (top-1 too), and the legend says nothing was drawn once."""
    long_label_runs(tmp_path, diagnostics_differ=True)
    fig = comparison_figure(collect_runs(tmp_path))
    top1_interpolate, entropy_interpolate, distance_interpolate = fig.axes[1::2]
    for ax in (top1_interpolate, entropy_interpolate, distance_interpolate):
        assert len(lines_of(ax)) == 2, ax.get_ylabel()
    assert "drawn once (same numbers):" not in legend_texts(fig)


def test_a_recipe_sweep_is_drawn_on_one_panel(tmp_path: Path) -> None:
    """Issue 22.7: each recipe evaluates its own strategy; the rows share one panel, each labelled
    with its strategy, instead of one panel per strategy."""
    for i, (recipe, encoding, strategy, drop) in enumerate(
        (("ape", "ape", "extrapolate", 0.3), ("best", "rope_axial", "interpolate", 0.1))
    ):
        res = results(encoding, [metric(r, strategy, False, 60.0 - (r - TRAIN_RES) * drop) for r in RESOLUTIONS])
        res["run"]["overrides"] = [f"recipe={recipe}"]
        make_job(tmp_path, f"{i}_{encoding}", [f"pos_embed={encoding}", f"recipe={recipe}"], res)
    fig = comparison_figure(collect_runs(tmp_path))
    (panel,) = fig.axes
    assert set(lines_of(panel)) == {"ape (recipe=ape) · extrapolate", "rope_axial (recipe=best) · interpolate"}
    assert legend_texts(fig) == ["ape (recipe=ape) · extrapolate", "rope_axial (recipe=best) · interpolate"]


def test_the_readme_sweep_table_is_in_the_tools_format(tmp_path: Path) -> None:
    """Issue 22.9: the README's rows of the six-encoding sweep, fed back through the report as
    results, come out with the same labels in the same order (the tool prints no "(table
    resampled)", and orders rows by strategy, then encoding)."""
    readme = (ROOT / "README.md").read_text().split("## Sweeping encodings")[1].split("\n## ")[0]
    table = readme.split("| encoding | strategy | 32 (train) | 48 | 64 |")[1].split("\n\n")[0]
    rows = table_rows("| encoding | strategy |\n" + table)
    assert len(rows) >= 10
    by_encoding: dict[str, list[dict]] = {}
    for encoding, strategy, *cells in rows:
        for res, cell in zip(RESOLUTIONS, cells, strict=True):
            by_encoding.setdefault(encoding, []).append(metric(res, strategy, False, float(cell)))
    for i, (encoding, metrics) in enumerate(by_encoding.items()):
        make_job(tmp_path, f"{i}_{encoding}", [f"pos_embed={encoding}"], results(encoding, metrics))
    md = write_comparison(tmp_path, out_dir=tmp_path / "report", echo=False)["md"].read_text()
    assert [r[:5] for r in table_rows(md)] == rows
