"""Throughput and peak memory of every position encoding, side by side with timm.

Run: ``python -m vit_rope.bench --model vit_small --img-size 224 --batch-size 16 --mode both --eval-size 448``
(17 minutes on an idle 2-core CPU; the default ``vit_micro`` run takes about 20 seconds). On a machine
shared with other jobs, ``OMP_NUM_THREADS=1`` gives steadier ratios: two threads stall at every
parallel op whenever another process holds the second core.

Rows (all at the same dims: ``--model``'s width, depth and heads, patch 16, MLP ratio 4, class token,
token pooling, LayerScale ``init_values=1e-5`` everywhere, as in timm's RoPE-ViT models, so that
every pair of rows differs only in its position encoding or only in its implementation):

- ``vit_rope``: one row per name in :data:`vit_rope.ENCODINGS`, built by :func:`vit_rope.create_model`;
- ``timm``: ``vit_<size>_patch16_224``, timm's APE ViT (:class:`timm.models.vision_transformer.VisionTransformer`,
  here with LayerScale to match); ``vit_<size>_patch16_rope_224`` and ``..._rope_mixed_224``,
  timm's port of the naver RoPE-ViT models (:class:`timm.models.eva.Eva`). They are built from
  timm's ``vit_small_*`` definitions with the dims overridden, so for ``vit_small`` they are timm's
  registered models, with random weights. Rows at ``--eval-size`` use ``dynamic_img_size=True``.

Each mode is a group of rows measured together: ``train`` (forward, backward, AdamW step) at
``--img-size``, ``infer`` (forward under ``inference_mode``) at ``--img-size`` and, with
``--eval-size``, ``infer`` at that size on models built for ``--img-size`` (APE tables resampled,
rotary tables built for the larger grid). Within a group every candidate is built and warmed up,
then the candidates take turns, one timed step each (round-robin, the first one rotating), for
``--steps`` turns; each row reports the median step time, so a change of machine load hits all
rows alike. ``time_ratio_vs_ape`` is the row's step time over this project's ``ape`` row in the
same group, ``time_ratio_vs_timm`` over timm's row of the same encoding (``ape``, ``rope_axial``,
``rope_mixed``).

Peak memory: the most memory one step holds above what was live when it started (activations,
saved tensors, gradients, temporaries; not weights or optimiser state, which are the same for
every encoding and would blur the ratios). On CUDA ``torch.cuda.max_memory_allocated`` minus
``memory_allocated`` at the start of the step; on CPU, which has no allocator counter, the running
sum of the allocation and free events of ``torch.profiler`` with ``profile_memory=True``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from vit_rope.models.encodings import ENCODINGS
from vit_rope.models.vit import MODEL_SIZES, create_model, list_models

LAYER_SCALE = 1e-5  # timm's RoPE-ViT models use LayerScale with this init; every row gets it
# timm's counterpart of each of our encodings: (timm definition, what it is)
TIMM_ROWS = {
    "ape": ("vit_small_patch16_224", "patch16_224"),
    "rope_axial": ("vit_small_patch16_rope_224", "patch16_rope_224"),
    "rope_mixed": ("vit_small_patch16_rope_mixed_224", "patch16_rope_mixed_224"),
}


@dataclass
class Candidate:
    name: str
    impl: str  # "vit_rope" or "timm"
    encoding: str  # which of our encodings it is (for the timm ratio)
    build: Callable[[], nn.Module]


def candidates(model: str, img_size: int, dynamic: bool) -> list[Candidate]:
    """Our encodings and timm's APE / RoPE-ViT models at the dims of ``model``."""
    dims = MODEL_SIZES[model]
    size = model.removeprefix("vit_")
    out = [
        Candidate(
            enc,
            "vit_rope",
            enc,
            lambda enc=enc: create_model(model, pos_embed=enc, img_size=img_size, init_values=LAYER_SCALE),
        )
        for enc in ENCODINGS
    ]
    for enc, (definition, suffix) in TIMM_ROWS.items():
        extra = {"init_values": LAYER_SCALE} if enc == "ape" else {}  # the RoPE ones have it already

        def build(definition=definition, extra=extra) -> nn.Module:
            return timm.create_model(
                definition, pretrained=False, img_size=img_size, dynamic_img_size=dynamic, **dims, **extra
            )

        out.append(Candidate(f"vit_{size}_{suffix}", "timm", enc, build))
    return out


# ------------------------------------------------------------------------------------------------
# one step of a candidate
# ------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(
    model: nn.Module,
    mode: str,
    batch: tuple[torch.Tensor, torch.Tensor],
    dtype: torch.dtype,
    compile: bool,
) -> Callable[[], None]:
    """A closure that runs one train step (forward, backward, AdamW) or one inference forward."""
    x, y = batch
    device = x.device
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    forward = torch.compile(model) if compile else model
    if mode == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            with autocast:
                loss = F.cross_entropy(forward(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)  # here rather than first: no idle gradients between turns

        return step
    model.eval()

    def infer() -> None:
        with torch.inference_mode(), autocast:
            forward(x)

    return infer


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's C++ side logs start/stop lines to fd 2; keep them out of the table."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_mb(step: Callable[[], None], device: torch.device) -> float:
    """Peak memory of one step, in MiB (see the module docstring for what is counted)."""
    if device.type == "cuda":  # other candidates' weights are on the device too: count from the step's start
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()  # allocations positive, frees negative
        peak = max(peak, live)
    return peak / 2**20


# ------------------------------------------------------------------------------------------------
# a group of rows measured together
# ------------------------------------------------------------------------------------------------


def run_group(args: argparse.Namespace, mode: str, size: int, device: torch.device, dtype: torch.dtype) -> list[dict]:
    """Build every candidate, time them round-robin, return one row each."""
    dynamic = size != args.img_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, size, size, generator=g).to(device)
    y = torch.randint(0, 1000, (args.batch_size,), generator=g).to(device)
    cands = candidates(args.model, args.img_size, dynamic)
    if args.compile:
        # Every candidate is another graph of the same forward code: let dynamo keep them all.
        torch._dynamo.reset()
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * len(cands))
    steps = []
    for cand in cands:
        torch.manual_seed(0)
        model = cand.build().to(device)
        steps.append(make_step(model, mode, (x, y), dtype, args.compile))

    warmup = 3 if args.compile else 1
    _progress(f"{mode} at {size} px: warm-up")
    for step in steps:
        for _ in range(warmup):
            step()
    _sync(device)
    times: list[list[float]] = [[] for _ in cands]
    for r in range(args.steps):  # one timed step per candidate per turn, so load changes hit all alike
        _progress(f"{mode} at {size} px: turn {r + 1}/{args.steps}")
        order = list(range(len(cands)))
        order = order[r % len(order) :] + order[: r % len(order)]  # no candidate always goes first
        for i in order:
            _sync(device)
            t0 = time.perf_counter()
            steps[i]()
            _sync(device)
            times[i].append(time.perf_counter() - t0)

    _progress(f"{mode} at {size} px: peak memory")
    rows = []
    for cand, step, t in zip(cands, steps, times, strict=True):
        seconds = statistics.median(t)
        rows.append(
            {
                "name": cand.name,
                "impl": cand.impl,
                "mode": mode,
                "img_size": size,
                "img_per_s": args.batch_size / seconds,
                "ms_per_step": 1000 * seconds,
                "time_ratio_vs_ape": None,
                "time_ratio_vs_timm": None,
                "peak_mem_mb": peak_memory_mb(step, device),
                "encoding": cand.encoding,
                "step_ms": [round(1000 * s, 2) for s in t],  # every turn, to judge the noise
            }
        )
    ape = next(r for r in rows if r["impl"] == "vit_rope" and r["name"] == "ape")
    timm_rows = {r["encoding"]: r for r in rows if r["impl"] == "timm"}
    for r in rows:
        r["time_ratio_vs_ape"] = r["ms_per_step"] / ape["ms_per_step"]
        if r["encoding"] in timm_rows:
            r["time_ratio_vs_timm"] = r["ms_per_step"] / timm_rows[r["encoding"]]["ms_per_step"]
        r["mem_ratio_vs_ape"] = r["peak_mem_mb"] / ape["peak_mem_mb"] if ape["peak_mem_mb"] else None
    return rows


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


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
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=10, help="timed steps per candidate and mode, one per round-robin turn")
    p.add_argument("--mode", choices=("train", "infer", "both"), default="both")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="bfloat16 = autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile every model (inductor)")
    p.add_argument("--eval-size", type=int, default=None, help="also run inference at this larger resolution")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.img_size % 16 or (args.eval_size is not None and args.eval_size % 16):
        p.error(f"image sizes must be multiples of the patch size 16; got {args.img_size} and {args.eval_size}")
    if args.steps < 1 or args.batch_size < 1:
        p.error("--steps and --batch-size must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print the table, write ``--json`` if given, return the result."""
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
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
    print(f"wall time {config['wall_s']} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
