"""Throughput and peak memory of every position encoding, side by side with timm.

Run: ``python -m vit_rope.bench --model vit_small --img-size 224 --batch-size 16 --mode both --eval-size 448``
(the default ``vit_micro`` is the quick one; ``vit_small`` at 224 px takes many minutes on a CPU). On a machine
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

from vit_rope.bench.cli import main

__all__ = ["main"]
