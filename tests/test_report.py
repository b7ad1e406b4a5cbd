"""The comparison report: a tree of runs -> comparison.csv / .md / .png, and its Hydra callback."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from PIL import Image

from vit_rope.errors import ConfigError
from vit_rope.eval.results import add_retention
from vit_rope.report.callback import ComparisonCallback
from vit_rope.report.collect import collect_runs
from vit_rope.report.plot import comparison_figure
from vit_rope.report.write import write_comparison

RESOLUTIONS = (32, 48, 64)
TRAIN_RES = 32


def metric(res: int, strategy: str, logn: bool, top1: float | None) -> dict:
    if top1 is None:
        return {"resolution": res, "strategy": strategy, "logn": logn, "top1": None, "top5": None, "loss": None,
                "n": 100, "retention": None, "note": "n/a"}  # fmt: skip
    return {"resolution": res, "strategy": strategy, "logn": logn, "top1": top1, "top5": 99.0, "loss": 0.5,
            "n": 100, "retention": 1.0}  # fmt: skip


def make_job(
    sweep: Path, name: str, overrides: list[str], results: dict | None = None, error: str | None = None
) -> Path:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    pos_embed = overrides[0].split("=")[1]
    (job / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"seed": 0, "pos_embed": {"name": pos_embed}, "data": {"img_size": TRAIN_RES}})
    )
    (job / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump(
            {"hydra": {"runtime": {"choices": {"pos_embed": pos_embed, "model": "vit_micro", "data": "shapes"}}}}
        )
    )
    if results is not None:
        (job / "results.json").write_text(json.dumps(results))
    if error is not None:
        (job / "error.txt").write_text(error)
    return job


def results(pos_embed: str, metrics: list[dict], seed: int = 0) -> dict:
    """A results.json of ``metrics``, their retention computed as the evaluation does."""
    add_retention(metrics, TRAIN_RES)
    run = {"pos_embed": pos_embed, "model": "vit_micro", "data": "shapes", "mode": "zoom",
           "train_resolution": TRAIN_RES, "seed": seed, "overrides": [f"pos_embed={pos_embed}", f"seed={seed}"]}  # fmt: skip
    return {"run": run, "metrics": metrics}


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """rope_axial (every strategy, logn on and off), sincos (ntk/yarn n/a), one failed and one unfinished job."""
    sweep = tmp_path / "multirun" / "2026-11-23" / "10-00-00"
    rope = [
        metric(r, s, logn, 90.0 - (r - TRAIN_RES) / 4 * (1 + 0.1 * i) + (3.0 if logn else 0.0))
        for r in RESOLUTIONS
        for i, s in enumerate(("extrapolate", "interpolate", "ntk", "yarn"))
        for logn in (False, True)
    ]
    sincos = [
        metric(
            r,
            s,
            False,
            None if s in ("ntk", "yarn") else 80.0 - (r - TRAIN_RES) / 2 * (1.25 if s == "interpolate" else 1),
        )
        for r in RESOLUTIONS
        for s in ("extrapolate", "interpolate", "ntk", "yarn")
    ]
    make_job(sweep, "0_rope_axial", ["pos_embed=rope_axial"], results("rope_axial", rope))
    make_job(sweep, "1_sincos", ["pos_embed=sincos"], results("sincos", sincos))
    make_job(
        sweep,
        "2_ape",
        ["pos_embed=ape", "data.img_size=30"],
        error="Image size 30 is not divisible by the patch size 4; use a multiple of 4.\nTraceback ...",
    )
    make_job(sweep, "10_rope_mixed", ["pos_embed=rope_mixed"])  # killed: .hydra/ only
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def table_rows(md: str) -> list[list[str]]:
    """Body rows of every markdown table, as lists of cells."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|") and not ln.startswith("|---")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return [r for r in rows if r[0] != "encoding"]


def test_collect_runs_lists_failed_and_unfinished(sweep: Path) -> None:
    runs = collect_runs(sweep)
    assert [r.run_dir.name for r in runs] == ["0_rope_axial", "1_sincos", "2_ape", "10_rope_mixed"]
    assert [r.status for r in runs] == ["ok", "ok", "failed", "unfinished"]
    failed = runs[2]
    assert failed.error == "Image size 30 is not divisible by the patch size 4; use a multiple of 4."
    assert failed.overrides == ["pos_embed=ape", "data.img_size=30"]
    assert failed.run["pos_embed"] == "ape" and failed.run["train_resolution"] == TRAIN_RES
    assert runs[3].run["pos_embed"] == "rope_mixed" and "no results.json" in runs[3].error


def test_write_comparison(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    paths = write_comparison(sweep)
    assert set(paths) == {"csv", "md", "png"}  # no calibration.png: no run used calibrate
    assert all(p.parent == sweep and p.is_file() for p in paths.values())

    # csv: every metric row of the finished runs, plus one row per failed/unfinished run
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 4 * 2 + 3 * 4 + 2
    assert rows[0].keys() >= {"run_dir", "pos_embed", "resolution", "strategy", "logn", "top1", "status", "error"}
    na = [r for r in rows if r["note"] == "n/a"]
    assert len(na) == 3 * 2 and all(r["pos_embed"] == "sincos" and r["top1"] == "" for r in na)
    failed = [r for r in rows if r["status"] != "ok"]
    assert [(r["run_dir"], r["status"]) for r in failed] == [("2_ape", "failed"), ("10_rope_mixed", "unfinished")]
    assert failed[0]["error"].startswith("Image size 30")

    # md: one row per encoding x strategy(+logn), extrapolate rows first, n/a where it does not apply
    md = paths["md"].read_text()
    body = table_rows(md)
    labels = [(r[0], r[1]) for r in body]
    expected = {
        ("rope_axial", s + suffix) for s in ("extrapolate", "interpolate", "ntk", "yarn") for suffix in ("", "+logn")
    }
    expected |= {("sincos", s) for s in ("extrapolate", "interpolate", "ntk", "yarn")}
    assert len(labels) == len(set(labels)) == len(expected) and set(labels) == expected
    assert labels[:3] == [("sincos", "extrapolate"), ("rope_axial", "extrapolate"), ("rope_axial", "extrapolate+logn")]
    assert labels[-1] == ("rope_axial", "yarn+logn")
    assert "Top-1 accuracy (%) at each test resolution (pixels);" in md
    assert "| encoding | strategy | 32 (train) | 48 | 64 | retention 64 |" in md
    assert "Retention: top-1 at 64 over top-1 at the training resolution (same strategy)." in md
    cells = {(r[0], r[1]): r[2:] for r in body}
    assert cells[("sincos", "ntk")] == ["n/a"] * 4 and cells[("sincos", "yarn")] == ["n/a"] * 4
    assert cells[("rope_axial", "extrapolate")] == ["90.0", "86.0", "82.0", f"{82 / 90:.2f}"]
    assert cells[("rope_axial", "extrapolate+logn")] == ["93.0", "89.0", "85.0", f"{85 / 93:.2f}"]
    assert cells[("rope_axial", "yarn")] == ["90.0", "84.8", "79.6", f"{79.6 / 90:.2f}"]
    assert cells[("sincos", "extrapolate")] == ["80.0", "72.0", "64.0", "0.80"]
    assert cells[("sincos", "interpolate")] == ["80.0", "70.0", "60.0", "0.75"]
    assert "±" not in md
    failures = md.split("## Failed or unfinished runs (2)")[1]
    assert "`2_ape` **failed**: `pos_embed=ape data.img_size=30`: Image size 30 is not divisible" in failures
    assert "`10_rope_mixed` **unfinished**: `pos_embed=rope_mixed`" in failures
    assert "Traceback" not in md

    with Image.open(paths["png"]) as im:
        im.verify()
        assert im.format == "PNG" and im.size[0] > 0 and im.size[1] > 0
    assert "rope_axial" in capsys.readouterr().out  # the table went to the terminal


def lines_of(ax) -> dict:
    """The drawn lines of one panel by label (an errorbar container's first artist is its line)."""
    return {c.get_label(): c[0] for c in ax.containers}


def legend_texts(fig) -> list[str]:
    """The entries of the legends beside each block of panels, long ones unwrapped."""
    legends = [lg for sub in fig.subfigs for lg in sub.legends]
    return [" ".join(t.get_text().split()) for lg in legends for t in lg.get_texts()]


def test_comparison_figure(sweep: Path) -> None:
    """One panel per strategy with a shared y axis: a line per encoding and logn, n/a rows left
    out, colours by encoding, dashes for log-n, the training resolution marked."""
    fig = comparison_figure(collect_runs(sweep))
    assert [ax.get_title() for ax in fig.axes] == ["extrapolate", "interpolate", "ntk", "yarn"]
    assert fig.subfigs[0].get_suptitle() == "shapes · vit_micro · zoom mode, trained at 32"
    first = fig.axes[0]
    assert all(first.get_shared_y_axes().joined(first, ax) for ax in fig.axes[1:])
    assert first.get_xlabel() == "test resolution (pixels)"
    assert list(first.get_xticks()) == [32, 48, 64]
    panels = {ax.get_title(): lines_of(ax) for ax in fig.axes}
    both = {"rope_axial · {}", "rope_axial · {}+logn"}
    for strategy in ("extrapolate", "interpolate"):
        assert set(panels[strategy]) == {f.format(strategy) for f in both} | {f"sincos · {strategy}"}
    for strategy in ("ntk", "yarn"):  # n/a for sincos
        assert set(panels[strategy]) == {f.format(strategy) for f in both}
    assert panels["ntk"]["rope_axial · ntk+logn"].get_linestyle() == "--"
    assert panels["ntk"]["rope_axial · ntk"].get_linestyle() == "-"
    assert list(panels["interpolate"]["sincos · interpolate"].get_ydata()) == [80.0, 70.0, 60.0]
    assert list(panels["yarn"]["rope_axial · yarn"].get_ydata()) == pytest.approx([90.0, 84.8, 79.6])
    rope_colour = panels["extrapolate"]["rope_axial · extrapolate"].get_color()
    assert rope_colour != panels["extrapolate"]["sincos · extrapolate"].get_color()
    assert rope_colour == panels["yarn"]["rope_axial · yarn+logn"].get_color()  # colour is the encoding
    (train_line,) = [ln for ln in first.get_lines() if ln.get_label() == "training resolution (32)"]
    assert list(train_line.get_xdata()) == [32, 32]
    assert legend_texts(fig) == ["sincos", "rope_axial", "log-n off", "+logn"]


def test_identical_rows_are_drawn_once(tmp_path: Path) -> None:
    """APE's interpolate is its resampled extrapolate (the evaluation computes it once): its line
    is drawn in the extrapolate panel only, and the interpolate panel names it; an encoding whose
    interpolate differs keeps both lines."""

    def run(name: str, drop: float, interp_drop: float, logn_same: bool) -> list[dict]:
        rows = []
        for r in RESOLUTIONS:
            for s, d in (("extrapolate", drop), ("interpolate", interp_drop)):
                for logn in (False, True):
                    top1 = 90.0 - (r - TRAIN_RES) * d + (0.0 if logn_same or not logn else 1.0)
                    rows.append(metric(r, s, logn, top1) | {"loss": round(top1 / 100, 6)})
        return rows

    make_job(tmp_path, "0_ape", ["pos_embed=ape"], results("ape", run("ape", 0.5, 0.5, logn_same=False)))
    make_job(tmp_path, "1_rope", ["pos_embed=rope_axial"], results("rope_axial", run("rope", 0.2, 0.3, True)))
    fig = comparison_figure(collect_runs(tmp_path))
    extrapolate, interpolate = fig.axes
    assert (extrapolate.get_title(), interpolate.get_title()) == ("extrapolate", "interpolate")
    assert extrapolate.get_shared_y_axes().joined(extrapolate, interpolate)
    assert set(lines_of(extrapolate)) == {"ape · extrapolate", "ape · extrapolate+logn", "rope_axial · extrapolate"}
    assert set(lines_of(interpolate)) == {"rope_axial · interpolate"}
    every = [line for ax in fig.axes for line in lines_of(ax).values()]
    curves = [(line.get_color(), line.get_linestyle(), tuple(line.get_ydata())) for line in every]
    assert len(curves) == len(set(curves)) == 4  # no line drawn twice
    notes = " ".join(legend_texts(fig))
    assert "ape interpolate = extrapolate" in notes and "ape interpolate+logn = extrapolate+logn" in notes
    assert "rope_axial extrapolate+logn = extrapolate" in notes  # log-n changed nothing: one line
    assert "rope_axial interpolate" not in notes.replace("rope_axial interpolate+logn", "")


@pytest.mark.parametrize(
    ("data", "unit", "expected"),
    [
        ("sequences", None, "tokens"),  # inferred from the data
        ("sequences", "tokens", "tokens"),
        ("shapes", None, "pixels"),
        ("sequences", "px", "pixels"),  # the run's own unit wins
    ],
)
def test_text_run_axis_in_tokens(tmp_path: Path, data: str, unit: str | None, expected: str) -> None:
    """A text run's lengths are tokens, in the plot's x label and the markdown caption, not pixels."""
    run = results("rope1d", [metric(r, "extrapolate", False, 90.0 - r / 10) for r in (64, 128, 256)])
    run["run"].update(data=data, model="text_micro", train_resolution=64)
    if unit is not None:
        run["run"]["unit"] = unit
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(run))
    runs = collect_runs(tmp_path)
    assert runs[0].unit == ("tokens" if expected == "tokens" else "px")
    (ax,) = comparison_figure(runs).axes
    other = "pixels" if expected == "tokens" else "tokens"
    assert f"({expected})" in ax.get_xlabel() and other not in ax.get_xlabel()
    md = write_comparison(tmp_path, echo=False)["md"].read_text()
    (caption,) = [ln for ln in md.splitlines() if ln.startswith("Top-1 accuracy")]
    assert f"({expected})" in caption and other not in caption
    assert "| encoding | strategy | 64 (train) | 128 | 256 | retention 256 |" in md


def test_seeds_are_averaged(tmp_path: Path) -> None:
    for seed, top1 in ((0, 80.0), (1, 84.0)):
        m = [metric(TRAIN_RES, "extrapolate", False, top1), metric(64, "extrapolate", False, top1 - 10)]
        make_job(tmp_path, f"{seed}", ["pos_embed=rope_mixed", f"seed={seed}"], results("rope_mixed", m, seed=seed))
    md = write_comparison(tmp_path, out_dir=tmp_path / "report", echo=False)["md"].read_text()
    # mean 82.0, sample std sqrt(((80-82)^2 + (84-82)^2) / 1) = 2.83; retention 70/80 and 74/84
    retention = f"{(70 / 80 + 74 / 84) / 2:.2f} ± {abs(70 / 80 - 74 / 84) / 2**0.5:.2f}"
    assert table_rows(md) == [["rope_mixed", "extrapolate", "82.0 ± 2.8", "72.0 ± 2.8", retention]]
    assert "mean ± std (sample std) over the 2 runs" in md and "seeds 0, 1" in md
    # the plot draws the same mean with the std as error bars
    (ax,) = comparison_figure(collect_runs(tmp_path)).axes
    (bars,) = ax.containers
    line, _, (bar_lines,) = bars
    assert list(line.get_ydata()) == pytest.approx([82.0, 72.0])
    spans = [y for seg in bar_lines.get_segments() for y in (seg[0][1], seg[1][1])]
    assert spans == pytest.approx([82.0 - 2.828, 82.0 + 2.828, 72.0 - 2.828, 72.0 + 2.828], abs=1e-3)


def test_groups_differ_in_data(tmp_path: Path) -> None:
    a = results("rope_axial", [metric(TRAIN_RES, "extrapolate", False, 70.0)])
    b = results("rope_axial", [metric(TRAIN_RES, "extrapolate", False, 60.0)])
    b["run"]["data"] = "imagefolder"
    make_job(tmp_path, "0", ["pos_embed=rope_axial"], a)
    make_job(tmp_path, "1", ["pos_embed=rope_axial", "data=imagefolder"], b)
    md = write_comparison(tmp_path, echo=False)["md"].read_text()
    assert "## imagefolder · vit_micro · zoom mode, trained at 32" in md
    assert "## shapes · vit_micro · zoom mode, trained at 32" in md
    assert table_rows(md) == [["rope_axial", "extrapolate", "60.0"], ["rope_axial", "extrapolate", "70.0"]]


def test_malformed_results_listed_as_failed(tmp_path: Path) -> None:
    """A run whose results.json breaks the schema is a failed run naming the file, not dropped."""
    bad = results("rope_axial", [metric(TRAIN_RES, "extrapolate", False, 70.0)])
    bad["metrics"][0]["top1"] = None  # null without a note
    for name, text in (("0_null", json.dumps(bad)), ("1_garbled", "{not json")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(text)
    runs = collect_runs(tmp_path)
    assert [(r.run_dir.name, r.status) for r in runs] == [("0_null", "failed"), ("1_garbled", "failed")]
    assert 'results.json: metrics[0].top1 is null without a "note"' in runs[0].error
    assert "results.json: not readable as JSON" in runs[1].error
    md = write_comparison(tmp_path, echo=False)["md"].read_text()
    assert "2 runs: 0 finished, 2 failed, 0 unfinished." in md
    assert "No run has finished yet, so there is no table." in md
    assert "`1_garbled` **failed**: `(no overrides)`: Malformed results file" in md


def attention(res: int, depth: int = 2) -> dict:
    """Per-layer diagnostics of a made-up cell: entropy falls and distance grows with resolution."""
    return {
        "entropy": [0.9 - res / 1000 - 0.1 * i for i in range(depth)],
        "distance": [res / 16 + i for i in range(depth)],
    }


def test_attention_in_csv_and_plot(tmp_path: Path) -> None:
    """Rows with ``attention`` get its layer means in the CSV and a row of three panels in the
    plot (top-1, entropy, distance); n/a rows and old rows without the key stay empty."""
    rope = [
        metric(r, s, False, 90.0 - r / 8 - (r - TRAIN_RES) / 10 * (s == "yarn")) | {"attention": attention(r)}
        for r in RESOLUTIONS
        for s in ("extrapolate", "yarn")
    ]
    sincos = [metric(r, "extrapolate", False, 70.0) for r in RESOLUTIONS]  # written before the key existed
    sincos += [metric(r, "yarn", False, None) | {"attention": None} for r in RESOLUTIONS]
    make_job(tmp_path, "0_rope_axial", ["pos_embed=rope_axial"], results("rope_axial", rope))
    make_job(tmp_path, "1_sincos", ["pos_embed=sincos"], results("sincos", sincos))
    paths = write_comparison(tmp_path, echo=False)
    with open(paths["csv"]) as f:
        rows = {(r["pos_embed"], r["strategy"], r["resolution"]): r for r in csv.DictReader(f)}
    row = rows[("rope_axial", "yarn", "64")]
    assert float(row["attn_entropy"]) == pytest.approx(0.9 - 0.064 - 0.05, abs=1e-4)
    assert float(row["attn_distance"]) == pytest.approx(4.5, abs=1e-4)
    assert all(rows[("sincos", s, str(r))]["attn_entropy"] == "" for s in ("extrapolate", "yarn") for r in RESOLUTIONS)
    md = paths["md"].read_text()
    assert {tuple(r[:2]) for r in table_rows(md)} == {("rope_axial", "extrapolate"), ("rope_axial", "yarn"),
                                                      ("sincos", "extrapolate"), ("sincos", "yarn")}  # fmt: skip

    fig = comparison_figure(collect_runs(tmp_path))
    # rows top-1, entropy, distance; a column per strategy
    (top1, top1_yarn), (entropy, entropy_yarn), (distance, _) = zip(fig.axes[::2], fig.axes[1::2], strict=True)
    assert (top1.get_title(), top1_yarn.get_title()) == ("extrapolate", "yarn")
    assert top1.get_ylabel() == "top-1 accuracy (%)" and entropy.get_ylabel() == "entropy / log N"
    assert distance.get_ylabel() == "attention distance (patches)"
    assert entropy.get_shared_y_axes().joined(entropy, entropy_yarn)
    assert set(lines_of(entropy_yarn)) == {"rope_axial · yarn"}  # sincos recorded none
    assert list(lines_of(entropy_yarn)["rope_axial · yarn"].get_ydata()) == pytest.approx(
        [0.9 - r / 1000 - 0.05 for r in RESOLUTIONS]
    )
    dist = lines_of(distance)["rope_axial · extrapolate"]
    assert list(dist.get_ydata()) == pytest.approx([r / 16 + 0.5 for r in RESOLUTIONS])
    assert set(lines_of(top1)) == {"rope_axial · extrapolate", "sincos · extrapolate"}
    assert set(lines_of(top1_yarn)) == {"rope_axial · yarn"}  # sincos yarn is n/a everywhere
    assert legend_texts(fig)[:2] == ["sincos", "rope_axial"]
    with Image.open(paths["png"]) as im:
        im.verify()


def test_attention_key_is_checked(tmp_path: Path) -> None:
    """results.json's ``attention`` must be null or two per-layer lists of the same length;
    non-finite values are written as null."""
    from vit_rope.eval.results import load_results, write_results

    good = metric(TRAIN_RES, "extrapolate", False, 70.0) | {
        "attention": {"entropy": [0.5, float("nan")], "distance": [1.0, 2.0]}
    }
    path = write_results(tmp_path / "ok" / "results.json", results("rope_axial", [])["run"], [good])
    assert load_results(path)["metrics"][0]["attention"] == {"entropy": [0.5, None], "distance": [1.0, 2.0]}
    for i, att in enumerate(
        ({"entropy": [0.5]}, {"entropy": [0.5], "distance": [1.0, 2.0]}, [0.5], {"entropy": ["x"], "distance": [1.0]})
    ):
        bad = results("rope_axial", [metric(TRAIN_RES, "extrapolate", False, 70.0) | {"attention": att}])
        (tmp_path / f"bad{i}").mkdir()
        (tmp_path / f"bad{i}" / "results.json").write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=r"metrics\[0\]\.attention"):
            load_results(tmp_path / f"bad{i}")


def test_no_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No runs under") as err:
        collect_runs(tmp_path)
    assert "multirun/2026-11-23/10-00-00" in str(err.value)  # the fix
    target = tmp_path / "multirun" / "nope"
    with pytest.raises(ConfigError, match=f"Directory '{target}' does not exist") as err:
        write_comparison(target, echo=False)
    assert "multirun/2026-11-23/10-00-00" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_write_comparison_out_dir_quiet(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report"
    paths = write_comparison(sweep, out_dir=out, echo=False)
    assert paths == {"csv": out / "comparison.csv", "md": out / "comparison.md", "png": out / "comparison.png"}
    assert all(p.is_file() for p in paths.values())
    assert not list(sweep.glob("comparison.*"))
    assert capsys.readouterr().out == ""
    # the run directories are named relative to the sweep, wherever the files go
    assert "`2_ape` **failed**" in paths["md"].read_text()


def test_one_run_from_its_results_file(sweep: Path) -> None:
    run_file = sweep / "0_rope_axial" / "results.json"
    paths = write_comparison(run_file, echo=False)
    assert all(p.parent == run_file.parent for p in paths.values())
    md = paths["md"].read_text()
    assert "1 runs: 1 finished, 0 failed, 0 unfinished." in md
    assert {r[0] for r in table_rows(md)} == {"rope_axial"}


def test_callback_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Config:  # on_multirun_end only reads config.hydra.sweep.dir
        class hydra:
            class sweep:
                dir = str(tmp_path / "missing")

    ComparisonCallback().on_multirun_end(Config())
    assert "Could not write the comparison" in caplog.text and "does not exist" in caplog.text


def test_callback_in_hydra_sweep_with_failing_job(tmp_path: Path) -> None:
    """A real `-m` sweep where one job raises: Hydra skips on_multirun_end, the per-job update still
    leaves a comparison that names the failure."""
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            import json
            import hydra
            from hydra.core.hydra_config import HydraConfig

            @hydra.main(version_base=None, config_path=None)
            def main(cfg):
                if cfg.pos_embed == "bad":
                    raise ValueError("Unknown position encoding 'bad'; choose one of rope_axial, ape.")
                run = {"pos_embed": cfg.pos_embed, "model": "vit_micro", "data": "shapes",
                       "train_resolution": 32, "seed": 0, "overrides": list(HydraConfig.get().overrides.task)}
                metrics = [{"resolution": 32, "strategy": "extrapolate", "logn": False, "top1": 50.0,
                            "top5": 90.0, "loss": 1.0, "n": 10, "retention": 1.0}]
                out = HydraConfig.get().runtime.output_dir
                with open(out + "/results.json", "w") as f:
                    json.dump({"run": run, "metrics": metrics}, f)

            main()
            """
        )
    )
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            str(app),
            "-m",
            "+pos_embed=rope_axial,bad,ape",
            f"hydra.sweep.dir={sweep}",
            "+hydra.callbacks.comparison._target_=vit_rope.report.callback.ComparisonCallback",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode != 0  # Hydra re-raises the failed job after the batch
    md = (sweep / "comparison.md").read_text()
    assert [r[0] for r in table_rows(md)] == ["ape", "rope_axial"]
    assert "`1` **failed**: `+pos_embed=bad`: ValueError: Unknown position encoding 'bad'" in md
    assert (sweep / "comparison.png").is_file()


def test_a_sweep_over_another_setting_is_not_averaged_as_seeds(tmp_path: Path) -> None:
    """Jobs that differ in optim.lr are two rows; their seeds are averaged within each row."""
    for lr, base in (("1e-3", 80.0), ("3e-3", 60.0)):
        for seed in (0, 1):
            top1 = base + 2 * seed
            m = [metric(TRAIN_RES, "extrapolate", False, top1)]
            res = results("rope_axial", m, seed=seed)
            res["run"]["overrides"] = [f"optim.lr={lr}", f"seed={seed}", "pos_embed=rope_axial"]
            make_job(tmp_path, f"lr{lr}_s{seed}", ["pos_embed=rope_axial", f"optim.lr={lr}", f"seed={seed}"], res)
    paths = write_comparison(tmp_path, out_dir=tmp_path / "report", echo=False)
    rows = table_rows(paths["md"].read_text())
    assert rows == [
        ["rope_axial", "optim.lr=1e-3", "extrapolate", "81.0 ± 1.4"],
        ["rope_axial", "optim.lr=3e-3", "extrapolate", "61.0 ± 1.4"],
    ]
    csv_text = paths["csv"].read_text()
    assert "optim.lr=1e-3 seed=0 pos_embed=rope_axial" in csv_text  # the overrides column


def test_a_sweep_over_an_encoding_option_is_not_averaged_as_seeds(tmp_path: Path) -> None:
    """pos_embed.base splits rows like any other setting; the pos_embed choice itself does not."""
    for base_value, top1 in (("10", 70.0), ("100", 90.0)):
        res = results("rope_axial", [metric(TRAIN_RES, "extrapolate", False, top1)], seed=0)
        res["run"]["overrides"] = ["pos_embed=rope_axial", f"pos_embed.base={base_value}"]
        make_job(tmp_path, f"b{base_value}", res["run"]["overrides"], res)
    rows = table_rows(write_comparison(tmp_path, out_dir=tmp_path / "report", echo=False)["md"].read_text())
    assert [r[:2] for r in rows] == [["rope_axial", "pos_embed.base=10"], ["rope_axial", "pos_embed.base=100"]]


def test_calibration_png_averages_calibrates_choice_over_runs(tmp_path: Path) -> None:
    """Runs with a calibrate cell: calibration.png is written beside the comparison, and its
    numbers are the mean choice per layer and head over the runs of one encoding and resolution."""
    choices = [
        ([[0.0, 1.0], [0.5, 0.25]], [[1.0, 1.1], [0.9, 1.25]]),
        ([[1.0, 1.0], [0.0, 0.75]], [[1.0, 0.9], [1.1, 1.25]]),
    ]
    for seed, (alpha, temperature) in enumerate(choices):
        cal = metric(64, "calibrate", False, 50.0)
        cal["calibration"] = {"alpha": alpha, "temperature": temperature, "images": 16}
        make_job(tmp_path, f"{seed}_rope_axial", ["pos_embed=rope_axial", f"seed={seed}"],
                 results("rope_axial", [metric(TRAIN_RES, "calibrate", False, 60.0), cal], seed))  # fmt: skip
    paths = write_comparison(tmp_path, echo=False)
    assert paths["calibration"] == tmp_path / "calibration.png" and paths["calibration"].is_file()
    from vit_rope.report.plot import calibration_means

    ((key, (alpha, temperature, n)),) = calibration_means(collect_runs(tmp_path)).items()
    assert key == ("rope_axial", "vit_micro", 64, False) and n == 2
    assert sum(alpha, []) == pytest.approx([0.5, 1.0, 0.25, 0.5])  # layer by layer
    assert sum(temperature, []) == pytest.approx([1.0, 1.0, 1.0, 1.25])
