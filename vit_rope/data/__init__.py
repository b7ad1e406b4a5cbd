"""Data modules: synthetic ``shapes`` (2D), synthetic ``sequences`` (1D text) and ``imagefolder``
subsets, all with the interface described in :mod:`vit_rope.data.common`.

Each concept lives in its own module; the names below are re-exported so that
``from vit_rope.data import X`` works for all of them.
"""

from vit_rope.data.class_lists import CLASS_PRESETS, IMAGENET100, IMAGENETTE, IMAGEWOOF, resolve_classes
from vit_rope.data.common import MODES, CorruptImageError, DataConfigError
from vit_rope.data.folder_dataset import ClassSubsetFolder, UnreadableImage, collate_skip_unreadable
from vit_rope.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataModule, eval_transform
from vit_rope.data.loaders import (
    EpochShuffleSampler,
    MultiResolutionDataset,
    ResolutionBatchSampler,
    default_num_workers,
)
from vit_rope.data.sequences import MARKER_A, MARKER_B, SequenceConfig, SequenceDataModule, SequenceDataset
from vit_rope.data.shapes import ShapesDataModule, ShapesDataset
from vit_rope.data.shapes_scenes import SHAPES_MEAN, SHAPES_STD, ShapeScenes, ShapesConfig, render_scenes, sample_scene

__all__ = [
    "CLASS_PRESETS",
    "IMAGENET100",
    "IMAGENETTE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGEWOOF",
    "MARKER_A",
    "MARKER_B",
    "MODES",
    "SHAPES_MEAN",
    "SHAPES_STD",
    "ClassSubsetFolder",
    "CorruptImageError",
    "DataConfigError",
    "EpochShuffleSampler",
    "ImageFolderDataModule",
    "MultiResolutionDataset",
    "ResolutionBatchSampler",
    "SequenceConfig",
    "SequenceDataModule",
    "SequenceDataset",
    "ShapeScenes",
    "ShapesConfig",
    "ShapesDataModule",
    "ShapesDataset",
    "UnreadableImage",
    "collate_skip_unreadable",
    "default_num_workers",
    "eval_transform",
    "resolve_classes",
    "sample_scene",
    "render_scenes",
]
