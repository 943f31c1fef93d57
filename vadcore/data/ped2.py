"""UCSD Ped2 in its original layout.

    ped2/training/frames/NN/KKK.jpg   16 clips, frame KKK 0-based
    ped2/testing/frames/NN/KKK.jpg    12 clips
    ped2/UCSDped2.m                   TestVideoFile{i}.gt_frame = [a:b] (1-based inclusive ranges)

Labels come from the dataset's own `UCSDped2.m`; the other label files (ped2.mat, the .npy, the pixel
masks) are cross-checked against it in the tests.
The development split ("dev") is made from held-out training videos: `vadcore.data.devsplit`.
"""
from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from vadcore.data.base import DEV, Split, Video, fingerprint_files
from vadcore.data.decode import iter_image_folder, list_frames
from vadcore.data.devsplit import DevFromTraining
from vadcore.errors import DataError

_FOLDERS = {"train": "training/frames", "test": "testing/frames"}
_GT_LINE = re.compile(r"gt_frame\s*=\s*\[([^\]]*)\]")
_RANGE = re.compile(r"(\d+)\s*:\s*(\d+)")


def parse_ucsd_m(path: Path) -> list[list[tuple[int, int]]]:
    """Per test video, its anomalous 1-based inclusive ranges, from a UCSDpedN.m file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(f"{path}: cannot read the label file ({e})") from None
    videos = [[(int(a), int(b)) for a, b in _RANGE.findall(m.group(1))] for m in _GT_LINE.finditer(text)]
    if not videos:
        raise DataError(f"{path}: no 'TestVideoFile{{i}}.gt_frame = [a:b]' lines found; expected UCSD's label file")
    return videos


def ranges_to_labels(ranges: list[tuple[int, int]], n_frames: int, where: str) -> np.ndarray:
    labels = np.zeros(n_frames, dtype=np.uint8)
    for a, b in ranges:
        if not 1 <= a <= b <= n_frames:
            raise DataError(f"{where}: anomalous range [{a}:{b}] does not fit the video's {n_frames} frames")
        labels[a - 1 : b] = 1
    return labels


class Ped2(DevFromTraining):
    name = "ped2"

    @property
    def root(self) -> Path:
        return self.data_root / "ped2"

    def _video_dirs(self, split: Split) -> list[Path]:
        folder = self.root / _FOLDERS[split]
        if not folder.is_dir():
            raise DataError(
                f"UCSD Ped2 {split} frames not found: expected folders {folder}/NN/KKK.jpg "
                f"(data root {self.data_root})"
            )
        dirs = sorted(p for p in folder.iterdir() if p.is_dir())
        if not dirs:
            raise DataError(f"{folder}: no clip folders NN/ found")
        return dirs

    def videos(self, split: Split) -> list[Video]:
        if split == DEV:
            return self.dev_videos()
        dirs = self._video_dirs(split)
        label_file = self.root / "UCSDped2.m"
        ranges = parse_ucsd_m(label_file) if split == "test" else None
        if ranges is not None and len(ranges) != len(dirs):
            raise DataError(
                f"{label_file}: {len(ranges)} label entries but {len(dirs)} test clips in "
                f"{self.root / _FOLDERS['test']}"
            )
        out = []
        for i, d in enumerate(dirs):
            labels = None
            if ranges is not None:
                labels = ranges_to_labels(ranges[i], len(list_frames(d)), f"{label_file} clip {d.name}")
            out.append(Video(d.name, "ped2", split, partial(iter_image_folder, d), labels, d, label_file))
        return out

    def fingerprint(self, split: Split) -> str:
        if split == DEV:
            return self.dev_fingerprint()
        files = [f for d in self._video_dirs(split) for f in list_frames(d)]
        if split == "test":
            files.append(self.root / "UCSDped2.m")
        return fingerprint_files(files, self.data_root)
