"""`./dev gpu-pack`: build the carry `gpu_check.py` needs on a GPU node with a CUDA torch and little else, and print
its size against the 64 MiB a session can carry in (layout: `gpu_carry.py`).

    ./dev gpu-pack                                       # .gpu-pack/: wheels + Ped2 data pack
    python benchmarks/gpu_pack.py --no-data              # wheels only: gpu_check then runs synthetic at Ped2's geometry
    python benchmarks/gpu_pack.py --include av           # a package more (here: Avenue's .avi decoder)

Wheels: every package the single-trial path needs, with its requirements, at the versions installed here, less
what a node is assumed to have (ASSUMED_ON_NODE: torch and the scientific stack, ~140 MB of wheels together, more
than the carry holds; gpu_check says which of them a node lacks). `pip wheel --no-deps` fetches each wheel and
builds deepspeed's, which PyPI has only as an sdist (needs the network here, not on the node). Wheels with binary
parts (pydantic-core, PyYAML, msgpack, psutil, ninja) are this machine's: CPython 3.11 on x86-64 Linux.

Data: UCSD Ped2's 16 training videos and the PED2_TEST_VIDEOS test videos of `gpu_carry.ped2_selection` (read in
either layout vadcore reads), grey (OpenCV's RGB->grey, as the shards convert them) and re-encoded as JPEG at
QUALITY; the manifest records the mean absolute difference from the original frames' grey, on every 10th frame.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the repo root: vadcore need not be installed
import gpu_carry  # noqa: E402

ROOTS = ("deepspeed", "webdataset", "rich")  # the trial path's imports beyond the node's (with their requirements)
ASSUMED_ON_NODE = ("torch", "numpy", "scipy", "scikit-learn", "opencv-python-headless", "pillow", "pyarrow")
QUALITY = 90  # JPEG quality of the grey re-encode: ~1 grey level from the originals (which are ~95), 40 MB of training frames


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: tuple[str, ...], stop: tuple[str, ...]) -> dict[str, str]:
    """{distribution: installed version} of `roots` and everything they require here (markers evaluated, no
    extras), not descending into `stop`."""
    from packaging.requirements import Requirement

    stop_names = {canonical(s) for s in stop}
    todo, found = [canonical(r) for r in roots], {}
    while todo:
        name = todo.pop()
        if name in found or name in stop_names:
            continue
        found[name] = md.version(name)
        for text in md.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonical(req.name))
    return dict(sorted(found.items()))


def build_wheels(packages: dict[str, str], folder: Path) -> None:
    """`pip wheel --no-deps` of each package at its installed version into `folder`."""
    folder.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(folder), *(f"{n}=={v}" for n, v in packages.items())]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"pip wheel failed (it needs the network here for wheels not in pip's cache):\n{run.stderr[-3000:]}")


def pack_ped2(data_root: Path, tar_path: Path, quality: int, train_videos: int = 0, test_videos: int = gpu_carry.PED2_TEST_VIDEOS) -> dict:
    """Write the grey re-encoded Ped2 selection (`gpu_carry.ped2_selection`) into `tar_path` in the re-packed
    layout (frames KKK.jpg from 000); returns what the manifest records of it."""
    import cv2
    import numpy as np
    from PIL import Image

    sel = gpu_carry.ped2_selection(data_root, test_videos, train_videos)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    diffs, frames = [], 0

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(tar_path, "w") as tar:
        for split, folder in (("train", "training"), ("test", "testing")):
            for video in sel[split]:
                for k, rgb in enumerate(video.frames()):
                    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
                    buf = io.BytesIO()
                    Image.fromarray(grey).save(buf, "JPEG", quality=quality)
                    add(tar, f"ped2/{folder}/frames/{video.id}/{k:03d}.jpg", buf.getvalue())
                    frames += 1
                    if k % 10 == 0:
                        back = cv2.cvtColor(np.asarray(Image.open(buf).convert("RGB")), cv2.COLOR_RGB2GRAY)
                        diffs.append(float(np.abs(back.astype(np.int16) - grey).mean()))
        add(tar, "ped2/UCSDped2.m", Path(sel["label_file"]).read_bytes())
    return {"file": gpu_carry.PED2_TAR, "bytes": tar_path.stat().st_size, "frames": frames, "jpeg_quality": quality,
            "train_videos": [v.id for v in sel["train"]], "test_videos": [v.id for v in sel["test"]],
            "mean_abs_grey_diff": round(float(np.mean(diffs)), 3), "source": str(data_root / "ped2")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(gpu_carry.CARRY), help="the carry folder, replaced (default: .gpu-pack/)")
    p.add_argument("--data-root", default=os.environ.get("VAD_DATA_ROOT", str(gpu_carry.REPO.parent / "shared" / "data")),
                   help="where ped2/ is (default: $VAD_DATA_ROOT, else ../shared/data)")
    p.add_argument("--no-data", action="store_true", help="no Ped2 data pack")
    p.add_argument("--include", nargs="+", default=[], metavar="PACKAGE", help="installed packages to carry too, with their requirements")
    p.add_argument("--quality", type=int, default=QUALITY, help=f"JPEG quality of the Ped2 frames (default {QUALITY})")
    args = p.parse_args(argv)

    out = Path(args.out).absolute()
    stop = tuple(s for s in ASSUMED_ON_NODE if canonical(s) not in {canonical(i) for i in args.include})
    packages = closure(ROOTS + tuple(args.include), stop)
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        print(f"wheels: {len(packages)} packages: {', '.join(f'{n} {v}' for n, v in packages.items())}", flush=True)
        build_wheels(packages, tmp / "wheels")
        data = None
        ped2 = Path(args.data_root) / "ped2"
        if args.no_data:
            print("data: none (--no-data): gpu_check runs synthetic frames at Ped2's geometry")
        elif not ped2.is_dir():
            print(f"data: none: no Ped2 at {ped2} (--data-root): gpu_check runs synthetic frames at Ped2's geometry")
        else:
            print(f"data: Ped2 from {ped2}, grey JPEG quality {args.quality} ...", flush=True)
            data = pack_ped2(Path(args.data_root), tmp / gpu_carry.PED2_TAR, args.quality)
        wheels = {w.name: w.stat().st_size for w in sorted((tmp / "wheels").glob("*.whl"))}
        record = {"built": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(), "machine": f"{sys.platform} {platform.machine()}",
                  "wheels": wheels, "data": data, "assumed_on_node": list(stop), "limit_mib": gpu_carry.LIMIT_MIB}
        (tmp / "manifest.json").write_text(json.dumps(record, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for name, size in wheels.items():
        print(f"  {size / 2**20:6.2f} MiB  wheels/{name}")
    if data:
        print(f"  {data['bytes'] / 2**20:6.2f} MiB  {data['file']} ({data['frames']} frames: training {len(data['train_videos'])} videos, "
              f"test {', '.join(data['test_videos'])}; {data['mean_abs_grey_diff']} grey levels from the originals)")
    total = gpu_carry.folder_bytes(out)
    fits = total <= gpu_carry.LIMIT_MIB * 2**20
    print(f"{out}: {total / 2**20:.2f} MiB of {gpu_carry.LIMIT_MIB} MiB: {'fits' if fits else 'DOES NOT FIT'} "
          f"({time.perf_counter() - t0:.0f} s); assumed on the node: {', '.join(stop)}")
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
