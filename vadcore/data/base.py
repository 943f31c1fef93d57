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

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


@dataclass(frozen=True)
class Video:
    """One video of one split.

    frames: callable returning an iterator of RGB uint8 frames (H, W, 3), in temporal order.
    labels: (n,) uint8 array, 1 = anomalous frame; None for training videos (all normal).
    source: the file or folder the frames come from, for error messages.
    """

    id: str
    scene: str
    split: Split
    frames: Callable[[], Iterator[np.ndarray]] = field(repr=False, compare=False)
    labels: np.ndarray | None = field(default=None, repr=False, compare=False)
    source: Path | None = None


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

    def __init__(self, data_root: Path | None):
        self.data_root = data_root

    @abstractmethod
    def videos(self, split: Split) -> list[Video]:
        """The split's videos in a fixed order (sorted by id)."""

    @abstractmethod
    def fingerprint(self, split: Split) -> str:
        """A short hash of the source files (or generator settings) defining this split."""
