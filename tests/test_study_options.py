"""The options behind the regime study: APE position perturbation, data regimes (a cap on
training images per class), a schedule counted in images seen, and a fixed evaluation subset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, assert_names, compose_run, read_results, train_run, write_image_tree
from vit_rope.errors import ConfigError
from vit_rope.layers.abs_pos import LearnedPosEmbed
from vit_rope.models import make_pos_embed


def test_a_perturbed_table_is_a_window_of_the_table_resampled_as_at_test_time():
    table = LearnedPosEmbed(16, (8, 8), num_prefix_tokens=1, cls_slot=True, init_std=1.0, perturb_zoom=2.0)
    assert torch.equal(table.window((8, 8), (0, 0), (8, 8)), table.pos_embed)  # zoom 1: the table itself
    big = table.table((16, 16))  # what a test at 2x reads (timm's bicubic resampling)
    window = table.window((16, 16), (3, 5), (8, 8))
    assert torch.equal(window[:, 0], table.pos_embed[:, 0])  # the class slot is not moved
    assert torch.equal(window[:, 1:].unflatten(1, (8, 8)), big[:, 1:].unflatten(1, (16, 16))[:, 3:11, 5:13])
    # a sequence (one row) zooms along its length only
    seq = LearnedPosEmbed(8, (12,), num_prefix_tokens=0, cls_slot=False, init_std=1.0, perturb_zoom=3.0)
    torch.manual_seed(0)
    assert seq.perturbed((12,)).shape == (1, 12, 8)


def test_perturbation_acts_in_training_only_and_draws_new_tables():
    table = LearnedPosEmbed(8, (4, 4), num_prefix_tokens=1, cls_slot=True, init_std=1.0, perturb_zoom=3.0)
    tokens, prefix = torch.zeros(2, 16, 8), torch.zeros(2, 1, 8)
    table.eval()
    assert torch.equal(table(tokens, prefix, (4, 4)), table.pos_embed.expand(2, -1, -1))
    table.train()
    torch.manual_seed(0)
    draws = [table(tokens, prefix, (4, 4)) for _ in range(8)]
    assert any(not torch.allclose(d, table.pos_embed.expand(2, -1, -1)) for d in draws)
    assert len({tuple(d.flatten()[:20].tolist()) for d in draws}) > 1


def test_perturb_zoom_below_one_is_one_sentence():
    assert make_pos_embed("ape", perturb_zoom=2.0).perturb_zoom == 2.0
    with pytest.raises(ConfigError) as err:
        make_pos_embed("ape", perturb_zoom=0.5)
    assert_names(str(err.value), "pos_embed.perturb_zoom", "0.5")


def test_regimes_change_the_data_only(tmp_path: Path):
    base = compose_run("train", tmp_path, "experiment=imagenette_extrapolation")
    for regime in ("full", "five_classes", "hundred_per_class"):
        cfg = compose_run("train", tmp_path, "experiment=imagenette_extrapolation", f"regime={regime}")
        for group in ("pos_embed", "model", "optim", "trainer", "eval"):
            assert cfg[group] == base[group], (regime, group)
        assert (cfg.train_images, cfg.warmup_images) == (base.train_images, base.warmup_images)
    small = compose_run("train", tmp_path, "experiment=imagenette_extrapolation", "regime=five_classes")
    assert (small.data.classes, small.data.train_per_class) == ("first:5", 300)


def test_schedule_in_images_seen_and_a_training_cap_per_class(tmp_path: Path, capsys):
    root = write_image_tree(tmp_path / "images", per_class=6, size=(16, 16))
    common = [*TINY[:-3], "data=imagefolder", f"data.root={root}", "data.img_size=16", "model.patch_size=4",
              "data.batch_size=4", "logger=none", "eval.resolutions=[16,24]", "eval.strategies=[extrapolate]",
              "eval.logn=[false]", "eval.diagnostics_images=0"]  # fmt: skip
    # 3 classes x 2 training images = 6 images; 30 images seen -> 5 epochs; validation keeps all 18
    out = train_run(tmp_path / "run", *common, "data.train_per_class=2", "train_images=30", "warmup_images=6")
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 4  # epochs 0..4
    assert {m["n"] for m in out["metrics"]} == {18}
    assert "train_images=30 over 6 training images -> 5 epochs" in capsys.readouterr().out


def test_warmup_images_without_train_images_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        train_run(tmp_path / "run", *TINY, "warmup_images=100")
    assert_names(str(err.value), "warmup_images=100", "train_images")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_eval_subset_is_the_same_samples_in_every_cell_and_recorded(tmp_path: Path):
    over = [*TINY, "logger=none", "trainer.max_epochs=1", "eval.resolutions=[32,48]",
            "eval.strategies=[extrapolate,interpolate]", "eval.logn=[false]", "eval.diagnostics_images=0"]  # fmt: skip
    out = train_run(tmp_path / "run", *over, "eval.subset=50")
    results = read_results(tmp_path / "run")
    assert results["run"]["eval_subset"] == 50
    assert {m["n"] for m in results["metrics"]} == {50}
    assert out["val"]["val/n"] == 128  # validation during training sees them all
    # the subset is drawn with a fixed seed: the same 50 samples whatever the run's seed
    from vit_rope.eval.loop import eval_subset

    loader = torch.utils.data.DataLoader(list(range(128)), batch_size=64)
    a = [int(x) for b in eval_subset(loader, 50) for x in b]
    torch.manual_seed(123)
    b = [int(x) for b in eval_subset(loader, 50) for x in b]
    assert a == b and len(set(a)) == 50 and a == sorted(a)


def test_eval_subset_larger_than_the_validation_set_is_refused_before_training(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        train_run(tmp_path / "run", *TINY, "logger=none", "eval.subset=1000")
    assert_names(str(err.value), "eval.subset=1000", "128", "eval.subset=null")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_epochs_and_images_seen_on_one_command_line_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        train_run(tmp_path / "run", *TINY, "train_images=512", "trainer.max_epochs=2")
    assert_names(str(err.value), "trainer.max_epochs=2", "train_images=512", "train_images=null")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_regime_option_out_of_range_is_one_sentence(tmp_path: Path):
    from vit_rope.data.imagefolder import ImageFolderDataModule

    root = write_image_tree(tmp_path / "images", per_class=2, size=(16, 16))
    with pytest.raises(ConfigError) as err:
        ImageFolderDataModule(str(root), img_size=16, train_per_class=0)
    assert_names(str(err.value), "data.train_per_class", "0", "whole number")
    capped = ImageFolderDataModule(str(root), img_size=16, train_per_class=1)
    capped.setup("fit")
    assert (len(capped.train_dataloader().dataset), len(capped.val_dataloader().dataset)) == (3, 6)
