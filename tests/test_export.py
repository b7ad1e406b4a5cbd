"""python -m vit_rope.export: our safetensors, and a timm state dict that timm loads with the
same logits (the reverse of from_timm), without training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import build_net_from_config, compose_train
from vit_rope.export import MODEL_FILE, TIMM_FILE, TIMM_META, load_exported, main
from vit_rope.lit_module import ClassificationModule
from vit_rope.weights import EMA_KEY

MODEL = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2"]


def _perturbed(module: torch.nn.Module, seed: int) -> dict:
    """A copy of the state with random weights large enough that attention (and so position) matters."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: v + 0.3 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in module.state_dict().items()
    }


def write_run(run: Path, *overrides: str) -> ClassificationModule:
    """A run directory as train.py leaves it (.hydra/config.yaml, checkpoints/last.ckpt holding
    raw and EMA weights), with random weights instead of trained ones."""
    cfg = compose_train(*MODEL, *overrides)
    module = ClassificationModule(build_net_from_config(cfg, num_classes=4, resolution=32))
    module.load_state_dict(_perturbed(module, 0))
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    (run / "checkpoints").mkdir()
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        EMA_KEY: _perturbed(module, 1),
    }
    torch.save(checkpoint, run / "checkpoints" / "last.ckpt")
    return module


def timm_from_export(out: Path) -> torch.nn.Module:
    import timm
    from safetensors.torch import load_file

    meta = json.loads((out / TIMM_META).read_text())
    model = timm.create_model(meta["timm_model"], pretrained=False, **meta["kwargs"])
    model.load_state_dict(load_file(str(out / TIMM_FILE)), strict=True)
    return model.eval()


@pytest.mark.parametrize(
    "pos_embed, init_values",
    [("ape", None), ("rope_axial", 0.5), ("rope_mixed", 0.5), ("rope_axial_ape", None), ("rope_mixed_ape", 0.5)],
)
def test_export_loads_into_timm_with_the_same_logits(tmp_path, pos_embed, init_values):
    run = tmp_path / "run"
    module = write_run(
        run, f"pos_embed={pos_embed}", f"model.init_values={'null' if init_values is None else init_values}"
    )
    assert main([str(run), "--out", str(tmp_path / "out")]) == 0
    assert main([str(run), "--out", str(tmp_path / "ema"), "--weights", "ema"]) == 0
    ours = module.model.eval()
    ema = ClassificationModule(build_net_from_config(compose_train(*MODEL, f"pos_embed={pos_embed}",
        f"model.init_values={'null' if init_values is None else init_values}"), 4, 32))  # fmt: skip
    ema.load_state_dict(torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)[EMA_KEY])
    g = torch.Generator().manual_seed(2)
    for out, reference in (("out", ours), ("ema", ema.model.eval())):
        timm_model = timm_from_export(tmp_path / out)
        assert json.loads((tmp_path / out / TIMM_META).read_text())["weights"] == out.replace("out", "last")
        again = load_exported(tmp_path / out / MODEL_FILE)
        for size in (32, 48):  # the training size and a larger grid
            x = torch.randn(2, 3, size, size, generator=g)
            with torch.no_grad():
                expected = reference(x)
                assert (timm_model(x) - expected).abs().max().item() <= 1e-5, (out, size)
                assert torch.equal(again(x), expected)
    with torch.no_grad():  # the two exports hold different weights
        x = torch.randn(1, 3, 32, 32, generator=g)
        assert (timm_from_export(tmp_path / "out")(x) - timm_from_export(tmp_path / "ema")(x)).abs().max() > 1e-3


def test_encoding_timm_lacks_is_refused_before_writing_then_exports_without_timm(tmp_path, capsys):
    run = tmp_path / "run"
    write_run(run, "pos_embed=sincos")
    out = tmp_path / "out"
    assert main([str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "timm has no counterpart of pos_embed=sincos" in err and "--no-timm" in err
    assert err.count("\n") == 1 and not out.exists()
    assert main([str(run), "--out", str(out), "--no-timm"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [MODEL_FILE]
    # an earlier export is kept unless --overwrite
    before = (out / MODEL_FILE).read_bytes()
    assert main([str(run), "--out", str(out), "--no-timm", "--weights", "ema"]) == 2
    assert "already holds model.safetensors; choose another --out or add --overwrite" in capsys.readouterr().err
    assert (out / MODEL_FILE).read_bytes() == before
    # a checkpoint without EMA weights
    ckpt = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, weights_only=False)
    del checkpoint[EMA_KEY]
    torch.save(checkpoint, ckpt)
    assert main([str(run), "--out", str(tmp_path / "x"), "--weights", "ema"]) == 2
    assert "holds no EMA weights" in capsys.readouterr().err
