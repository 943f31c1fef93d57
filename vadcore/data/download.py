"""Downloading an archive over HTTP: resumed where it stopped, retried when the connection drops, then hashed.

A download is written to NAME.part and renamed to NAME once whole, so a file under its final name is a complete
download. After an interruption (Ctrl-C, a dropped connection, a full disk, a killed process) the next try asks
the server for the rest with an HTTP Range request; a server that ignores it sends the whole file and the part
starts over. Whether the bytes are the right ones is the SHA-256's to say (`vadcore.data.fetch`).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from vadcore.errors import DataError
from vadcore.progress import progress_bar

RETRIES = 3  # reconnections after a dropped connection in one run, each resuming where the last stopped
RETRY_WAIT_S = 2.0  # wait before reconnection k: k times this
TIMEOUT_S = 60  # a connection silent this long counts as dropped
CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


class _Dropped(Exception):
    """The connection failed or closed early: worth another try from where the part file ends."""


def download(url: str, dest: Path, *, show: bool, say: Callable[[str], None]) -> None:
    """`url` to `dest` through `dest`.part (resumed if present); a DataError once RETRIES reconnections fail."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, RETRIES + 2):
        try:
            _attempt(url, part, show)
            break
        except _Dropped as e:
            have = part.stat().st_size if part.exists() else 0
            if attempt > RETRIES:
                raise DataError(f"downloading {url} stopped at {_mb(have)} ({e}), {attempt} tries; rerun the same command "
                                f"to resume from there") from None
            say(f"{dest.name}: {e} at {_mb(have)}; resuming (try {attempt + 1} of {RETRIES + 1})")
            time.sleep(RETRY_WAIT_S * attempt)
    os.replace(part, dest)


def _attempt(url: str, part: Path, show: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        total = _CONTENT_RANGE.fullmatch(e.headers.get("Content-Range") or "")
        if e.code == 416 and total and total.group(2) == str(have):  # asked for the rest of a part that is whole
            return
        if e.code == 416:
            part.unlink()
            raise _Dropped("the server refused to resume (HTTP 416)") from None
        raise DataError(f"{url}: HTTP {e.code} {e.reason}; if it comes from --mirror, the mirror must serve the file "
                        f"under its published name") from None
    except (OSError, http.client.HTTPException) as e:  # URLError is an OSError: refused, unreachable, timed out
        raise _Dropped(f"cannot connect ({getattr(e, 'reason', e)})") from None
    with response:
        start = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range") or "")
        if have and response.status == 206 and not (start and start.group(1) == str(have)):
            part.unlink()
            raise _Dropped("the server resumed at another place")
        if have and response.status != 206:
            have = 0  # the server sent the whole file, not the rest of it: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        if total is not None and shutil.disk_usage(part.parent).free < total - have:
            raise DataError(f"{part.parent} has {_mb(shutil.disk_usage(part.parent).free)} free, the download needs "
                            f"{_mb(total - have)} more: free some space (or fetch --to another disk) and rerun")
        with _opened(part, "ab" if have else "wb") as out, progress_bar(part.name.removesuffix(".part"), total, enabled=show,
                                                                          unit="bytes", completed=have) as advance:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:  # IncompleteRead, reset, timeout
                    raise _Dropped(f"the connection dropped ({type(e).__name__})") from None
                if not chunk:
                    break
                _write(out, chunk, part)
                advance(len(chunk))
    if total is not None and part.stat().st_size < total:
        raise _Dropped("the connection closed early")


def _opened(path: Path, mode: str):
    try:
        return open(path, mode)
    except OSError as e:
        raise DataError(f"cannot write {path}: {e.strerror}; make the folder writable and rerun") from None


def _write(out, chunk: bytes, part: Path) -> None:
    try:
        out.write(chunk)
        out.flush()
    except OSError as e:  # a full disk, a file-size limit, an I/O error
        raise DataError(f"cannot write {part}: {e.strerror}; free some space (or fetch --to another disk) and rerun: "
                        f"the download resumes from what is already written") from None


def sha256_file(path: Path, *, show: bool) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, progress_bar(f"SHA-256 of {path.name}", path.stat().st_size, enabled=show, unit="bytes") as advance:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            advance(len(chunk))
    return h.hexdigest()


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"
