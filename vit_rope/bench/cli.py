"""``python -m vit_rope.bench``: arguments, the run, the printed table and the JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import timm
import torch

from vit_rope.bench.steps import LAYER_SCALE, run_group
from vit_rope.data.cache import CACHE_KINDS
from vit_rope.models.vit import list_models


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def memory_measure(device: torch.device) -> str:
    if device.type == "cuda":
        return (
            "torch.cuda.max_memory_allocated during one step minus memory_allocated at its start "
            "(activations, saved tensors, gradients, temporaries; not weights or optimiser state)"
        )
    return (
        "peak bytes held by the CPU tensor allocator during one step above those live at its start "
        "(torch.profiler profile_memory events: activations, saved tensors, gradients, temporaries; "
        "not weights or optimiser state)"
    )


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg = result["config"]
    console = Console(width=max(140, Console().width))
    console.print(
        f"[bold]vit_rope.bench[/]  {cfg['model']} patch16, batch {cfg['batch_size']}, {cfg['dtype']}, "
        f"{'compiled' if cfg['compile'] else 'eager'}, {cfg['device_name']} ({cfg['threads']} threads), "
        f"median of {cfg['steps']} round-robin turns of one step each"
    )
    console.print(
        "Every row: LayerScale 1e-5, class token, token pooling. timm rows: VisionTransformer (APE) and "
        "Eva (naver RoPE-ViT) at the same dims."
    )
    console.print(f"Peak memory: {cfg['memory_measure']}.")
    table = Table()
    for col in ("mode", "px", "name", "impl", "img/s", "ms/step", "vs ape", "vs timm", "peak MiB", "mem vs ape"):
        table.add_column(col, justify="left" if col in ("mode", "name", "impl") else "right")
    last_group = None
    for r in result["rows"]:
        group = (r["mode"], r["img_size"])
        if last_group is not None and group != last_group:
            table.add_section()
        last_group = group
        table.add_row(
            r["mode"],
            str(r["img_size"]),
            r["name"],
            r["impl"],
            f"{r['img_per_s']:.1f}",
            f"{r['ms_per_step']:.1f}",
            f"{r['time_ratio_vs_ape']:.3f}",
            "" if r["time_ratio_vs_timm"] is None else f"{r['time_ratio_vs_timm']:.3f}",
            f"{r['peak_mem_mb']:.1f}",
            "" if r["mem_ratio_vs_ape"] is None else f"{r['mem_ratio_vs_ape']:.3f}",
        )
    console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vit_rope.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_micro", choices=list_models(), help="model size (default vit_micro)")
    p.add_argument("--img-size", type=int, default=224, help="resolution the models are built for and trained at")
    p.add_argument("--batch-size", type=int, default=None, help="default 16, and 64 with --data")
    p.add_argument("--steps", type=int, default=10, help="timed steps per candidate and mode, one per round-robin turn")
    p.add_argument("--mode", choices=("train", "infer", "both"), default="both")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="bfloat16 = autocast")
    p.add_argument("--precision", choices=("32", "bf16"), default=None, help="the same as --dtype float32 / bfloat16")
    p.add_argument("--compile", action="store_true", help="torch.compile every model (inductor)")
    p.add_argument("--eval-size", type=int, default=None, help="also run inference at this larger resolution")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    d = p.add_argument_group("real images (--data imagefolder): data-only, model-only and end-to-end img/s, eval time")
    d.add_argument("--data", choices=("imagefolder",), default=None, help="benchmark the loader of this data")
    d.add_argument("--root", default=None, help="image folder with train/ and val/ class folders")
    d.add_argument("--classes", default=None, help="data.classes: a preset, first:K or a file (default all)")
    d.add_argument("--cache", nargs="+", choices=CACHE_KINDS, default=["none"], help="data.cache value(s)")
    d.add_argument("--cache-dir", default=None, help="data.cache_dir (default next to the data or ~/.cache)")
    d.add_argument(
        "--num-workers", nargs="+", type=_workers, default=[None], help="loader workers, 'default' for the module's"
    )
    d.add_argument("--threads-per-worker", type=int, default=1)
    d.add_argument("--batches", type=int, default=20, help="timed training batches per phase")
    d.add_argument("--rounds", type=int, default=4, help="model-only / end-to-end blocks per setting")
    d.add_argument("--eval-batches", type=int, default=4, help="timed evaluation batches per resolution; 0: all")
    d.add_argument("--eval-batch-size", type=int, default=128)
    d.add_argument("--eval-resolutions", nargs="+", type=int, default=None, help="default 1x, 1.5x, 2x --img-size")
    d.add_argument("--pos-embed", default="rope_axial")
    d.add_argument("--patch-size", type=int, default=None, help="default: conf/model/<model>.yaml's")
    args = p.parse_args(argv)
    if args.precision is not None:
        args.dtype = {"32": "float32", "bf16": "bfloat16"}[args.precision]
    if args.batch_size is None:
        args.batch_size = 16 if args.data is None else 64
    if args.data is None and (args.img_size % 16 or (args.eval_size is not None and args.eval_size % 16)):
        p.error(f"image sizes must be multiples of the patch size 16; got {args.img_size} and {args.eval_size}")
    if args.data is not None and not args.root:
        p.error("--data imagefolder needs --root, a folder with train/ and val/ class folders")
    if min(args.steps, args.batch_size, args.batches, args.rounds, args.eval_batch_size, args.threads_per_worker) < 1:
        p.error("--steps, --batch-size, --batches, --rounds, --eval-batch-size, --threads-per-worker must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return args


def _workers(value: str) -> int | None:
    return None if value == "default" else int(value)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print the table, write ``--json`` if given, return the result."""
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.data is not None:
        return _main_data(args, device, dtype)
    groups = []
    if args.mode in ("train", "both"):
        groups.append(("train", args.img_size))
    if args.mode in ("infer", "both"):
        groups.append(("infer", args.img_size))
        if args.eval_size is not None:
            groups.append(("infer", args.eval_size))
    config = {
        "model": args.model,
        "img_size": args.img_size,
        "eval_size": args.eval_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "mode": args.mode,
        "device": args.device,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "compile": args.compile,
        "layer_scale": LAYER_SCALE,
        "memory_measure": memory_measure(device),
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    start = time.perf_counter()
    rows = []
    for mode, size in groups:
        rows.extend(run_group(args, mode, size, device, dtype))
    config["wall_s"] = round(time.perf_counter() - start, 1)
    result = {"config": config, "rows": rows}
    print_table(result)
    return _finish(args, result)


def _finish(args: argparse.Namespace, result: dict) -> dict:
    print(f"wall time {result['config']['wall_s']} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


def _main_data(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    """``--data imagefolder``: see :mod:`vit_rope.bench.data`."""
    from vit_rope.bench.data import print_data_table, run_data_bench
    from vit_rope.errors import ConfigError

    start = time.perf_counter()
    try:
        result = run_data_bench(args, device, dtype)
    except ConfigError as e:  # a bad root, class list or cache folder: one sentence, status 2
        print(f"Error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    keys = (
        "model",
        "img_size",
        "batch_size",
        "batches",
        "rounds",
        "eval_batches",
        "eval_batch_size",
        "device",
        "dtype",
    )
    config = {k: getattr(args, k) for k in keys}
    config.update(
        data=args.data,
        compile=args.compile,
        pos_embed=args.pos_embed,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        wall_s=round(time.perf_counter() - start, 1),
    )
    result = {"config": config, **result}
    print_data_table(result)
    return _finish(args, result)
