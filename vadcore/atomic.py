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
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator


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


@dataclass(frozen=True)
class Held:
    """What `build_lock` tells its holder: how long it waited, and who held the lock before it and ended without
    releasing it (their process or node died mid-build), or None."""

    waited: float  # seconds blocked on another holder (0.0 when the lock was free)
    orphaned_by: str | None


def holder() -> str:
    """This process, as a lock file names its holder: host, pid, and when it took the lock (UTC)."""
    return f"host {socket.gethostname()} pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC"


@contextlib.contextmanager
def build_lock(target: Path, waiting: Callable[[str], None] | None = None) -> Iterator[Held]:
    """Exclusive lock on `target.lock` (blocking): the second process waits, then finds the result built.

    The lock is the file system's own (flock), so it goes with its holder: at once when the holding process dies
    (kill -9, the OOM killer), and when its node dies, as soon as the shared file system gives up that node's locks
    (NFSv4: at the end of its lease, 90 s by default; cluster/README.md says what storage this needs). A waiter
    then takes the lock over, finds the build not done and does it; the dead builder's half-written folder is
    deleted by `staging_dir`, never trusted. The holder writes `holder()` into the lock file and clears it on
    release, so a waiter can say whom it waits for (`waiting(holder)`, called once, when the lock is taken), and a
    new holder that finds a name there knows it took over an orphaned build (`Held.orphaned_by`).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target.with_name(target.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+") as fh:
        t0 = time.monotonic()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting(fh.read().strip() or "another process")
            fcntl.flock(fh, fcntl.LOCK_EX)
        waited = time.monotonic() - t0
        fh.seek(0)
        orphaned_by = fh.read().strip() or None
        fh.seek(0)
        fh.truncate()
        fh.write(holder())
        fh.flush()
        try:
            yield Held(waited, orphaned_by)
        finally:  # released by a live process (done, or raised): the next holder inherits no name
            fh.seek(0)
            fh.truncate()
            fh.flush()
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
