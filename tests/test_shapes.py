"""The ``shapes`` data: scenes, rendering at any size and mode, the absence of position-free
shortcuts, the data module, and its option checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import assert_names, data_defaults_off_yaml, ridge_accuracy
from vit_rope.data.common import DataConfigError
from vit_rope.data.shapes import ShapesDataModule, ShapesDataset
from vit_rope.data.shapes_scenes import ShapesConfig
from vit_rope.errors import ConfigError


def _images(ds: ShapesDataset, n: int) -> torch.Tensor:
    return torch.stack([x for x, _ in ds.__getitems__(range(n))])


def test_shapes_deterministic_per_seed_split_index():
    a, b = ShapesDataset(50, 32, seed=3), ShapesDataset(50, 32, seed=3, cache=True)
    x1, y1 = a[17]
    x2, y2 = a[17]
    x3, y3 = b[17]  # a fresh dataset, cached path
    assert torch.equal(x1, x2) and torch.equal(x1, x3) and y1 == y2 == y3
    assert x1.shape == (3, 32, 32) and x1.dtype == torch.float32
    assert not torch.equal(x1, ShapesDataset(50, 32, seed=3, split="val")[17][0])
    assert not torch.equal(x1, ShapesDataset(50, 32, seed=4)[17][0])
    # Roughly zero mean, unit std (fixed constants measured on the default scenes).
    x = _images(a, 50)
    assert x.mean().abs() < 0.25 and 0.5 < x.std() < 1.5


@pytest.mark.parametrize("size", [16, 48, 64, (32, 48), (40, 24)])
def test_shapes_any_size_same_labels(size):
    ref = ShapesDataset(20, 32)
    ds = ShapesDataset(20, size, train_size=32)
    h, w = (size, size) if isinstance(size, int) else size
    x, _ = ds[0]
    assert x.shape == (3, h, w) and torch.isfinite(x).all()
    assert torch.equal(ds.labels, ref.labels)


def test_zoom_and_canvas_agree_at_train_size_and_differ_larger():
    zoom32 = ShapesDataset(30, 32, mode="zoom", train_size=32)
    canvas32 = ShapesDataset(30, 32, mode="canvas", train_size=32)
    assert torch.equal(_images(zoom32, 30), _images(canvas32, 30))
    zoom64 = ShapesDataset(30, 64, mode="zoom", train_size=32)
    canvas64 = ShapesDataset(30, 64, mode="canvas", train_size=32)
    assert not torch.equal(_images(zoom64, 30), _images(canvas64, 30))

    # Shape area in pixels: zoom scales it by 4 at 2x, canvas keeps it.
    def red_pixels(ds):
        img = ds._make(np.arange(30)).float() / 255
        return ((img[:, 0] > 0.6) & (img[:, 1] < 0.5)).sum().item()

    base = red_pixels(zoom32)
    assert red_pixels(zoom64) / base == pytest.approx(4, rel=0.15)
    assert red_pixels(canvas64) / base == pytest.approx(1, rel=0.15)


def test_labels_balanced():
    for kw in (dict(), dict(relation="direction"), dict(relation="direction", num_classes=8)):
        ds = ShapesDataset(800, 32, **kw)
        counts = np.bincount(ds.labels.numpy(), minlength=ds.num_classes)
        expected = 800 / ds.num_classes
        assert counts.min() > 0.7 * expected and counts.max() < 1.3 * expected, (kw, counts)


def _centroid(mask: torch.Tensor) -> tuple[float, float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return xs.float().mean().item() + 0.5, ys.float().mean().item() + 0.5


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(relation="direction"),
        dict(relation="direction", num_classes=8),
        dict(relation="orientation", distractors=3),
    ],
)
@pytest.mark.parametrize("size,mode", [(32, "zoom"), (64, "canvas"), ((48, 32), "zoom"), ((32, 64), "canvas")])
def test_label_follows_rendered_relative_position(kw, size, mode):
    """Find the red square and the blue circle in the pixels; their offset gives the label."""
    ds = ShapesDataset(60, size, mode=mode, train_size=32, **kw)
    img = ds._make(np.arange(60)).float() / 255  # (n, 3, H, W) before normalisation
    h, w = img.shape[-2:]
    r, g, b = img[:, 0], img[:, 1], img[:, 2]
    red = (r > 0.7) & (g < 0.5) & (b < 0.5)
    blue = (b > 0.8) & (r < 0.45) & (g < 0.65)
    cfg, pos = ds.config, ds.scenes.pos

    def signs(dx: float, dy: float) -> tuple[int, int]:
        """The rule: an axis is aligned (0) within align_tol, else the offset's sign."""
        return tuple(0 if abs(d) <= cfg.align_tol else int(np.sign(d)) for d in (dx, dy))

    def snap(d: float) -> float:  # separated axes are >= min_sep apart, aligned ones <= align_tol
        return 0.0 if abs(d) < cfg.min_sep / 2 else float(np.sign(d)) * cfg.min_sep

    for i in range(60):
        sx, sy = cfg.offset_signs[ds.labels[i].item()]
        allowed = {(sx, sy), (-sx, -sy)} if cfg.relation == "orientation" else {(sx, sy)}
        (rx, ry), (tx, ty) = _centroid(red[i]), _centroid(blue[i])
        dx, dy = (tx - rx) / w, (ty - ry) / h
        assert signs(snap(dx), snap(dy)) in allowed
        # The thresholded centroids sit within a pixel or so of the scene's centres.
        mx, my = pos[i, 1] - pos[i, 0]
        assert abs(dx - mx) * w < 1.5 and abs(dy - my) * h < 1.5
        # And the exact rule holds on the scene's own offsets.
        assert signs(mx, my) in allowed


def _bag_of_patches(x: torch.Tensor, p: int = 4) -> torch.Tensor:
    """Features a model without positions can compute: the mean patch and the mean of each
    patch's outer product with itself (which sees two shapes that share a patch)."""
    n, c = x.shape[:2]
    patches = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(n, -1, c * p * p)
    second = torch.einsum("npi,npj->nij", patches, patches) / patches.shape[1]
    iu = torch.triu_indices(c * p * p, c * p * p)
    return torch.cat([patches.mean(1), second[:, iu[0], iu[1]]], 1).double()


def test_bag_of_patches_is_at_chance_and_the_probe_can_see_a_leak():
    """A position-free probe (patch size 4 at 32 px) stays at chance on the default scenes and
    clearly beats chance when the shapes are close enough to share patches (control)."""
    torch.manual_seed(0)
    accs = {}
    for name, kw in (("default", {}), ("shared_patches", dict(min_sep=0.16, max_sep=0.2))):
        train, test = ShapesDataset(2000, 32, **kw), ShapesDataset(2000, 32, split="val", **kw)
        f_train, f_test = _bag_of_patches(_images(train, 2000)), _bag_of_patches(_images(test, 2000))
        accs[name] = ridge_accuracy(f_train, train.labels, f_test, test.labels, 4)
    assert accs["default"] < 0.30, accs  # chance is 0.25; 2000 test samples give sd ~0.01
    assert accs["shared_patches"] > 0.45, accs


def test_absolute_position_of_one_shape_predicts_little():
    """Bayes classifier (8x8 histogram) from the target's or the reference's absolute position
    alone, fit on train scenes and scored on val scenes. Separation along an axis forces some
    leak (a shape at the left edge cannot be right of its partner); for the default
    ``orientation`` relation it stays small (0.25 is chance)."""

    def histogram_accuracy(shape: int, **kw) -> float:
        train, test = ShapesDataset(6000, 32, **kw).scenes, ShapesDataset(6000, 32, split="val", **kw).scenes
        k = int(train.label.max()) + 1

        def cell(xy):
            return np.clip((xy * 8).astype(int), 0, 7) @ np.array([8, 1])

        counts = np.zeros((64, k))
        np.add.at(counts, (cell(train.pos[:, shape]), train.label), 1)
        return float((counts.argmax(1)[cell(test.pos[:, shape])] == test.label).mean())

    assert histogram_accuracy(1) < 0.45 and histogram_accuracy(0) < 0.45


def test_shapes_datamodule_eval_loader_gives_the_val_samples():
    dm = ShapesDataModule(img_size=32, num_train=300, num_val=100, batch_size=64, patch_size=4)
    assert dm.num_classes == 4 and dm.train_resolution == 32
    val = list(dm.val_dataloader())
    same = list(dm.eval_dataloader(32))
    canvas = list(dm.eval_dataloader(32, mode="canvas"))
    for (x1, y1), (x2, y2), (x3, y3) in zip(val, same, canvas, strict=True):
        assert torch.equal(x1, x2) and torch.equal(x1, x3) and torch.equal(y1, y2) and torch.equal(y1, y3)
    labels = torch.cat([y for _, y in val])
    for res, mode in ((64, None), (48, "canvas")):
        batches = list(dm.eval_dataloader(res, mode=mode))
        assert batches[0][0].shape == (64, 3, res, res)
        assert torch.equal(torch.cat([y for _, y in batches]), labels)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 3, 32, 32) and y.dtype == torch.int64


def test_shapes_settings_are_checked():
    with pytest.raises(DataConfigError, match="min_sep to at least"):
        ShapesDataModule(img_size=32, num_train=10, num_val=10, patch_size=8)
    with pytest.raises(DataConfigError, match="relation='orientation' with num_classes=8"):
        ShapesDataset(10, 32, num_classes=8)
    with pytest.raises(DataConfigError, match="mode='stretch'"):
        ShapesDataset(10, 32, mode="stretch")
    with pytest.raises(DataConfigError, match="Unknown shapes option"):
        ShapesDataset(10, 32, colour="red")
    assert issubclass(DataConfigError, ConfigError) and issubclass(DataConfigError, ValueError)


def test_training_order_depends_only_on_seed_and_epoch():
    """A run resumed at epoch ``e`` sees the batches of one that was never interrupted."""

    def epoch_images(epoch: int) -> torch.Tensor:
        loader = ShapesDataModule(num_train=200, num_val=10, batch_size=50).train_dataloader()
        loader.sampler.set_epoch(epoch)
        return torch.cat([x for x, _ in loader])

    first = epoch_images(1)
    assert first.shape == (200, 3, 32, 32)
    assert torch.equal(first, epoch_images(1))
    assert not torch.equal(first, epoch_images(0))


def test_python_defaults_are_the_yaml_defaults():
    assert data_defaults_off_yaml("shapes", ShapesDataModule, ShapesConfig) == {}


def test_whole_numbers_from_a_config_file_are_ints():
    cfg = ShapesConfig(num_classes=4.0, distractors=2.0)
    assert (cfg.num_classes, cfg.distractors) == (4, 2) and isinstance(cfg.distractors, int)


WHOLE = "a whole number"


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(batch_size=0), f"data.batch_size=0 is out of range; set data.batch_size to {WHOLE} in [1, inf)."),
        (dict(batch_size=2.5), f"data.batch_size=2.5 is not {WHOLE}; set data.batch_size to {WHOLE} in [1, inf)."),
        (dict(num_workers=-1), f"data.num_workers=-1 is out of range; set data.num_workers to {WHOLE} in [0, inf)."),
        (dict(img_size=0), f"data.img_size=0 is out of range; set data.img_size to {WHOLE} in [1, inf)."),
        (
            dict(img_size=30, patch_size=4),
            "data.img_size 30 is not a multiple of the patch size 4; use a multiple of 4 such as 28 or 32.",
        ),
        (dict(patch_size=0), f"data.patch_size=0 is out of range; set data.patch_size to {WHOLE} in [1, inf)."),
        (dict(num_train=0), f"data.num_train=0 is out of range; set data.num_train to {WHOLE} in [1, inf)."),
        (dict(num_val=-5), f"data.num_val=-5 is out of range; set data.num_val to {WHOLE} in [1, inf)."),
        (dict(seed=-1), f"data.seed=-1 is out of range; set data.seed to {WHOLE} in [0, inf)."),
        (dict(mode="stretch"), "Unknown data.mode 'stretch'; choose one of zoom, canvas."),
        (dict(relation="diagonal"), "Unknown data.relation 'diagonal'; choose one of direction, orientation."),
        (dict(num_classes=0), f"data.num_classes=0 is out of range; set data.num_classes to {WHOLE} in [1, inf)."),
        (dict(distractors=-1), f"data.distractors=-1 is out of range; set data.distractors to {WHOLE} in [0, inf)."),
        (dict(distractors=1.5), f"data.distractors=1.5 is not {WHOLE}; set data.distractors to {WHOLE} in [0, inf)."),
        (dict(shape_size=0), "data.shape_size=0 is out of range; set data.shape_size to a number in (0, 0.5)."),
        (dict(shape_size="big"), "data.shape_size='big' is not a number; set data.shape_size to a number in (0, 0.5)."),
        (dict(size_jitter=1), "data.size_jitter=1 is out of range; set data.size_jitter to a number in [0, 1)."),
        (dict(border=-0.1), "data.border=-0.1 is out of range; set data.border to a number in [0, 0.5)."),
        (dict(colour_jitter=2), "data.colour_jitter=2 is out of range; set data.colour_jitter to a number in [0, 1]."),
        (dict(min_sep=0), "data.min_sep=0 is out of range; set data.min_sep to a number in (0, 1]."),
        (dict(max_sep=1.5), "data.max_sep=1.5 is out of range; set data.max_sep to a number in (0, 1]."),
        (dict(align_tol=-0.01), "data.align_tol=-0.01 is out of range; set data.align_tol to a number in [0, inf)."),
        (
            dict(max_sep=0.2),
            "data.min_sep=0.3, data.max_sep=0.2 must satisfy 0 < min_sep <= max_sep <= 0.786 (the room between "
            "the borders); lower them or data.shape_size.",
        ),
        (
            dict(align_tol=0.2),
            "data.align_tol=0.2 must be in [0, min_sep/2) so that aligned and separated axes cannot be confused; "
            "lower data.align_tol.",
        ),
    ],
)
def test_every_option_is_range_checked(kw, message):
    with pytest.raises(ConfigError) as e:
        ShapesDataModule(**{"num_train": 10, "num_val": 10, **kw})
    assert str(e.value) == message


def test_eval_mode_is_checked():
    dm = ShapesDataModule(num_train=10, num_val=10)
    with pytest.raises(ConfigError) as err:
        dm.eval_dataloader(48, mode="stretch")
    assert_names(str(err.value), "eval.mode", "stretch", "zoom, canvas")


# -- multi-resolution training (data.train_resolutions) ------------------------------------------

SIDES = [16, 24, 32]


def _epoch(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of ``epoch`` (the epoch is set where Lightning sets it, on the sampler)."""
    target = loader.batch_sampler.sampler if hasattr(loader.batch_sampler, "sides") else loader.sampler
    target.set_epoch(epoch)
    return list(loader)


def _digest(batches) -> str:
    import hashlib

    h = hashlib.sha256()
    for x, y in batches:
        h.update(x.numpy().tobytes())
        h.update(y.numpy().tobytes())
    return h.hexdigest()


def test_train_resolutions_off_gives_the_batches_of_a_module_without_it():
    kw = dict(img_size=32, num_train=200, num_val=10, batch_size=32, seed=3)
    for epoch in (0, 1):
        without = _epoch(ShapesDataModule(**kw).train_dataloader(), epoch)[:3]
        off = _epoch(ShapesDataModule(**kw, train_resolutions=None).train_dataloader(), epoch)[:3]
        assert _digest(off) == _digest(without)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_train_resolutions_one_listed_side_per_batch(num_workers):
    kw = dict(img_size=32, num_train=300, num_val=10, batch_size=20, seed=5, num_workers=num_workers)
    dm = ShapesDataModule(**kw, train_resolutions=SIDES)
    assert dm.train_resolution == 32  # the resolution of record stays img_size
    plain = ShapesDataModule(**kw).train_dataloader()
    loader = dm.train_dataloader()
    assert len(loader) == len(plain) == 15
    batches, reference = _epoch(loader, 2), _epoch(plain, 2)
    assert len(batches) == len(reference)
    sides = [x.shape[-1] for x, _ in batches]
    assert sides == loader.batch_sampler.sides()
    assert set(sides) == set(SIDES)
    for (x, y), (x_ref, y_ref) in zip(batches, reference, strict=True):
        assert x.shape == (20, 3, x.shape[-1], x.shape[-1]) and x.shape[-1] in SIDES
        assert torch.equal(y, y_ref)  # the same samples in the same order; only the side changes
        if x.shape[-1] == 32:
            assert torch.equal(x, x_ref)
    # The other sides are rendered from the scenes (zoom), not resized from img_size.
    k = sides.index(16)
    first = loader.batch_sampler.sampler  # the epoch's order gives the batch's scene indices
    indices = list(first)[k * 20 : (k + 1) * 20]
    direct = ShapesDataset(300, 16, seed=5)
    assert torch.equal(batches[k][0], _images_at(direct, indices))
    # Validation is unchanged.
    assert next(iter(dm.val_dataloader()))[0].shape[-1] == 32


def _images_at(ds: ShapesDataset, indices) -> torch.Tensor:
    return torch.stack([x for x, _ in ds.__getitems__(indices)])


def test_train_resolutions_follow_seed_and_epoch():
    def sides(seed: int, epoch: int) -> list[int]:
        loader = ShapesDataModule(num_train=640, num_val=10, batch_size=16, seed=seed, train_resolutions=SIDES)
        loader = loader.train_dataloader()
        loader.batch_sampler.set_epoch(epoch)
        return [x.shape[-1] for x, _ in loader]

    first = sides(0, 1)
    assert len(first) == 40 and first == sides(0, 1)  # a resumed run sees the same sides
    assert first != sides(0, 2) and first != sides(1, 1)


def test_train_resolutions_under_lightnings_distributed_sampler():
    """On two devices Lightning re-makes the batch sampler around a DistributedSampler (from the
    arguments it captured): each rank gets half the batches, shuffled and disjoint, and both ranks
    draw the same side at each step."""
    from lightning.fabric.utilities.data import _replace_dunder_methods, _set_sampler_epoch
    from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
    from lightning.pytorch.trainer.states import RunningStage
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader

    dm = ShapesDataModule(num_train=320, num_val=10, batch_size=16, train_resolutions=SIDES)
    ranks = []
    for rank in (0, 1):
        with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
            loader = dm.train_dataloader()
        sampler = _get_distributed_sampler(loader, shuffle=True, overfit_batches=0, num_replicas=2, rank=rank)
        loader = _update_dataloader(loader, sampler, mode=RunningStage.TRAINING)
        _set_sampler_epoch(loader, 3)
        assert loader.batch_sampler.epoch == 3
        ranks.append(list(iter(loader.batch_sampler)))
    assert len(ranks[0]) == len(ranks[1]) == 10
    for a, b in zip(*ranks, strict=True):
        assert len({side for _, side in a + b}) == 1
    indices = [[i for batch in r for i, _ in batch] for r in ranks]
    assert not set(indices[0]) & set(indices[1]) and indices[0] != sorted(indices[0])


def test_train_resolutions_in_a_training_run(tmp_path):
    """One training step at a side other than img_size (the only one listed), then validation at img_size."""
    from tests.conftest import TINY, train_run

    out = train_run(tmp_path, "debug=fast_dev_run", *TINY, "data.train_resolutions=[48]")
    assert 0.0 <= out["val"]["val/top1"] <= 100.0


@pytest.mark.parametrize(
    "kw,message",
    [
        (
            dict(train_resolutions=[16, 50, 32], patch_size=8, img_size=64),
            "data.train_resolutions entry 50 is not a multiple of the patch size 8; use a multiple of 8 such as "
            "48 or 56.",
        ),
        (
            dict(train_resolutions=[]),
            "data.train_resolutions is an empty list; list at least one image side (e.g. [data.img_size]), or set "
            "it to null to train at data.img_size only.",
        ),
        (
            dict(train_resolutions=32),
            "data.train_resolutions=32 is not a list; set it to a list of image sides such as [16, 24, 32], or to "
            "null to train at data.img_size only.",
        ),
        (
            dict(train_resolutions=[32, 0]),
            f"data.train_resolutions[1]=0 is out of range; set data.train_resolutions[1] to {WHOLE} in [1, inf).",
        ),
        (
            dict(train_resolutions=[24.5]),
            f"data.train_resolutions[0]=24.5 is not {WHOLE}; set data.train_resolutions[0] to {WHOLE} in [1, inf).",
        ),
        (
            dict(train_resolutions=[16, 32], patch_size=4),
            "With patch_size=4 at data.train_resolutions entry 16 one patch can hold pixels of both shapes, so a "
            "model without positions could beat chance on those batches; use sides of at least 28 in "
            "data.train_resolutions or set data.min_sep to at least 0.404 (and data.max_sep to match).",
        ),
    ],
)
def test_train_resolutions_are_checked(kw, message):
    with pytest.raises(ConfigError) as e:
        ShapesDataModule(**{"num_train": 10, "num_val": 10, **kw})
    assert str(e.value) == message
