"""Train a ViT (or the text encoder) with one position encoding, then evaluate it at larger sizes.

python train.py                                   # embedded default: shapes, vit_micro, rope_axial
python train.py -m pos_embed=none,ape,sincos,rope1d,rope_axial,rope_mixed
python train.py data=imagefolder data.root=/data/imagenet data.classes=imagenet100 model=vit_small
"""

import sys

import hydra
from omegaconf import DictConfig

from vit_rope.report.callback import sweep_failures
from vit_rope.tasks.common import run_main
from vit_rope.tasks.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    run_main(train, cfg)


if __name__ == "__main__":
    main()
    if failed := sweep_failures():  # the comparison is written; the exit status says a job failed
        print(
            f"error: {len(failed)} job(s) of the sweep failed or did not finish: {'; '.join(failed)}", file=sys.stderr
        )
        sys.exit(1)
