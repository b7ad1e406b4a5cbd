"""The Hydra callback that keeps a sweep's comparison up to date while it runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from vit_rope.eval.results import ERROR_FILE, atomic_write_text
from vit_rope.report.write import write_comparison

log = logging.getLogger(__name__)

# Runs of the last sweep in this process that failed or did not finish (read by train.py, which
# then exits non-zero, so that a script or a cluster array can tell).
_FAILED: list[str] = []


def sweep_failures() -> list[str]:
    """The failed or unfinished jobs of the sweep that ended in this process, as ``dir: error``;
    taken once, so that a later command in the same process does not report them again."""
    failed = list(_FAILED)
    _FAILED.clear()
    return failed


class ComparisonCallback(Callback):
    """Writes comparison.csv/.md/.png into the sweep directory; never fails a job or the sweep.

    Register with ``hydra.callbacks.comparison._target_: vit_rope.report.callback.ComparisonCallback``.
    Hydra skips ``on_multirun_end`` when a job raised (its sweeper re-raises after the batch),
    so with ``after_each_job`` the comparison is also rewritten after every job, and a job that
    raised without writing ``error.txt`` gets one holding the exception's type and first line.
    At the end it records the jobs that failed (:func:`sweep_failures`), so that ``train.py -m``
    exits with status 1 after writing the comparison. Anything that goes wrong here is logged.

    Args:
        after_each_job: Also rewrite the comparison after each multirun job.
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
                atomic_write_text(error_file, f"{type(e).__name__}: {first}\n" if first else f"{type(e).__name__}\n")
            if self.after_each_job:
                write_comparison(config.hydra.sweep.dir, echo=False)
        except Exception as e:  # the report must never fail a job
            log.warning("Could not update the comparison after this job: %s", e)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        try:
            write_comparison(config.hydra.sweep.dir)
            from vit_rope.report.collect import collect_runs

            _FAILED[:] = [
                f"{r.run_dir.name}: {r.error}"
                for r in collect_runs(config.hydra.sweep.dir)
                if r.status not in ("ok", "trained")
            ]
        except Exception as e:  # the report must never fail a sweep
            log.warning("Could not write the comparison for the sweep: %s", e)
