"""What every benchmark reader hands to the shard writer: videos as lazy frame iterators.

Readers never decode at listing time (Avenue's .avi files are decoded once, when sharded), so
`Benchmark.videos()` is cheap and the label/frame-count cross-checks happen where the frames are read.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np

from vadcore.errors import DataError

Split = Literal["train", "test", "dev"]
SPLITS: tuple[Split, ...] = ("train", "test")  # every benchmark has these
DEV: Split = "dev"  # labelled videos for choosing settings, never the test videos: benchmarks with `has_dev`


@dataclass(frozen=True)
class Video:
    """One video of one split.

    frames: callable returning an iterator of RGB uint8 frames (H, W, 3), in temporal order.
    labels: (n,) 1 = anomalous frame; None for training videos (all normal). Any numeric dtype whose values
        are exactly 0 or 1 is accepted and stored as uint8; anything else is a DataError (see `checked_labels`).
    source: the file or folder the frames come from, for error messages.
    label_source: the file the labels come from, for error messages (default: source).
    """

    id: str
    scene: str
    split: Split
    frames: Callable[[], Iterator[np.ndarray]] = field(repr=False, compare=False)
    labels: np.ndarray | None = field(default=None, repr=False, compare=False)
    source: Path | None = None
    label_source: Path | None = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            where = self.label_source or self.source or f"video {self.id}"
            object.__setattr__(self, "labels", checked_labels(self.labels, where))


def checked_labels(labels: np.ndarray, where: Path | str) -> np.ndarray:
    """(n,) uint8 labels from an array whose values are exactly 0 or 1, else a DataError naming `where`.

    Every reader's labels pass here (through `Video`), before any cast: a cast to uint8 would turn 256 into 0,
    -1 into 255 and 0.4 or NaN into 0, and the shards would count nonsense as anomalous frames.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.dtype.kind not in "biuf":
        raise DataError(
            f"{where}: frame labels are a {arr.dtype} array of shape {arr.shape}; expected a 1-D array of 0/1, "
            f"one per frame"
        )
    bad = np.flatnonzero((arr != 0) & (arr != 1))  # NaN != 0 and != 1, so it is caught too
    if bad.size:
        shown = ", ".join(f"frame {i}: {arr[i]}" for i in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise DataError(
            f"{where}: {bad.size} frame labels are neither 0 nor 1 ({shown}); labels must be exactly "
            f"0 (normal) or 1 (anomalous): fix or re-export the label file"
        )
    return arr.astype(np.uint8)


def fingerprint_files(paths: list[Path], root: Path) -> str:
    """sha256 over (relative path, size) of the files that define a split.

    Cheap (no file contents read) but changes when a video or label file is added, removed or replaced
    by one of another size, which is what invalidates a shard.
    """
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(f"{p.relative_to(root)}:{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


class Benchmark(ABC):
    """A benchmark: a name, where its files live, and its videos per split.

    Subclasses set `name` and implement `videos` and `fingerprint`; the registry in
    `vadcore.data` maps names to subclasses.
    """

    name: str = ""
    has_dev: bool = False  # whether videos(DEV) exists: a labelled development split that is not the test set
    published: dict[str, int] = {}  # videos per split of the benchmark as published: what `data check` finds missing

    def __init__(self, data_root: Path | None):
        self.data_root = data_root

    @abstractmethod
    def videos(self, split: Split) -> list[Video]:
        """The split's videos in a fixed order (sorted by id)."""

    @abstractmethod
    def fingerprint(self, split: Split) -> str:
        """A short hash of the source files (or generator settings) defining this split."""

    def dev_holdout(self) -> frozenset[str]:
        """Ids of the training videos the development split is made from: never trained on (the pipeline
        leaves them out of training and selects checkpoints with them). Empty unless the development split is
        made from training videos (`vadcore.data.devsplit.DevFromTraining`)."""
        return frozenset()
