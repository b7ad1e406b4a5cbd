"""The comparison report: a tree of run directories -> comparison.csv, comparison.md, comparison.png.

Point ``python eval.py compare=DIR`` (or :func:`write_comparison`) at any directory tree of
runs: a Hydra sweep directory, an ``outputs/`` folder, one run. The three files are written
next to the runs (or into ``out_dir``):

- ``comparison.csv``: one row per run x resolution x strategy x logn, plus one row per
  failed or unfinished run; columns are ``CSV_COLUMNS``.
- ``comparison.md``: one table per (data, model, mode, training resolution); rows are
  encoding and strategy, columns test resolutions (pixels, or tokens for sequence data),
  cells top-1 in percent (mean ± std over runs that share a cell), and the retention at the
  largest resolution; then the list of failed and unfinished runs.
- ``comparison.png``: top-1 against resolution, one panel per strategy with a shared y axis,
  encodings as colours and log-n as a dashed line, rows that repeat another row's numbers drawn
  once, the training resolution marked; when the runs recorded attention diagnostics, two more
  rows of panels per table: the mean attention entropy and distance (means over layers)
  against resolution. The CSV has the same two means as ``attn_entropy`` and ``attn_distance``.

:class:`ComparisonCallback` does the same at the end of a Hydra multirun, and after each job.

Modules: ``collect`` (reading run directories), ``tables`` (CSV rows, markdown), ``plot``
(the figure), ``write`` (the three files), ``callback`` (the Hydra callback). The results.json
schema lives in :mod:`vit_rope.eval.results`.
"""

from vit_rope.report.callback import ComparisonCallback
from vit_rope.report.collect import RunResult, collect_runs, read_run
from vit_rope.report.plot import comparison_figure, plot_comparison
from vit_rope.report.tables import CSV_COLUMNS, comparison_markdown, comparison_rows, comparison_tables
from vit_rope.report.write import OUTPUT_NAMES, write_comparison

__all__ = [
    "CSV_COLUMNS",
    "OUTPUT_NAMES",
    "ComparisonCallback",
    "RunResult",
    "collect_runs",
    "comparison_figure",
    "comparison_markdown",
    "comparison_rows",
    "comparison_tables",
    "plot_comparison",
    "read_run",
    "write_comparison",
]
