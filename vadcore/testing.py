"""Fakes for tests: a benchmark made of in-memory arrays, so shard and loader tests control every frame."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from vadcore.configtools import stable_hash
from vadcore.data.base import Benchmark, Split, Video


class ArrayBenchmark(Benchmark):
    """videos: {split: [(id, scene, frames (n, H, W, 3) uint8, labels (n,) or None)]}."""

    name = "arrays"

    def __init__(self, videos: dict[str, list[tuple[str, str, np.ndarray, np.ndarray | None]]]):
        super().__init__(None)
        self._videos = videos

    def videos(self, split: Split) -> list[Video]:
        return [
            Video(vid, scene, split, partial(iter, list(frames)), labels, Path(f"<array {vid}>"))
            for vid, scene, frames, labels in self._videos[split]
        ]

    def fingerprint(self, split: Split) -> str:
        return stable_hash([(v, s, f.tobytes().hex()[:64], f.shape) for v, s, f, _ in self._videos[split]])


def counting_video(n: int, height: int = 8, width: int = 8, offset: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8 frames whose every pixel equals (offset + frame index) % 256: windows are checkable."""
    values = (offset + np.arange(n)) % 256
    return np.broadcast_to(values[:, None, None, None], (n, height, width, 3)).astype(np.uint8)
