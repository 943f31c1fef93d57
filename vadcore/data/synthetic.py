"""A seeded synthetic benchmark, the embedded default: a laptop with no data runs end to end.

Each scene is a static textured background (smooth noise, stripes or paving tiles) with a walkway band
along which small dark upright ellipses ("pedestrians", 9-11 x 4-6 px, in one of five scene colours) walk
in one scene-specific direction at about 1.2 px/frame (per-pedestrian speed +-20 %, 0.3 px per-frame
position jitter), entering and leaving the frame, 2-6 at a time. Pedestrians never touch (a newcomer takes
another lane or stays away), so every foreground blob is one object and a frame's look is the sum of its
objects' looks. Every frame gets Gaussian sensor noise (sigma 2). Test videos hold exactly one
anomalous object, crossing the walkway with normal stretches before and after; its frames are labelled 1
from the first to the last frame it is visible, and its kind is recorded per frame (`anomaly_kinds`):

* APPEARANCE (1): an object no pedestrian looks like, at normal speed: a large bright triangle or a
  near-black bar lying across the walkway. Any single frame gives it away.
* MOTION (2): a pedestrian drawn from the normal shape/size/colour distribution, on the walkway, whose
  position along it is a normal track plus a period-4 offset pattern: "shuttle" (0, a, 0, -a), i.e.
  darting back and forth by a = 4-6 px per frame, turning every other frame, or "dash" (0, a, 2a, 3a),
  i.e. sprinting at 5-7 px/frame for three frames then jumping back 3a. Pedestrians in its way are left
  out, as the never-touch rule requires. No frame looks abnormal, and since the pattern's period
  is tau = 4, frames t, t+4, t+8, ... all carry the same offset: whatever the clip's phase, the appearance
  path's view of the object is a normal pedestrian at normal speed (the object is then indistinguishable
  from a normal one spawned a few frames earlier or later). Only the motion path, seeing all T frames,
  can tell. The object is present from its entry, so no clip sees the pattern switch on.

Scene parameters come from `default_rng([seed, 0, scene])`, a video's plan (tracks, labels) from
`[seed, 1, scene, split, index]` and its sensor noise from `[seed, 2, scene, split, index]`: listing is
cheap, frames are rendered on each call to `Video.frames` and identical every time.

The development split ("dev") is made like the test split, from the same scenes and generator but other
random streams (split index 2): new videos, never the test videos, so a search can optimise on it honestly.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy.ndimage import gaussian_filter

from vadcore.data.base import DEV, SPLITS, Benchmark, Split, Video
from vadcore.errors import ConfigError

GENERATOR_VERSION = 1  # bump whenever the rendered frames or labels change, to invalidate shards
NONE, APPEARANCE, MOTION = 0, 1, 2  # per-frame anomaly kind codes
KIND_NAMES = {NONE: "none", APPEARANCE: "appearance", MOTION: "motion"}

_DIRECTIONS = (("y", 1), ("x", 1), ("x", -1), ("y", -1))  # (axis walked along, sign), cycled over scenes
_TEXTURES = ("noise", "stripes", "tiles")  # cycled over scenes
_SPEED = (1.1, 1.3)  # scene walking speed range, px/frame
_SPREAD = 0.2  # pedestrian speed = scene speed * U(1 -+ spread): faster ones overtake
_LANE_TRIES = 5  # lanes tried for a new pedestrian before it is skipped: pedestrians never touch
_ODD_SPREAD = 0.1  # anomalous objects keep to the middle of the normal speed range
_JITTER = 0.3  # sd of per-frame position jitter, px, along and across the walkway
_GAP = (6, 26)  # frames between pedestrian spawns, uniform
_PALETTE = 5  # pedestrian colours per scene: few enough that training shows each one
_NOISE = 2.0  # sd of per-frame sensor noise, grey levels
_MAX_EXTENT = 20  # longest side of any object, px: bounds an anomaly's crossing time
_BAND = 0.35  # walkway width as a fraction of the frame's extent across it
_SPLIT_INDEX = {split: s for s, split in enumerate((*SPLITS, DEV))}  # seeds each split's random streams


@dataclass(frozen=True)
class _Scene:
    background: np.ndarray  # (H, W, 3) float32
    axis: str  # "y" or "x": the image axis pedestrians walk along
    sign: int  # +1 walks towards larger coordinates
    speed: float  # px/frame
    band: tuple[int, int]  # walkway [lo, hi) across the walking axis
    palette: np.ndarray  # (_PALETTE, 3) pedestrian colours, 30-70


@dataclass(frozen=True)
class _Track:
    colour: np.ndarray  # (3,) float32
    mask: np.ndarray  # (h, w) bool shape
    y: np.ndarray  # (n,) int top row per frame
    x: np.ndarray  # (n,) int left column per frame
    visible: np.ndarray  # (n,) bool: some pixel inside the frame


@dataclass(frozen=True)
class _Plan:
    tracks: list[_Track]
    kinds: np.ndarray  # (n,) uint8 per-frame anomaly kind


class SyntheticBenchmark(Benchmark):
    """Seeded walkway scenes with labelled appearance and motion anomalies; `data_root` is ignored."""

    name = "synthetic"
    has_dev = True

    def __init__(
        self,
        data_root: Path | None = None,
        *,
        seed: int = 0,
        scenes: int = 3,  # distinct backgrounds and walking directions
        train_videos_per_scene: int = 4,  # all normal
        test_videos_per_scene: int = 3,  # one anomaly each; kinds alternate over (scene, index)
        frames_per_video: int = 160,  # an anomaly crossing takes 55-100 frames
        height: int = 64,  # native size; the shard writer resizes
        width: int = 80,
    ):
        super().__init__(data_root)
        for field, value, low in (("seed", seed, 0), ("scenes", scenes, 1),
                                  ("train_videos_per_scene", train_videos_per_scene, 1),
                                  ("test_videos_per_scene", test_videos_per_scene, 1),
                                  ("height", height, 32), ("width", width, 32)):
            if value < low:
                raise ConfigError(f"synthetic benchmark: {field}={value} must be >= {low}")
        longest = _crossing(max(height, width), _SPEED[0] * (1 - _ODD_SPREAD))
        if frames_per_video < longest + 2 * (frames_per_video // 8):
            raise ConfigError(
                f"synthetic benchmark: {frames_per_video=} is too short for an anomaly to cross a "
                f"{height}x{width} frame (up to {longest} frames) with normal frames before and after"
            )
        self.seed, self.scenes = seed, scenes
        self.counts = {"train": train_videos_per_scene, "test": test_videos_per_scene, DEV: test_videos_per_scene}
        self.n, self.height, self.width = frames_per_video, height, width
        self._scene = cache(self._make_scene)
        self._plan = cache(self._make_plan)

    def videos(self, split: Split) -> list[Video]:
        out = []
        for k in range(self.scenes):
            for i in range(self.counts[split]):
                vid = f"s{k}_{split}_{i:03d}"
                labels = (self._plan(vid).kinds != NONE).astype(np.uint8) if split != "train" else None
                out.append(Video(vid, f"s{k}", split, partial(self._frames, vid), labels))
        return sorted(out, key=lambda v: v.id)

    def fingerprint(self, split: Split) -> str:
        settings = dict(version=GENERATOR_VERSION, split=split, seed=self.seed, scenes=self.scenes,
                        videos=self.counts[split], frames=self.n, height=self.height, width=self.width)
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def anomaly_kinds(self, video_id: str) -> np.ndarray:
        """(n,) uint8 per-frame kind: NONE, APPEARANCE or MOTION; all NONE for training videos."""
        return self._plan(video_id).kinds.copy()

    # --- generation -------------------------------------------------------------------------------

    def _parse(self, video_id: str) -> tuple[int, int, int]:
        """(scene, split index, video index) of an id like "s1_test_002"."""
        scene, split, index = video_id.split("_")
        if split not in _SPLIT_INDEX:
            raise KeyError(f"{video_id!r} is not a video of this synthetic benchmark")
        k, s, i = int(scene[1:]), _SPLIT_INDEX[split], int(index)
        if not (k < self.scenes and i < self.counts[split]):
            raise KeyError(f"{video_id!r} is not a video of this synthetic benchmark")
        return k, s, i

    def _make_scene(self, k: int) -> _Scene:
        rng = np.random.default_rng([self.seed, 0, k])
        H, W = self.height, self.width
        yy, xx = np.mgrid[0:H, 0:W]
        texture = _TEXTURES[k % len(_TEXTURES)]
        if texture == "noise":
            lum = gaussian_filter(rng.standard_normal((H, W)), sigma=rng.uniform(2, 5))
        elif texture == "stripes":
            theta, period = rng.uniform(0, np.pi), rng.uniform(6, 14)
            lum = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
            lum = lum + 0.2 * rng.standard_normal((H, W))
        else:
            size = int(rng.integers(8, 13))
            lum = rng.uniform(0.4, 1.0, (H // size + 1, W // size + 1))[yy // size, xx // size]
            lum[(yy % size == 0) | (xx % size == 0)] = 0.0  # grout
        lum = (lum - lum.min()) / (lum.max() - lum.min())
        background = (115 + 60 * lum)[..., None] * rng.uniform(0.9, 1.05, 3)  # (H, W, 3), about 105-185
        axis, sign = _DIRECTIONS[k % len(_DIRECTIONS)]
        across = W if axis == "y" else H
        width = max(round(_BAND * across), _MAX_EXTENT + 2)  # any object fits across it
        lo = int(rng.integers(across // 7, across - across // 7 - width + 1))
        band = (slice(None), slice(lo, lo + width)) if axis == "y" else (slice(lo, lo + width), slice(None))
        background[band] += 10  # a lighter walkway, with a kerb on each side
        for edge in (lo - 1, lo + width):
            background[(slice(None), edge) if axis == "y" else (edge, slice(None))] = 105
        palette = 50 + rng.uniform(-8, 8, 3) + rng.uniform(-12, 12, (_PALETTE, 3))
        return _Scene(background.astype(np.float32), axis, sign, float(rng.uniform(*_SPEED)), (lo, lo + width),
                      palette)

    def _pedestrian(self, rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
        """(colour, mask): an upright ellipse, 9-11 x 4-6 px, in one of the scene's palette colours."""
        h, w = int(rng.integers(9, 12)), int(rng.integers(4, 7))
        yy, xx = np.mgrid[0:h, 0:w]
        mask = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2 <= 1
        return scene.palette[rng.integers(_PALETTE)], mask

    def _oddity(self, rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
        """(colour, mask): a bright 16 px triangle or a near-black 20 x 6 bar lying across the walkway,
        both over twice a pedestrian's area."""
        if rng.random() < 0.5:
            yy, xx = np.mgrid[0:16, 0:16]
            return np.array([245.0, 240.0, 210.0]) + rng.uniform(-5, 5, 3), np.abs(xx - 7.5) <= (yy + 1) / 2
        mask = np.ones((6, _MAX_EXTENT) if scene.axis == "y" else (_MAX_EXTENT, 6), dtype=bool)
        return np.array([12.0, 12.0, 16.0]) + rng.uniform(-4, 4, 3), mask

    def _track(self, rng: np.random.Generator, scene: _Scene, look: tuple[np.ndarray, np.ndarray],
               t0: int, speed: float, offsets: np.ndarray | None = None) -> _Track:
        """Enter the walkway at frame t0 and cross it; `offsets` (4,) adds a period-4 along-walkway pattern."""
        colour, mask = look
        along, across = (mask.shape[0], mask.shape[1]) if scene.axis == "y" else (mask.shape[1], mask.shape[0])
        length = self.height if scene.axis == "y" else self.width
        t = np.arange(self.n)
        u = speed * (t - t0) + _JITTER * rng.standard_normal(self.n)  # distance walked, (n,)
        if offsets is not None:
            u = u + offsets[(t - t0) % 4]
        p = np.round(u - along if scene.sign > 0 else length - u).astype(int)  # leading coordinate along
        lane = rng.uniform(scene.band[0], scene.band[1] - across)
        q = np.round(lane + _JITTER * rng.standard_normal(self.n)).astype(int)
        visible = (p + along > 0) & (p < length)
        y, x = (p, q) if scene.axis == "y" else (q, p)
        return _Track(colour.astype(np.float32), mask, y, x, visible)

    def _make_plan(self, video_id: str) -> _Plan:
        k, s, i = self._parse(video_id)
        scene = self._scene(k)
        rng = np.random.default_rng([self.seed, 1, k, s, i])
        length = self.height if scene.axis == "y" else self.width
        t0 = -_crossing(length, scene.speed * (1 - _SPREAD))  # the walkway is already busy at frame 0
        tracks = []
        while t0 < self.n:
            speed, look = scene.speed * rng.uniform(1 - _SPREAD, 1 + _SPREAD), self._pedestrian(rng, scene)
            for _ in range(_LANE_TRIES):
                track = self._track(rng, scene, look, t0, speed)
                if not any(_touch(track, other) for other in tracks):
                    tracks.append(track)
                    break
            t0 += int(rng.integers(_GAP[0], _GAP[1] + 1))
        tracks = [tr for tr in tracks if tr.visible.any()]
        kinds = np.zeros(self.n, dtype=np.uint8)
        if s != _SPLIT_INDEX["train"]:  # test and dev videos hold one anomaly
            kind = APPEARANCE if (k + i) % 2 == 0 else MOTION
            speed = scene.speed * rng.uniform(1 - _ODD_SPREAD, 1 + _ODD_SPREAD)
            margin = self.n // 8
            start = int(rng.integers(margin, self.n - margin - _crossing(length, speed) + 1))
            if kind == APPEARANCE:
                odd = self._track(rng, scene, self._oddity(rng, scene), start, speed)
            else:
                a = int(rng.integers(4, 7))
                pattern = [0, a, 0, -a] if rng.random() < 0.5 else [0, a, 2 * a, 3 * a]
                odd = self._track(rng, scene, self._pedestrian(rng, scene), start, speed, np.array(pattern))
            first, last = np.flatnonzero(odd.visible)[[0, -1]]
            kinds[first : last + 1] = kind
            tracks = [tr for tr in tracks if not _touch(tr, odd)] + [odd]
        return _Plan(tracks, kinds)

    def _frames(self, video_id: str) -> Iterator[np.ndarray]:
        """Render frame by frame: background, objects, sensor noise; RGB uint8 (H, W, 3)."""
        k, s, i = self._parse(video_id)
        background, plan = self._scene(k).background, self._plan(video_id)
        rng = np.random.default_rng([self.seed, 2, k, s, i])
        for t in range(self.n):
            frame = background.copy()
            for tr in plan.tracks:
                if tr.visible[t]:
                    _paste(frame, tr.colour, tr.mask, int(tr.y[t]), int(tr.x[t]))
            frame += _NOISE * rng.standard_normal(frame.shape, dtype=np.float32)
            yield np.clip(frame, 0, 255).round().astype(np.uint8)


def _crossing(length: int, speed: float) -> int:
    """Frames any object (at most _MAX_EXTENT long, plus jitter and a motion pattern) needs to cross."""
    return math.ceil((length + _MAX_EXTENT) / speed) + 4


def _touch(a: _Track, b: _Track) -> bool:
    """Whether the two tracks' boxes touch or overlap in some frame where both are visible."""
    (ha, wa), (hb, wb) = a.mask.shape, b.mask.shape
    rows = (a.y <= b.y + hb) & (b.y <= a.y + ha)
    cols = (a.x <= b.x + wb) & (b.x <= a.x + wa)
    return bool((a.visible & b.visible & rows & cols).any())


def _paste(frame: np.ndarray, colour: np.ndarray, mask: np.ndarray, y: int, x: int) -> None:
    """Paint `colour` where `mask` is set, with the mask's top-left at (y, x), clipped to the frame."""
    h, w = mask.shape
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + h, frame.shape[0]), min(x + w, frame.shape[1])
    if y0 < y1 and x0 < x1:
        m = mask[y0 - y : y1 - y, x0 - x : x1 - x]
        frame[y0:y1, x0:x1][m] = colour
