"""Train a ViT (or the text encoder) with one position encoding, then evaluate it at larger sizes.

python train.py                                   # embedded default: shapes, vit_micro, rope_axial
python train.py -m pos_embed=none,ape,sincos,rope1d,rope_axial,rope_mixed
python train.py data=imagefolder data.root=/data/imagenet data.classes=imagenet100 model=vit_small

The same as the installed console script ``vit-rope-train``.
"""

from vit_rope.cli import train_main

if __name__ == "__main__":
    train_main()
