"""Which weights a run is evaluated with: EMA of the weights, eval.weights=last|best|ema."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import ROOT, TINY, compose_train, eval_run, read_results, train_run
from tests.test_train import logged_scalars
from vit_rope.errors import ConfigError
from vit_rope.lit_module import ClassificationModule
from vit_rope.models import create_model
from vit_rope.tasks.train import train
from vit_rope.weights import EMA, EMA_KEY, EMAConfig, checkpoint_weights

ONE_CELL = ["eval.resolutions=[32]", "eval.strategies=[extrapolate]", "eval.logn=[false]"]


def test_ema_run_logs_both_top1_saves_both_weights_and_evaluates_each(tmp_path):
    run = tmp_path / "run"
    train_run(run, *TINY, "trainer.max_epochs=2", "ema.enabled=true", "ema.decay=0.9", "eval.weights=ema", *ONE_CELL)
    raw, ema = logged_scalars(run / "tb", "val/top1"), logged_scalars(run / "tb", "val/top1_ema")
    assert len(raw) == len(ema) == 2  # one of each per epoch
    results = read_results(run)
    assert results["run"]["weights"] == "ema"
    # the evaluation at the training resolution with the average is the last val/top1_ema
    assert results["metrics"][0]["top1"] == pytest.approx(ema[-1], abs=1e-3)

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert set(ckpt[EMA_KEY]) == set(ckpt["state_dict"])
    gap = max((ckpt[EMA_KEY][k] - ckpt["state_dict"][k]).abs().max().item() for k in ckpt["state_dict"])
    assert gap > 1e-4  # the average is not a copy of the raw weights

    for weights, expected in (("best", max(raw)), ("ema", ema[-1])):
        out = tmp_path / weights
        eval_run(out, f"run_dir={run}", f"eval.weights={weights}", *ONE_CELL, "logger=none")
        again = read_results(out)
        assert again["run"]["weights"] == weights
        assert again["metrics"][0]["top1"] == pytest.approx(expected, abs=1e-3), weights
    best_name = read_results(tmp_path / "best")["run"]["checkpoint"]
    assert best_name.startswith("best-epoch") and (run / "checkpoints" / best_name).is_file()


def train_in_python(run_dir, *overrides: str) -> None:
    """train(cfg) on a config composed in Python, as a script or notebook would run it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"hydra.run.dir={run_dir}"], return_hydra_config=True)
    train(cfg)


def nothing_of_ours_written(run_dir) -> bool:
    """Only Hydra's own .hydra/ folder (written before any task code runs) may exist."""
    return not run_dir.exists() or {p.name for p in run_dir.iterdir()} <= {".hydra"}


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5, -0.1])
def test_ema_decay_outside_0_1_is_refused_before_anything_is_written(tmp_path, decay):
    pattern = r"ema\.decay=.* is out of range; set ema\.decay to a number in \(0\.0, 1\.0\)"
    with pytest.raises(ConfigError, match=pattern):
        train_in_python(tmp_path / "run", "ema.enabled=true", f"ema.decay={decay}")
    assert nothing_of_ours_written(tmp_path / "run")


def test_eval_weights_ema_or_best_that_cannot_work_is_refused_before_training(tmp_path):
    cases = [
        (["eval.weights=ema"], r"eval\.weights=ema needs .* ema\.enabled=true"),
        (["eval.weights=best", "~callbacks.best_checkpoint"], r"eval\.weights=best needs a ModelCheckpoint .*val/top1"),
        (["eval.weights=newest"], r"Unknown eval\.weights 'newest'; choose one of last, best, ema"),
    ]
    for i, (overrides, pattern) in enumerate(cases):
        with pytest.raises(ConfigError, match=pattern):
            train_in_python(tmp_path / str(i), *overrides)
        assert nothing_of_ours_written(tmp_path / str(i))


def test_checkpoint_without_ema_or_best_says_so(tmp_path):
    net = create_model("vit_micro", num_classes=3, img_size=32, patch_size=8)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save({"state_dict": ClassificationModule(net).state_dict()}, ckpt)
    state, path = checkpoint_weights(ckpt, "last")
    assert path == ckpt and "model.head.weight" in state
    with pytest.raises(ConfigError, match=r"holds no EMA weights .*ema\.enabled=false.*use weights last or best"):
        checkpoint_weights(ckpt, "ema")
    with pytest.raises(ConfigError, match=r"eval\.weights=best but .* holds no best-\*\.ckpt.*use eval\.weights=last"):
        checkpoint_weights(ckpt, "best")


def test_ema_checkpoint_round_trip_restores_the_average():
    """What a resumed EMA run reads back is the average it saved (not the raw weights)."""

    def fitted_callback():
        module = ClassificationModule(create_model("vit_micro", num_classes=3, img_size=32, patch_size=8))
        cb = EMAConfig(enabled=True, decay=0.5).callback()
        cb.setup(None, module, "fit")
        return module, cb

    module, cb = fitted_callback()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    cb._average_model.update_parameters(module)  # first update copies, the second averages
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    cb._average_model.update_parameters(module)
    checkpoint = {"state_dict": module.state_dict()}
    cb.on_save_checkpoint(None, module, checkpoint)
    average = cb.average_state()
    raw_head, avg_head = checkpoint["state_dict"]["model.head.bias"], average["model.head.bias"]
    assert torch.allclose(raw_head - avg_head, torch.full_like(raw_head, 0.5))  # decay 0.5 of a step of 1

    module2, cb2 = fitted_callback()
    module2.load_state_dict(checkpoint["state_dict"])
    cb2.on_load_checkpoint(None, module2, checkpoint)
    for k, v in average.items():
        assert torch.equal(cb2.average_state()[k], v), k
    assert int(cb2._average_model.n_averaged) == 2


def test_ema_config_keys_match_the_yaml():
    cfg = compose_train()
    assert EMAConfig(**cfg.ema) == EMAConfig()  # the YAML block states the dataclass defaults
    assert isinstance(EMAConfig(enabled=True).callback(), EMA) and EMAConfig().callback() is None
