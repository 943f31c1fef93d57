"""`python -m vadcore data fetch NAME --to DIR`: a benchmark's published archives, verified, into DIR/NAME/.

Steps, each one safe to interrupt (a rerun of the same command finishes the job):

1. each archive is downloaded to DIR/.downloads/FILE (resumed: `vadcore.data.download`), or taken from --from;
2. every archive's SHA-256 is checked against the table (`vadcore.data.archives`) or --sha256 before anything is
   unpacked; a mismatch deletes nothing and says what to do;
3. the archives are unpacked, refusing unsafe members, into a staging folder DIR/.NAME.tmp-*, which gets a
   completion marker (FETCHED: where each archive came from, its SHA-256) and is renamed to DIR/NAME in one step:
   DIR/NAME either does not exist or is whole. A staging folder left by a killed run is removed by the next;
4. the downloaded archives are deleted (--keep-archives keeps them); --from files are never touched.

DIR/NAME that exists without the marker is the user's own copy: fetch leaves it as it is and says so.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from vadcore import atomic
from vadcore.data.archives import ARCHIVES, Archive, unpack
from vadcore.data.download import download, sha256_file
from vadcore.errors import ConfigError, DataError
from vadcore.progress import progress_bar

DOWNLOADS = ".downloads"  # under DIR: archives being downloaded, and the lock of each benchmark's fetch
FETCHED = ".fetched.json"  # the completion marker inside DIR/NAME
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Source:
    """Where one archive comes from this time, and the SHA-256 it must have."""

    archive: Archive
    url: str | None  # None: a local file (--from)
    path: Path  # the local file, or where the download goes
    sha256: str
    sha256_given: bool  # from --sha256, not the table


def sources(name: str, to: Path, mirror: str | None = None, local: Sequence[str] = (), sums: Sequence[str] = ()) -> list[Source]:
    """Each archive of benchmark `name` with where it comes from: --from FILE (matched by file name, or alone for a
    one-archive benchmark), else --mirror URL/FILE, else its published address; its sum from --sha256
    ([FILE=]HEX) or the table. Options that match no archive are ConfigErrors listing the archives' names."""
    if name not in ARCHIVES:
        raise ConfigError(f"data fetch {name!r}: unknown benchmark; allowed: {', '.join(ARCHIVES)}")
    archives = ARCHIVES[name]
    files = ", ".join(a.file for a in archives)
    given_paths = {_archive_for(archives, Path(f).name, "--from", f): Path(f).expanduser().resolve() for f in local}
    given_sums = {}
    for value in sums:
        file, _, hex_ = value.rpartition("=")
        hex_ = hex_.strip().lower()
        if not _HEX.fullmatch(hex_):
            raise ConfigError(f"--sha256={value!r}: expected 64 hexadecimal digits, optionally after FILE= ({files})")
        given_sums[_archive_for(archives, file, "--sha256", value)] = hex_
    for path in given_paths.values():
        if not path.is_file():
            raise ConfigError(f"--from {path}: no such file")
    out = []
    for a in archives:
        url = None if a.file in given_paths else f"{mirror.rstrip('/')}/{a.file}" if mirror else a.url
        path = given_paths.get(a.file, to / DOWNLOADS / a.file)
        out.append(Source(a, url, path, given_sums.get(a.file, a.sha256), a.file in given_sums))
    return out


def _archive_for(archives: tuple[Archive, ...], file: str, option: str, value: str) -> str:
    """The archive an option's FILE names; with one archive, any name (or none) is that one."""
    if len(archives) == 1:
        return archives[0].file
    if file in {a.file for a in archives}:
        return file
    raise ConfigError(f"{option} {value}: name one of {', '.join(a.file for a in archives)}"
                      + (" as FILE=HEX" if option == "--sha256" else " (the published file names)"))


def fetch(name: str, to: Path, srcs: list[Source], *, keep_archives: bool, show: bool, say: Callable[..., None]) -> Path:
    """DIR/NAME made whole from `srcs` (see the module docstring), or found whole from an earlier fetch.
    `say(text, style=None)` prints a line."""
    target = to / name
    try:
        (to / DOWNLOADS).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {to / DOWNLOADS}: {e.strerror}; choose a --to folder you can write") from None
    with atomic.build_lock(to / DOWNLOADS / name):
        if target.exists():
            if not (target / FETCHED).is_file():
                raise DataError(f"{target} exists and was not written by `data fetch`: it is left as it is; check it with "
                                f"`python -m vadcore data check --data-root {to}`, or move it away and fetch again")
            say(f"{name}: already fetched into {target}; nothing to download")
            return target
        for s in srcs:
            if s.sha256_given:
                say(f"WARNING: {s.archive.file} is checked against --sha256 {s.sha256}, not the published "
                    f"{s.archive.sha256}: trust it only if you know where that sum comes from", "bold yellow")
            if s.url is not None and not s.path.is_file():
                say(f"{s.archive.file}: downloading {s.url}")
                download(s.url, s.path, show=show, say=say)
        for s in srcs:  # every archive verified before any is unpacked
            _verify(s, show)
        t0 = time.perf_counter()
        try:
            with atomic.staging_dir(target) as stage:
                for s in srcs:
                    with progress_bar(f"unpacking {s.archive.file}", s.path.stat().st_size, enabled=show, unit="bytes") as advance:
                        unpack(s.path, s.archive, stage, advance)
                atomic.write_json(stage / FETCHED, {"benchmark": name, "fetched": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                     "archives": [{"file": s.archive.file, "from": s.url or str(s.path),
                                                                   "sha256": s.sha256} for s in srcs]})
        except OSError as e:  # a full disk, a file-size limit, an I/O error, a folder not writable
            where = f" ({e.filename})" if e.filename else ""
            raise DataError(f"cannot unpack into {to}: {e.strerror}{where}; free some space (or fetch --to another disk) and "
                            f"rerun: the verified archives are kept, nothing half-unpacked is") from None
        say(f"{name}: unpacked into {target} in {time.perf_counter() - t0:.0f} s")
        for s in srcs:
            if s.url is not None and not keep_archives:
                s.path.unlink()
    return target


def _verify(s: Source, show: bool) -> None:
    """A DataError naming both sums when they differ; the file is left where it is (the user's, or a download the
    user may want to inspect or vouch for with --sha256)."""
    got = sha256_file(s.path, show=show)
    if got == s.sha256:
        return
    if s.url is None:
        what = "this is not the published file; if you trust it anyway, pass --sha256 " + got
    else:
        what = (f"the download is damaged or the file changed on the server: delete {s.path} to download it again, or "
                f"if you trust it pass --sha256 {got}")
    raise DataError(f"{s.path}: SHA-256 {got} is not the expected {s.sha256} ({'--sha256' if s.sha256_given else 'published'}); "
                    f"nothing was unpacked: {what}")
