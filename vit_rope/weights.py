"""Which weights a run is evaluated and exported with: ``last``, ``best`` or ``ema``.

- ``last``: the trained weights (``state_dict``) of the checkpoint given; for a run directory,
  ``checkpoints/last.ckpt``, the weights at the end of training.
- ``best``: the weights of the epoch with the best validation top-1 (``val/top1``), saved by the
  ``best_checkpoint`` callback as ``checkpoints/best-epochNNN.ckpt``.
- ``ema``: an exponential moving average of the weights (``ema.enabled=true``), kept by
  :class:`EMA`, Lightning's ``EMAWeightAveraging`` callback (``torch.optim.swa_utils``'s
  averaging), and saved in every checkpoint under :data:`EMA_KEY`.

Checkpoint layout: ``state_dict`` always holds the raw weights (what resuming and
``eval.weights=last`` read); :data:`EMA_KEY` holds the averaged weights under the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

from vit_rope.errors import ConfigError, check_choice, check_range

WEIGHTS = ("last", "best", "ema")
EMA_KEY = "ema_state_dict"
EMA_STATE_KEY = "ema_averaging_state"
BEST_GLOB = "best*.ckpt"


@dataclass(frozen=True)
class EMAConfig:
    """The ``ema`` config block: an exponential moving average of the weights.

    Args:
        enabled: Keep the average; validation then logs ``val/top1_ema`` next to ``val/top1``.
        decay: Weight of the old average at each update, in (0, 1); the average spans about
            ``1 / (1 - decay)`` updates (0.9998: about 5000 steps, timm's default).
        update_every_n_steps: Update after every n-th optimizer step.
        start_step: First optimizer step (0-based) that updates the average; before it the
            average is a copy of the weights.
    """

    enabled: bool = False
    decay: float = 0.9998
    update_every_n_steps: int = 1
    start_step: int = 0

    def __post_init__(self) -> None:
        check_choice("ema.enabled", self.enabled, (True, False))
        check_range("ema.decay", self.decay, 0.0, 1.0, low_open=True, high_open=True)
        check_range("ema.update_every_n_steps", self.update_every_n_steps, 1, integer=True)
        check_range("ema.start_step", self.start_step, 0, integer=True)

    def callback(self) -> EMA | None:
        """The callback that keeps the average, or ``None`` when disabled."""
        if not self.enabled:
            return None
        return EMA(
            decay=self.decay,
            update_every_n_steps=self.update_every_n_steps,
            update_starting_at_step=self.start_step,
        )


class EMA(EMAWeightAveraging):
    """Lightning's EMA callback, changed in what it does around the averaging so that the raw
    and the averaged weights are both kept and both scored:

    - validation scores the raw weights (``val/top1``) and the average (``val/top1_ema``) in
      one pass, instead of swapping the average in (which would hide the raw top-1);
    - the module keeps its raw weights at the end of training (the evaluation picks one with
      ``eval.weights``);
    - checkpoints keep the raw weights in ``state_dict`` and the average in :data:`EMA_KEY`;
    - the average follows the module to its device (Lightning builds it before the module moves).

    The buffers are not averaged (``use_buffers=False``): they are fixed tables, not learned.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(use_buffers=False, **kwargs)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self._device is None and self._average_model is not None:
            self._average_model.to(pl_module.device)

    @property
    def net(self) -> torch.nn.Module | None:
        """The averaged network (in eval mode), or ``None`` before fit."""
        return None if self._average_model is None else self._average_model.module.model.eval()

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        pl_module.set_ema_net(self.net)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        pass  # nothing was swapped

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        pl_module.set_ema_net(None)  # the evaluation after training runs without it

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            return
        state = self._average_model.state_dict()
        checkpoint[EMA_KEY] = {k.removeprefix("module."): v for k, v in state.items() if k.startswith("module.")}
        checkpoint[EMA_STATE_KEY] = {k: v for k, v in state.items() if not k.startswith("module.")}

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            return
        if EMA_KEY in checkpoint:  # resuming an EMA run: the average continues
            state = {f"module.{k}": v for k, v in checkpoint[EMA_KEY].items()}
            self._average_model.load_state_dict({**state, **checkpoint.get(EMA_STATE_KEY, {})}, strict=False)
        else:  # a run without EMA: the average starts from its weights
            self._average_model.module.load_state_dict(checkpoint["state_dict"], strict=False)

    def average_state(self) -> dict[str, torch.Tensor]:
        """The averaged weights, under the module's own keys."""
        assert self._average_model is not None, "EMA.average_state() before fit"
        return self._average_model.module.state_dict()


def read_checkpoint(ckpt: str | Path) -> dict[str, Any]:
    """A checkpoint file as saved by Lightning; an unreadable file ends in one sentence."""
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001  any unreadable file gets the same clear message
        raise ConfigError(
            f"Checkpoint '{ckpt}' cannot be read ({type(err).__name__}); give a .ckpt file from train.py."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"Checkpoint '{ckpt}' holds no state_dict; give a .ckpt file from train.py.")
    return checkpoint


def best_checkpoint(ckpt_dir: str | Path) -> Path:
    """The ``best-*.ckpt`` file in ``ckpt_dir`` (the epoch with the best ``val/top1``)."""
    found = sorted(Path(ckpt_dir).glob(BEST_GLOB))
    if not found:
        raise ConfigError(
            f"eval.weights=best but '{ckpt_dir}' holds no best-*.ckpt (validation never ran, or the "
            "best_checkpoint callback was removed); use eval.weights=last."
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ConfigError(
            f"eval.weights=best but '{ckpt_dir}' holds several best checkpoints ({names}); give the one "
            "to use as ckpt_path=FILE with eval.weights=last."
        )
    return found[0]


def checkpoint_weights(ckpt: str | Path, weights: str) -> tuple[dict[str, torch.Tensor], Path]:
    """The weights to evaluate or export from ``ckpt`` (a file), and the file they came from.

    ``last`` and ``ema`` read ``ckpt`` itself; ``best`` reads the best checkpoint in its folder.
    """
    check_choice("eval.weights", weights, WEIGHTS)
    path = best_checkpoint(Path(ckpt).parent) if weights == "best" else Path(ckpt)
    checkpoint = read_checkpoint(path)
    if weights != "ema":
        return checkpoint["state_dict"], path
    if EMA_KEY not in checkpoint:
        raise ConfigError(
            f"Checkpoint '{path}' holds no EMA weights (its run trained with ema.enabled=false); use "
            "weights last or best, or train with ema.enabled=true."
        )
    return checkpoint[EMA_KEY], path
