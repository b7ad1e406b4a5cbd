"""The decoded-image cache (``data.cache=ram|disk``): every image of a split decoded once,
downsized so that its shorter side is at most ``side`` pixels, and kept as uint8.

Layout: one flat uint8 buffer of all images (``H x W x 3`` each, in the order of the split's
sample list, so that image ``i`` and label ``i`` come from the same file), plus ``offsets`` and
``shapes``. ``ram`` keeps the buffer in process memory (shared copy-on-write with forked loader
workers); ``disk`` writes it to ``<cache_dir>/<split>-<side>px-<set>-<content>/pixels.u8`` and
memory-maps it, so that every worker and every later run reads the same pages.

The ``<content>`` part of the name is a hash of the ordered file list with each file's size and
mtime, the labels and ``side``: adding, removing, replacing or touching a file, or another side,
gives another name and a rebuild; a build is written into a temporary folder and renamed into
place only when complete, so an interrupted build never leaves a cache that looks finished. A
successful build removes the older caches of the same split, side and class selection.

Unreadable files are found once, at build time: named in an error, or with ``skip_corrupt``
reported in one warning and stored as empty images (:attr:`ImageStore.bad`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vit_rope.data.common import CorruptImageError, DataConfigError
from vit_rope.data.image_store import ImageStore, build_in_memory, fill, plan_shapes, report, unreadable_message

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the layout or the downsizing changes: old caches then no longer match
CACHE_KINDS = ("none", "ram", "disk")
_FIX = "or set data.cache=ram to keep the decoded images in memory, or data.cache=none"


# -- where a disk cache lives ----------------------------------------------------------------


def _write_error(folder: Path) -> OSError | None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        return e
    return None


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vit_rope"


def resolve_cache_dir(cache_dir: str | None, root: Path) -> Path:
    """``data.cache_dir`` if set (it must be writable), else ``<root>/.vit_rope_cache``, else
    (a read-only data folder) the user cache folder ``$XDG_CACHE_HOME/vit_rope``."""
    if cache_dir not in (None, ""):
        folder = Path(str(cache_dir)).expanduser()
        e = _write_error(folder)
        if e is not None:
            raise DataConfigError(
                f"data.cache_dir '{folder}' is not writable ({type(e).__name__}: {e.strerror or e}); set "
                f"data.cache_dir to a folder you can write to, {_FIX}."
            )
        return folder
    for folder in (root / ".vit_rope_cache", user_cache_dir()):
        if _write_error(folder) is None:
            return folder
    raise DataConfigError(
        f"Neither '{root / '.vit_rope_cache'}' nor '{user_cache_dir()}' is writable for data.cache=disk; set "
        f"data.cache_dir to a folder you can write to, {_FIX}."
    )


def cache_names(split_dir: Path, samples: Sequence[tuple[str, int]], side: int, selection: str) -> tuple[str, str]:
    """``(prefix, name)``: the prefix names the split, side and file ``selection`` (classes and
    per-class cap); the name adds a hash of every file's path, label, size and mtime (in order),
    so that any change to the file set gives a new name."""
    ident = hashlib.sha256(f"{FORMAT}|{split_dir.resolve()}|{side}|{selection}".encode())
    content = hashlib.sha256(ident.digest())
    for path, label in samples:
        st = os.stat(path)
        content.update(f"{path}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    prefix = f"{split_dir.name}-{side}px-{ident.hexdigest()[:8]}-"
    return prefix, prefix + content.hexdigest()[:16]


# -- the disk cache -------------------------------------------------------------------------


def _reserve(f: Any, nbytes: int) -> None:
    """Claim the file's space up front, so that a full disk shows as ENOSPC before decoding."""
    if nbytes and hasattr(os, "posix_fallocate"):
        os.posix_fallocate(f.fileno(), 0, nbytes)


def _load(folder: Path, n: int) -> ImageStore | None:
    """The finished cache in ``folder``, or ``None`` if it is missing or does not fit ``n`` files."""
    try:
        index = np.load(folder / "index.npz")
        offsets, shapes, side = index["offsets"], index["shapes"], int(index["side"])
        if len(shapes) != n or (folder / "pixels.u8").stat().st_size != int(offsets[-1]):
            return None
    except (OSError, KeyError, ValueError):
        return None
    return ImageStore(None, offsets, shapes, side, folder)


def _remove_stale(cache_dir: Path, prefix: str, keep: str) -> None:
    """Older caches of the same split, side and selection, and builds whose process is gone."""
    for lock in (cache_dir / ".locks").glob(prefix + "*.lock"):
        if lock.name != keep + ".lock":
            lock.unlink(missing_ok=True)
    for other in cache_dir.glob(prefix + "*"):
        name = other.name
        if name == keep:
            continue
        if ".tmp-" in name:
            pid = int(name.rsplit("-", 2)[-2]) if name.rsplit("-", 2)[-2].isdigit() else -1
            try:
                os.kill(pid, 0)
                continue  # another process is building it
            except (ProcessLookupError, ValueError, OverflowError):
                pass
            except PermissionError:
                continue
        shutil.rmtree(other, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (released when the process ends, even by a kill), so
    that of several processes (DDP ranks, parallel jobs) one builds a cache and the others wait
    and reuse it; no lock where ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_on_disk(
    samples: Sequence[tuple[str, int]], split_dir: Path, side: int, skip_corrupt: bool, cache_dir: Path, selection: str
) -> ImageStore:
    """The disk cache of ``samples``: reused if a finished one matches, else built atomically."""
    prefix, name = cache_names(split_dir, samples, side, selection)
    (cache_dir / ".locks").mkdir(exist_ok=True)
    with _lock(cache_dir / ".locks" / f"{name}.lock"):
        return _build_on_disk(samples, split_dir, side, skip_corrupt, cache_dir, prefix, name)


def _build_on_disk(
    samples: Sequence[tuple[str, int]],
    split_dir: Path,
    side: int,
    skip_corrupt: bool,
    cache_dir: Path,
    prefix: str,
    name: str,
) -> ImageStore:
    what, final = str(split_dir), cache_dir / name
    store = _load(final, len(samples))
    if store is not None:
        report(store, samples, what, None)
        return store
    shutil.rmtree(final, ignore_errors=True)  # an unfinished or mismatched one
    start = time.perf_counter()
    shapes, bad = plan_shapes(samples, side)
    offsets = np.concatenate([[0], np.cumsum(shapes[:, 0].astype(np.int64) * shapes[:, 1] * 3)])
    tmp = cache_dir / f"{name}.tmp-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    full = (
        f"The image cache for '{split_dir}' needs {offsets[-1] / 2**30:.2f} GiB but '{cache_dir}' is full; free "
        f"space there, set data.cache_dir to a disk with room, {_FIX}."
    )
    try:
        tmp.mkdir(parents=True)
        if shutil.disk_usage(tmp).free < offsets[-1]:
            raise OSError(errno.ENOSPC, "not enough free space")
        with open(tmp / "pixels.u8", "wb") as f:
            _reserve(f, int(offsets[-1]))
            fill(samples, shapes, bad, lambda arr: f.write(arr.tobytes()), skip_corrupt, what)
        with open(tmp / "index.npz", "wb") as f:
            np.savez(f, offsets=offsets, shapes=shapes, side=np.int64(side))
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same cache first
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DataConfigError(full) from e
        raise DataConfigError(
            f"Writing the image cache '{final}' failed ({type(e).__name__}: {e}); check that folder, set "
            f"data.cache_dir to another one, {_FIX}."
        ) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_stale(cache_dir, prefix, name)
    store = _load(final, len(samples))
    if store is None:  # replaced under us by a build of a different file list: should not happen
        raise DataConfigError(f"The image cache '{final}' changed while it was opened; run again to rebuild it.")
    report(store, samples, what, time.perf_counter() - start)
    return store


def open_store(
    kind: str,
    samples: Sequence[tuple[str, int]],
    split_dir: Path,
    side: int,
    skip_corrupt: bool,
    cache_dir: Path | None,
    selection: str,
) -> ImageStore:
    """The ``ram`` or ``disk`` cache of one split's ``samples`` (labels by the same index)."""
    if kind == "ram":
        store = build_in_memory(samples, side, skip_corrupt, str(split_dir))
    else:
        store = build_on_disk(samples, split_dir, side, skip_corrupt, cache_dir, selection)
    if store.bad and not skip_corrupt:  # a cache built with skip_corrupt, reused without it
        i = store.bad[0]
        raise CorruptImageError(unreadable_message(samples[i][0], OSError("found unreadable when cached")))
    return store
