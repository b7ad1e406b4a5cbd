"""Attention diagnostics: how spread out, and how far, each layer's attention is.

For every layer, over the grid (patch or token) queries of the images seen while recording:

- ``entropy``: the entropy of a query's attention over all ``N`` keys (prefix tokens included),
  divided by ``log N``: 1 for uniform attention, 0 for attention on one key;
- ``distance``: the attention-weighted distance from a query to the grid keys, with the weights
  renormalised over the grid keys (prefix keys left out), in grid steps: Euclidean on the
  ``(row, col)`` patch grid of an image, ``|i - j|`` tokens for text.

Both are averaged over heads, queries and images (every query of every image weighs the same).

The attention layers run on SDPA, which does not return its weights. While a recorder is active
(:func:`record_attention`), each :class:`~vit_rope.layers.attention.Attention` hands its rotated
q and k, and the exact scale SDPA gets, to its ``probe``; the recorder forms the softmax weights
itself, a bounded slice of the batch at a time, and keeps only running sums. With no recorder the
probe is ``None`` and the forward is exactly the plain SDPA one.

:func:`attention_diagnostics` runs the first ``max_images`` samples of a loader through a model
under a recorder (the evaluation calls it once per resolution, strategy and logn).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from vit_rope.layers.attention import Attention

# Bytes of float32 attention weights formed at once (the batch is sliced to stay under it).
WEIGHT_BYTES = 1 << 28


def attention_logits(
    q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``q k^T * scale + mask`` in float32, as SDPA forms it: ``(..., Nq, Nk)``; a boolean mask
    (True attends) gives ``-inf`` where it is False, a float mask is added."""
    logits = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask.float()
    return logits


def attention_weights(
    q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``softmax(q k^T * scale + mask)`` in float32, as SDPA computes it: ``(..., Nq, Nk)``.

    ``attn_mask`` follows SDPA: boolean (True attends) or additive float, broadcast to the logits.
    """
    return attention_logits(q, k, scale, attn_mask).softmax(dim=-1)


def grid_distances(grid: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """``(G, G)`` Euclidean distances between the cells of ``grid`` in raster order (in grid
    steps); for a 1D grid ``|i - j|``."""
    axes = [torch.arange(int(g), dtype=torch.float32, device=device) for g in grid]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(axes))  # (G, ndim)
    return (coords[:, None, :] - coords[None, :, :]).pow(2).sum(-1).sqrt()


class AttentionRecorder:
    """Running sums of the per-layer entropy and distance (see the module docstring).

    Args:
        num_layers: Attention layers of the model.
        num_prefix_tokens: Tokens in front of the grid (CLS, registers); they are keys, but
            neither queries of the diagnostics nor part of the distance.
    """

    def __init__(self, num_layers: int, num_prefix_tokens: int = 0) -> None:
        self.num_layers = num_layers
        self.num_prefix_tokens = num_prefix_tokens
        self.grid: tuple[int, ...] | None = None  # grid of the current forward (set by record_attention)
        self._entropy = [0.0] * num_layers
        self._distance = [0.0] * num_layers
        self._count = [0] * num_layers
        self._dist_cache: dict[tuple, torch.Tensor] = {}

    def probe(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None = None
    ) -> None:
        """Take one layer's rotated ``q``, ``k`` ``(B, h, N, hd)`` and SDPA's scale (and mask).
        Only the grid queries' rows of the weights are formed, a few samples at a time, so that
        memory stays bounded."""
        for rows in self._grid_rows(q, k, scale, attn_mask):
            self._add_grid_rows(layer, rows)

    def _grid_rows(
        self, q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None = None
    ) -> Iterator[torch.Tensor]:
        """The grid queries' rows of the attention weights ``(b, h, G, N)``, a few samples at a time."""
        for logits in self._grid_logits(q, k, scale, attn_mask):
            yield logits.softmax(dim=-1)

    def _grid_logits(
        self, q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None = None
    ) -> Iterator[torch.Tensor]:
        """The grid queries' rows of the attention logits ``(b, h, G, N)``, a few samples at a time."""
        B, h, N, _ = q.shape
        P = self.num_prefix_tokens
        if N <= P:
            return
        step = max(1, WEIGHT_BYTES // max(1, h * (N - P) * N * 4))
        with torch.no_grad():
            for b in range(0, B, step):
                mask = attn_mask
                if mask is not None:
                    if mask.dim() == 4 and mask.shape[0] == B:
                        mask = mask[b : b + step]
                    if mask.shape[-2] == N:
                        mask = mask[..., P:, :]
                yield attention_logits(q[b : b + step, :, P:], k[b : b + step], scale, mask)

    def _add_grid_rows(self, layer: int, w: torch.Tensor) -> None:
        """Add the weights ``(B, h, G, N)`` of the grid queries over all keys (prefix keys first)."""
        B, h, G, N = w.shape
        P = N - G
        if G <= 0:
            return
        grid = self.grid if self.grid is not None and math.prod(self.grid) == G else (G,)
        w = w.float()
        if N > 1:
            entropy = -torch.special.xlogy(w, w).sum() / math.log(N)
            self._entropy[layer] += float(entropy)
        grid_w = w[..., P:]  # grid keys, renormalised below
        mass = grid_w.sum(-1).clamp_min(torch.finfo(torch.float32).tiny)
        distance = (grid_w * self._distances(grid, w.device)).sum(-1) / mass  # (B, h, G)
        self._distance[layer] += float(distance.sum())
        self._count[layer] += B * h * G

    def _distances(self, grid: tuple[int, ...], device: torch.device) -> torch.Tensor:
        key = (tuple(grid), str(device))
        if key not in self._dist_cache:
            self._dist_cache[key] = grid_distances(grid, device)
        return self._dist_cache[key]

    @property
    def recorded(self) -> bool:
        return any(self._count)

    def summary(self, digits: int = 6) -> dict[str, list[float | None]] | None:
        """``{"entropy": [per layer], "distance": [per layer]}`` (a layer that saw nothing is
        ``None``), or ``None`` when nothing was recorded."""
        if not self.recorded:
            return None

        def mean(sums: list[float]) -> list[float | None]:
            return [round(s / c, digits) if c else None for s, c in zip(sums, self._count, strict=True)]

        return {"entropy": mean(self._entropy), "distance": mean(self._distance)}


def grid_fractions(grid: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """``(G, G)`` distances between the cells of ``grid`` as a fraction of the input: coordinates
    divided by the grid's size per axis (an image's width and height, a sequence's length)."""
    axes = [torch.arange(int(g), dtype=torch.float32, device=device) / int(g) for g in grid]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(axes))  # (G, ndim)
    return (coords[:, None, :] - coords[None, :, :]).pow(2).sum(-1).sqrt()


class HeadRecorder(AttentionRecorder):
    """Per layer and head: the attention entropy over ``log N`` at each of ``temperatures`` (the
    logits multiplied by it), and the attention distance as a fraction of the input (at
    temperature 1), over the grid queries; what ``calibrate`` matches across resolutions.

    Args:
        num_layers, num_prefix_tokens: As :class:`AttentionRecorder`.
        temperatures: Logit temperatures the entropy is measured at (from the same logits, formed
            once per probe).
        layers: The layers to record (default: all); the others' probes return at once.
        measure: What to record, ``"entropy"`` and/or ``"distance"`` (both by default); a search
            that reads one of them skips the other's cost.
    """

    def __init__(
        self,
        num_layers: int,
        num_prefix_tokens: int = 0,
        temperatures: Sequence[float] = (1.0,),
        layers: Sequence[int] | None = None,
        measure: Sequence[str] = ("entropy", "distance"),
    ) -> None:
        super().__init__(num_layers, num_prefix_tokens)
        self.temperatures = tuple(float(t) for t in temperatures)
        self.layers = None if layers is None else set(layers)
        self.measure = frozenset(measure)
        self._head_entropy: dict[int, torch.Tensor] = {}  # layer -> (temperatures, h) sums
        self._head_fraction: dict[int, torch.Tensor] = {}  # layer -> (h,) sums
        self._head_count: dict[int, int] = {}

    def probe(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None = None
    ) -> None:
        if self.layers is not None and layer not in self.layers:
            return
        for logits in self._grid_logits(q, k, scale, attn_mask):
            B, h, G, N = logits.shape
            if "entropy" in self.measure:
                sums = self._head_entropy.setdefault(layer, torch.zeros(len(self.temperatures), h, dtype=torch.float64))
                for t, temperature in enumerate(self.temperatures):
                    w = (logits * temperature).softmax(dim=-1)  # -inf stays -inf: temperatures are > 0
                    entropy = -torch.special.xlogy(w, w).sum(-1).sum((0, 2)) / math.log(max(N, 2))  # (h,)
                    sums[t] += entropy.double().cpu()
            if "distance" in self.measure:  # at temperature 1
                w = logits.softmax(dim=-1)
                grid = self.grid if self.grid is not None and math.prod(self.grid) == G else (G,)
                grid_w = w[..., N - G :]  # grid keys, renormalised
                mass = grid_w.sum(-1).clamp_min(torch.finfo(torch.float32).tiny)
                frac = (grid_w * self._fractions(grid, w.device)).sum(-1) / mass  # (b, h, G)
                fsum = self._head_fraction.setdefault(layer, torch.zeros(h, dtype=torch.float64))
                fsum += frac.sum((0, 2)).double().cpu()
            self._head_count[layer] = self._head_count.get(layer, 0) + B * G

    def _fractions(self, grid: tuple[int, ...], device: torch.device) -> torch.Tensor:
        key = ("fraction", tuple(grid), str(device))
        if key not in self._dist_cache:
            self._dist_cache[key] = grid_fractions(grid, device)
        return self._dist_cache[key]

    def entropy(self, layer: int) -> torch.Tensor:
        """``(temperatures, heads)`` mean attention entropy over ``log N`` of ``layer``."""
        return self._head_entropy[layer] / self._head_count[layer]

    def distance_fraction(self, layer: int) -> torch.Tensor:
        """``(heads,)`` mean attention distance of ``layer`` as a fraction of the input."""
        return self._head_fraction[layer] / self._head_count[layer]


def attention_layers(model: nn.Module) -> list[Attention]:
    """The model's attention layers, in forward order."""
    return [m for m in model.modules() if isinstance(m, Attention)]


@contextlib.contextmanager
def record_attention(model: nn.Module, recorder: AttentionRecorder | None = None) -> Iterator[AttentionRecorder]:
    """``with record_attention(model) as rec: model(x)``: every attention layer of ``model``
    reports to ``rec`` until the block ends; the outputs are those of the plain forward.

    The grid shape of each forward is taken from the model's ``embed`` (the trunk's
    ``tokens, grid = embed(x)``); without it the grid is read as 1D. ``recorder``: one to use
    instead of a new :class:`AttentionRecorder` (e.g. a :class:`HeadRecorder`).
    """
    layers = attention_layers(model)
    if any(layer.probe is not None for layer in layers):
        raise RuntimeError("An attention recorder is already active on this model; nest no recorders.")
    rec = recorder or AttentionRecorder(len(layers), int(getattr(model, "num_prefix_tokens", 0) or 0))
    embed = getattr(model, "embed", None)
    if callable(embed):

        def embed_and_note_grid(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            out = embed(x, *args, **kwargs)
            rec.grid = tuple(int(g) for g in out[1])
            return out

        model.embed = embed_and_note_grid  # instance attribute: shadows the method until removed
    try:
        for i, layer in enumerate(layers):
            layer.probe = partial(rec.probe, i)
        yield rec
    finally:
        for layer in layers:
            layer.probe = None
        if callable(embed) and "embed" in vars(model):
            del model.embed


def _inputs(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, list | tuple) else batch


def attention_diagnostics(
    model: nn.Module,
    batches: Iterable[Any],
    max_images: int,
    device: torch.device | str | None = None,
) -> dict[str, list[float | None]] | None:
    """Per-layer mean attention entropy and distance of ``model`` over the first ``max_images``
    samples of ``batches`` (batches of inputs, or ``(inputs, labels)``).

    Runs in eval mode without gradients, on ``device`` (default: where the model is; the model
    is moved back after); floating inputs take the dtype of the model's parameters.

    Returns:
        ``{"entropy": [...], "distance": [...]}`` with one value per layer, or ``None`` when
        ``max_images`` is 0 or there was no sample.
    """
    if max_images <= 0:
        return None
    params = [p for p in model.parameters() if p.is_floating_point()]
    home = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params else torch.float32
    device = torch.device(device) if device is not None else home
    was_training = model.training
    model.eval()
    if device != home:
        model.to(device)
    seen = 0
    try:
        with torch.inference_mode(), record_attention(model) as rec:
            for batch in batches:
                x = _inputs(batch)[: max_images - seen]
                if len(x) == 0:
                    continue
                x = x.to(device, dtype=dtype) if x.is_floating_point() else x.to(device)
                model(x)
                seen += len(x)
                if seen >= max_images:
                    break
    finally:
        if device != home:
            model.to(home)
        model.train(was_training)
    return rec.summary()
