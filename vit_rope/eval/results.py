"""``results.json``: the one schema every run writes and every report reads, in one place.

A run directory holds ``results.json`` when it finished, ``error.txt`` when it failed with a
clear error, and Hydra's ``.hydra/`` folder either way. ``results.json`` is::

    {"run": {"pos_embed": str, "model": str, "data": str, "train_resolution": int,
             "mode": str, "seed": int, "overrides": [str, ...], ...},
     "metrics": [{"resolution": int, "strategy": str, "logn": bool,
                  "top1": float | null, "top5": float | null, "loss": float | null,
                  "n": int, "retention": float | null, "note": "n/a"  (only when top1 is null),
                  "attention": {"entropy": [float | null, ...], "distance": [float | null, ...]} | null},
                 ...]}

``top1``/``top5`` are in percent; ``retention`` is top-1 divided by top-1 at the training
resolution with the same strategy and logn. A row evaluated with local attention
(``eval.window``) carries ``"window": true``. ``attention`` (optional; files written before it
existed lack it) holds the attention diagnostics of :mod:`vit_rope.eval.diagnostics`, one value
per layer, over the first ``eval.diagnostics_images`` validation samples: ``entropy`` is the
mean attention entropy of the grid queries divided by ``log N`` (in [0, 1]), ``distance`` the
mean attention-weighted distance to the grid keys in grid steps (patches, or tokens); it is
``null`` for an n/a cell and when the diagnostics are off. ``run`` may also hold ``weights``
(``last``, ``best`` or ``ema``: which weights were evaluated), ``checkpoint`` (the file name they
came from) and, for a timm model, ``data_config`` (its mean, std, interpolation and crop_pct);
files written before these existed lack them. Extra keys (per metric or in
``run``) are allowed, so that a newer writer stays readable by an older reader.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from vit_rope.errors import ConfigError

RESULTS_FILE = "results.json"
ERROR_FILE = "error.txt"
CONFIG_TREE_FILE = "config_tree.txt"


class ResultsFormatError(ConfigError):
    """A results.json that does not follow the schema above (the message names the file)."""


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename, so that a crash or a
    second writer never leaves half a file. Creates the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _finite(v: Any) -> Any:
    """``v`` with every non-finite float in it (nested lists and dicts included) made ``None``."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def write_results(path: str | Path, run: dict, metrics: list[dict]) -> Path:
    """Write ``results.json`` atomically; non-finite floats become ``null``."""
    return atomic_write_text(path, json.dumps({"run": run, "metrics": _finite(list(metrics))}, indent=2))


def add_retention(rows: list[dict], train_resolution: int) -> None:
    """Set ``retention`` = top-1 / top-1 at the training resolution with the same strategy and logn."""
    base = {
        (r["strategy"], r["logn"], r.get("window", False)): r["top1"]
        for r in rows
        if r["resolution"] == train_resolution and r["top1"] is not None
    }
    for r in rows:
        ref = base.get((r["strategy"], r["logn"], r.get("window", False)))
        r["retention"] = None if r["top1"] is None or not ref else round(r["top1"] / ref, 4)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and check one ``results.json``; returns ``{"run": {...}, "metrics": [...]}``.

    Args:
        path: The file, or the run directory that holds it.

    Raises:
        ResultsFormatError: The file is missing, not JSON, or does not follow the schema above.
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
        problem = _attention_problem(m.get("attention"))
        if problem:
            raise bad(f"{where}.attention {problem}")
    return data


def _attention_problem(att: Any) -> str | None:
    """Why a metric row's ``attention`` does not follow the schema, or ``None`` if it does
    (absent and ``null`` are fine)."""
    if att is None:
        return None
    if not isinstance(att, dict):
        return f'must be an object with "entropy" and "distance" lists, or null, got {att!r}'
    lengths = set()
    for key in ("entropy", "distance"):
        values = att.get(key)
        if not isinstance(values, list) or not all(v is None or _is_number(v) for v in values):
            return f".{key} must be a list of numbers (one per layer, null for none), got {values!r}"
        lengths.add(len(values))
    if len(lengths) > 1:
        return f"has {len(att['entropy'])} entropy values and {len(att['distance'])} distance values; expected one of each per layer"
    return None
