"""The candidates of the benchmark and how one step of each is timed and its memory measured."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from vit_rope.models.encodings import ENCODINGS
from vit_rope.models.vit import MODEL_SIZES, create_model

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


def make_train_step(
    model: nn.Module, device: torch.device, dtype: torch.dtype, compile: bool
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """A function ``step(x, y)`` that runs one train step (forward, backward, AdamW) on a batch."""
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    forward = torch.compile(model) if compile else model
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast:
            loss = F.cross_entropy(forward(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)  # here rather than first: no idle gradients between turns

    return step


def timed(step: Callable[[], Any], device: torch.device) -> float:
    """Seconds that one call of ``step`` takes, the device synchronised before and after."""
    _sync(device)
    t0 = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - t0


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
    if mode == "train":
        train = make_train_step(model, device, dtype, compile)
        return lambda: train(x, y)
    forward = torch.compile(model) if compile else model
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
    progress(f"{mode} at {size} px: warm-up")
    for step in steps:
        for _ in range(warmup):
            step()
    _sync(device)
    times: list[list[float]] = [[] for _ in cands]
    for r in range(args.steps):  # one timed step per candidate per turn, so load changes hit all alike
        progress(f"{mode} at {size} px: turn {r + 1}/{args.steps}")
        order = list(range(len(cands)))
        order = order[r % len(order) :] + order[: r % len(order)]  # no candidate always goes first
        for i in order:
            times[i].append(timed(steps[i], device))

    progress(f"{mode} at {size} px: peak memory")
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


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)
