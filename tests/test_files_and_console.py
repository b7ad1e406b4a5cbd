"""What a user sees outside the numbers: file modes of an export, the console's first lines,
--help, and what an image-folder run says it loaded."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vit_rope.export import MODEL_FILE, TIMM_FILE, TIMM_META, export
from vit_rope.models import create_model


def test_exported_files_get_the_mode_of_any_new_file(tmp_path: Path) -> None:
    """Issue 22.12: the .safetensors files are as readable as the JSON beside them (the umask
    decides, 0644 under the usual 022), not 0600."""
    old = os.umask(0o022)
    try:
        export(create_model("vit_micro", num_classes=3, img_size=32, pos_embed="rope_axial"), tmp_path)
    finally:
        os.umask(old)
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in (MODEL_FILE, TIMM_FILE, TIMM_META)}
    assert modes == {MODEL_FILE: 0o644, TIMM_FILE: 0o644, TIMM_META: 0o644}
