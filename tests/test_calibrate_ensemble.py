"""The label-free test-time strategies: ``ensemble`` (predictions averaged over position scales)
and ``calibrate`` (alpha and a temperature chosen per layer and head)."""

import pytest
import torch

from tests.conftest import TINY, assert_names, eval_run, read_results, train_run
from vit_rope import create_model, create_text_model
from vit_rope.errors import ConfigError, PositionConfigError
from vit_rope.eval.calibrate import calibrate, calibrate_model
from vit_rope.eval.diagnostics import HeadRecorder, record_attention
from vit_rope.extrapolate import CALIBRATION_ALPHAS, CALIBRATION_TEMPERATURES, ensemble_logits

ROTARY = ["rope1d", "rope_axial", "rope_mixed", "rope_general", "rope_spiral", "rope_axial_ape"]


def vit(pos_embed, **options):
    torch.manual_seed(0)
    model = create_model("vit_micro", pos_embed, num_classes=3, img_size=32, patch_size=8, pos_options=options)
    with torch.no_grad():
        for blk in model.blocks:  # sharper attention than at init, so that positions matter
            blk.attn.qkv.weight.mul_(4)
    return model.eval()


# -- ensemble ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pos_embed", ROTARY)
def test_ensemble_averages_extrapolate_half_and_interpolate(pos_embed):
    model = vit(pos_embed)
    x, big = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        plain = model(x)
        with model.use_strategy("extrapolate"):
            extrapolated = model(big)
        with model.use_strategy("interpolate"):
            interpolated = model(big)
        half = model.forward_head(model.forward_features(big, alpha=0.5))
        # alpha 0 and 1 are extrapolate and interpolate, bit for bit
        assert torch.equal(model.forward_head(model.forward_features(big, alpha=0.0)), extrapolated)
        assert torch.equal(model.forward_head(model.forward_features(big, alpha=1.0)), interpolated)
        assert not torch.allclose(half, extrapolated, atol=1e-4) and not torch.allclose(half, interpolated, atol=1e-4)
        with model.use_strategy("ensemble"):
            assert torch.equal(model(x), plain)  # the identity at the training grid
            out = model(big)
    mean = (extrapolated.softmax(-1) + half.softmax(-1) + interpolated.softmax(-1)) / 3
    torch.testing.assert_close(out.softmax(-1), mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, ensemble_logits([extrapolated, half, interpolated]))


@pytest.mark.parametrize("strategy", ["ensemble", "calibrate"])
@pytest.mark.parametrize("pos_embed", ["none", "ape", "sincos", "rope_dinov3"])
def test_label_free_strategies_are_na_without_rotary_frequencies(strategy, pos_embed):
    model = create_model("vit_micro", pos_embed, num_classes=3, img_size=32, patch_size=8)
    assert not model.strategy_applies(strategy)
    with pytest.raises(PositionConfigError) as err:
        model.set_strategy(strategy)
    assert_names(str(err.value), strategy, pos_embed)
    with pytest.raises(PositionConfigError) as err:
        calibrate(model, torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64))
    assert_names(str(err.value), "calibrate", pos_embed, "n/a")
    assert str(err.value).count(". ") == 0  # one sentence


# -- calibrate -----------------------------------------------------------------------------------


def test_calibrate_is_the_identity_at_the_training_resolution():
    model = vit("rope_axial")
    x = torch.randn(4, 3, 32, 32)
    calibration = calibrate_model(model, x, x)
    assert torch.equal(calibration.alpha, torch.zeros(4, 4)) and torch.equal(calibration.temperature, torch.ones(4, 4))
    with torch.no_grad():
        ref = model(x)
        with model.use_strategy("calibrate"):
            assert torch.equal(model(x), ref)


def test_calibrate_without_a_calibration_names_the_fix():
    model = vit("rope_axial")
    with model.use_strategy("calibrate"), pytest.raises(PositionConfigError) as err:
        model(torch.randn(1, 3, 64, 64))
    assert_names(str(err.value), "calibrate", "(8, 8)", "calibrate_model")


@pytest.mark.parametrize("pos_embed", ROTARY)
def test_calibrate_applies_to_every_rotary_family(pos_embed):
    """The choice is on the grids, one per layer and head; the calibrated forward uses it: with
    every alpha 1 and temperature 1 it is ``interpolate``, and it is what the choice says."""
    model = vit(pos_embed)
    small, big = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 64, 64)
    calibration = calibrate_model(model, small, big)
    assert calibration.alpha.shape == calibration.temperature.shape == (4, 4)
    assert set(calibration.alpha.flatten().tolist()) <= set(CALIBRATION_ALPHAS)
    assert set(calibration.temperature.flatten().tolist()) <= {torch.tensor(t).item() for t in CALIBRATION_TEMPERATURES}
    with torch.no_grad():
        with model.use_strategy("calibrate"):
            calibrated = model(big)
        x, grid = model.forward_tokens(big)
        direct = model.forward_head(
            model.norm(model.forward_blocks(x, grid, alpha=calibration.alpha, temperature=calibration.temperature))
        )
        assert torch.equal(calibrated, direct)
        ones = torch.ones(4, 4)
        with model.use_strategy("interpolate"):
            interpolated = model(big)
        as_interpolate = model.forward_head(model.norm(model.forward_blocks(x, grid, alpha=ones, temperature=ones)))
    torch.testing.assert_close(as_interpolate, interpolated, atol=1e-5, rtol=1e-5)


def test_calibrate_matches_each_heads_distance_better_than_any_one_alpha():
    """Layer 0's choice per head: its attention distance (a fraction of the image) on the test
    grid is the nearest to the training grid's of all candidates, head by head."""
    model = vit("rope_axial")
    small, big = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 96, 96)
    calibration = calibrate(model, small, big)

    def layer0_distance(images, alpha):
        rec = HeadRecorder(4, model.num_prefix_tokens, layers=[0])
        with torch.no_grad(), record_attention(model, rec):
            x, grid = model.forward_tokens(images)
            rec.grid = grid
            model.forward_blocks(x, grid, 0, 1, alpha=alpha)
        return rec.distance_fraction(0)

    ref = layer0_distance(small, 0.0)
    chosen = layer0_distance(big, calibration.alpha)
    for a in CALIBRATION_ALPHAS:
        other = layer0_distance(big, a)
        assert ((chosen - ref).abs() <= (other - ref).abs() + 1e-6).all()
    # at 3x the same candidate is not the best for every head, or the choice would be one rule
    assert len(set(calibration.alpha[0].tolist())) > 1


def test_calibrate_on_text_where_length_plays_resolution():
    torch.manual_seed(0)
    model = create_text_model("text_micro", vocab_size=8, max_len=16, num_classes=2).eval()
    short, long = torch.randint(0, 8, (8, 16)), torch.randint(0, 8, (8, 64))
    calibration = calibrate_model(model, short, long)
    depth, heads = model.cfg.depth, model.cfg.num_heads
    assert calibration.alpha.shape == (depth, heads)
    assert (calibration.alpha != 0).any() or (calibration.temperature != 1).any()  # not extrapolate
    with torch.no_grad():
        with model.use_strategy("calibrate"):
            out = model(long)
        with model.use_strategy("extrapolate"):
            plain = model(long)
        x, grid = model.forward_tokens(long)
        direct = model.forward_blocks(x, grid, alpha=calibration.alpha, temperature=calibration.temperature)
    assert torch.equal(out, model.forward_head(model.norm(direct)))
    assert not torch.allclose(out, plain, atol=1e-5)


# -- the evaluation ------------------------------------------------------------------------------


def test_eval_rows_and_calibration_do_not_read_labels(tmp_path, monkeypatch):
    """One training run; ``ensemble`` and ``calibrate`` are one cell each, the calibration is in
    results.json per layer and head, and shuffled labels change top-1 but not the choices."""
    args = ["eval.resolutions=[32,64]", "eval.strategies=[extrapolate,interpolate,ensemble,calibrate]",
            "eval.logn=[false]", "eval.calibration_images=16", "eval.diagnostics_images=0"]  # fmt: skip
    train_run(tmp_path / "run", *TINY, "trainer.max_epochs=2", *args)
    rows = {(m["resolution"], m["strategy"]): m for m in read_results(tmp_path / "run")["metrics"]}
    assert rows[(32, "ensemble")]["top1"] == rows[(32, "calibrate")]["top1"] == rows[(32, "extrapolate")]["top1"]
    assert "calibration" not in rows[(32, "calibrate")]
    calibration = rows[(64, "calibrate")]["calibration"]
    assert len(calibration["alpha"]) == 2 and all(len(r) == 2 for r in calibration["alpha"])  # depth x heads
    assert calibration["images"] == 16
    assert rows[(64, "ensemble")]["top1"] is not None

    ckpt = f"ckpt_path={tmp_path}/run/checkpoints/last.ckpt"
    eval_run(tmp_path / "again", ckpt, *args)
    from vit_rope.data.synthetic import SyntheticDataset

    items = SyntheticDataset.__getitems__
    monkeypatch.setattr(
        SyntheticDataset, "__getitems__", lambda self, idx: [(x, (y + 1) % 4) for x, y in items(self, idx)]
    )
    eval_run(tmp_path / "shuffled", ckpt, *args)
    again = {(m["resolution"], m["strategy"]): m for m in read_results(tmp_path / "again")["metrics"]}
    shuffled = {(m["resolution"], m["strategy"]): m for m in read_results(tmp_path / "shuffled")["metrics"]}
    assert shuffled[(64, "calibrate")]["calibration"] == again[(64, "calibrate")]["calibration"] == calibration
    assert shuffled[(64, "calibrate")]["top1"] != again[(64, "calibrate")]["top1"]  # the labels did change
    # each run's own report draws the choice beside its comparison
    assert (tmp_path / "again" / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("value", [0, -3, 2.5])
def test_calibration_images_out_of_range(tmp_path, value):
    with pytest.raises(ConfigError) as err:
        train_run(tmp_path, *TINY, f"eval.calibration_images={value}", "eval.strategies=[calibrate]")
    assert_names(str(err.value), "eval.calibration_images", str(value))


def test_calibration_images_beyond_the_validation_set(tmp_path):
    with pytest.raises(ConfigError) as err:
        train_run(tmp_path, *TINY, "eval.calibration_images=500", "eval.strategies=[calibrate]")
    assert_names(str(err.value), "eval.calibration_images=500", "128", "eval.calibration_images=128")


@pytest.mark.parametrize("cache", ["none", "ram"])
def test_calibration_inputs_are_the_loaders_first_inputs_for_image_folders(tmp_path, cache):
    """The calibration inputs go through the loader's own collate (the cached folder normalises
    uint8 batches there), with a placeholder label: they equal the first inputs the loader gives."""
    from tests.conftest import write_image_tree
    from vit_rope.data.imagefolder import ImageFolderDataModule
    from vit_rope.eval.loop import _first_inputs

    root = write_image_tree(tmp_path / "tree", per_class=4, size=(40, 50))
    data = ImageFolderDataModule(root, img_size=32, batch_size=5, num_workers=0, cache=cache, cache_dir=tmp_path / "c")
    data.setup()
    inputs = _first_inputs(data, 48, "zoom", 7)
    first, _ = next(iter(data.eval_dataloader(48, batch_size=7)))
    assert inputs.shape == (7, 3, 48, 48) and inputs.dtype == torch.float32
    torch.testing.assert_close(inputs, first)
