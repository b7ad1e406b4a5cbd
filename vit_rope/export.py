"""``python -m vit_rope.export CKPT [--out DIR] [--weights last|best|ema] [--no-timm] [--overwrite]``:
a trained model for use elsewhere.

Writes into ``DIR`` (default: ``export/`` in the checkpoint's run directory):

- ``model.safetensors``: this project's state dict of the network; its metadata holds the model
  and encoding configs, so that :func:`load_exported` rebuilds the model without the run;
- for the encodings timm has (``ape``, ``rope_axial``, ``rope_mixed`` and their ``_ape`` forms):
  ``timm_model.safetensors``, the same weights under timm's names, and ``timm_model.json``, the
  timm model name and kwargs that build its counterpart::

      meta = json.load(open("timm_model.json"))
      model = timm.create_model(meta["timm_model"], pretrained=False, **meta["kwargs"])
      model.load_state_dict(safetensors.torch.load_file("timm_model.safetensors"))

Every check (checkpoint, weights, timm counterpart, output folder) runs before a file is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

from torch import nn

from vit_rope.errors import ConfigError
from vit_rope.weights import checkpoint_weights, read_checkpoint

MODEL_FILE = "model.safetensors"
TIMM_FILE = "timm_model.safetensors"
TIMM_META = "timm_model.json"


def load_net(ckpt: str, weights: str = "last") -> tuple[nn.Module, Path]:
    """The network of a train.py checkpoint (file or run directory) with its ``weights``, built
    from the run's saved config (``.hydra/config.yaml``); no data is read."""
    from vit_rope.tasks.evaluate import _run_config, build_run_module, check_state_matches, resolve_checkpoint

    ckpt = resolve_checkpoint(ckpt, "CKPT")
    state, path = checkpoint_weights(ckpt, weights)
    cfg = _run_config(ckpt)
    num_classes = read_checkpoint(path).get("hyper_parameters", {}).get("num_classes")
    embed = state.get("model.token_embed.weight")
    shape = SimpleNamespace(  # what build_run_module reads from a data module
        num_classes=num_classes if num_classes is not None else state["model.head.weight"].shape[0],
        train_resolution=cfg.data.get("img_size") or cfg.data.get("length"),
        vocab_size=None if embed is None else embed.shape[0],
    )
    module = build_run_module(cfg, shape)
    check_state_matches(module, state, str(path))
    module.load_state_dict(state, strict=True)
    return module.model.eval(), path


def _metadata(net: nn.Module) -> dict[str, str]:
    from vit_rope.models import MODEL_CONFIGS

    target = next(k for k, c in MODEL_CONFIGS.items() if type(net.cfg) is c)
    return {
        "format": "vit_rope",
        "model": json.dumps({"_target_": target, **dataclasses.asdict(net.cfg)}),
        "pos_embed": json.dumps(dataclasses.asdict(net.encoding)),
        "num_classes": str(net.num_classes),
        "resolution": json.dumps(list(net.img_size) if hasattr(net, "img_size") else net.train_grid[0]),
        "vocab_size": json.dumps(getattr(net, "vocab_size", None)),
    }


def export(
    net: nn.Module, out: str | Path, timm: bool = True, overwrite: bool = False, info: dict | None = None
) -> list[Path]:
    """Write ``net`` into ``out`` (see the module docstring); returns the files written."""
    from safetensors.torch import save

    from vit_rope.models.from_timm import timm_spec, to_timm_state_dict

    out = Path(out)
    spec = timm_spec(net) if timm else None  # refuses an encoding timm lacks, before anything is written
    names = [MODEL_FILE] + ([TIMM_FILE, TIMM_META] if timm else [])
    taken = [n for n in names if (out / n).exists()]
    if taken and not overwrite:
        raise ConfigError(f"'{out}' already holds {taken[0]}; choose another --out or add --overwrite.")
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    # safetensors' save_file creates its files with mode 0600; bytes written here get the mode of
    # any new file (the umask's), as the JSON beside them, so that colleagues can read them.
    metadata = {**_metadata(net), **{k: str(v) for k, v in (info or {}).items()}}
    (out / MODEL_FILE).write_bytes(save(state, metadata=metadata))
    if spec is None:
        return [out / MODEL_FILE]
    (out / TIMM_FILE).write_bytes(save(to_timm_state_dict(net)))
    meta = {"timm_model": spec[0], "kwargs": spec[1], "encoding": net.encoding.name, **(info or {})}
    (out / TIMM_META).write_text(json.dumps(meta, indent=2) + "\n")
    return [out / n for n in names]


def load_exported(path: str | Path) -> nn.Module:
    """This project's model from an exported ``model.safetensors`` (or the folder holding it)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from vit_rope.models import build_model_config, make_pos_embed

    path = Path(path)
    path = path / MODEL_FILE if path.is_dir() else path
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "vit_rope":
        raise ConfigError(f"'{path}' is not a model.safetensors written by python -m vit_rope.export.")
    pos = json.loads(meta["pos_embed"])
    model_cfg = build_model_config(json.loads(meta["model"]))
    net = model_cfg.build(
        make_pos_embed(pos.pop("name"), **pos),
        int(meta["num_classes"]),
        json.loads(meta["resolution"]),
        json.loads(meta["vocab_size"]),
    )
    net.load_state_dict(load_file(str(path)), strict=True)
    return net.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vit_rope.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", help="a .ckpt file from train.py, or its run directory (checkpoints/last.ckpt)")
    parser.add_argument("--out", help="output folder (default: export/ in the run directory)")
    parser.add_argument("--weights", default="last", help="last, best or ema (as eval.weights)")
    parser.add_argument("--no-timm", action="store_true", help="write model.safetensors only")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier export")
    args = parser.parse_args(argv)
    try:
        net, path = load_net(args.ckpt, args.weights)
        out = Path(args.out) if args.out else path.resolve().parent.parent / "export"
        info = {"weights": args.weights, "checkpoint": path.name}
        written = export(net, out, timm=not args.no_timm, overwrite=args.overwrite, info=info)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("Wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
