"""A development split made from training videos only: held-out normal videos and pseudo-anomalous copies.

Settings are chosen on this split, never on the test labels. Every benchmark with training videos gets it by
subclassing `DevFromTraining` (Ped2, Avenue, ShanghaiTech do):

* **Hold-out** (`holdout`): per scene, the training videos at positions 0, 8, 16, ... of the id-sorted list
  (about 1/8, at least one), and none in a scene with a single training video (it cannot spare one).
  Deterministic and seed-independent, by video id: Ped2 holds out 01 and 09 of its 16; the Avenue subset here
  (training videos 10, 11, 12 and 16) holds out 10 (1,223 frames; 11, 12 and 16, 1,170 frames, stay for
  training); full Avenue would hold out 01 and 09. The pipeline never trains on `dev_holdout()` videos.
* **Dev videos**, per held-out video V (scene = V's scene), labelled per frame by construction:

  - `V`: V itself, all frames normal (label 0).
  - `V+skip`: V played 2x or 3x too fast over one segment (motion anomaly: everything moves too fast). The
    copy is shorter than V; a frame is labelled 1 iff it jumped more than one source frame from its predecessor.
  - `V+object`: a moving foreground object cut from another training video of the scene (the largest upright
    blob that differs from that video's median frame and fits 1/4 of the frame height: on Ped2 and Avenue a
    person or two overlapping), pasted with its mask (no background rectangle) into V at its own row and moving
    horizontally at 1-2.5x walking speed over one segment (motion anomaly of a normal-looking object: Ped2's
    documented anomalies move at about these speeds, carts ~1x, skaters ~2x, bikes 2-3x; faster ones are found by
    frame differencing alone). Labelled 1 on the frames where it is pasted.
  - `V+patch`: a rigid textured square (1/6 of the frame height) crossing horizontally at 1-2x walking speed
    (appearance anomaly). Labelled 1 on the frames where it is pasted.

  The object and the patch are pasted at 1/4 of their contrast (`CONTRAST`, `_faded`: each pixel's deviation from
  the sprite's mean colour scaled by 1/4): at full contrast a pasted thing adds more frame-difference energy than
  a calm held-out video's own motion, the model-free floor finds it and the split cannot rank models. How each
  format was chosen and checked once against the test set: the README's "Real data" section.

  Each anomalous segment is contiguous and leaves at least 1/8 of the frames normal before and after it (so
  every copy has both classes, as per-video min-max needs); the object and the patch appear and disappear
  inside the frame rather than entering from a border, so that a crossing fits in a short video. Timing,
  speed, direction, row and texture come from an RNG seeded by the video id and the kind, never by a trial
  seed. Walking speed is 1/260 of the frame width per frame (measured with optical flow: Ped2 ~1.2-1.3 px/frame
  at 360 px, Avenue ~2.4-2.5 px/frame at 640 px).

Frames are made lazily at the source's resolution each time `Video.frames` is called, identically every time,
so the shard writer resizes them like any split. `fingerprint("dev")` hashes DEV_FORMAT with the training files'
fingerprint: changing the generator (bump DEV_FORMAT) or a training file rewrites the dev shards.

    python -m vadcore devsplit ped2 --data-root ../shared/data --out runs/devsplit-ped2   # contact sheets, floors per kind
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from vadcore.configtools import stable_hash
from vadcore.data.base import DEV, Benchmark, Video
from vadcore.data.decode import list_frames
from vadcore.errors import DataError

DEV_FORMAT = 3  # bump whenever the generated frames or labels change, to invalidate dev shards
HOLDOUT_EVERY = 8  # every 8th training video of a scene is held out
WALK = 1 / 260  # normal walking speed, fraction of the frame width per frame (see the module docstring)
SKIP_FACTORS = (2, 3)  # frame-skip factors, inclusive
# Pasted object, multiples of WALK: Ped2's anomalies' speeds (format 2; why: the README's "Real data" section).
OBJECT_SPEED = (1.0, 2.5)
PATCH_SPEED = (1.0, 2.0)  # textured patch, multiples of WALK
CONTRAST = 0.25  # pasted object and patch: their deviation from their own mean colour, scaled (see `_faded`)
PATCH_SIZE = 1 / 6  # patch side, fraction of the frame height
SPAN = 0.8  # left edges stay in [0, SPAN] of the width; pasted things are at most (1 - SPAN) wide
MIN_FRAMES = 16  # shortest source video with room for a segment and normal frames on both sides
FOREGROUND = 25  # grey levels from the median frame that make a pixel foreground
SAMPLE = 32  # donor frames kept (evenly spread) for the median and the object search


Box = tuple[int, int, int, int]  # top, left, height, width of the pasted region in a frame
KINDS = ("skip", "object", "patch")  # the pseudo-anomalous copies; a copy's id is "<video>+<kind>"


def copy_kind(video_id: str) -> str:
    """Which dev video an id names: one of KINDS for a pseudo-anomalous copy, "normal" for a held-out video."""
    kind = video_id.rpartition("+")[2]
    return kind if kind in KINDS else "normal"


def kind_masks(videos: np.ndarray) -> dict[str, np.ndarray]:
    """{kind: (n,) bool mask of the frames of that kind's copies} for per-frame video ids of a dev split, in
    KINDS order, kinds without a copy left out. Each mask holds the anomalous copies only (their normal frames
    included), not the held-out videos themselves: a kind's AUC is how well it is found in its own videos."""
    kinds = np.array([copy_kind(v) for v in np.unique(videos)])
    per_frame = kinds[np.unique(videos, return_inverse=True)[1]]
    return {k: per_frame == k for k in KINDS if (per_frame == k).any()}


def holdout(train: list[Video]) -> frozenset[str]:
    """Ids of the training videos held out for the development split (see the module docstring)."""
    by_scene: dict[str, list[str]] = defaultdict(list)
    for v in train:
        by_scene[v.scene].append(v.id)
    return frozenset(vid for ids in by_scene.values() if len(ids) > 1 for vid in sorted(ids)[::HOLDOUT_EVERY])


@dataclass(frozen=True)
class Crossing:
    """Something pasted on output frames [start, start + length): its left edge at fraction `x0 + step * (t -
    start)` of the frame width (step signed), its top at fraction `row` of (height - its height), or, with row
    None, at the donor object's own row."""

    start: int
    length: int
    x0: float
    step: float
    row: float | None

    def box(self, t: int, height: int, width: int, h: int, w: int, donor_top: int) -> Box | None:
        if not self.start <= t < self.start + self.length:
            return None
        left = min(max(round((self.x0 + self.step * (t - self.start)) * width), 0), width - w)
        top = donor_top if self.row is None else round(self.row * (height - h))
        return min(max(top, 0), height - h), left, h, w


@dataclass(frozen=True, eq=False)
class DevCopy:
    """One dev video made from held-out training video `source`: which source frame each output frame shows,
    its labels, and for "object"/"patch" what is pasted where."""

    source: Video
    kind: str  # "normal" or one of KINDS; the copy's id is "<video>+<kind>" (the video's id if normal)
    n_source: int  # the source's frame count, checked while decoding
    shown: np.ndarray = field(repr=False)  # (m,) int: source frame index of each output frame
    labels: np.ndarray = field(repr=False)  # (m,) uint8: 1 where the pseudo-anomaly is
    crossing: Crossing | None = None
    donors: tuple[Video, ...] = ()  # "object": training videos of the scene to cut it from, in order

    @property
    def id(self) -> str:
        return self.source.id if self.kind == "normal" else f"{self.source.id}+{self.kind}"

    def video(self) -> Video:
        return Video(self.id, self.source.scene, DEV, self.frames, self.labels, self.source.source)

    def frames(self) -> Iterator[np.ndarray]:
        return (frame for frame, _ in self.frames_and_boxes())

    def frames_and_boxes(self) -> Iterator[tuple[np.ndarray, Box | None]]:
        """(RGB uint8 frame, the box pasted into it or None); outside the box every pixel is the source's."""
        if self.crossing is None:  # "normal", "skip": the source frames listed in `shown`
            wanted = set(self.shown.tolist())
            yield from ((frame, None) for i, frame in enumerate(_checked(self.source, self.n_source)) if i in wanted)
            return
        sprite = alpha = None
        donor_top = 0
        for t, frame in enumerate(_checked(self.source, self.n_source)):  # shown = every frame, in order
            if sprite is None:
                sprite, alpha, donor_top = self._sprite(*frame.shape[:2])
            box = self.crossing.box(t, *frame.shape[:2], *alpha.shape, donor_top)
            if box is not None:
                top, left, h, w = box
                frame = frame.copy()
                frame[top : top + h, left : left + w][alpha] = sprite[alpha]
            yield frame, box

    def _sprite(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(RGB (h, w, 3), mask (h, w) bool, donor row): what is pasted, for frames of this size."""
        if self.kind == "patch":
            side = min(max(4, round(height * PATCH_SIZE)), int(width * (1 - SPAN)))
            mask = np.ones((side, side), bool)
            return _faded(_texture(_rng(self.source.id, "texture"), side), mask), mask, 0
        for donor in self.donors:
            found = cut_object(donor, height, width)
            if found is not None:
                sprite, mask, top = found
                return _faded(sprite, mask), mask, top
        raise DataError(
            f"dev video {self.id}: no moving object found in the scene's other training videos "
            f"({', '.join(d.id for d in self.donors)}) to paste; they look static"
        )


def dev_copies(train: list[Video]) -> list[DevCopy]:
    """Every dev video of a benchmark whose training videos are `train`, sorted by id."""
    held = holdout(train)
    out = []
    for v in sorted((v for v in train if v.id in held), key=lambda v: v.id):
        n = frame_count(v)
        if n < MIN_FRAMES:
            raise DataError(f"{v.source}: held-out training video {v.id} has {n} frames; a dev copy needs "
                            f"{MIN_FRAMES}")
        scene = sorted((u for u in train if u.scene == v.scene), key=lambda u: u.id)
        k = scene.index(v)
        donors = tuple(scene[k + 1 :] + scene[:k])
        everything = np.arange(n)
        out.append(DevCopy(v, "normal", n, everything, np.zeros(n, np.uint8)))
        out.append(DevCopy(v, "skip", n, *_skip_plan(_rng(v.id, "skip"), n)))
        object_plan = _crossing_plan(_rng(v.id, "object"), n, OBJECT_SPEED, own_row=False)
        out.append(DevCopy(v, "object", n, everything, *object_plan, donors))
        out.append(DevCopy(v, "patch", n, everything, *_crossing_plan(_rng(v.id, "patch"), n, PATCH_SPEED, own_row=True)))
    return sorted(out, key=lambda c: c.id)


class DevFromTraining(Benchmark):
    """A benchmark whose development split is made from its own training videos (this module). Subclasses
    answer `videos(DEV)` with `dev_videos()` and `fingerprint(DEV)` with `dev_fingerprint()`."""

    has_dev = True

    def dev_holdout(self) -> frozenset[str]:
        return holdout(self.videos("train"))

    def dev_videos(self) -> list[Video]:
        return [c.video() for c in dev_copies(self.videos("train"))]

    def dev_fingerprint(self) -> str:
        return stable_hash({"dev_format": DEV_FORMAT, "contrast": CONTRAST, "train": self.fingerprint("train")})


# --- plans ------------------------------------------------------------------------------------------------


def _rng(video_id: str, purpose: str) -> np.random.Generator:
    """A generator fixed by the video id and what it is for: the same plan on every machine and trial."""
    digest = hashlib.sha256(f"dev/{video_id}/{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _margin(n: int) -> int:
    return max(1, n // 8)


def _skip_plan(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(shown, labels): output frames [a, a + L) each advance `s` source frames instead of one."""
    s = int(rng.integers(SKIP_FACTORS[0], SKIP_FACTORS[1] + 1))
    length = int(rng.integers(max(1, n // 8), n // 5 + 1))
    a = int(rng.integers(_margin(n), n - s * length - _margin(n) + 1))
    fast_end = a - 1 + s * length  # source frame shown by the segment's last frame
    shown = np.concatenate([np.arange(a), a - 1 + s * np.arange(1, length + 1), np.arange(fast_end + 1, n)])
    labels = np.zeros(len(shown), np.uint8)
    labels[a : a + length] = 1
    return shown, labels


def _crossing_plan(rng: np.random.Generator, n: int, speeds: tuple[float, float], *, own_row: bool
                   ) -> tuple[np.ndarray, Crossing]:
    """(labels, crossing): a horizontal crossing of n/4-n/2 frames (shorter if the span runs out), at a random
    row if `own_row`, else at the pasted object's own row."""
    speed = float(rng.uniform(*speeds)) * WALK
    length = min(int(rng.integers(n // 4, n // 2 + 1)), int(SPAN / speed) + 1)
    start = int(rng.integers(_margin(n), n - _margin(n) - length + 1))
    travel = speed * (length - 1)
    x0, step = float(rng.uniform(0, SPAN - travel)), speed
    if rng.random() < 0.5:  # right to left
        x0, step = x0 + travel, -speed
    row = float(rng.uniform(0.1, 0.9)) if own_row else None
    labels = np.zeros(n, np.uint8)
    labels[start : start + length] = 1
    return labels, Crossing(start, length, x0, step, row)


def _texture(rng: np.random.Generator, side: int) -> np.ndarray:
    """(side, side, 3) uint8: 5x5 cells of random colours with a dark border, rigid (the same every frame)."""
    cells = rng.integers(0, 256, (5, 5, 3)).astype(np.uint8)
    idx = np.arange(side) * 5 // side
    tex = cells[idx][:, idx]
    tex[[0, -1], :] = tex[:, [0, -1]] = 20
    return tex


def _faded(sprite: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The sprite with its deviation from its own mean colour (over `mask`) scaled by CONTRAST: as bright on
    average, flatter, so that frame differencing alone does not find it (the module docstring says why 1/4)."""
    mean = sprite[mask].mean(axis=0)
    return np.clip(np.rint(mean + CONTRAST * (sprite.astype(np.float32) - mean)), 0, 255).astype(np.uint8)


# --- frames -----------------------------------------------------------------------------------------------


def frame_count(video: Video) -> int:
    """Frames of a training video without decoding it: image files in its folder, or what its container
    announces (checked against the decoded count when the frames are read); else decode and count."""
    src = video.source
    if src is not None and src.is_dir():
        return len(list_frames(src))
    if src is not None and src.is_file():
        import av

        try:
            with av.open(str(src)) as container:
                announced = container.streams.video[0].frames
        except (av.error.FFmpegError, OSError, IndexError) as e:
            raise DataError(f"{src}: cannot open video ({e}); expected a readable .avi/.mp4 file") from None
        if announced:
            return int(announced)
    return sum(1 for _ in video.frames())


def _checked(video: Video, n: int) -> Iterator[np.ndarray]:
    """The video's frames, failing when their count is not the `n` its dev labels were made for."""
    k = 0
    for frame in video.frames():
        k += 1
        if k > n:
            break
        yield frame
    if k != n:
        got = f"more than {n}" if k > n else k
        raise DataError(f"{video.source}: training video {video.id} decodes to {got} frames, but its dev copies "
                        f"were planned for the {n} it announced")


def _spread(frames: Iterator[np.ndarray], k: int) -> list[np.ndarray]:
    """At most k frames evenly spread over the whole iterator (indices 0, s, 2s, ...), holding k + 1 at once."""
    kept: list[np.ndarray] = []
    stride = 1
    for i, frame in enumerate(frames):
        if i % stride == 0:
            kept.append(frame)
            if len(kept) > k:
                kept, stride = kept[::2], stride * 2
    return kept


def cut_object(donor: Video, height: int, width: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(RGB (h, w, 3), mask (h, w), top row) of the largest moving object in `donor` that fits a person-sized
    box in a height x width frame (upright, at most 1/4 of the height and 1 - SPAN of the width): a connected
    region of pixels over FOREGROUND grey levels from the donor's median frame. None if it has none."""
    from scipy import ndimage

    frames = _spread(iter(donor.frames()), SAMPLE)
    grey = np.stack([f.mean(axis=2, dtype=np.float32) for f in frames])
    median = np.median(grey, axis=0)
    max_h, max_w = height // 4, int(width * (1 - SPAN))
    min_area = max(4, height * width // 1500)
    best = None  # (area, frame index, (row slice, column slice), label, label image)
    for i, g in enumerate(grey):
        fg = ndimage.binary_closing(np.abs(g - median) > FOREGROUND)
        lab, _ = ndimage.label(fg)
        for j, (ys, xs) in enumerate(ndimage.find_objects(lab), start=1):
            h, w = ys.stop - ys.start, xs.stop - xs.start
            area = int((lab[ys, xs] == j).sum())
            upright = 10 * w <= 7 * h  # one person (about 0.4-0.5 as wide as tall); groups are wider
            if upright and h + 2 <= max_h and w + 2 <= max_w and area >= min_area and (best is None or area > best[0]):
                best = (area, i, (ys, xs), j, lab)
    if best is None:
        return None
    _, i, (ys, xs), j, lab = best
    ys = slice(max(ys.start - 1, 0), min(ys.stop + 1, grey.shape[1]))
    xs = slice(max(xs.start - 1, 0), min(xs.stop + 1, grey.shape[2]))
    mask = ndimage.binary_dilation(ndimage.binary_fill_holes(lab[ys, xs] == j))  # holes: where it matched the median
    return frames[i][ys, xs].copy(), mask, ys.start


# --- looking at it ----------------------------------------------------------------------------------------


def contact_sheet(copy: DevCopy, height: int, width: int, channels: int) -> np.ndarray:
    """RGB uint8 image of one dev copy at shard resolution, for eyeballing: 8 frames around and inside its
    anomalous segment (top row) and each one's absolute difference to the frame before, x3 (bottom row; motion
    shows here), captioned with the frame index and label."""
    from PIL import Image, ImageDraw

    from vadcore.data.shards import prepare_frame

    a, b = np.flatnonzero(copy.labels)[[0, -1]]
    around = (a - 2, a - 1, a, a + 1, a + 2, (a + b) // 2, b, b + 1)
    picks = sorted({min(max(int(t), 1), len(copy.labels) - 1) for t in around})
    wanted = set(picks) | {t - 1 for t in picks}
    small = {t: prepare_frame(f, height, width, channels).astype(np.int16)
             for t, f in enumerate(copy.frames()) if t in wanted}
    zoom = max(1, round(200 / width))
    cap = 12
    tile_h, tile_w = height * zoom + cap, width * zoom + 2
    sheet = Image.new("RGB", (tile_w * len(picks), 2 * tile_h), "white")
    draw = ImageDraw.Draw(sheet)
    for col, t in enumerate(picks):
        for row, img in enumerate((small[t], np.minimum(3 * np.abs(small[t] - small[t - 1]), 255))):
            rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
            tile = Image.fromarray(rgb.astype(np.uint8)).resize((width * zoom, height * zoom), Image.NEAREST)
            sheet.paste(tile, (col * tile_w, row * tile_h + cap))
            text = f"t={t} y={copy.labels[t]}" if row == 0 else "|t-(t-1)|x3"
            draw.text((col * tile_w + 2, row * tile_h), text, fill="red" if copy.labels[t] else "black")
    return np.asarray(sheet)
