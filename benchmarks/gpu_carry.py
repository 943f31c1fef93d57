"""The carry: what `gpu_check.py` needs on a GPU node that has a CUDA torch and little else, in one folder that
`gpu_pack.py` builds here and `gpu_check.py` uses there with no pip and no network. Standard library only: it
runs before anything else can be imported.

    .gpu-pack/
        wheels/*.whl      deepspeed (built here: PyPI has only its sdist) and every package the single-trial path
                          needs beyond what a node is assumed to have (gpu_pack.ASSUMED_ON_NODE)
        data/ped2.tar     UCSD Ped2 in its re-packed layout: all training videos and a few test videos
                          (`ped2_selection`), re-encoded as grey JPEGs, and its label file UCSDped2.m
        manifest.json     what is in it, with sizes

Installing is unpacking: a wheel is a zip archive whose top level goes onto sys.path as it is (PEP 427). A wheel
built for another Python or platform than this one (its file name's tags say) is skipped and reported: the
node's own copy of that package is then needed.
"""
from __future__ import annotations

import json
import platform
import re
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / ".gpu-pack"  # gpu_pack.py's default output, and gpu_check.py's default carry (git-ignored)
LIMIT_MIB = 64  # what a GPU session can carry in, all paths together
PED2_TAR = "data/ped2.tar"
PED2_TEST_VIDEOS = 3  # test videos in the pack: bounded scoring, both classes in each
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")
_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def wheel_fits(filename: str) -> str | None:
    """Why the wheel `filename` cannot run on this interpreter and machine, or None when it can (PEP 425 tags)."""
    m = _WHEEL.match(filename)
    if not m:
        return "not a wheel file name"
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    pys, abis, plats = (m.group(k).split(".") for k in ("py", "abi", "plat"))
    py_ok = any(p in ("py3", f"py{sys.version_info.major}{sys.version_info.minor}", here) for p in pys) or (
        "abi3" in abis and any(p.startswith("cp3") and int(p[3:]) <= sys.version_info.minor for p in pys))
    if not py_ok:
        return f"built for {m.group('py')}, this is {here}"
    if "any" in plats:
        return None
    machine = platform.machine()
    libc = tuple(int(x) for x in (platform.libc_ver()[1] or "0.0").split(".")[:2])
    for plat in plats:
        if not plat.endswith(machine):
            continue
        if plat.startswith("linux"):
            return None
        tag = re.match(r"manylinux_(\d+)_(\d+)_", plat)
        need = (int(tag[1]), int(tag[2])) if tag else _MANYLINUX.get(plat.split("_")[0])
        if need is not None and sys.platform == "linux" and libc >= need:
            return None
    return f"built for {m.group('plat')}, this is {sys.platform} {machine} glibc {'.'.join(map(str, libc))}"


def install(carry: Path, site: Path) -> dict:
    """Unpack every wheel of `carry`/wheels that fits this interpreter into `site` (to be put on sys.path first).

    Returns {"installed": [wheel names], "skipped": {wheel: why}}."""
    site.mkdir(parents=True, exist_ok=True)
    done, skipped = [], {}
    for wheel in sorted((carry / "wheels").glob("*.whl")):
        why = wheel_fits(wheel.name)
        if why:
            skipped[wheel.name] = why
            continue
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
        done.append(wheel.name)
    return {"installed": done, "skipped": skipped}


def extract_data(carry: Path, dest: Path) -> Path | None:
    """The data root holding the carried ped2/ (unpacked into `dest`), or None when the carry has no data pack."""
    tar = carry / PED2_TAR
    if not tar.is_file():
        return None
    with tarfile.open(tar) as t:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: no links or paths out of dest
            t.extractall(dest, filter="data")
        else:  # the pack is ours (regular files under ped2/), written by gpu_pack.py
            t.extractall(dest)
    return dest


def manifest(carry: Path) -> dict:
    """The carry's manifest.json ({} when there is none)."""
    path = carry / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def ped2_selection(root: Path, test_videos: int = PED2_TEST_VIDEOS, train_videos: int = 0) -> dict:
    """What a bounded Ped2 holds, from the full one under `root` in either layout vadcore's Ped2 reader reads:
    {"train": [Video], "test": [Video], "label_file": its UCSDped2.m}.

    Training: the first `train_videos` clips (0: all 16). Test: the `test_videos` clips with the most frames of
    their rarer class (normal or anomalous), so each has both and its per-video AUC is defined. The label file is
    kept whole: its i-th entry belongs to test clip i, whichever clips are present."""
    from vadcore.data import get_benchmark

    bench = get_benchmark("ped2", root)
    train, test = bench.videos("train"), bench.videos("test")
    rarer = {v.id: min(int(v.labels.sum()), len(v.labels) - int(v.labels.sum())) for v in test}
    chosen = set(sorted(rarer, key=lambda vid: (-rarer[vid], vid))[:test_videos])
    return {"train": train[:train_videos] if train_videos > 0 else train, "test": [v for v in test if v.id in chosen],
            "label_file": test[0].label_source}


def write_ped2_links(selection: dict, dest: Path) -> Path:
    """A data root at `dest` whose ped2/ (re-packed layout) links to the selected clip folders: a bounded Ped2,
    no frame copied."""
    ped2 = dest / "ped2"
    for split, folder in (("train", "training"), ("test", "testing")):
        (ped2 / folder / "frames").mkdir(parents=True, exist_ok=True)
        for video in selection[split]:
            link = ped2 / folder / "frames" / video.id
            if not link.exists():
                link.symlink_to(Path(video.source).resolve(), target_is_directory=True)
    shutil.copyfile(selection["label_file"], ped2 / "UCSDped2.m")
    return dest
