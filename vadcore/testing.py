"""Test helpers: a benchmark made of in-memory arrays (shard and loader tests control every frame), the
TINY overrides that shrink a trial to seconds, and barriers on a state. (The one seam that holds sweep trials
for a test is `sweeps.trainable.test_gate`, set through `vadcore.paths.TRIAL_GATE_ENV`.)"""
from __future__ import annotations

import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

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


def wait_until(condition: Callable[[], object], timeout: float | None, what: str = "condition", poll: float = 0.05):
    """Poll `condition` until it returns something true, and return that; TimeoutError after `timeout` seconds
    (None: no limit). A barrier on a state (a file exists, a process exited), never a guess of how long."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not (value := condition()):
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout} s")
        time.sleep(poll)
    return value


def end_rank() -> None:
    """End a test's spawned rank process once its results are on disk, skipping interpreter shutdown.

    At shutdown a C++ thread of the CPU collective stack (gloo, DeepSpeed's shared-memory comm) is sometimes still
    joinable, std::terminate aborts the process ("terminate called without an active exception", SIGABRT, no
    Python frame), and torch.multiprocessing reports a failed rank whose work had all succeeded: 3 of 15 runs of
    tests/test_selection.py's two-rank test on 2 cores, 0 of 16 with this exit. The caller has destroyed its
    process group and written its files; the parent checks those."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
