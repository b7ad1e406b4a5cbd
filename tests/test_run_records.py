"""What a run directory records: checkpoints after a resume, a refused rerun that leaves the
directory as it was, a finished run without evaluation, the checkpoint evaluated, the log files
and the config tree of eval.py."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from tests.conftest import MODEL_TINY, run_entry
from vit_rope.report import collect_runs
from vit_rope.report.callback import ComparisonCallback, sweep_failures
from vit_rope.tasks.train import train

SMALL = [*MODEL_TINY, "data.num_train=256", "data.num_val=64", "data.batch_size=64", "logger=none"]
ONE_CELL = ["eval.resolutions=[32]", "eval.strategies=[extrapolate]", "eval.logn=[false]", "eval.diagnostics_images=0"]


def compose_run(config: str, run_dir: Path, *overrides: str):
    with initialize_config_module("vit_rope.conf", version_base="1.3"):
        return compose(config, overrides=[*overrides, f"hydra.run.dir={run_dir}"], return_hydra_config=True)


def train_in_process(run_dir: Path, *overrides: str) -> dict:
    return train(compose_run("train", run_dir, *SMALL, *ONE_CELL, *overrides))


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` and a hash of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_resumed_run_keeps_one_best_checkpoint_and_evaluates_it(tmp_path: Path) -> None:
    """Issue 22.1: last.ckpt knows the best checkpoint, so a resumed run whose score only ties
    (lr ~ 0: the same top-1 every epoch) writes no second one, and eval.weights=best works."""
    run = tmp_path / "run"
    still = "optim.lr=1e-12"
    train_in_process(run, still, "trainer.max_epochs=1", "evaluate=false")
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    best_states = [v for k, v in saved["callbacks"].items() if "val/top1" in k]
    assert len(best_states) == 1 and Path(best_states[0]["best_model_path"]).name == "best-epoch000.ckpt"

    out = train_in_process(run, still, "trainer.max_epochs=2", "eval.weights=best")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]
    assert out["run"]["weights"] == "best" and out["run"]["checkpoint"] == "best-epoch000.ckpt"


def test_the_evaluation_after_training_records_its_checkpoint(tmp_path: Path) -> None:
    """Issue 22.4: results.json of train.py names the checkpoint it evaluated, as eval.py's does."""
    out = train_in_process(tmp_path / "run", "trainer.max_epochs=1")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["run"]["weights"] == "last" and results["run"]["checkpoint"] == "last.ckpt"
    assert out["run"]["checkpoint"] == "last.ckpt"


def test_a_finished_run_without_evaluation_is_not_a_failure(tmp_path: Path) -> None:
    """Issue 22.3: evaluate=false marks the run as trained; the report knows it from a run that
    was cut off (which stays unfinished)."""
    sweep = tmp_path / "sweep"
    train_in_process(sweep / "0_done", "trainer.max_epochs=1", "evaluate=false")
    cut = sweep / "1_cut"
    (cut / ".hydra").mkdir(parents=True)
    (cut / ".hydra" / "overrides.yaml").write_text("[]\n")
    status = {r.run_dir.name: (r.status, r.error) for r in collect_runs(sweep)}
    assert status["0_done"][0] == "trained" and "evaluate=false" in status["0_done"][1]
    assert status["1_cut"][0] == "unfinished"
    from vit_rope.report import comparison_markdown

    md = comparison_markdown(collect_runs(sweep), sweep)
    lines = {line.split("`")[1]: line for line in md.splitlines() if line.startswith("- `")}
    assert "evaluate=false" in lines["0_done"] and "**unfinished**" in lines["1_cut"]
    assert md.index("Trained without evaluation") < md.index(lines["0_done"]) < md.index("Failed or unfinished")
    # the sweep's exit status counts only the cut-off job as not finished
    ComparisonCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert [f.split(":")[0] for f in sweep_failures()] == ["1_cut"]


def test_a_refused_rerun_leaves_the_run_directory_as_it_was(tmp_path: Path) -> None:
    """Issue 22.2: the same command run again in a finished run's directory (here with another
    max_epochs) ends in one sentence and exit status 2, and changes no byte of the directory
    (no error.txt, Hydra's .hydra/ files and the log untouched)."""
    run = tmp_path / "run"
    train_in_process(run, "trainer.max_epochs=1")
    before = tree_digest(run)
    proc = run_entry("train.py", *SMALL, *ONE_CELL, "trainer.max_epochs=2", f"hydra.run.dir={run}", check=False)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "results.json" in err[0] and "hydra.run.dir" in err[0], proc.stderr
    assert tree_digest(run) == before


def test_the_run_log_holds_what_the_run_printed(tmp_path: Path) -> None:
    """Issue 22.5: train.log holds the config tree, the resume message and the result table;
    issue 22.6: eval.py prints its config tree and saves config_tree.txt, and eval.log has it."""
    run = tmp_path / "run"
    train_in_process(run, "trainer.max_epochs=1", "evaluate=false")
    train_in_process(run, "trainer.max_epochs=1")  # resumes (resume=auto), then evaluates
    log = (run / "train.log").read_text()
    assert "pos_embed" in log and "seed: 0" in log  # the config tree
    assert "Resuming the interrupted run" in log
    assert re.search(r"rope_axial\s+extrapolate\s+\d+\.\d", log)  # the result table
    assert "\x1b[" not in log  # no terminal colour codes

    out = tmp_path / "eval"
    proc = run_entry("eval.py", f"run_dir={run}", *ONE_CELL, "logger=none", f"hydra.run.dir={out}")
    assert proc.stdout.lstrip().startswith("config")
    tree = (out / "config_tree.txt").read_text()
    assert "run_dir:" in tree and "eval" in tree
    assert "run_dir:" in (out / "eval.log").read_text()
