"""The benchmark's output contract (its timings are printed, never asserted)."""

import json

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
        assert ape["time_ratio_vs_ape"] == 1.0
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
