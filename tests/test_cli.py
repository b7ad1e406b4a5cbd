"""Entry points: training from Python through Hydra's compose API, eval.py's help and its data group."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig

from tests.conftest import TINY, read_results, run_entry, train_run
from vit_rope.errors import ConfigError
from vit_rope.tasks.common import config_groups
from vit_rope.tasks.train import train


def test_train_from_python_with_the_compose_api(tmp_path: Path) -> None:
    """hydra.compose + train(cfg) in this process, without @hydra.main: the run directory, its
    .hydra/ files, checkpoints and results are those of the command line."""
    overrides = [*TINY, "trainer.max_epochs=1", "eval.resolutions=[32,48]", "eval.strategies=[extrapolate]",
                 "eval.logn=[false]", "eval.diagnostics_images=0", "logger=csv", f"hydra.run.dir={tmp_path}"]  # fmt: skip
    with initialize_config_module("vit_rope.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    out = train(cfg)
    assert not HydraConfig.initialized()  # cleared, so that another composed run gets its own directory
    results = read_results(tmp_path)
    assert results["run"]["overrides"] == overrides[:-1]  # hydra.run.dir is Hydra's, as on the command line
    assert [m["resolution"] for m in results["metrics"]] == [32, 48]
    assert out["metrics"] == results["metrics"]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "csv" / "metrics.csv").is_file()
    assert (tmp_path / ".hydra" / "config.yaml").is_file()  # so that eval.py ckpt_path=... finds the config
    with initialize_config_module("vit_rope.conf", version_base="1.3"):
        bare = compose("train", overrides=["debug=fast_dev_run"])  # no hydra node: no run directory
    with pytest.raises(ConfigError, match="return_hydra_config=True"):
        train(bare)


def test_eval_help_lists_only_the_groups_eval_uses() -> None:
    proc = run_entry("eval.py", "--help")
    listed = proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    groups = {line.split(":")[0] for line in listed.splitlines() if ": " in line}
    assert groups == {"eval", "trainer", "logger", "data"} == set(config_groups("eval"))
    assert f"logger: {', '.join(config_groups('eval')['logger'])}" in listed
    for train_only in ("pos_embed", "model", "optim", "recipe", "experiment", "debug", "callbacks"):
        assert f"{train_only}:" not in listed


def test_eval_with_the_imagefolder_group(tmp_path: Path, image_tree: Path) -> None:
    """eval.py data=imagefolder data.root=DIR evaluates a checkpoint trained on an image folder
    (the run's own data settings stay); a data group other than the run's is one sentence."""
    run = tmp_path / "run"
    model = ["model.patch_size=8", "model.embed_dim=32", "model.depth=1", "model.num_heads=2"]
    data = ["data.img_size=32", "data.num_workers=0", "data.batch_size=6"]
    train_run(run, *TINY[:7], *model, "data=imagefolder", f"data.root={image_tree}", *data,
              "trainer.max_epochs=1", "evaluate=false", "logger=none")  # fmt: skip
    out = tmp_path / "eval"  # eval.py through the real command line
    run_entry("eval.py", f"ckpt_path={run}", "data=imagefolder", f"data.root={image_tree}", "eval.resolutions=[32,48]",
            "eval.strategies=[extrapolate]", "eval.logn=[false]", "logger=none", f"hydra.run.dir={out}")  # fmt: skip
    results = read_results(out)
    assert results["run"]["data"] == "imagefolder" and results["run"]["train_resolution"] == 32  # not the group's 224
    assert [m["n"] for m in results["metrics"]] == [12, 12]  # 3 classes x 4 val images
    from vit_rope.tasks.evaluate import evaluate_model

    with initialize_config_module("vit_rope.conf", version_base="1.3"):
        bad = compose("eval", overrides=[f"ckpt_path={run}", "data=shapes"])
    with pytest.raises(ConfigError) as err:
        evaluate_model(bad)  # refused before any data or weights are loaded
    assert str(err.value).startswith(f"data=shapes does not fit the checkpoint '{run}/checkpoints/last.ckpt'")
    assert "evaluated on data=imagefolder; drop data=shapes" in str(err.value)
