"""Evaluate a trained model at resolutions larger than in training, or compare a tree of runs.

python eval.py ckpt_path=PATH eval.resolutions=[224,320,384,448,512] eval.logn=[false,true]
python eval.py run_dir=outputs/2026-11-23/10-00-00_rope_axial eval.mode=canvas
python eval.py timm_model=vit_small_patch16_rope_224 timm_checkpoint=PATH data.root=/data/imagenet
python eval.py compare=multirun/2026-11-23/10-00-00
"""

import hydra
from omegaconf import DictConfig

from vit_rope.tasks.common import run_main
from vit_rope.tasks.compare import compare
from vit_rope.tasks.evaluate import evaluate_model


def _eval_or_compare(cfg: DictConfig) -> dict:
    return compare(cfg) if cfg.get("compare") else evaluate_model(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_main(_eval_or_compare, cfg)


if __name__ == "__main__":
    main()
