"""The benchmarks' published archives, and unpacking one without trusting it.

Addresses and SHA-256 sums are the ones anomalib records for the same files. ShanghaiTech's authors share their
archive from a cloud drive that cannot be scripted; the address here is the widely used mirror of it.

Unpacking refuses, naming the member, anything that could write outside the folder it unpacks into: an absolute
name or one with a `..` part, a link (symbolic or hard) that points outside it, a device, a FIFO. Only the
members a benchmark folder keeps are written (`Archive.keep`), under their own names less `Archive.strip`, so a
benchmark folder is the archive as it unpacks: the readers know that layout (`vadcore.data.ped2`, `.avenue`).
"""
from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable

from vadcore.errors import DataError


@dataclass(frozen=True)
class Archive:
    """One published file: its name (also its name on a mirror), its address, its SHA-256, what of it is kept."""

    file: str
    url: str
    sha256: str
    keep: tuple[str, ...] = ()  # member name prefixes to unpack; () = every member
    strip: str = ""  # removed from the front of every kept member's name

    def target(self, name: str) -> str | None:
        """Where member `name` goes, relative to the benchmark folder; None for a member not kept."""
        name = name.removeprefix("./")
        if self.keep and not name.startswith(self.keep):
            return None
        return name.removeprefix(self.strip).strip("/") or None


ARCHIVES: dict[str, tuple[Archive, ...]] = {
    "ped2": (
        Archive("UCSD_Anomaly_Dataset.tar.gz", "http://www.svcl.ucsd.edu/projects/anomaly/UCSD_Anomaly_Dataset.tar.gz",
                "2329af326951f5097fdd114c50e853957d3e569493a49d22fc082a9fd791915b",
                keep=("UCSD_Anomaly_Dataset.v1p2/UCSDped2/", "UCSD_Anomaly_Dataset.v1p2/README.txt")),  # not Ped1
    ),
    "avenue": (
        Archive("Avenue_Dataset.zip", "http://www.cse.cuhk.edu.hk/leojia/projects/detectabnormal/Avenue_Dataset.zip",
                "fc9cb8432a11ca79c18aa180c72524011411b69d3b0ff27c8816e41c0de61531"),
        Archive("ground_truth_demo.zip", "http://www.cse.cuhk.edu.hk/leojia/projects/detectabnormal/ground_truth_demo.zip",
                "60fec1728ec8f73a58aad3aeb5729d70a805a47e0b8eb4bf91ab67ef06386d77"),
    ),
    "shanghaitech": (
        Archive("shanghaitech.tar.gz", "http://101.32.75.151:8181/dataset/shanghaitech.tar.gz",
                "c13a827043b259ccf8493c9d9130486872992153a9d714fe229e523cd4c94116",
                keep=("shanghaitech/",), strip="shanghaitech/"),  # its one top folder is the benchmark folder
    ),
}


def _refuse(archive: Path, member: str, why: str) -> DataError:
    return DataError(f"{archive}: member {member!r} {why}; the archive is refused and nothing of it was kept "
                     f"(it is not the published file: check where it came from)")


def _safe_name(archive: Path, name: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise _refuse(archive, name, "would be written outside the folder it unpacks into")


def unpack(path: Path, spec: Archive, dest: Path, advance: Callable[[int], None]) -> None:
    """Unpack `path` (a tar, compressed or not, or a zip) into the existing folder `dest` as `spec` says, calling
    `advance` with bytes as they are read (tar) or written (zip). An unsafe member is a DataError; `dest` may then
    hold part of the archive, so callers unpack into a staging folder they discard on error."""
    if zipfile.is_zipfile(path):
        _unpack_zip(path, spec, dest, advance)
        return
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=_Counting(raw, advance), mode="r|*") as tar:
            tar.extractall(dest, members=_kept(tar, path, spec, dest), filter="fully_trusted")  # _kept filtered them
    except (tarfile.ReadError, tarfile.CompressionError, EOFError) as e:
        raise DataError(f"{path}: not a readable tar or zip archive ({e}); is it the whole file?") from None


def _kept(tar: tarfile.TarFile, path: Path, spec: Archive, dest: Path):
    """The tar's members that `spec` keeps, renamed and passed through tarfile's "data" filter (which refuses
    links out, devices and FIFOs, and drops set-uid bits), in archive order: extractall streams them."""
    for member in tar:
        _safe_name(path, member.name)
        name = spec.target(member.name)
        if name is None:
            continue
        renamed = {"name": name}
        if member.islnk():  # a hard link names another member: the same renaming applies to it
            _safe_name(path, member.linkname)
            target = spec.target(member.linkname)
            if target is None:
                raise _refuse(path, member.name, f"is a hard link to {member.linkname!r}, which is not unpacked")
            renamed["linkname"] = target
        try:
            yield tarfile.data_filter(member.replace(**renamed, deep=False), str(dest))
        except tarfile.FilterError as e:
            raise _refuse(path, member.name, f"is refused by the safe-extraction rules ({e})") from None


def _unpack_zip(path: Path, spec: Archive, dest: Path, advance: Callable[[int], None]) -> None:
    """Zip members are all checked before anything is written (the names are in the central directory)."""
    try:
        with zipfile.ZipFile(path) as zf:
            kept = []
            for info in zf.infolist():
                _safe_name(path, info.filename)
                kind = stat.S_IFMT(info.external_attr >> 16)  # 0 where the zip records no Unix file type
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise _refuse(path, info.filename, "is a link or a special file, which is never unpacked from a zip")
                if (name := spec.target(info.filename)) is not None:
                    kept.append((info, dest / name))
            for info, out in kept:
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except OSError as e:  # a full disk: say which file could not be written
                    raise OSError(e.errno, e.strerror, str(out)) from None
                advance(info.file_size)
    except zipfile.BadZipFile as e:
        raise DataError(f"{path}: the zip is damaged ({e}); download it again") from None


class _Counting:
    """A read-only file that reports how many bytes were read from it (progress through a compressed tar)."""

    def __init__(self, raw: BinaryIO, advance: Callable[[int], None]):
        self.raw, self.advance = raw, advance

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.advance(len(data))
        return data
