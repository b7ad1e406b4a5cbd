"""The ``imagefolder`` data: class subsets and their labels, transforms at any resolution,
unreadable files, the class presets, and the option checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import data_defaults_off_yaml, write_image_tree
from vit_rope.data.class_lists import CLASS_PRESETS
from vit_rope.data.common import CorruptImageError, DataConfigError
from vit_rope.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataModule
from vit_rope.errors import ConfigError

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


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_batch_of_only_unreadable_files_stops_with_a_clear_error(tree, num_workers):
    """With skip_corrupt, a batch whose every file is unreadable would be empty and make the loss
    NaN; it stops with an error that says how many files, where, and the fix."""
    cat = tree / "val" / "cat"
    for i in range(4):  # the whole first validation batch (cat is label 0, files in sorted order)
        (cat / f"img{i}.png").write_bytes(b"this is not a png")
    dm = ImageFolderDataModule(tree, img_size=32, batch_size=4, num_workers=num_workers, skip_corrupt=True)
    with pytest.raises(CorruptImageError) as e:
        list(dm.val_dataloader())
    assert isinstance(e.value, ConfigError)
    assert (
        f"All 4 image files of a batch in '{cat}' are unreadable (the first is '{cat / 'img0.png'}'); "
        "replace or delete the unreadable files there (the warnings above name each one)."
    ) in str(e.value)
    # Training: every file unreadable, so the first shuffled batch is too.
    for path in (tree / "train").rglob("*.png"):
        path.write_bytes(b"this is not a png")
    with pytest.raises(CorruptImageError, match=re.escape(f"All 4 image files of a batch in '{tree / 'train'}")):
        next(iter(dm.train_dataloader()))


def test_python_defaults_are_the_yaml_defaults():
    assert data_defaults_off_yaml("imagefolder", ImageFolderDataModule) == {}


WHOLE = "a whole number"


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(img_size=0), f"data.img_size=0 is out of range; set data.img_size to {WHOLE} in [1, inf)."),
        (dict(img_size=None), f"data.img_size=None is not {WHOLE}; set data.img_size to {WHOLE} in [1, inf)."),
        (
            dict(max_per_class=0),
            f"data.max_per_class=0 is out of range; set data.max_per_class to {WHOLE} in [1, inf).",
        ),
        (dict(batch_size=0), f"data.batch_size=0 is out of range; set data.batch_size to {WHOLE} in [1, inf)."),
        (dict(num_workers=-1), f"data.num_workers=-1 is out of range; set data.num_workers to {WHOLE} in [0, inf)."),
        (dict(crop_pct=0), "data.crop_pct=0 is out of range; set data.crop_pct to a number in (0, 1]."),
        (dict(crop_pct=1.5), "data.crop_pct=1.5 is out of range; set data.crop_pct to a number in (0, 1]."),
        (dict(re_prob=-0.1), "data.re_prob=-0.1 is out of range; set data.re_prob to a number in [0, 1]."),
        (dict(re_prob=1.5), "data.re_prob=1.5 is out of range; set data.re_prob to a number in [0, 1]."),
        (dict(skip_corrupt="yes"), "Unknown data.skip_corrupt 'yes'; choose one of True, False."),
        (dict(cache="fast"), "Unknown data.cache 'fast'; choose one of none, ram, disk."),
        (
            dict(threads_per_worker=0),
            f"data.threads_per_worker=0 is out of range; set data.threads_per_worker to {WHOLE} in [1, inf).",
        ),
        (dict(patch_size=0), f"data.patch_size=0 is out of range; set data.patch_size to {WHOLE} in [1, inf)."),
        (
            dict(img_size=36, patch_size=8),
            "data.img_size 36 is not a multiple of the patch size 8; use a multiple of 8 such as 32 or 40.",
        ),
        (
            dict(img_size=32, patch_size=8, train_resolutions=[16, 50]),
            "data.train_resolutions entry 50 is not a multiple of the patch size 8; use a multiple of 8 such as "
            "48 or 56.",
        ),
        (
            dict(train_resolutions=[]),
            "data.train_resolutions is an empty list; list at least one image side (e.g. [data.img_size]), or set "
            "it to null to train at data.img_size only.",
        ),
        (
            dict(train_resolutions="16,24"),
            "data.train_resolutions='16,24' is not a list; set it to a list of image sides such as [16, 24, 32], "
            "or to null to train at data.img_size only.",
        ),
        (
            dict(train_resolutions=[-8]),
            f"data.train_resolutions[0]=-8 is out of range; set data.train_resolutions[0] to {WHOLE} in [1, inf).",
        ),
    ],
)
def test_every_option_is_range_checked_before_the_root_is_read(tmp_path, kw, message):
    with pytest.raises(ConfigError) as e:
        ImageFolderDataModule(tmp_path / "not_read", **kw)
    assert str(e.value) == message


def test_auto_augment_policy_is_checked(tree):
    with pytest.raises(DataConfigError) as e:
        ImageFolderDataModule(tree, auto_augment="foo")
    message = str(e.value)
    assert message.startswith("data.auto_augment='foo' is not a timm augmentation policy (")
    assert message.endswith("; use e.g. rand-m9-mstd0.5-inc1, augmix-m5-w3, original, or null for none.")
    assert ImageFolderDataModule(tree, auto_augment="rand-m9-mstd0.5-inc1").auto_augment == "rand-m9-mstd0.5-inc1"


# -- multi-resolution training (data.train_resolutions) ------------------------------------------

SIDES = [16, 24, 32]


@pytest.fixture
def big_tree(tmp_path: Path) -> Path:
    """24 training images (3 classes x 8), enough for 12 batches of 2."""
    return write_image_tree(tmp_path / "big", per_class=8)


def _epoch(loader, epoch: int, seed: int = 0) -> list:
    """The batches of ``epoch``; the global seeds fix the random crops (num_workers=0)."""
    import random

    import numpy as np

    sampler = loader.batch_sampler.sampler if hasattr(loader.batch_sampler, "sides") else loader.sampler
    sampler.set_epoch(epoch)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    return list(loader)


def test_train_resolutions_off_gives_the_batches_of_a_module_without_it(big_tree, monkeypatch):
    import hashlib

    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    kw = dict(img_size=32, batch_size=4, num_workers=0, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)

    def digest(dm, epoch):
        h = hashlib.sha256()
        for x, y in _epoch(dm.train_dataloader(), epoch)[:3]:
            h.update(x.numpy().tobytes())
            h.update(y.numpy().tobytes())
        return h.hexdigest()

    for epoch in (0, 1):
        without = digest(ImageFolderDataModule(big_tree, **kw), epoch)
        assert digest(ImageFolderDataModule(big_tree, **kw, patch_size=8, train_resolutions=None), epoch) == without


@pytest.mark.parametrize("num_workers", [0, 1])
def test_train_resolutions_one_listed_side_per_batch(big_tree, monkeypatch, num_workers):
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    kw = dict(img_size=32, batch_size=2, num_workers=num_workers, patch_size=8)
    dm = ImageFolderDataModule(big_tree, **kw, train_resolutions=SIDES)
    assert dm.train_resolution == 32
    loader, plain = dm.train_dataloader(), ImageFolderDataModule(big_tree, **kw).train_dataloader()
    assert len(loader) == len(plain) == 12
    batches, reference = _epoch(loader, 1), _epoch(plain, 1)
    assert len(batches) == len(reference)
    sides = [x.shape[-1] for x, _ in batches]
    assert sides == loader.batch_sampler.sides() and set(sides) == set(SIDES)
    for (x, y), (_, y_ref) in zip(batches, reference, strict=True):
        assert x.shape == (2, 3, x.shape[-1], x.shape[-1]) and torch.isfinite(x).all()
        assert torch.equal(y, y_ref)  # the same images in the same order; only the side changes
    # Validation and evaluation are unchanged.
    assert next(iter(dm.val_dataloader()))[0].shape == (2, 3, 32, 32)
    assert next(iter(dm.eval_dataloader(48)))[0].shape == (2, 3, 48, 48)


def test_train_resolutions_follow_seed_and_epoch(big_tree, monkeypatch):
    def sides(seed: int, epoch: int) -> list[int]:
        monkeypatch.setenv("PL_GLOBAL_SEED", str(seed))
        dm = ImageFolderDataModule(big_tree, img_size=32, batch_size=2, num_workers=0, train_resolutions=SIDES)
        return [x.shape[-1] for x, _ in _epoch(dm.train_dataloader(), epoch)]

    first = sides(0, 1)
    assert first == sides(0, 1)  # a resumed run sees the same sides
    assert first != sides(0, 2) and first != sides(1, 1)


def test_train_resolutions_skip_unreadable_files(big_tree, monkeypatch):
    (big_tree / "train" / "dog" / "dog_0.png").write_bytes(b"this is not a png")
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    dm = ImageFolderDataModule(
        big_tree, img_size=32, batch_size=4, num_workers=0, skip_corrupt=True, train_resolutions=SIDES
    )
    batches = _epoch(dm.train_dataloader(), 0)
    assert sum(len(y) for _, y in batches) == 23 and dm.num_skipped == 1


# -- the decoded-image cache (data.cache) ----------------------------------------------------------


@pytest.fixture
def smooth_tree(tmp_path: Path) -> Path:
    """root/{train,val}/{cat,dog,eel}/img{0..3}: 200x160 colour gradients, odd ones JPEG (so that
    the cache decodes them in draft mode); red encodes the class and green the index."""
    import numpy as np

    root = tmp_path / "smooth"
    yy, xx = np.mgrid[0:160, 0:200] / 160.0
    for split in ("train", "val"):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(4):
                arr = np.stack([80 * c + 60 * xx, 40 * i + 100 * yy, 200 - 50 * xx * yy], -1)
                Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(
                    d / f"img{i}.{'jpg' if i % 2 else 'png'}", quality=95
                )
    return root


def _cached(root: Path, cache_dir: Path, **kw) -> ImageFolderDataModule:
    return ImageFolderDataModule(
        root, img_size=32, batch_size=12, num_workers=0, cache="disk", cache_dir=cache_dir, **kw
    )


@pytest.mark.parametrize("kind", ["ram", "disk"])
def test_cache_gives_the_labels_and_nearly_the_pixels_of_the_files(smooth_tree, tmp_path, kind):
    plain = ImageFolderDataModule(smooth_tree, img_size=32, batch_size=12, num_workers=0)
    cached = ImageFolderDataModule(
        smooth_tree, img_size=32, batch_size=12, num_workers=0, cache=kind, cache_dir=tmp_path / "c"
    )
    assert cached.cache_side("val") == 73  # int(2 * 32 / 0.875): the default evaluation's largest side
    for res in (32, 48, 64):  # all served from the cache
        (a, ya), (b, yb) = next(iter(plain.eval_dataloader(res))), next(iter(cached.eval_dataloader(res)))
        assert type(cached._source("val", res)).__name__ == "CachedImages"
        assert torch.equal(ya, yb) and a.shape == b.shape == (12, 3, res, res)
        diff = (a - b).abs() * 0.229  # about [0, 1] pixel units; another file's image differs by > 0.15
        assert diff.max() < 0.03 and diff.mean() < 0.005, (res, diff.max(), diff.mean())
    assert type(cached._source("val", 80)).__name__ == "ClassSubsetFolder"  # needs 91 px: read from the files
    x, y = next(iter(cached.train_dataloader()))
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert sorted(y.tolist()) == sorted(ImageFolderDataModule(smooth_tree, num_workers=0)._dataset("train").targets)
    assert (tmp_path / "c").exists() == (kind == "disk")


def _cache_folders(cache_dir: Path, split: str = "val") -> list[str]:
    return sorted(p.name for p in cache_dir.glob(f"{split}-*"))


def test_disk_cache_is_reused_and_rebuilt_when_a_file_or_the_size_changes(smooth_tree, tmp_path):
    import os

    import numpy as np

    cache_dir = tmp_path / "c"
    _cached(smooth_tree, cache_dir).setup()
    first = _cache_folders(cache_dir)
    assert len(first) == 1 and _cache_folders(cache_dir, "train")
    _cached(smooth_tree, cache_dir).setup()
    assert _cache_folders(cache_dir) == first  # reused
    # Replace a file (same name, another image, same mtime as before): a rebuild that holds the new pixels.
    path = smooth_tree / "val" / "dog" / "img0.png"
    mtime = path.stat().st_mtime_ns
    Image.new("RGB", (200, 160), (255, 0, 0)).save(path)
    os.utime(path, ns=(mtime, mtime + 10**9))
    dm = _cached(smooth_tree, cache_dir)
    x, y = next(iter(dm.eval_dataloader(32)))
    second = _cache_folders(cache_dir)
    assert len(second) == 1 and second != first  # the stale cache is gone
    red = (torch.tensor([1.0, 0, 0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    k = 4  # dog/img0: the first of label 1
    assert y[k] == 1 and torch.allclose(x[k].mean((1, 2)), red, atol=0.05)
    # Touch a file only: a new key too.
    os.utime(smooth_tree / "val" / "cat" / "img1.jpg", ns=(mtime, mtime + 2 * 10**9))
    _cached(smooth_tree, cache_dir).setup()
    third = _cache_folders(cache_dir)
    assert len(third) == 1 and third != second
    # Another size (larger evaluation resolutions): another cache, beside the first.
    dm = _cached(smooth_tree, cache_dir, cache_eval_resolutions=[32, 96])
    assert dm.cache_side("val") == 109
    dm.setup()
    assert len(_cache_folders(cache_dir)) == 2 and any("-109px-" in n for n in _cache_folders(cache_dir))
    assert not list(cache_dir.glob("*.tmp-*"))
    assert np.load(next(cache_dir.glob("val-109px-*")) / "index.npz")["shapes"].min() > 0


def test_cache_finds_corrupt_files_once_and_reports_them(smooth_tree, tmp_path, caplog):
    bad = smooth_tree / "val" / "dog" / "img9.png"
    bad.write_bytes(b"this is not a png")
    cache_dir = tmp_path / "c"
    with pytest.raises(CorruptImageError, match=re.escape(f"Image file '{bad}' cannot be read")):
        _cached(smooth_tree, cache_dir).setup()
    assert not _cache_folders(cache_dir) and not list(cache_dir.glob("*.tmp-*"))  # nothing half-written
    dm = _cached(smooth_tree, cache_dir, skip_corrupt=True)
    dm.setup()
    lines = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert lines == [
        f"Skipped 1 unreadable image file(s) in '{smooth_tree / 'val'}' (data.skip_corrupt=true): img9.png."
    ]
    for _ in range(2):
        assert sum(len(y) for _, y in dm.eval_dataloader(32)) == 12
    assert dm.num_skipped == 1
    with pytest.raises(CorruptImageError, match=re.escape(str(bad))):  # the cache reused without skip_corrupt
        _cached(smooth_tree, cache_dir).setup()


def test_cache_dir_errors_are_one_sentence(smooth_tree, tmp_path, monkeypatch):
    import errno

    from vit_rope.data import cache

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(DataConfigError) as e:
        _cached(smooth_tree, blocker / "cache")
    assert str(e.value) == (
        f"data.cache_dir '{blocker / 'cache'}' is not writable (NotADirectoryError: Not a directory); set "
        "data.cache_dir to a folder you can write to, or set data.cache=ram to keep the decoded images in memory, "
        "or data.cache=none."
    )

    def full(f, nbytes):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "_reserve", full)
    cache_dir = tmp_path / "c"
    with pytest.raises(DataConfigError) as e:
        _cached(smooth_tree, cache_dir).setup()
    assert "' is full; free space there, set data.cache_dir to a disk with room" in str(e.value)
    assert str(e.value).startswith(f"The image cache for '{smooth_tree / 'val'}' needs ")
    assert [p.name for p in cache_dir.iterdir()] == [".locks"]  # the partial build is removed
    # A data folder that cannot be written: the user cache folder.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real = cache._write_error
    monkeypatch.setattr(cache, "_write_error", lambda d: OSError(13, "denied") if smooth_tree in d.parents else real(d))
    assert ImageFolderDataModule(smooth_tree, cache="disk").cache_dir == tmp_path / "xdg" / "vit_rope"


def test_cache_with_auto_augment_and_train_resolutions(smooth_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    dm = _cached(smooth_tree, tmp_path / "c", auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)
    x, _ = next(iter(dm.train_dataloader()))  # timm's PIL pipeline on the cached images
    assert x.shape == (12, 3, 32, 32) and torch.isfinite(x).all()
    dm = _cached(smooth_tree, tmp_path / "c", patch_size=8, train_resolutions=[16, 32], re_prob=0.5)
    assert dm.cache_side("train") == 39  # ceil(32 / sqrt(0.675))
    sides = {next(iter(dm.train_dataloader()))[0].shape[-1] for _ in range(4)}
    assert sides <= {16, 32}


class _ThreadCount(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        return torch.get_num_threads()


def test_threads_per_worker_reach_the_workers(tree):
    dm = ImageFolderDataModule(tree, num_workers=1, threads_per_worker=2)
    assert torch.cat(list(dm._loader(_ThreadCount(), 2))).tolist() == [2, 2]  # PyTorch's own default is 1


def test_default_workers_follow_the_measurement(monkeypatch):
    import os

    from vit_rope.data.loaders import default_num_workers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cpus, workers in ((1, 0), (2, 0), (4, 2), (16, 2)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _, cpus=cpus: set(range(cpus)), raising=False)
        assert default_num_workers() == workers, cpus
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_num_workers() == 8
