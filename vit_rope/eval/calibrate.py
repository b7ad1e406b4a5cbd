"""``calibrate``: a test-time strategy chosen per layer and head, without labels.

For each layer and head it chooses the exponent alpha of the frequency scale ``G = s^(-alpha)``
(:data:`vit_rope.extrapolate.CALIBRATION_ALPHAS`: 0 extrapolates, 1 interpolates) and a logit
temperature (:data:`vit_rope.extrapolate.CALIBRATION_TEMPERATURES`), so that the head's
attention on the test grid matches its attention on the training grid:

1. the reference: one forward of the calibration inputs at the training resolution records each
   head's mean attention distance as a fraction of the input and its entropy over ``log N``
   (:class:`vit_rope.eval.diagnostics.HeadRecorder`);
2. on the test grid, layer by layer from the input up (layer ``l`` sees the output of layers
   ``< l`` already calibrated): block ``l`` is run once per candidate alpha, and each head takes
   the alpha whose distance fraction is nearest its reference; then block ``l`` is run once with
   those alphas, its entropy measured at every candidate temperature from the same q and k, and
   each head takes the temperature whose entropy is nearest its reference; a last run of block
   ``l`` with the choice gives the next layer's input.

Only the inputs are read, never a label. Cost on ``n`` calibration inputs: one forward at the
training resolution, and per layer ``len(alphas) + 2`` runs of that block at the test resolution
(about ``len(alphas) + 2`` = 7 forwards of the model). Each of those runs also forms the
float32 attention map of its block once (the alpha runs measure only the distance, the
temperature run only the entropy, at each temperature from the same logits), and on large grids
these maps, not the forwards, are most of the cost. Heads are independent within a layer, so all
heads of a layer are calibrated by the same runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vit_rope.errors import PositionConfigError
from vit_rope.eval.diagnostics import HeadRecorder, attention_layers, record_attention
from vit_rope.extrapolate import CALIBRATION_ALPHAS, CALIBRATION_TEMPERATURES, Calibration


def check_calibratable(model: Any) -> None:
    """One sentence when ``calibrate`` does not apply to the model's encoding (n/a)."""
    if not model.strategy_applies("calibrate"):
        raise PositionConfigError(
            f"Strategy 'calibrate' scales rotary frequencies, which pos_embed={model.encoding.name} does not have "
            "(or its normalized coordinates already map every grid onto the training range); it is n/a here: "
            "use a rotary encoding (rope1d, rope_axial, rope_mixed, rope_general, rope_spiral) or another strategy."
        )


def _head_statistics(
    model: Any,
    x: torch.Tensor,
    grid: tuple[int, ...],
    layer: int,
    alpha: torch.Tensor,
    temperature: torch.Tensor,
    temperatures: Sequence[float] = (1.0,),
    measure: str = "distance",
) -> HeadRecorder:
    """Run block ``layer`` on its input ``x`` with ``alpha`` and ``temperature`` (per layer and
    head) and record its heads' ``measure`` (``"distance"`` or ``"entropy"``)."""
    rec = HeadRecorder(
        len(attention_layers(model)), model.num_prefix_tokens, temperatures, layers=[layer], measure=(measure,)
    )
    rec.grid = grid
    with record_attention(model, rec):
        model.forward_blocks(x, grid, layer, layer + 1, alpha=alpha, temperature=temperature)
    return rec


def _nearest(values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per head, the index of the candidate (rows of ``values``, ``(candidates, heads)``) nearest
    ``target`` ``(heads,)``; ties go to the first candidate."""
    return (values - target).abs().argmin(0)


@torch.no_grad()
def calibrate(
    model: Any,
    train_inputs: torch.Tensor,
    test_inputs: torch.Tensor,
    alphas: Sequence[float] = CALIBRATION_ALPHAS,
    temperatures: Sequence[float] = CALIBRATION_TEMPERATURES,
) -> Calibration:
    """Choose alpha and temperature per layer and head for the grid of ``test_inputs``.

    Args:
        model: A :class:`vit_rope.models.trunk.Transformer` with a rotary encoding.
        train_inputs: Inputs (images or token ids, no labels) at the training resolution.
        test_inputs: The same kind of inputs at the test resolution.
        alphas, temperatures: The candidates.

    Returns:
        The choice, ``(depth, heads)`` each; at the training grid alpha 0 and temperature 1
        (every scale is 1 there, so the model is unchanged).
    """
    check_calibratable(model)
    depth, heads = model.cfg.depth, model.cfg.num_heads
    alpha = torch.zeros(depth, heads)
    temperature = torch.ones(depth, heads)
    was_training = model.training
    model.eval()
    try:
        x, grid = model.forward_tokens(test_inputs)
        if grid == model.train_grid:
            return Calibration(alpha, temperature, len(test_inputs))
        reference = HeadRecorder(depth, model.num_prefix_tokens)
        with record_attention(model, reference):
            x_train, train_grid = model.forward_tokens(train_inputs)
            reference.grid = train_grid
            model.forward_blocks(x_train, train_grid, alpha=0.0)
        choices = torch.tensor(list(alphas), dtype=torch.float32)
        taus = torch.tensor(list(temperatures), dtype=torch.float32)
        for layer in range(depth):
            distance = []
            for a in alphas:
                alpha[layer] = a
                distance.append(_head_statistics(model, x, grid, layer, alpha, temperature).distance_fraction(layer))
            alpha[layer] = choices[_nearest(torch.stack(distance), reference.distance_fraction(layer))]
            entropy = _head_statistics(model, x, grid, layer, alpha, temperature, temperatures, "entropy").entropy(
                layer
            )
            temperature[layer] = taus[_nearest(entropy, reference.entropy(layer)[0])]
            x = model.forward_blocks(x, grid, layer, layer + 1, alpha=alpha, temperature=temperature)
    finally:
        model.train(was_training)
    return Calibration(alpha, temperature, len(test_inputs))


def calibrate_model(model: Any, train_inputs: torch.Tensor, test_inputs: torch.Tensor, **options: Any) -> Calibration:
    """:func:`calibrate`, and keep the choice in the model for the test grid (what its forward
    under ``calibrate`` reads)."""
    calibration = calibrate(model, train_inputs, test_inputs, **options)
    grid = _grid_of(model, test_inputs)
    model.set_calibration(grid, calibration)
    return calibration


def _grid_of(model: Any, inputs: torch.Tensor) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(int(g) for g in model.embed(inputs[:1])[1])
