"""ShanghaiTech Campus in its most widely used layout, the one its archive unpacks (`vadcore data fetch shanghaitech`).

    shanghaitech/training/videos/SS_VVVV.avi   or   shanghaitech/training/frames/SS_VVVV/*.jpg
    shanghaitech/testing/frames/SS_VVVV/*.jpg
    shanghaitech/testing/test_frame_mask/SS_VVVV.npy    0/1 per test frame

The scene id is SS (13 scenes), used as the class of HGAD's unified prior.
The development split ("dev") is made from held-out training videos: `vadcore.data.devsplit`.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from vadcore.data.base import DEV, Split, Video, fingerprint_files
from vadcore.data.decode import frames_matching_labels, iter_image_folder, iter_video_file, list_frames, visible
from vadcore.data.devsplit import DevFromTraining
from vadcore.errors import DataError

_MASKS = "testing/test_frame_mask"


def load_test_labels(root: Path) -> dict[str, np.ndarray]:
    """{video id: (n,) labels as stored} from `testing/test_frame_mask/*.npy`.

    Not cast here: `Video` checks that they are exactly 0/1 and names the file when they are not.
    """
    folder = root / _MASKS
    files = visible(folder.glob("*.npy")) if folder.is_dir() else []
    if not files:
        raise DataError(f"ShanghaiTech test labels not found: expected {folder}/SS_VVVV.npy")
    out = {}
    for f in files:
        try:
            out[f.stem] = np.load(f).ravel()
        except (OSError, ValueError) as e:
            raise DataError(f"{f}: cannot load frame labels ({e})") from None
    return out


class ShanghaiTech(DevFromTraining):
    name = "shanghaitech"
    published = {"train": 330, "test": 107}

    @property
    def root(self) -> Path:
        return self.data_root / "shanghaitech"

    def _train_sources(self) -> list[Path]:
        videos = self.root / "training/videos"
        frames = self.root / "training/frames"
        found = visible(videos.glob("*.avi")) if videos.is_dir() else []
        if not found and frames.is_dir():
            found = [p for p in visible(frames.iterdir()) if p.is_dir()]
        if not found:
            raise DataError(
                f"ShanghaiTech training data not found: expected {videos}/SS_VVVV.avi or {frames}/SS_VVVV/*.jpg "
                f"(data root {self.data_root})"
            )
        return found

    def _test_dirs(self, labels: dict[str, np.ndarray]) -> list[Path]:
        folder = self.root / "testing/frames"
        dirs = [folder / vid for vid in sorted(labels)]
        missing = [d for d in dirs if not d.is_dir()]
        if missing:
            raise DataError(
                f"ShanghaiTech test frames not found: {len(missing)} of {len(dirs)} labelled videos have no folder, "
                f"first {missing[0]} (expected {folder}/SS_VVVV/*.jpg)"
            )
        return dirs

    def videos(self, split: Split) -> list[Video]:
        if split == DEV:
            return self.dev_videos()
        if split == "train":
            out = []
            for src in self._train_sources():
                read = partial(iter_video_file, src) if src.suffix == ".avi" else partial(iter_image_folder, src)
                out.append(Video(src.stem, src.stem.split("_")[0], split, read, None, src))
            return out
        labels = load_test_labels(self.root)
        out = []
        for d in self._test_dirs(labels):
            label_file = self.root / _MASKS / f"{d.name}.npy"
            read = partial(frames_matching_labels, partial(iter_image_folder, d), len(labels[d.name]), d, label_file)
            out.append(Video(d.name, d.name.split("_")[0], split, read, labels[d.name], d, label_file))
        return out

    def fingerprint(self, split: Split) -> str:
        if split == DEV:
            return self.dev_fingerprint()
        if split == "train":
            srcs = self._train_sources()
            files = [f for s in srcs for f in ([s] if s.is_file() else list_frames(s))]
        else:
            labels = load_test_labels(self.root)
            files = [f for d in self._test_dirs(labels) for f in list_frames(d)]
            files += visible((self.root / _MASKS).glob("*.npy"))
        return fingerprint_files(files, self.data_root)
