"""Test helpers: a benchmark made of in-memory arrays (shard and loader tests control every frame), and the
TINY overrides that shrink a trial to seconds."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from vadcore.configtools import stable_hash
from vadcore.data.base import Benchmark, Split, Video

# `--set` overrides that shrink a synthetic trial to seconds: tests, sweep tests and the sweep benchmark use them.
TINY = [
    "data.height=32", "data.width=48", "data.test_stride=4", "data.train_stride=4",
    "itae.frames=8", "itae.tau=2", "itae.width=0.0625",
    "itae_train.epochs=1", "itae_train.max_steps=4", "itae_train.batch_size=4",
    "flow.glow.steps=2", "flow.glow.hidden=16", "flow.train.epochs=1", "flow.train.max_steps=4", "flow.train.batch_size=16",
]


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
