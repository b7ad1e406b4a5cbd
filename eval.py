"""Evaluate a trained model at resolutions larger than in training, or compare a tree of runs.

python eval.py ckpt_path=PATH eval.resolutions=[224,320,384,448,512] eval.logn=[false,true]
python eval.py run_dir=outputs/2026-11-23/10-00-00_rope_axial eval.mode=canvas
python eval.py timm_model=vit_small_patch16_rope_224 timm_checkpoint=PATH data.root=/data/imagenet
python eval.py compare=multirun/2026-11-23/10-00-00

The same as the installed console script ``vit-rope-eval``.
"""

from vit_rope.cli import eval_main

if __name__ == "__main__":
    eval_main()
