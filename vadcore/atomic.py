"""Atomic writes and exclusive build locks: readers never see half a file or half a stage.

Files are written to a temporary sibling and renamed into place; folders (a shard set, a trained stage)
are built under a temporary name and renamed once complete. `build_lock` serialises processes that would
build the same thing, so concurrent sweep trials train a shared stage once.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_png(path: Path, rgb: Any) -> None:
    """An (H, W, 3) uint8 array as a PNG (contact sheets, error maps)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def build_lock(target: Path) -> Iterator[None]:
    """Exclusive lock on `target.lock` (blocking): the second process waits, then finds the result built."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A fresh temporary folder beside `target`, renamed to `target` when the block completes.

    If the block raises (or the process dies), `target` does not exist: nothing half-built is ever trusted.
    Leftover `.tmp-*` folders from killed processes are removed by the next build of the same target.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
