"""Which class folders of an image-folder tree are used: the usual ImageNet subsets by WordNet
id (Imagenette, Imagewoof, ImageNet-100) and :func:`resolve_classes`, which turns a
``data.classes`` setting into a sorted list of folder names (label ``i`` is the ``i``-th)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vit_rope.data.common import DataConfigError

# ImageNet class folders (WordNet ids) of the usual subsets.
IMAGENETTE = (
    "n01440764 n02102040 n02979186 n03000684 n03028079 n03394916 n03417042 n03425413 n03445777 n03888257"
).split()
IMAGEWOOF = (
    "n02086240 n02087394 n02088364 n02089973 n02093754 n02096294 n02099601 n02105641 n02111889 n02115641"
).split()
# ImageNet-100 of CMC (Tian et al., 2019), the list published as imagenet100.txt in HobbitLong/CMC.
IMAGENET100 = """
n02869837 n01749939 n02488291 n02107142 n13037406 n02091831 n04517823 n04589890 n03062245 n01773797
n01735189 n07831146 n07753275 n03085013 n04485082 n02105505 n01983481 n02788148 n03530642 n04435653
n02086910 n02859443 n13040303 n03594734 n02085620 n02099849 n01558993 n04493381 n02109047 n04111531
n02877765 n04429376 n02009229 n01978455 n02106550 n01820546 n01692333 n07714571 n02974003 n02114855
n03785016 n03764736 n03775546 n02087046 n07836838 n04099969 n04592741 n03891251 n02701002 n03379051
n02259212 n07715103 n03947888 n04026417 n02326432 n03637318 n01980166 n02113799 n02086240 n03903868
n02483362 n04127249 n02089973 n03017168 n02093428 n02804414 n02396427 n04418357 n02172182 n01729322
n02113978 n03787032 n02089867 n02119022 n03777754 n04238763 n02231487 n03032252 n02138441 n02104029
n03837869 n03494278 n04136333 n03794056 n03492542 n02018207 n04067472 n03930630 n03584829 n02123045
n04229816 n02100583 n03642806 n04336792 n03259280 n02116738 n02108089 n03424325 n01855672 n02090622
""".split()
CLASS_PRESETS: dict[str, list[str]] = {
    "imagenette": IMAGENETTE,
    "imagewoof": IMAGEWOOF,
    "imagenet100": IMAGENET100,
}


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def resolve_classes(root: str | Path, classes: str | Sequence[str] | None) -> list[str]:
    """The selected class folders of ``root``, sorted (label ``i`` is the ``i``-th).

    Args:
        root: Holds ``train/<class>/...`` and ``val/<class>/...``.
        classes: ``None`` (all), a preset name (``imagenette``, ``imagewoof``, ``imagenet100``),
            ``first:K`` (the first K folders in sorted order), a path to a text file with one
            folder name per line (``#`` starts a comment), or a list of folder names.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataConfigError(
            f"data.root '{root}' does not exist; set data.root to a folder that holds train/ and val/ class folders."
        )
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise DataConfigError(
            f"data.root '{root}' has no {' or '.join(s + '/' for s in missing)} folder; point data.root at a "
            "folder that holds train/ and val/, each with one folder of images per class."
        )
    available = {s: _class_folders(root / s) for s in ("train", "val")}
    for s, names in available.items():
        if not names:
            raise DataConfigError(
                f"'{root / s}' holds no class folders; put the images of each class in their own folder "
                f"({s}/<class>/<image>)."
            )
    train = available["train"]
    if classes is None:
        selected = train
    elif isinstance(classes, str):
        spec = classes.strip()
        if spec in CLASS_PRESETS:
            selected = CLASS_PRESETS[spec]
        elif spec.startswith("first:"):
            k = spec[len("first:") :].strip()
            if not k.isdigit() or not 1 <= int(k) <= len(train):
                raise DataConfigError(
                    f"data.classes='{classes}' needs a whole number K from 1 to {len(train)} (the class folders "
                    f"in '{root / 'train'}'), for example first:10."
                )
            selected = train[: int(k)]
        elif Path(spec).expanduser().is_file():
            lines = Path(spec).expanduser().read_text().splitlines()
            selected = [ln.split("#")[0].strip() for ln in lines]
            selected = [c for c in selected if c]
            if not selected:
                raise DataConfigError(f"Class list file '{spec}' names no classes; write one class folder per line.")
        else:
            raise DataConfigError(
                f"data.classes='{classes}' is not a preset ({', '.join(CLASS_PRESETS)}), first:K, or an existing "
                "class-list file; use one of these, a list of folder names, or null for all classes."
            )
    else:
        selected = [str(c) for c in classes]
        if not selected:
            raise DataConfigError("data.classes is an empty list; name at least one class folder, or use null for all.")
    selected = sorted(set(selected))
    for s, names in available.items():
        unknown = sorted(set(selected) - set(names))
        if unknown:
            shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise DataConfigError(
                f"data.classes names {len(unknown)} class(es) with no folder in '{root / s}': {shown}; "
                "fix the names (or the list file) or point data.root at a tree that has them."
            )
    return selected
