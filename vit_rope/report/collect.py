"""Reading a tree of run directories: what each run was and what it measured, finished or not.

A run directory is one that holds ``results.json``, a Hydra ``.hydra/`` folder or an
``error.txt``. A run with a valid ``results.json`` is ``ok``; one with ``error.txt`` (whose first
line is the error) or a malformed ``results.json`` is ``failed``; one that finished training with
``evaluate=false`` (``trained.json``) is ``trained``; one with none of these is ``unfinished``
(still running, killed, or died before writing anything). No run is ever dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vit_rope.errors import ConfigError
from vit_rope.eval.results import ERROR_FILE, RESULTS_FILE, ResultsFormatError, atomic_write_text, load_results

# Written by train.py when training ends without an evaluation (evaluate=false): the run is done.
TRAINED_FILE = "trained.json"
NOT_EVALUATED = "trained, not evaluated (evaluate=false); python eval.py run_dir=DIR evaluates it"

NO_RUNS_HINT = (
    "pass the sweep directory of a `python train.py -m ...` run (e.g. multirun/2026-11-23/10-00-00) "
    "or any folder that holds run directories with results.json"
)


@dataclass
class RunResult:
    """One run directory: its ``run`` block, its metric rows and whether it finished."""

    run_dir: Path
    status: str  # "ok", "failed" (error.txt or a malformed results.json), "trained" or "unfinished"
    run: dict[str, Any] = field(default_factory=dict)  # results.json "run"; for other runs read from .hydra/
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

    @property
    def unit(self) -> str:
        """What the resolutions count: ``run.unit`` when given, else ``tokens`` for ``sequences``
        data and ``px`` for everything else."""
        unit = self.run.get("unit")
        if isinstance(unit, str) and unit:
            return unit
        return "tokens" if self.run.get("data") == "sequences" else "px"


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


def write_trained(run_dir: Path, run: dict[str, Any], val: dict[str, float], checkpoint: str | None) -> Path:
    """Mark ``run_dir`` as trained without an evaluation: its ``run`` block, the last validation
    metrics and the checkpoint holding the final weights."""
    record = {"run": run, "val": val, "checkpoint": checkpoint}
    return atomic_write_text(Path(run_dir) / TRAINED_FILE, json.dumps(record, indent=2) + "\n")


def _trained_run(run_dir: Path) -> RunResult | None:
    try:
        record = json.loads((run_dir / TRAINED_FILE).read_text())
    except (OSError, ValueError):
        return None
    run = record.get("run") if isinstance(record, dict) else None
    if not isinstance(run, dict):
        return None
    return RunResult(run_dir, "trained", {**_hydra_run_info(run_dir), **run}, [], NOT_EVALUATED)


def read_run(run_dir: str | Path) -> RunResult:
    """The one run in ``run_dir``: ``ok`` with its results, or ``failed``/``unfinished`` with the
    reason and what its ``.hydra/`` files say it was meant to be. Never raises for a bad run."""
    run_dir = Path(run_dir)
    results = run_dir / RESULTS_FILE
    if results.is_file():
        try:
            data = load_results(results)
        except ResultsFormatError as e:
            return RunResult(run_dir, "failed", _hydra_run_info(run_dir), [], str(e))
        return RunResult(run_dir, "ok", data["run"], data["metrics"])
    error_file = run_dir / ERROR_FILE
    if (run_dir / TRAINED_FILE).is_file() and not error_file.is_file() and (trained := _trained_run(run_dir)):
        return trained
    info = _hydra_run_info(run_dir)
    if error_file.is_file():
        try:
            lines = [s.strip() for s in error_file.read_text(errors="replace").splitlines() if s.strip()]
        except OSError as e:
            lines = [f"{ERROR_FILE} unreadable ({e})"]
        return RunResult(run_dir, "failed", info, [], lines[0] if lines else f"empty {ERROR_FILE}")
    logs = sorted(p.name for p in run_dir.glob("*.log"))
    hint = f"; see {', '.join(logs)}" if logs else ""
    return RunResult(run_dir, "unfinished", info, [], f"no {RESULTS_FILE} (still running, or killed){hint}")


def run_root(root: str | Path) -> Path:
    """The directory a report is about: ``root``, or the run directory of a ``results.json`` path."""
    root = Path(root)
    return root.parent if root.is_file() and root.name == RESULTS_FILE else root


def collect_runs(root: str | Path) -> list[RunResult]:
    """Every run under ``root`` (``root`` itself included), finished or not, in natural path order.

    Args:
        root: A sweep directory, any directory tree of runs, one run directory, or its ``results.json``.

    Raises:
        ConfigError: ``root`` does not exist, is not a directory, or holds no run at all.
    """
    root = run_root(root)
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
    return [read_run(d) for d in sorted(run_dirs, key=_natural_key)]
