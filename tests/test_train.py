"""Training: configs compose and instantiate; train.py runs, resumes, sweeps and evaluates."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.conftest import (
    ROOT,
    TINY,
    assert_names,
    build_net_from_config,
    compose_train,
    eval_run,
    read_results,
    run_entry,
    train_run,
    write_image_tree,
)
from vit_rope.config import build_dataclass
from vit_rope.errors import ConfigError
from vit_rope.eval.config import EvalConfig
from vit_rope.extrapolate import STRATEGIES
from vit_rope.lit_module import ClassificationModule, OptimConfig, cosine_with_warmup
from vit_rope.models import build_model_config, build_pos_embed, create_model

CONF = ROOT / "conf"


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("pos_embed", group_options("pos_embed"))
def test_every_pos_embed_config_composes_and_instantiates(pos_embed):
    cfg = compose_train(f"pos_embed={pos_embed}", "model.embed_dim=32", "model.depth=1", "model.num_heads=2")
    model = build_net_from_config(cfg, 4, 32)
    assert model.encoding.name == pos_embed
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 4)


@pytest.mark.parametrize("model_name", [m for m in group_options("model") if m != "text_micro"])
def test_every_model_config_composes_and_instantiates(model_name):
    cfg = compose_train(f"model={model_name}")
    with torch.device("meta"):  # the large sizes need no memory on the meta device
        model = build_net_from_config(cfg, 10, 224 if cfg.model.patch_size == 16 else 32)
    assert model.embed_dim == cfg.model.embed_dim and len(model.blocks) == cfg.model.depth


def test_text_model_config_instantiates():
    cfg = compose_train("model=text_micro", "data=sequences", "pos_embed=rope1d")
    model = build_net_from_config(cfg, 4, 64, vocab_size=32)
    assert model(torch.randint(0, 32, (2, 64))).shape == (2, 4)


@pytest.mark.parametrize(
    "group", ["data", "trainer", "callbacks", "logger", "experiment", "debug", "optim", "eval", "recipe"]
)
def test_every_group_option_composes(group):
    for option in group_options(group):
        overrides = [f"{group}={option}"]
        if (group, option) in {("data", "imagefolder"), ("experiment", "imagenet100_vit_s16")}:
            overrides.append("data.root=/nonexistent")
        cfg = compose_train(*overrides)
        # every typed group of the composed config is accepted by its dataclass
        build_pos_embed(cfg.pos_embed)
        build_model_config(cfg.model)
        build_dataclass(OptimConfig, cfg.optim, "optim")
        build_dataclass(EvalConfig, cfg.eval, "eval")


def test_recipe_best_and_ape_are_the_regime_study_winners():
    """recipe=best and recipe=ape name other recipes (Hydra defaults inside the group): they must
    compose to exactly what those recipes compose to, and differ from the earlier pair."""
    for alias, target, earlier in (("best", "axial_partial", "axial_interp"), ("ape", "ape_perturb", "ape_plain")):
        cfg = compose_train("experiment=imagenette_extrapolation", f"recipe={alias}")
        assert cfg == compose_train("experiment=imagenette_extrapolation", f"recipe={target}")
        assert cfg.pos_embed != compose_train("experiment=imagenette_extrapolation", f"recipe={earlier}").pos_embed
    assert compose_train("recipe=best").pos_embed.rotate_fraction == 0.5


def test_imagenet100_experiment_sets_its_recipe_and_trains_scaled_down(tmp_path):
    """experiment=imagenet100_vit_s16: the model, data, optimiser and evaluation get the recipe's
    values; on a tiny folder of its 100 classes, one step of it runs with the sizes scaled down
    and everything else (augmentation, Mixup/CutMix, the class list, the evaluation) as set."""
    from vit_rope.data.class_lists import CLASS_PRESETS
    from vit_rope.tasks.common import instantiate_group

    root = write_image_tree(tmp_path / "images", classes=CLASS_PRESETS["imagenet100"], per_class=1, size=(24, 24))
    cfg = compose_train("experiment=imagenet100_vit_s16", f"data.root={root}")
    model_cfg = build_model_config(cfg.model)
    assert (model_cfg.embed_dim, model_cfg.depth, model_cfg.num_heads, model_cfg.patch_size) == (384, 12, 6, 16)
    assert model_cfg.drop_path_rate == 0.1
    optim = build_dataclass(OptimConfig, cfg.optim, "optim")
    assert (optim.lr, optim.warmup_epochs, optim.mixup, optim.cutmix) == (2.5e-4, 5, 0.8, 1.0)
    assert (cfg.trainer.accelerator, cfg.trainer.precision, cfg.trainer.max_epochs) == ("gpu", "bf16-mixed", 100)
    datamodule = instantiate_group(cfg.data, "data")
    assert datamodule.num_classes == 100 and datamodule.class_names == sorted(CLASS_PRESETS["imagenet100"])
    assert (datamodule.img_size, datamodule.batch_size, datamodule.rrc_scale) == (224, 256, (0.08, 1.0))
    assert (datamodule.auto_augment, datamodule.re_prob, datamodule.color_jitter) == ("rand-m9-mstd0.5-inc1", 0.25, 0.4)
    settings = build_dataclass(EvalConfig, cfg.eval, "eval")
    with torch.device("meta"):
        net = model_cfg.build(build_pos_embed(cfg.pos_embed), datamodule.num_classes, datamodule.img_size)
    settings.check_model(net)  # every evaluation resolution fits the patch size
    assert settings.resolutions == (224, 320, 384, 448, 512) and net.num_classes == 100

    scaled = ["data.img_size=32", "data.batch_size=4", "data.num_workers=0", "model.embed_dim=32", "model.depth=1",
              "model.num_heads=2", "trainer.accelerator=cpu", "trainer.precision=32-true", "compile=false",
              "debug=fast_dev_run", "logger=none", "trainer.enable_progress_bar=false", "~callbacks.progress_bar"]  # fmt: skip
    out = train_run(tmp_path / "run", "experiment=imagenet100_vit_s16", f"data.root={root}", *scaled)
    assert 0.0 <= out["val"]["val/top1"] <= 100.0 and out["val"]["val/loss"] > 0


def test_eval_config_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=["ckpt_path=x.ckpt", "eval.resolutions=[32,64]"])
    assert list(cfg.eval.strategies) == list(STRATEGIES) and list(cfg.eval.resolutions) == [32, 64]


@pytest.mark.parametrize(
    "override, names",
    [
        ("eval.window=[false,1]", ["eval.window", "1", "eval.window=[false,true]"]),
        ("eval.logn=[yes]", ["eval.logn", "yes", "eval.logn=[false,true]"]),
        ("eval.diagnostics_images=-1", ["eval.diagnostics_images", "-1", "a whole number in [0, inf)"]),
        ("eval.batch_size=0", ["eval.batch_size", "0", "a whole number in [1, inf)"]),
        ("eval.weights=average", ["eval.weights", "average", "last, best, ema"]),
        ("eval.mode=stretch", ["eval.mode", "stretch", "zoom, canvas"]),
        ("eval.resolutions=[32,0]", ["eval.resolutions", "0", "a whole number in [1, inf)"]),
        ("eval.strategies=[linear]", ["eval.strategies", "linear", "extrapolate, interpolate"]),
        ("+eval.resolution=64", ["eval.resolution", "resolutions, strategies", "remove resolution"]),
    ],
)
def test_eval_config_refuses_a_bad_option_naming_it_the_value_and_the_fix(override, names):
    cfg = compose_train(override)
    with pytest.raises(ConfigError) as err:
        build_dataclass(EvalConfig, cfg.eval, "eval")
    assert_names(str(err.value), *names)


def test_eval_config_defaults_come_from_the_yaml_only():
    """The dataclass holds no defaults: a key missing from the group cannot silently take one."""
    cfg = compose_train()
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(EvalConfig))
    settings = build_dataclass(EvalConfig, cfg.eval, "eval")
    assert settings.diagnostics_images == cfg.eval.diagnostics_images and settings.window == (False,)


def test_schedule_warmup_then_cosine():
    lrs = [cosine_with_warmup(s, warmup=10, total=110, min_ratio=0.01) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.01, abs=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_no_weight_decay_groups():
    net = create_model("vit_micro", "rope_mixed_ape", num_classes=4, img_size=32, patch_size=8, depth=1)
    module = ClassificationModule(net, OptimConfig())

    class _T:  # the bits of a Trainer that configure_optimizers reads
        estimated_stepping_batches = 100
        max_epochs = 2

    module.trainer = _T()  # type: ignore[assignment]
    opt = module.configure_optimizers()["optimizer"]
    decay = {id(p) for p in opt.param_groups[0]["params"]}
    named = dict(module.model.named_parameters())
    for name in ("rope.freqs", "abs_pos.pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias"):
        assert id(named[name]) not in decay, name
    assert id(named["blocks.0.attn.qkv.weight"]) in decay and opt.param_groups[1]["weight_decay"] == 0.0


# -- training runs: in this process, as train(cfg); the command line where only it shows a thing --


def test_fast_dev_run_on_shapes_through_the_command_line(tmp_path):
    proc = run_entry("train.py", "debug=fast_dev_run", *TINY, f"hydra.run.dir={tmp_path}")
    # Lightning's model summary goes through its logger (bound to the real stdout), and the run's log
    assert "parameters" in (tmp_path / "train.log").read_text() and proc.stderr.count("Traceback") == 0


def test_fast_dev_run_on_image_folder(tmp_path, image_tree):
    out = train_run(
        tmp_path,
        "debug=fast_dev_run",
        "data=imagefolder",
        f"data.root={image_tree}",
        "data.img_size=32",
        "data.num_workers=0",
        "data.batch_size=4",
        "data.classes=first:2",
        "model.patch_size=8",
        "model.embed_dim=32",
        "model.depth=1",
        "model.num_heads=2",
    )
    assert 0.0 <= out["val"]["val/top1"] <= 100.0


def test_resume_from_last_ckpt_continues_at_right_epoch_and_step(tmp_path):
    first = tmp_path / "first"
    train_run(first, *TINY, "trainer.max_epochs=1", "evaluate=false")
    ckpt = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    steps_per_epoch = ckpt["global_step"]
    assert ckpt["epoch"] == 0 and steps_per_epoch == 4  # 256 / 64
    second = tmp_path / "second"
    train_run(second, *TINY, "trainer.max_epochs=2", "evaluate=false", f"ckpt_path={first}")
    resumed = torch.load(second / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * steps_per_epoch
    # the earlier run's files are untouched
    assert (first / "checkpoints" / "last.ckpt").is_file()


def test_sweep_over_two_encodings_writes_comparison(tmp_path):
    """A two-job -m run through train.py's console function; the comparison has one row per encoding and strategy."""
    run_entry(
        "train.py",
        "-m",
        "pos_embed=ape,rope_axial",
        *TINY,
        "trainer.max_epochs=1",
        "eval.resolutions=[32,64]",
        "eval.strategies=[extrapolate,ntk]",
        "eval.logn=[false]",
        f"hydra.sweep.dir={tmp_path}",
    )
    runs = sorted(p.parent for p in tmp_path.glob("*/results.json"))
    assert [p.name for p in runs] == ["0_ape", "1_rope_axial"]
    md = (tmp_path / "comparison.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ape") or line.startswith("| rope_axial")]
    assert len(rows) == 4, md  # 2 encodings x 2 strategies
    assert any("n/a" in r for r in rows if r.startswith("| ape") and "ntk" in r)
    from PIL import Image

    with Image.open(tmp_path / "comparison.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100
    assert (tmp_path / "comparison.csv").read_text().count("\n") == 1 + 2 * 2 * 2  # header + runs x res x strategies


def test_train_evaluates_at_2x_and_matches_logged_validation(tmp_path):
    train_run(tmp_path, *TINY, "trainer.max_epochs=2", "eval.resolutions=[32,64]")
    results = read_results(tmp_path)
    check_results_schema(results)
    rows = {(m["resolution"], m["strategy"], m["logn"]): m for m in results["metrics"]}
    assert len(rows) == 2 * 4 * 2
    base = rows[(32, "extrapolate", False)]
    # the evaluation at the training resolution is the validation that training logged last
    assert base["top1"] == pytest.approx(logged_scalars(tmp_path / "tb", "val/top1")[-1], abs=1e-3)
    # results.json holds the schema's keys only (it once carried an extra run.val_top1)
    assert "val_top1" not in results["run"]
    assert base["n"] == 128
    for (_res, strategy, logn), m in rows.items():
        if m["top1"] is not None:
            ref = rows[(32, strategy, logn)]["top1"]
            assert m["retention"] == pytest.approx(m["top1"] / ref, abs=1e-3)
    # TensorBoard's HPARAMS: the run's overrides, and top-1 per resolution as its metrics
    from tests.test_loggers import tensorboard_hparams

    hparams, tags, scalars, _ = tensorboard_hparams(tmp_path / "tb")
    assert hparams["model.embed_dim"] == 32 and hparams["pos_embed"] == "rope_axial"
    assert tags == {f"hp/top1_{r}/{s}{'_logn' if g else ''}" for (r, s, g), m in rows.items() if m["top1"] is not None}
    assert scalars["hp/top1_64/ntk_logn"] == pytest.approx(rows[(64, "ntk", True)]["top1"])
    # evaluating the checkpoint again through eval.py gives the same numbers
    again = tmp_path / "again"
    eval_run(again, f"ckpt_path={tmp_path}/checkpoints/last.ckpt", "eval.resolutions=[32,64]")
    second = {(m["resolution"], m["strategy"], m["logn"]): m["top1"] for m in read_results(again)["metrics"]}
    assert second == {k: m["top1"] for k, m in rows.items()}
    # and records how the model was trained beside its own overrides (a study sorts by both)
    evaluated = read_results(again)["run"]
    assert evaluated["trained_with"] == results["run"]["overrides"]
    assert "eval.resolutions=[32,64]" in evaluated["overrides"]


def logged_scalars(tb_dir: Path, tag: str) -> list[float]:
    """The values of one scalar in a run's TensorBoard logs, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


def check_results_schema(results: dict) -> None:
    """The results.json schema (vit_rope/eval/results.py)."""
    run = results["run"]
    for key, kind in [("pos_embed", str), ("model", str), ("data", str), ("train_resolution", int), ("seed", int)]:
        assert isinstance(run[key], kind), key
    assert isinstance(run["overrides"], list)
    for m in results["metrics"]:
        assert isinstance(m["resolution"], int) and m["strategy"] in STRATEGIES and isinstance(m["logn"], bool)
        if m["top1"] is None:
            assert m["note"] == "n/a"
        else:
            assert 0 <= m["top1"] <= m["top5"] <= 100 and m["n"] > 0 and m["loss"] >= 0
    json.dumps(results)


def test_results_na_entries_for_ape(tmp_path):
    train_run(tmp_path, *TINY, "pos_embed=ape", "trainer.max_epochs=1", "eval.resolutions=[64]")
    results = read_results(tmp_path)
    check_results_schema(results)
    na = {(m["strategy"]) for m in results["metrics"] if m.get("note") == "n/a"}
    assert na == {"ntk", "yarn"}
    assert Path(tmp_path / "comparison.png").is_file()


def test_timm_checkpoint_evaluates_at_a_larger_resolution(tmp_path, image_tree):
    """eval.py timm_model=... timm_checkpoint=...: a timm RoPE-Mixed ViT fine-tuned on 3 classes
    (random weights here) is converted by from_timm and evaluated at 224 and at 320 px."""
    import timm

    name = "vit_small_patch16_rope_mixed_224"
    ckpt = tmp_path / "timm.pth"
    torch.save(timm.create_model(name, pretrained=False, num_classes=3).state_dict(), ckpt)
    out = tmp_path / "eval"
    eval_run(
        out,
        f"timm_model={name}",
        f"timm_checkpoint={ckpt}",
        f"data.root={image_tree}",
        "data.batch_size=6",
        "eval.resolutions=[224,320]",
        "eval.strategies=[extrapolate,ntk,yarn]",
        "eval.logn=[false]",
        "logger=none",
        "eval.diagnostics_images=0",
    )
    results = read_results(out)
    check_results_schema(results)
    assert results["run"]["pos_embed"] == "rope_mixed" and results["run"]["train_resolution"] == 224
    # preprocessed with the model's own data config (timm's resolve_model_data_config), recorded
    expected = timm.data.resolve_model_data_config(timm.create_model(name, pretrained=False))
    config = results["run"]["data_config"]
    assert config["crop_pct"] == expected["crop_pct"] and config["interpolation"] == expected["interpolation"]
    assert config["mean"] == list(expected["mean"]) and config["std"] == list(expected["std"])
    rows = {(m["resolution"], m["strategy"]): m for m in results["metrics"]}
    assert set(rows) == {(r, s) for r in (224, 320) for s in ("extrapolate", "ntk", "yarn")}
    for res in (224, 320):
        assert rows[(res, "extrapolate")]["n"] == 12 and rows[(res, "yarn")]["n"] == 12  # 3 classes x 4 images
        assert rows[(res, "ntk")]["note"] == "n/a"  # learned frequencies have no base to change


def test_slurm_launcher_config_composes_and_instantiates():
    """conf/hydra/launcher/slurm.yaml: one SLURM job per sweep job, nodes and tasks from the trainer."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='needs pip install -e ".[slurm]"')
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert type(instantiate(launcher)).__name__ == "SlurmLauncher"


def test_the_resolved_config_is_shown_and_saved(tmp_path, capfd):
    train_run(tmp_path, "debug=fast_dev_run", *TINY, "optim.lr=0.0042")
    saved = (tmp_path / "config_tree.txt").read_text()
    assert "lr: 0.0042" in saved and "pos_embed" in saved and "lr: 0.0042" in capfd.readouterr().out


def test_gradient_accumulation_needs_no_plus(tmp_path):
    """trainer.accumulate_grad_batches used to need a leading + (it was not in the trainer config)."""
    out = train_run(tmp_path, "debug=fast_dev_run", *TINY, "trainer.accumulate_grad_batches=2")
    assert "val/top1" in out["val"]
    assert "accumulate_grad_batches: 2" in (tmp_path / "config_tree.txt").read_text()


@pytest.mark.parametrize("logger", ["csv", "many"])
def test_any_logger_gets_the_evaluation(tmp_path, logger):
    """Metrics go through Lightning's logger API, so a CSV logger (which takes no images) works
    and receives top-1 per strategy and resolution; TensorBoard also gets the plot."""
    import csv

    train_run(
        tmp_path, *TINY, f"logger={logger}", "trainer.max_epochs=1", "eval.resolutions=[32,48]",
        "eval.strategies=[extrapolate]", "eval.logn=[false]",
    )  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    top1 = {int(r["step"]): float(r["eval_top1/extrapolate"]) for r in rows if r.get("eval_top1/extrapolate")}
    expected = {m["resolution"]: m["top1"] for m in read_results(tmp_path)["metrics"]}
    assert top1 == pytest.approx(expected)
    assert (tmp_path / "tb").is_dir() == (logger == "many")


def test_the_wheel_ships_the_configs_and_trains_outside_the_checkout(tmp_path):
    """`pip install .` (not editable) must work from any directory: conf/ is in the wheel, and the
    console script's entry point trains with it."""
    import subprocess
    import sys
    import zipfile

    wheel_dir, site, elsewhere = tmp_path / "wheel", tmp_path / "site", tmp_path / "elsewhere"
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheel_dir, ROOT], check=True)
    (wheel,) = wheel_dir.glob("vit_rope-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.split("vit_rope/conf/")[1] for n in names if n.startswith("vit_rope/conf/") and n.endswith(".yaml")}
    assert shipped == {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "vit-rope-train = vit_rope.cli:train_main" in zipfile.ZipFile(wheel).read(entry).decode()
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True)
    elsewhere.mkdir()
    code = "import sys, vit_rope; print(vit_rope.__file__); from vit_rope.cli import train_main; train_main()"
    args = ["debug=fast_dev_run", *TINY, f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**__import__("os").environ, "PYTHONPATH": str(site), "VIT_ROPE_NO_PROGRESS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0].startswith(str(site))  # the installed copy, not the checkout
    assert (tmp_path / "run" / "config_tree.txt").is_file()
