"""UCSD Ped2, in either of two layouts under DATA_ROOT/ped2/.

As the UCSD archive unpacks there (`python -m vadcore data fetch ped2`; only its UCSDped2/ is kept):

    ped2/UCSD_Anomaly_Dataset.v1p2/UCSDped2/Train/TrainNNN/KKK.tif   16 clips, frame KKK 1-based, 8-bit grey
    ped2/UCSD_Anomaly_Dataset.v1p2/UCSDped2/Test/TestNNN/KKK.tif     12 clips (TestNNN_gt/: pixel masks, not read)
    ped2/UCSD_Anomaly_Dataset.v1p2/UCSDped2/Test/UCSDped2.m          TestVideoFile{i}.gt_frame = [a:b]

Re-packed as in ../shared/data:

    ped2/training/frames/NN/KKK.jpg   16 clips, frame KKK 0-based
    ped2/testing/frames/NN/KKK.jpg    12 clips
    ped2/UCSDped2.m

Clip TrainNNN / TestNNN gets the re-packed id NN, so a clip has one name (in results, dev copies, hold-outs)
whichever layout it was read from. Labels come from the dataset's own `UCSDped2.m` (1-based inclusive ranges),
whose i-th entry belongs to test clip i: any subset of the clips can be present. The other label files (ped2.mat,
the .npy, the pixel masks) are cross-checked against it in the tests.
The development split ("dev") is made from held-out training videos: `vadcore.data.devsplit`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import numpy as np

from vadcore.data.base import DEV, Split, Video, fingerprint_files
from vadcore.data.decode import iter_image_folder, list_frames, visible
from vadcore.data.devsplit import DevFromTraining
from vadcore.errors import DataError

UCSD = "UCSD_Anomaly_Dataset.v1p2/UCSDped2"  # where the official archive keeps Ped2
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


@dataclass(frozen=True)
class Layout:
    """Where one layout keeps each split's clip folders and the label file, and how it names a clip folder."""

    name: str
    folders: dict[str, str]  # split -> folder of clip folders, relative to ped2/
    clip: dict[str, re.Pattern]  # split -> clip folder name, its number as group 1
    label_file: str  # relative to ped2/
    expected: dict[str, str]  # split -> what an error says was expected
    official: bool  # TrainNNN / TestNNN become id NN; the re-packed layout's folder names are its ids already

    def clip_id(self, folder: Path, number: int) -> str:
        return f"{number:02d}" if self.official else folder.name


REPACKED = Layout(
    "re-packed",
    {"train": "training/frames", "test": "testing/frames"},
    {"train": re.compile(r"([0-9]+)"), "test": re.compile(r"([0-9]+)")},
    "UCSDped2.m",
    {"train": "training/frames/NN/KKK.jpg", "test": "testing/frames/NN/KKK.jpg"},
    official=False,
)
OFFICIAL = Layout(
    f"official ({UCSD})",
    {"train": f"{UCSD}/Train", "test": f"{UCSD}/Test"},
    {"train": re.compile(r"Train([0-9]+)"), "test": re.compile(r"Test([0-9]+)")},
    f"{UCSD}/Test/UCSDped2.m",
    {"train": f"{UCSD}/Train/TrainNNN/KKK.tif", "test": f"{UCSD}/Test/TestNNN/KKK.tif"},
    official=True,
)
_MASKS = re.compile(r"Test[0-9]+_gt")  # the official layout's pixel masks, beside the test clips


class Ped2(DevFromTraining):
    name = "ped2"
    published = {"train": 16, "test": 12}

    @property
    def root(self) -> Path:
        return self.data_root / "ped2"

    @cached_property
    def layout(self) -> Layout:
        """OFFICIAL where ped2/ holds the unpacked UCSD archive, else REPACKED; both at once is an error."""
        official = (self.root / UCSD.split("/")[0]).is_dir()
        if official and any((self.root / f.split("/")[0]).is_dir() for f in REPACKED.folders.values()):
            raise DataError(
                f"{self.root} holds UCSD Ped2 in two layouts, {UCSD.split('/')[0]}/ (as the UCSD archive unpacks) and "
                f"training/ + testing/ (re-packed): keep one of them there"
            )
        return OFFICIAL if official else REPACKED

    def _video_dirs(self, split: Split) -> list[tuple[Path, int]]:
        """The split's clip folders, each with its clip number, in clip order."""
        lay = self.layout
        folder = self.root / lay.folders[split]
        other = REPACKED if lay.official else OFFICIAL
        if not folder.is_dir():
            raise DataError(
                f"UCSD Ped2 {split} frames not found: expected folders {self.root}/{lay.expected[split]} "
                f"(or, as the UCSD archive unpacks, {self.root}/{other.expected[split]}; data root {self.data_root})"
            )
        dirs = []
        for d in (p for p in visible(folder.iterdir()) if p.is_dir()):
            m = lay.clip[split].fullmatch(d.name)
            if m is None:
                if lay.official and _MASKS.fullmatch(d.name):
                    continue
                raise DataError(f"{d}: not a clip folder of the {lay.name} layout ({lay.expected[split]}): rename or remove it")
            dirs.append((d, int(m.group(1))))
        if not dirs:
            raise DataError(f"{folder}: no clip folders found; expected {self.root}/{lay.expected[split]}")
        return sorted(dirs, key=lambda d: d[1])

    def videos(self, split: Split) -> list[Video]:
        if split == DEV:
            return self.dev_videos()
        dirs = self._video_dirs(split)
        label_file = self.root / self.layout.label_file
        ranges = parse_ucsd_m(label_file) if split == "test" else None
        out = []
        for d, number in dirs:
            labels = None
            if ranges is not None:
                if not 1 <= number <= len(ranges):
                    raise DataError(f"{label_file}: {len(ranges)} label entries, none for test clip {d} (entry {number})")
                labels = ranges_to_labels(ranges[number - 1], len(list_frames(d)), f"{label_file} clip {d.name}")
            out.append(Video(self.layout.clip_id(d, number), "ped2", split, partial(iter_image_folder, d), labels, d, label_file))
        return out

    def fingerprint(self, split: Split) -> str:
        if split == DEV:
            return self.dev_fingerprint()
        files = [f for d, _ in self._video_dirs(split) for f in list_frames(d)]
        if split == "test":
            files.append(self.root / self.layout.label_file)
        return fingerprint_files(files, self.data_root)
