"""CUHK Avenue, with its videos in either of two places under DATA_ROOT/avenue/.

    avenue/Avenue Dataset/training_videos/NN.avi, .../testing_videos/NN.avi   as Avenue_Dataset.zip unpacks
    avenue/training_videos/NN.avi, avenue/testing_videos/NN.avi               re-packed (../shared/data)
    avenue/ground_truth_demo/testing_label_mask/K_label.mat                   as ground_truth_demo.zip unpacks

Videos are XviD, 640x360; the labels are cell `volLabel`, one mask per frame. Both zips unpacked into avenue/
(`python -m vadcore data fetch avenue`) are the first layout; both layouts at once is an error.

A frame is anomalous iff its mask has a nonzero pixel. Whatever subset of videos is present is used;
a test video's label count must equal its decoded frame count (checked while decoding, at shard time).
The development split ("dev") is made from held-out training videos: `vadcore.data.devsplit`.
"""
from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from vadcore.data.base import DEV, Split, Video, fingerprint_files
from vadcore.data.decode import frames_matching_labels, iter_video_file, visible
from vadcore.data.devsplit import DevFromTraining
from vadcore.errors import DataError

_FOLDERS = {"train": "training_videos", "test": "testing_videos"}
OFFICIAL = "Avenue Dataset"  # the folder Avenue_Dataset.zip unpacks its videos into
_LABELS = "ground_truth_demo/testing_label_mask"
_VIDEO_NAME = re.compile(r"[0-9]+")  # NN of NN.avi


def load_volume_labels(path: Path) -> np.ndarray:
    """(n,) uint8 frame labels from an Avenue `K_label.mat` (any nonzero mask pixel = anomalous)."""
    import scipy.io

    try:
        vol = scipy.io.loadmat(str(path))["volLabel"]
    except FileNotFoundError:
        raise DataError(f"Avenue label file {path} not found") from None
    except (KeyError, ValueError, OSError) as e:
        raise DataError(f"{path}: cannot read cell 'volLabel' ({e}); expected Avenue's K_label.mat") from None
    return np.array([int(np.any(m)) for m in vol.ravel()], dtype=np.uint8)


class Avenue(DevFromTraining):
    name = "avenue"
    published = {"train": 16, "test": 21}

    @property
    def root(self) -> Path:
        return self.data_root / "avenue"

    @property
    def video_root(self) -> Path:
        """avenue/Avenue Dataset/ where Avenue_Dataset.zip was unpacked, else avenue/ (see the module docstring)."""
        official = self.root / OFFICIAL
        if official.is_dir() and any((self.root / f).is_dir() for f in _FOLDERS.values()):
            raise DataError(f"{self.root} holds Avenue's videos twice, in {OFFICIAL}/ (as Avenue_Dataset.zip unpacks) and in "
                            f"training_videos/ or testing_videos/ beside it: keep one of them there")
        return official if official.is_dir() else self.root

    def _files(self, split: Split) -> list[Path]:
        """The split's NN.avi files; the number NN is what finds a test video's label file."""
        folder = self.video_root / _FOLDERS[split]
        files = visible(folder.glob("*.avi")) if folder.is_dir() else []
        if not files:
            raise DataError(f"CUHK Avenue {split} videos not found: expected {self.root / OFFICIAL / _FOLDERS[split]}/NN.avi "
                            f"(as Avenue_Dataset.zip unpacks) or {self.root / _FOLDERS[split]}/NN.avi (data root {self.data_root})")
        misnamed = [f.name for f in files if not _VIDEO_NAME.fullmatch(f.stem)]
        if misnamed:
            raise DataError(
                f"{folder}: {', '.join(misnamed[:3])}: expected names NN.avi (the video's number, e.g. 08.avi), "
                f"by which Avenue pairs test video NN with its labels K_label.mat: rename or remove them"
            )
        return files

    def _label_file(self, video: Path) -> Path:
        path = self.root / _LABELS / f"{int(video.stem)}_label.mat"
        if not path.is_file():
            raise DataError(
                f"{video}: its label file {path} not found; Avenue's labels are "
                f"{self.root / _LABELS}/K_label.mat for test video K (08.avi -> 8_label.mat)"
            )
        return path

    def videos(self, split: Split) -> list[Video]:
        if split == DEV:
            return self.dev_videos()
        out = []
        for f in self._files(split):
            if split == "train":
                out.append(Video(f.stem, "avenue", split, partial(iter_video_file, f), None, f))
                continue
            label_file = self._label_file(f)
            labels = load_volume_labels(label_file)
            frames = partial(frames_matching_labels, partial(iter_video_file, f), len(labels), f, label_file)
            out.append(Video(f.stem, "avenue", split, frames, labels, f, label_file))
        return out

    def fingerprint(self, split: Split) -> str:
        if split == DEV:
            return self.dev_fingerprint()
        files = self._files(split)
        if split == "test":
            files = files + [self._label_file(f) for f in files]
        return fingerprint_files(files, self.data_root)
