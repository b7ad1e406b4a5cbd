"""What a user sees outside the numbers: file modes of an export, the console's first lines,
--help, and what an image-folder run says it loaded."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import MODEL_TINY, ROOT, assert_names, run_entry, train_run
from vit_rope.export import MODEL_FILE, TIMM_FILE, TIMM_META, export
from vit_rope.models import create_model


def test_exported_files_get_the_mode_of_any_new_file(tmp_path: Path) -> None:
    """Issue 22.12: the .safetensors files are as readable as the JSON beside them (the umask
    decides, 0644 under the usual 022), not 0600."""
    old = os.umask(0o022)
    try:
        export(create_model("vit_micro", num_classes=3, img_size=32, pos_embed="rope_axial"), tmp_path)
    finally:
        os.umask(old)
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in (MODEL_FILE, TIMM_FILE, TIMM_META)}
    assert modes == {MODEL_FILE: 0o644, TIMM_FILE: 0o644, TIMM_META: 0o644}


def test_an_image_folder_run_says_what_it_loaded(tmp_path: Path, image_tree: Path, capsys) -> None:
    """Issue 22.10: classes and images found, and the images each epoch drops with the last
    partial batch (12 training images at batch 5: 2 batches, 2 images dropped); in train.log too."""
    model = ["model.patch_size=8", "model.embed_dim=32", "model.depth=1", "model.num_heads=2"]
    data = ["data=imagefolder", f"data.root={image_tree}", "data.img_size=32", "data.num_workers=0"]
    run = tmp_path / "run"
    train_run(run, *MODEL_TINY[3:], *model, *data, "data.batch_size=5", "trainer.max_epochs=1", "evaluate=false",
              "logger=none")  # fmt: skip
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("Image folder"))
    assert_names(line, str(image_tree), "3 classes", "12 training", "12 validation", "2 full batches of 5",
                 "last 2 images", "data.batch_size")  # fmt: skip
    assert line in (run / "train.log").read_text()
    train_run(tmp_path / "run2", *MODEL_TINY[3:], *model, *data, "data.batch_size=6", "trainer.max_epochs=1",
              "evaluate=false", "logger=none")  # fmt: skip
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Image folder"))
    assert "12 training" in line and "drops" not in line  # 6 divides 12: nothing dropped


def test_help_says_what_each_command_does_and_what_it_needs() -> None:
    """Issue 22.11: --help starts with a usage line and a paragraph (what the command does, its
    main options; for eval.py, that one model source is required), before Hydra's lists."""
    train_help = run_entry("train.py", "--help").stdout
    assert train_help.startswith("usage: python train.py")
    intro = train_help.split("== Configuration groups ==")[0]
    assert_names(intro, "pos_embed=", "data=", "trainer.max_epochs=", "evaluate=false", "ckpt_path=", "-m")
    eval_help = run_entry("eval.py", "--help").stdout
    assert eval_help.startswith("usage: python eval.py")
    intro = eval_help.split("== Configuration groups ==")[0]
    assert_names(intro, "ckpt_path", "run_dir", "timm_model", "compare", "required", "eval.resolutions=")
    assert "powered by Hydra" not in train_help + eval_help


def test_the_console_starts_with_the_projects_own_lines(tmp_path: Path) -> None:
    """Issue 22.13: no Lightning "litlogger" tip, no torch pytree deprecation warning, and the
    config tree first (not Lightning's "Seed set to"); Python's warnings left on, as a user has them."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    args = [*MODEL_TINY, "data.num_train=64", "data.num_val=32", "data.batch_size=32", "trainer.max_epochs=1",
            "evaluate=false", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == "config"
    console = proc.stdout + proc.stderr
    assert "litlogger" not in console and "LeafSpec" not in console and "Seed set to" not in console
