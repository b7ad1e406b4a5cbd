"""Data modules: synthetic shapes and sequences, image-folder subsets, and their error messages."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vit_rope.data import (
    CLASS_PRESETS,
    MARKER_A,
    MARKER_B,
    CorruptImageError,
    DataConfigError,
    ImageFolderDataModule,
    SequenceDataModule,
    SequenceDataset,
    ShapesDataModule,
    ShapesDataset,
)
from vit_rope.errors import ConfigError

# -- shapes ------------------------------------------------------------------------------------


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

    def snap(d: float) -> float:  # separated axes are >= min_sep apart, aligned ones <= align_tol
        return 0.0 if abs(d) < cfg.min_sep / 2 else float(np.sign(d)) * cfg.min_sep

    for i in range(60):
        (rx, ry), (tx, ty) = _centroid(red[i]), _centroid(blue[i])
        dx, dy = (tx - rx) / w, (ty - ry) / h
        assert cfg.label_of(snap(dx), snap(dy)) == ds.labels[i].item()
        # The thresholded centroids sit within a pixel or so of the scene's centres.
        mx, my = pos[i, 1] - pos[i, 0]
        assert abs(dx - mx) * w < 1.5 and abs(dy - my) * h < 1.5
        # And the exact rule holds on the scene's own offsets.
        assert cfg.label_of(mx, my) == ds.labels[i].item()


def _bag_of_patches(x: torch.Tensor, p: int = 4) -> torch.Tensor:
    """Features a model without positions can compute: the mean patch and the mean of each
    patch's outer product with itself (which sees two shapes that share a patch)."""
    n, c = x.shape[:2]
    patches = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(n, -1, c * p * p)
    second = torch.einsum("npi,npj->nij", patches, patches) / patches.shape[1]
    iu = torch.triu_indices(c * p * p, c * p * p)
    return torch.cat([patches.mean(1), second[:, iu[0], iu[1]]], 1).double()


def _ridge_accuracy(f_train, y_train, f_test, y_test, k: int) -> float:
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    a = torch.cat([(f_train - mu) / sd, torch.ones(len(f_train), 1, dtype=f_train.dtype)], 1)
    t = torch.cat([(f_test - mu) / sd, torch.ones(len(f_test), 1, dtype=f_test.dtype)], 1)
    ridge = 0.01 * len(a) * torch.eye(a.shape[1], dtype=a.dtype)
    weights = torch.linalg.solve(a.T @ a + ridge, a.T @ torch.nn.functional.one_hot(y_train, k).double())
    return ((t @ weights).argmax(1) == y_test).double().mean().item()


def test_bag_of_patches_is_at_chance_and_the_probe_can_see_a_leak():
    """A position-free probe (patch size 4 at 32 px) stays at chance on the default scenes and
    clearly beats chance when the shapes are close enough to share patches (control)."""
    torch.manual_seed(0)
    accs = {}
    for name, kw in (("default", {}), ("shared_patches", dict(min_sep=0.16, max_sep=0.2))):
        train, test = ShapesDataset(2000, 32, **kw), ShapesDataset(2000, 32, split="val", **kw)
        f_train, f_test = _bag_of_patches(_images(train, 2000)), _bag_of_patches(_images(test, 2000))
        accs[name] = _ridge_accuracy(f_train, train.labels, f_test, test.labels, 4)
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


# -- sequences ---------------------------------------------------------------------------------


def _marker_layout(tokens: torch.Tensor) -> tuple[int, int]:
    """(order, distance): order 0 if marker A comes first."""
    a = (tokens == MARKER_A).nonzero().flatten()
    b = (tokens == MARKER_B).nonzero().flatten()
    assert len(a) == 1 and len(b) == 1  # each marker exactly once
    return int(b[0] < a[0]), abs(int(b[0]) - int(a[0]))


def test_sequences_deterministic_and_label_from_tokens():
    ds = SequenceDataset(200, 64, seed=1)
    assert torch.equal(ds[5][0], SequenceDataset(200, 64, seed=1, cache=True)[5][0])
    assert not torch.equal(ds[5][0], SequenceDataset(200, 64, seed=1, split="val")[5][0])
    near_hi, far_lo = ds.config.distance_range(64, far=False)[1], ds.config.distance_range(64, far=True)[0]
    for i in range(200):
        tokens, label = ds[i]
        assert tokens.shape == (64,) and tokens.dtype == torch.int64
        assert tokens.min() >= 1 and tokens.max() < ds.config.vocab_size
        order, dist = _marker_layout(tokens)
        assert label == order + 2 * (dist >= far_lo)
        assert dist <= near_hi or dist >= far_lo
    assert np.bincount(ds.labels.numpy(), minlength=4).min() > 30


@pytest.mark.parametrize("mode", ["canvas", "zoom"])
def test_longer_sequences_keep_labels(mode):
    short = SequenceDataset(100, 64)
    long = SequenceDataset(100, 256, mode=mode, train_length=64)
    assert torch.equal(short.labels, long.labels)
    for i in range(100):
        order, dist = _marker_layout(short[i][0])
        order_long, dist_long = _marker_layout(long[i][0])
        assert order_long == order
        assert dist_long == (dist if mode == "canvas" else round(dist * 4))


def test_bag_of_tokens_is_at_chance():
    """Token counts (what a model without positions sees) do not predict the label."""
    train, test = SequenceDataset(3000, 64), SequenceDataset(3000, 64, split="val")

    def counts(ds):
        x = torch.stack([t for t, _ in ds.__getitems__(range(len(ds)))])
        return torch.nn.functional.one_hot(x, ds.config.vocab_size).sum(1).double()

    assert _ridge_accuracy(counts(train), train.labels, counts(test), test.labels, 4) < 0.30


def test_sequence_datamodule_batches():
    dm = SequenceDataModule(length=32, num_train=200, num_val=70, batch_size=32)
    assert (dm.num_classes, dm.train_resolution, dm.vocab_size) == (4, 32, 32)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 32) and x.dtype == torch.int64 and y.shape == (32,)
    val = list(dm.val_dataloader())
    same = list(dm.eval_dataloader(32))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(val, same, strict=True))
    longer = list(dm.eval_dataloader(128))
    assert longer[0][0].shape == (32, 128)
    assert torch.equal(torch.cat([y for _, y in longer]), torch.cat([y for _, y in val]))
    with pytest.raises(DataConfigError, match="use a length of at least"):
        dm.eval_dataloader(8)


# -- imagefolder -------------------------------------------------------------------------------

CLASSES = ("cat", "dog", "eel")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/{train,val}/{cat,dog,eel}/img{0..3}.png, 40x50 px, colour coded by class and index."""
    root = tmp_path / "imgs"
    for split in ("train", "val"):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (50, 40), (80 * c, 60 * i, 100)).save(d / f"img{i}.png")
    return root


def _label_by_folder(ds) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for path, label in ds.samples:
        out.setdefault(Path(path).parent.name, set()).add(label)
    return out


@pytest.mark.parametrize(
    "classes,expected",
    [(None, ["cat", "dog", "eel"]), ("first:2", ["cat", "dog"]), ("listfile", ["cat", "eel"]), (["eel"], ["eel"])],
)
def test_imagefolder_subsets_have_contiguous_identical_labels(tree, tmp_path, classes, expected):
    if classes == "listfile":
        classes = str(tmp_path / "classes.txt")
        Path(classes).write_text("eel\n\n# a comment\ncat  \n")
    dm = ImageFolderDataModule(tree, img_size=32, classes=classes, batch_size=4, num_workers=0)
    dm.setup()
    assert dm.class_names == expected and dm.num_classes == len(expected)
    want = {name: {i} for i, name in enumerate(expected)}
    assert _label_by_folder(dm._dataset("train")) == want
    assert _label_by_folder(dm._dataset("val")) == want
    labels = torch.cat([y for _, y in dm.val_dataloader()])
    assert sorted(labels.tolist()) == sorted(list(range(len(expected))) * 4)


def test_imagefolder_max_per_class_takes_first_files(tree):
    dm = ImageFolderDataModule(tree, img_size=32, max_per_class=2, num_workers=0)
    for split in ("train", "val"):
        names = [Path(p).name for p, _ in dm._dataset(split).samples]
        assert names == ["img0.png", "img1.png"] * 3


def test_imagefolder_transforms_and_resolutions(tree):
    dm = ImageFolderDataModule(tree, img_size=32, batch_size=5, num_workers=0, crop_pct=0.875)
    assert dm.train_resolution == 32
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 3, 32, 32) and y.dtype == torch.int64
    for res in (32, 48):
        x, _ = next(iter(dm.eval_dataloader(res)))
        assert x.shape == (5, 3, res, res)
    for a, b in zip(dm.val_dataloader(), dm.eval_dataloader(32), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # Eval transform: shorter side to int(r / crop_pct), then the centre crop; a flat image
    # stays flat, so the crop of a uniformly coloured image is that colour, normalised.
    x, _ = next(iter(dm.eval_dataloader(48)))
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    first = (torch.tensor([0, 0, 100]) / 255 - mean) / std  # cat/img0
    assert torch.allclose(x[0].mean((1, 2)), first, atol=0.02)
    with pytest.raises(DataConfigError, match="eval.mode='canvas'"):
        dm.eval_dataloader(48, mode="canvas")


def test_imagefolder_errors_name_the_value_and_fix(tree, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataConfigError, match=re.escape(f"data.root '{missing}' does not exist; set data.root")):
        ImageFolderDataModule(missing)
    (tmp_path / "half" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataConfigError, match=r"has no val/ folder"):
        ImageFolderDataModule(tmp_path / "half")
    with pytest.raises(DataConfigError, match="zebra") as e:
        ImageFolderDataModule(tree, classes=["cat", "zebra"])
    assert f"1 class(es) with no folder in '{tree / 'train'}'" in str(e.value)
    with pytest.raises(DataConfigError, match="no folder in"):
        ImageFolderDataModule(tree, classes="imagenette")  # a preset whose folders this tree lacks
    for bad in ("first:0", "first:9", "first:x"):
        with pytest.raises(DataConfigError, match="needs a whole number K from 1 to 3"):
            ImageFolderDataModule(tree, classes=bad)
    with pytest.raises(DataConfigError, match="is not a preset"):
        ImageFolderDataModule(tree, classes="imagenet1k")
    empty = tmp_path / "empty"
    for split in ("train", "val"):
        (empty / split / "cat").mkdir(parents=True)
    with pytest.raises(DataConfigError, match="holds no image files"):
        ImageFolderDataModule(empty, num_workers=0).setup()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupt_files_named_or_skipped_and_counted(tree, num_workers, caplog):
    bad = tree / "val" / "dog" / "img9.png"
    bad.write_bytes(b"this is not a png")
    dm = ImageFolderDataModule(tree, img_size=32, batch_size=4, num_workers=num_workers)
    with pytest.raises(CorruptImageError, match=re.escape(str(bad))) as e:
        list(dm.val_dataloader())
    assert "data.skip_corrupt=true" in str(e.value)
    dm = ImageFolderDataModule(tree, img_size=32, batch_size=4, num_workers=num_workers, skip_corrupt=True)
    dm.setup()
    for _ in range(2):  # counted once per file, not once per read
        n = sum(len(y) for _, y in dm.eval_dataloader(32))
        assert n == 12
    assert dm.num_skipped == 1
    dm.teardown("fit")
    assert "Skipped 1 unreadable image file(s)" in caplog.text


def test_class_presets():
    assert [len(CLASS_PRESETS[k]) for k in ("imagenette", "imagewoof", "imagenet100")] == [10, 10, 100]
    for names in CLASS_PRESETS.values():
        assert len(set(names)) == len(names) and all(re.fullmatch(r"n\d{8}", n) for n in names)
    assert "n03888257" in CLASS_PRESETS["imagenette"]  # parachute
