"""One call from a tree of runs to the three comparison files (``python eval.py compare=DIR``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from vit_rope.eval.results import atomic_write_text
from vit_rope.report.collect import collect_runs, run_root
from vit_rope.report.plot import plot_calibration, plot_comparison
from vit_rope.report.tables import CSV_COLUMNS, comparison_markdown, comparison_rows

OUTPUT_NAMES = {"csv": "comparison.csv", "md": "comparison.md", "png": "comparison.png"}
CALIBRATION_PNG = "calibration.png"  # written beside them when a run has a calibrate cell


def write_comparison(root: str | Path, out_dir: str | Path | None = None, echo: bool = True) -> dict[str, Path]:
    """Collect the runs under ``root`` and write comparison.csv, comparison.md and comparison.png
    (and calibration.png when a run used ``calibrate``).

    Each file is written atomically; failed and unfinished runs are listed in the CSV and the
    markdown, never dropped.

    Args:
        root: A sweep directory, any directory tree of runs, one run directory or its results.json.
        out_dir: Where to write (created if needed); default the directory of the runs.
        echo: Print the markdown to the terminal (rich) and the paths written.

    Returns:
        ``{"csv": path, "md": path, "png": path}``, and ``"calibration"``: calibration.png
        (:func:`vit_rope.report.plot.plot_calibration`) when a run has a ``calibrate`` cell.

    Raises:
        ConfigError: ``root`` does not exist or holds no run; the message says what to pass.
    """
    runs = collect_runs(root)
    root = run_root(root)
    out = Path(out_dir) if out_dir is not None else root
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in OUTPUT_NAMES.items()}

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(comparison_rows(runs, root))
    atomic_write_text(paths["csv"], buf.getvalue())
    markdown = comparison_markdown(runs, root)
    atomic_write_text(paths["md"], markdown)
    plot_comparison(runs, paths["png"])
    calibration = plot_calibration(runs, out / CALIBRATION_PNG)  # only where a run used calibrate
    if calibration is not None:
        paths["calibration"] = calibration
    if echo:
        from rich.console import Console
        from rich.markdown import Markdown

        console = Console()
        console.print(Markdown(markdown))
        console.print(f"Wrote {', '.join(str(p) for p in paths.values())}")
    return paths
