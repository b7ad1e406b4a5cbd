"""The benchmark's output contract (its timings are printed, never asserted)."""

import json
import statistics

import pytest
import torch

from vit_rope import ENCODINGS
from vit_rope.bench import main as bench_main

# -- the benchmark --------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """Tiny ops on two threads stall whenever another process holds a core; one thread does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_bench_runs_and_writes_the_json_schema(tmp_path, capsys, one_thread):
    path = tmp_path / "bench.json"
    args = ["--model", "vit_micro", "--img-size", "32", "--batch-size", "2", "--steps", "2"]
    bench_main([*args, "--mode", "both", "--eval-size", "64", "--json", str(path)])
    result = json.loads(path.read_text())
    assert "ms/step" in capsys.readouterr().out  # the human-readable table

    config = result["config"]
    expected = {"model": "vit_micro", "img_size": 32, "eval_size": 64, "batch_size": 2, "steps": 2}
    assert expected.items() <= config.items()
    assert {"mode", "device", "dtype", "compile", "memory_measure"} <= set(config)
    assert config["device"] == "cpu" and config["dtype"] == "float32" and config["compile"] is False

    rows = result["rows"]
    timm_names = {"vit_micro_patch16_224", "vit_micro_patch16_rope_224", "vit_micro_patch16_rope_mixed_224"}
    for group in [("train", 32), ("infer", 32), ("infer", 64)]:
        in_group = [r for r in rows if (r["mode"], r["img_size"]) == group]
        assert {r["name"] for r in in_group if r["impl"] == "vit_rope"} == set(ENCODINGS), group
        assert {r["name"] for r in in_group if r["impl"] == "timm"} == timm_names, group
        ape = next(r for r in in_group if r["impl"] == "vit_rope" and r["name"] == "ape")
        timm_of = {r["encoding"]: r for r in in_group if r["impl"] == "timm"}
        for r in in_group:  # each ratio is taken against the ape row and the timm row of its own group
            assert r["time_ratio_vs_ape"] == pytest.approx(r["ms_per_step"] / ape["ms_per_step"]), r["name"]
            if r["encoding"] in timm_of:
                timm_ms = timm_of[r["encoding"]]["ms_per_step"]
                assert r["time_ratio_vs_timm"] == pytest.approx(r["ms_per_step"] / timm_ms), r["name"]
            # the step time is the median of the timed turns, and the rate is the batch over it
            assert r["ms_per_step"] == pytest.approx(statistics.median(r["step_ms"]), abs=0.01), r["name"]
            assert r["img_per_s"] * r["ms_per_step"] / 1000 == pytest.approx(2), r["name"]
    assert len(rows) == 3 * (len(ENCODINGS) + 3)
    for r in rows:
        assert {"name", "impl", "mode", "img_per_s", "time_ratio_vs_ape", "peak_mem_mb"} <= set(r)
        assert r["impl"] in ("vit_rope", "timm") and r["mode"] in ("train", "infer")
        assert r["img_per_s"] > 0 and r["time_ratio_vs_ape"] > 0 and r["peak_mem_mb"] >= 0
    train_ape = next(r for r in rows if r["mode"] == "train" and r["name"] == "ape")
    assert train_ape["peak_mem_mb"] > 0  # a train step allocates activations and gradients


def test_bench_refuses_a_size_that_is_not_a_multiple_of_the_patch(capsys):
    with pytest.raises(SystemExit):
        bench_main(["--img-size", "40"])
    assert "multiples of the patch size 16" in capsys.readouterr().err


def test_bench_real_images_writes_the_loader_numbers(tmp_path, capsys, one_thread, monkeypatch):
    from tests.conftest import write_image_tree

    monkeypatch.setenv("VIT_ROPE_NO_PROGRESS", "1")
    root = write_image_tree(tmp_path / "images", per_class=6)
    path = tmp_path / "bench.json"
    args = ["--data", "imagefolder", "--root", str(root), "--img-size", "32", "--model", "vit_micro"]
    args += [
        "--batch-size",
        "4",
        "--batches",
        "2",
        "--rounds",
        "2",
        "--eval-batches",
        "1",
        "--num-workers",
        "0",
        "--json",
        str(path),
    ]
    bench_main([*args, "--cache", "none", "disk", "--cache-dir", str(tmp_path / "cache")])
    assert "end_to_end_ratio" in capsys.readouterr().out
    result = json.loads(path.read_text())
    assert result["patch_size"] == 4 and result["eval_resolutions"] == [32, 48, 64]  # conf/model/vit_micro.yaml
    assert (result["train_images"], result["val_images"]) == (18, 18)
    for key in ("model_img_per_s", "data_img_per_s", "end_to_end_img_per_s", "end_to_end_ratio"):
        assert result[key] > 0, key
    assert [s["cache"] for s in result["settings"]] == ["none", "disk"]
    for s in result["settings"]:
        assert s["num_workers"] == 0 and s["end_to_end_ratio"] > 0 and s["data_img_per_s"] > 0 < s["model_img_per_s"]
        assert [e["resolution"] for e in s["eval"]] == [32, 48, 64]
        assert all(e["img_per_s"] > 0 and e["seconds"] > 0 for e in s["eval"])
        assert all(e["from_cache"] == (s["cache"] == "disk") for e in s["eval"])
    assert result["settings"][1]["cache_mib"]["train"] > 0
    assert result["end_to_end_ratio"] == result["settings"][-1]["end_to_end_ratio"]


def test_bench_real_images_needs_a_root(capsys):
    with pytest.raises(SystemExit):
        bench_main(["--data", "imagefolder", "--img-size", "32"])
    assert "--data imagefolder needs --root" in capsys.readouterr().err


# -- the plain timm yardstick (python -m vit_rope.bench.timm_baseline) -----------------------------


def test_timm_baseline_trains_timm_vit_and_reports_top1_on_val(image_tree, tmp_path, capsys, one_thread):
    from vit_rope.bench.timm_baseline import main as baseline_main

    path = tmp_path / "baseline.json"
    small = ["--embed-dim", "16", "--depth", "1", "--num-heads", "2", "--batch-size", "4"]
    result = baseline_main(
        ["--root", str(image_tree), "--img-size", "16", "--epochs", "1", *small, "--json", str(path)]
    )
    assert json.loads(path.read_text()) == result
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    # 3 classes x 4 images in each split (conftest.write_image_tree); top-1 is a count out of 12
    assert (result["classes"], result["train_images"], result["n"]) == (3, 12, 12)
    correct = result["top1"] * 12 / 100
    assert abs(correct - round(correct)) < 1e-3


def test_timm_baseline_names_a_missing_val_folder(tmp_path):
    from vit_rope.bench.timm_baseline import main as baseline_main

    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"has no val/ folder; give a folder with train/ and val/"):
        baseline_main(["--root", str(tmp_path)])


def test_timm_baseline_names_a_split_without_class_folders(tmp_path):
    from vit_rope.bench.timm_baseline import main as baseline_main

    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(SystemExit, match=r"give train/ and val/ one folder of images per class"):
        baseline_main(["--root", str(tmp_path)])
