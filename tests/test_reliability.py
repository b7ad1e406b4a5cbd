"""Bad input ends in one clear sentence that names the option, the value and the fix, and loses
nothing already written; a failing sweep job does not stop the sweep; DDP evaluates like one
process. Most run ``train(cfg)`` in this process; the command line is kept for what only it
shows: exit status 2 without a traceback, error.txt, a -m sweep, DDP and SIGKILL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import MODEL_TINY, ROOT, TINY, assert_names, eval_run, read_results, run_cli, run_entry, train_run
from vit_rope.errors import ConfigError

FDR = ["debug=fast_dev_run", *TINY]
FDR_IMAGES = ["debug=fast_dev_run", *MODEL_TINY, "model.patch_size=8", "data.num_workers=0"]


def assert_clear_error(proc, *fragments: str, status: int = 2) -> None:
    assert proc.returncode == status, (proc.returncode, proc.stderr[-2000:])
    err = proc.stderr
    for fragment in fragments:
        assert fragment in err, err[-2000:]
    assert "Traceback" not in err and "Traceback" not in proc.stdout


def refused(run_dir: Path, *overrides: str, error: type[Exception] = ConfigError) -> str:
    """The message with which ``train.py OVERRIDES`` (in this process) refuses to run."""
    with pytest.raises(error) as err:
        train_run(run_dir, *overrides)
    return str(err.value)


def test_missing_data_root(tmp_path):
    """Through the command line: exit status 2, one sentence on stderr, the same in error.txt."""
    proc = run_entry(
        "train.py",
        *FDR_IMAGES,
        "data=imagefolder",
        "data.root=/no/such/folder",
        f"hydra.run.dir={tmp_path}",
        check=False,
    )
    assert_clear_error(proc, "data.root", "/no/such/folder", "set data.root to a folder")
    assert proc.stderr.strip().splitlines()[-1].startswith("error: data.root")  # the sentence ends stderr
    assert_names((tmp_path / "error.txt").read_text(), "data.root", "/no/such/folder")


def test_empty_data_root(tmp_path):
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    message = refused(tmp_path / "run", *FDR_IMAGES, "data=imagefolder", f"data.root={empty}")
    assert_names(message, str(empty / "train"), "no class folders", "put the images of each class in their own folder")


def test_unknown_class_in_subset(tmp_path, image_tree):
    listing = tmp_path / "classes.txt"
    listing.write_text("cat\nwolf\n")
    message = refused(
        tmp_path / "run", *FDR_IMAGES, "data=imagefolder", f"data.root={image_tree}", f"data.classes={listing}",
        "data.img_size=32",
    )  # fmt: skip
    assert_names(message, "data.classes", "wolf")


def test_image_size_not_multiple_of_patch(tmp_path):
    message = refused(tmp_path, *FDR, "data.img_size=30")
    assert_names(message, "data.img_size", "30", "patch size 4", "use a multiple of 4 such as 28 or 32")


def test_head_dim_axial_cannot_split(tmp_path):
    message = refused(tmp_path, *FDR, "pos_embed=rope_axial", "model.embed_dim=36", "model.num_heads=6")
    assert_names(message, "Head dimension 6", "axial", "multiple of 4")


def test_unknown_encoding_model_and_data_names(tmp_path):
    """One sentence naming the value and the options, before Hydra starts (vit_rope.cli): through
    the command line once, then the same check in-process for the other groups."""
    from vit_rope.cli import check_group_options
    from vit_rope.errors import ConfigError

    def options(group: str) -> str:
        return ", ".join(sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")))

    proc = run_entry("train.py", *FDR, "pos_embed=rope2d", f"hydra.run.dir={tmp_path}", check=False)
    assert_clear_error(proc, "pos_embed", "rope2d", options("pos_embed"))
    assert len(proc.stderr.strip().splitlines()) == 1
    for override, group in [("model=vit_huge", "model"), ("data=cifar", "data"), ("pos_embed=ape,rope2d", "pos_embed")]:
        with pytest.raises(ConfigError) as err:
            check_group_options("train", ["-m", override] if "," in override else [override])
        assert_names(str(err.value), group, override.split("=")[1].split(",")[-1], options(group))


def test_unknown_strategy_is_refused_before_training(tmp_path):
    message = refused(tmp_path, *TINY, "eval.strategies=[extrapolate,linear]")
    assert_names(message, "eval.strategies", "linear", "extrapolate, interpolate, ntk, yarn")
    assert not (tmp_path / "checkpoints").exists()  # nothing was trained


def test_checkpoint_that_does_not_match_the_model(tmp_path):
    first = tmp_path / "first"
    train_run(first, *TINY, "trainer.max_epochs=1", "evaluate=false")
    before = (first / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    message = refused(tmp_path / "second", *TINY, "model.embed_dim=48", f"ckpt_path={first}")
    assert_names(message, str(first / "checkpoints" / "last.ckpt"), "does not match", "use the same model")
    assert (first / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before


def test_existing_run_directory_is_not_clobbered(tmp_path):
    one_cell = ["eval.resolutions=[32]", "eval.strategies=[extrapolate]", "eval.logn=[false]"]
    train_run(tmp_path, *TINY, "trainer.max_epochs=1", *one_cell)
    results = (tmp_path / "results.json").read_text()
    message = refused(tmp_path, *TINY, "trainer.max_epochs=1")
    assert_names(message, str(tmp_path), "results.json", "choose a new hydra.run.dir")
    assert (tmp_path / "results.json").read_text() == results


def test_corrupt_image_named_then_skipped(tmp_path, image_tree, caplog):
    bad = image_tree / "train" / "cat" / "cat_1.png"
    bad.write_bytes(b"this is not a png")
    args = ["data=imagefolder", f"data.root={image_tree}", "data.img_size=32", "data.num_workers=0", "data.batch_size=4",
            "model.patch_size=8", "model.embed_dim=32", "model.depth=1", "model.num_heads=2", "trainer.max_epochs=1",
            "evaluate=false", "trainer.enable_progress_bar=false", "~callbacks.progress_bar"]  # fmt: skip
    assert_names(refused(tmp_path / "a", *args), "cat_1.png", "data.skip_corrupt=true")
    with caplog.at_level("WARNING"):
        train_run(tmp_path / "b", *args, "data.skip_corrupt=true")
    assert "skipped 1" in caplog.text.lower()


def test_non_finite_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path):
    """One step per epoch and an absurd learning rate: the first step is finite and blows the
    weights up, the epoch ends with last.ckpt written, the next step's loss is not finite."""
    message = refused(
        tmp_path, *TINY, "data.num_train=64", "trainer.max_epochs=3", "evaluate=false", "optim.lr=1e30",
        "trainer.gradient_clip_val=null", error=FloatingPointError,
    )  # fmt: skip
    assert_names(message, "Training loss", "at step 1", "lower optim.lr")
    import torch

    kept = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert kept["epoch"] == 0 and kept["global_step"] == 1


def test_sweep_with_a_failing_job_still_writes_the_comparison(tmp_path):
    """Also: commands before and after the sweep in the same process (a notebook, a test) do not
    change what it reports: a refused command into an existing run directory before it (which
    writes no error.txt there), and a run after it, which does not inherit its failure."""
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("x")
    assert run_entry("train.py", *TINY, "model.num_heads=0", f"hydra.run.dir={existing}", check=False).returncode == 2
    sweep = tmp_path / "sweep"
    proc = run_entry(
        "train.py", "-m", *[a for a in TINY if "num_heads" not in a], "model.num_heads=2,3", "trainer.max_epochs=1",
        "eval.resolutions=[32]", "eval.strategies=[extrapolate]", "eval.logn=[false]", f"hydra.sweep.dir={sweep}",
        check=False,
    )  # fmt: skip
    # the sweep runs both jobs, writes the comparison, then exits non-zero for a script or a cluster array
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: 1 job(s) of the sweep failed or did not finish: 1_rope_axial: embed_dim 32" in proc.stderr
    # 2 heads divide embed_dim 32 and train; 3 do not, and that job fails with a clear error
    assert (sweep / "0_rope_axial" / "results.json").is_file()
    message = "embed_dim 32 is not divisible by num_heads 3"
    assert message in (sweep / "1_rope_axial" / "error.txt").read_text()
    md = (sweep / "comparison.md").read_text()
    assert "1_rope_axial" in md and message in md
    after = run_entry(
        "train.py", *TINY, "trainer.max_epochs=1", "evaluate=false", f"hydra.run.dir={tmp_path / 'after'}"
    )
    assert after.returncode == 0 and "sweep failed" not in after.stderr


def test_ddp_two_cpu_processes_evaluate_like_one(tmp_path):
    """2-process CPU DDP (gloo): metrics are reduced over ranks, only rank 0 writes results,
    and the evaluation equals a single-process evaluation of the same checkpoint."""
    # 125 validation samples: not divisible by 2 ranks, so padding would show
    common = [*TINY, "data.num_val=125", "trainer.max_epochs=1", "eval.resolutions=[32,48]", "eval.logn=[false]"]
    ddp = tmp_path / "ddp"
    run_cli("train.py", *common, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.precision=32-true", f"hydra.run.dir={ddp}", timeout=600)  # fmt: skip
    results = read_results(ddp)
    single = tmp_path / "single"
    eval_run(single, f"ckpt_path={ddp}/checkpoints/last.ckpt", "eval.resolutions=[32,48]", "eval.logn=[false]")
    one = read_results(single)
    key = lambda m: (m["resolution"], m["strategy"], m["logn"])  # noqa: E731
    assert {key(m): (m["top1"], m["n"]) for m in results["metrics"]} == {
        key(m): (m["top1"], m["n"]) for m in one["metrics"]
    }
    assert all(m["n"] == 125 for m in results["metrics"] if m["top1"] is not None)
    assert len(list(ddp.rglob("results.json"))) == 1
    json.loads((ddp / "results.json").read_text())


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, capfd):
    """Killed with SIGKILL during epoch 2, resumed with ckpt_path=<killed run dir>: the final
    metrics equal those of a run that was never interrupted (same seed, CPU), and the killed
    run's logs and checkpoint are still there."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    from tests.conftest import ROOT

    common = [*TINY, "data.num_train=1536", "trainer.max_epochs=3", "eval.resolutions=[32]",
              "eval.strategies=[extrapolate]", "eval.logn=[false]"]  # fmt: skip
    straight = tmp_path / "straight"
    train_run(straight, *common)

    killed = tmp_path / "killed"
    env = {**os.environ, "VIT_ROPE_NO_PROGRESS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "train.py", *common, f"hydra.run.dir={killed}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    epoch_at_kill = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert epoch_at_kill < 2 and not (killed / "results.json").exists()
    events_before = sorted(p.name for p in (killed / "tb").rglob("events.*"))

    resumed = tmp_path / "resumed"
    train_run(resumed, *common, f"ckpt_path={killed}")
    a, b = read_results(straight), read_results(resumed)
    assert [m["top1"] for m in b["metrics"]] == pytest.approx([m["top1"] for m in a["metrics"]], abs=1e-6)
    assert b["metrics"][0]["loss"] == pytest.approx(a["metrics"][0]["loss"], abs=1e-5)
    # what the killed run wrote is still there
    assert last.is_file() and sorted(p.name for p in (killed / "tb").rglob("events.*")) == events_before
    # the identical command again, in the killed run's own directory (a requeued job): resume=auto
    capfd.readouterr()
    train_run(killed, *common)
    assert "Resuming the interrupted run" in capfd.readouterr().out
    c = read_results(killed)
    assert [m["top1"] for m in c["metrics"]] == pytest.approx([m["top1"] for m in a["metrics"]], abs=1e-6)
    assert c["metrics"][0]["loss"] == pytest.approx(a["metrics"][0]["loss"], abs=1e-5)


# -- settings out of range end before anything is built ----------------------------------------


@pytest.mark.parametrize(
    "override,names",
    [
        ("model.num_heads=0", ["model.num_heads", "0", "a whole number in [1, inf)"]),
        ("model.depth=-2", ["model.depth", "-2", "a whole number in [1, inf)"]),
        ("model.drop_path_rate=1.5", ["model.drop_path_rate", "1.5", "[0.0, 1.0)"]),
        ("optim.lr=0", ["optim.lr", "0", "a number in (0.0, inf)"]),
        ("optim.warmup_epochs=-1", ["optim.warmup_epochs", "-1", "[0.0, inf)"]),
        ("optim.label_smoothing=1.0", ["optim.label_smoothing", "1.0", "[0.0, 1.0)"]),
        ("trainer.max_epochs=0", ["trainer.max_epochs", "0", "a whole number in [1, inf)"]),
        ("pos_embed.base=0.5", ["pos_embed.base", "0.5", "set pos_embed.base to"]),
        ("+pos_embed.foo=1", ["pos_embed.foo", "rope_axial", "remove foo"]),
        ("+optim.momentum=0.9", ["optim.momentum", "weight_decay", "remove momentum"]),
    ],
)
def test_typed_settings_are_range_checked_in_process(override, names):
    """The same checks train.py runs first, composed and typed without starting a process."""
    from tests.conftest import compose_train
    from vit_rope.config import build_dataclass
    from vit_rope.errors import ConfigError
    from vit_rope.lit_module import OptimConfig
    from vit_rope.models import build_model_config, build_pos_embed
    from vit_rope.tasks.common import check_trainer

    cfg = compose_train(override)
    with pytest.raises(ConfigError) as err:
        build_pos_embed(cfg.pos_embed)
        build_model_config(cfg.model)
        build_dataclass(OptimConfig, cfg.optim, "optim")
        check_trainer(cfg.trainer)
    assert_names(str(err.value), *names)


def test_out_of_range_setting_ends_before_training(tmp_path):
    """Through the command line: exit status 2 and one sentence, nothing trained."""
    proc = run_entry("train.py", *TINY, "model.num_heads=0", f"hydra.run.dir={tmp_path}", check=False)
    assert_clear_error(proc, "model.num_heads=0", "set model.num_heads to a whole number in [1, inf)")
    assert not (tmp_path / "checkpoints").exists()


def test_text_model_on_image_data_names_the_data_to_use(tmp_path):
    """It used to end in an OmegaConf InterpolationKeyError traceback (shapes reads model.patch_size)."""
    message = refused(tmp_path, "model=text_micro", "data=shapes")
    assert_names(message, "model=text_micro", "token data", "use data=sequences")


def test_training_with_the_progress_bar_off(tmp_path):
    """trainer.enable_progress_bar=false used to crash on the configured TQDMProgressBar callback."""
    args = [a for a in FDR if a != "~callbacks.progress_bar"]
    assert "trainer.enable_progress_bar=false" in args
    out = train_run(tmp_path, *args)
    assert "val/top1" in out["val"]


def test_resume_auto_refuses_a_checkpoint_of_another_config(tmp_path):
    """A run dir cut off before its results (here: evaluate=false) resumes automatically, but only
    with the model it was trained with; another encoding ends in one sentence, nothing lost."""
    train_run(tmp_path, *TINY, "trainer.max_epochs=1", "evaluate=false")
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    message = refused(tmp_path, *TINY, "pos_embed=ape", "trainer.max_epochs=1")
    assert_names(message, str(last), "does not match", "use the same model, pos_embed")
    assert last.read_bytes() == before
    never = refused(tmp_path, *TINY, "resume=never")
    assert_names(never, str(tmp_path), "last.ckpt", "resume with ckpt_path=")


def test_last_checkpoint_is_written_every_epoch_when_validation_is_rarer(tmp_path):
    """A run that validates only at the end (the Imagenette experiment) or never still writes
    last.ckpt after each training epoch, and the evaluation names it as the weights' file."""
    import torch

    train_run(tmp_path / "rare", *TINY, "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=5",
              "eval.resolutions=[32]", "eval.strategies=[extrapolate]", "eval.logn=[false]",
              "eval.diagnostics_images=0")  # fmt: skip
    last = tmp_path / "rare" / "checkpoints" / "last.ckpt"
    assert last.is_file() and torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 1
    assert read_results(tmp_path / "rare")["run"]["checkpoint"] == "last.ckpt"
