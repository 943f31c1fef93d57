"""WebDataset shards, written once per (benchmark, split, resolution, channels), plus their manifest.

Every later stage reads shards only. A sample is a chunk of up to `CHUNK` consecutive frames of one video:

    {key}.frames.npy   (n, H, W, C) uint8, already resized and grey/RGB-converted
    {key}.labels.npy   (n,) uint8 (all 0 for training videos)
    {key}.meta.json    {"video", "scene", "start", "n"}

A shard holds whole videos only (it closes at a video boundary), so a loader worker that owns a shard sees
every window of its videos and the test loader drops no frame. The manifest records counts per video, and per
shard its sha256, sample count and videos; the loader verifies the first two while streaming, and yields the
samples of those videos only.

Two kinds of shard folder hold no tar of their own, only a manifest over another folder's shards (each entry's
`path` relative to its own folder, its sha256 copied, so the loader verifies the same bytes):

* a composite benchmark's (`vadcore.data.composite`, "ped2+avenue"): its members' shards at the same size and
  channels, each entry with a `rename` ({"prefix": video id prefix, "scenes": {member scene: composite scene}})
  the loader applies to every sample, so the members' frames are decoded and stored once, whoever reads them;
* a scene subset's (`ShardSpec.scenes`, `data.scenes`): the whole benchmark's shards that hold a listed scene,
  and only those scenes' videos in `per_video` and in each entry's `videos` (the loader yields nothing else).

    python -m vadcore shard ped2 --data-root ../shared/data --profile smoke
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vadcore import atomic
from vadcore.configtools import stable_hash
from vadcore.data.base import Benchmark, Split, Video
from vadcore.data.composite import Composite, scene_name, video_id
from vadcore.errors import DataError

SHARD_FORMAT = 1
CHUNK = 32  # frames per sample: large enough to amortise per-sample overhead, small enough to stream
SHARD_BYTES = 64 << 20  # close a shard (at the next video boundary) once it is this large
MIN_SHARDS = 8  # ... or once it holds 1/MIN_SHARDS of the videos, so loader workers and nodes each get some


@dataclass(frozen=True)
class ShardSpec:
    """The config slice the shard stage depends on."""

    benchmark: str
    split: Split
    height: int
    width: int
    channels: int  # 1 = grey, 3 = RGB
    scenes: tuple[str, ...] = ()  # only these scenes' videos (data.scenes); () = every scene

    def folder(self, cache_root: Path, fingerprint: str) -> Path:
        fields = asdict(self)
        if not self.scenes:  # every scene: the key of the folders written before scene subsets existed
            del fields["scenes"]
        key = stable_hash({**fields, "source": fingerprint, "format": SHARD_FORMAT}, 8)
        return cache_root / "shards" / self.benchmark / f"{self.split}-{self.height}x{self.width}-c{self.channels}-{key}"


def prepare_frame(rgb: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """RGB uint8 (H0, W0, 3) -> (height, width, channels) uint8; area interpolation when shrinking."""
    import cv2

    if rgb.shape[:2] != (height, width):
        shrink = rgb.shape[0] > height or rgb.shape[1] > width
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if channels == 1:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None]
    return np.ascontiguousarray(rgb)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _sample(video: Video, start: int, frames: list[np.ndarray]) -> tuple[dict[str, Any], int, int]:
    """(WebDataset sample, frames in it, anomalous frames in it)."""
    n = len(frames)
    labels = np.zeros(n, np.uint8) if video.labels is None else video.labels[start : start + n].astype(np.uint8)
    meta = {"video": video.id, "scene": video.scene, "start": start, "n": n}
    sample = {
        "__key__": f"{video.id}__{start:07d}",
        "frames.npy": _npy(np.stack(frames)),
        "labels.npy": _npy(labels),
        "meta.json": json.dumps(meta).encode(),
    }
    return sample, n, int(labels.sum())


def _chunks(video: Video, spec: ShardSpec) -> Iterator[tuple[dict[str, Any], int, int]]:
    """Samples of one video in order. Readers check label/frame counts while decoding, so a mismatch
    raises from inside this loop and no manifest is written."""
    block: list[np.ndarray] = []
    start = 0
    for frame in video.frames():
        block.append(prepare_frame(frame, spec.height, spec.width, spec.channels))
        if len(block) == CHUNK:
            yield _sample(video, start, block)
            start += CHUNK
            block = []
    if block:
        yield _sample(video, start, block)
    elif start == 0:
        raise DataError(f"{video.source}: video {video.id} has no frames")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write(bench: Benchmark, spec: ShardSpec, fingerprint: str, out: Path, show_progress: bool) -> dict[str, Any]:
    import webdataset as wds

    from vadcore.progress import progress_bar

    videos = bench.videos(spec.split)
    per_shard_videos = max(1, -(-len(videos) // MIN_SHARDS))
    shards: list[dict[str, Any]] = []
    per_video: dict[str, dict[str, Any]] = {}
    writer = None
    shard_path = None
    shard_samples = 0
    shard_ids: list[str] = []

    def close() -> None:
        nonlocal writer
        if writer is not None:
            writer.close()
            shards.append({"path": shard_path.name, "sha256": _sha256(shard_path), "samples": shard_samples, "videos": shard_ids})
            writer = None

    with progress_bar(f"shard {spec.benchmark}/{spec.split}", total=len(videos), enabled=show_progress) as advance:
        for video in videos:
            if writer is None:
                shard_path = out / f"shard-{len(shards):05d}.tar"
                writer = wds.TarWriter(str(shard_path))
                shard_samples, shard_ids = 0, []
            n = anomalous = 0
            for sample, frames, bad in _chunks(video, spec):
                writer.write(sample)
                shard_samples += 1
                n += frames
                anomalous += bad
            per_video[video.id] = {"frames": n, "anomalous": anomalous, "scene": video.scene}
            shard_ids.append(video.id)
            if shard_path.stat().st_size >= SHARD_BYTES or len(shard_ids) >= per_shard_videos:
                close()
            advance(1)
        close()
    return _manifest(spec, fingerprint, per_video, shards)


def _manifest(spec: ShardSpec, fingerprint: str, per_video: dict[str, dict[str, Any]], shards: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "benchmark": spec.benchmark,
        "split": spec.split,
        "resolution": [spec.height, spec.width],
        "channels": spec.channels,
        "splits_source_fingerprint": fingerprint,
        "format": SHARD_FORMAT,
        "chunk": CHUNK,
        "videos": len(per_video),
        "frames": sum(v["frames"] for v in per_video.values()),
        "anomalous": sum(v["anomalous"] for v in per_video.values()),
        "per_video": per_video,
        "shards": shards,
        **extra,
    }


def _entry_from(source: Path, entry: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A shard entry of `source`'s manifest as an entry of `folder`'s: the same shard, its path relative to `folder`
    (both lie under the cache's shards/, so the cache can move)."""
    return {**entry, "path": os.path.relpath(os.path.normpath(source / entry["path"]), folder)}


def _composite(bench: Composite, spec: ShardSpec, fingerprint: str, cache_root: Path, folder: Path, show_progress: bool) -> dict[str, Any]:
    """The manifest of a composite benchmark: each member's shards (written now if absent, by `ensure_shards` at
    the composite's size and channels), renamed to the composite's video ids and scenes."""
    from vadcore.data.loader import load_manifest

    per_video: dict[str, dict[str, Any]] = {}
    shards: list[dict[str, Any]] = []
    members = {}
    for member in bench.members:
        source, _ = ensure_shards(member, dataclasses.replace(spec, benchmark=member.name), cache_root, show_progress=show_progress)
        m = load_manifest(source)
        members[member.name] = source.name
        rename = {"prefix": video_id(member.name, ""), "scenes": {s: scene_name(member.name, s) for s in sorted({v["scene"] for v in m["per_video"].values()})}}
        per_video.update({video_id(member.name, v): {**info, "scene": rename["scenes"][info["scene"]]} for v, info in m["per_video"].items()})
        for entry in m["shards"]:
            renamed = {"videos": [video_id(member.name, v) for v in entry["videos"]]} if "videos" in entry else {}
            shards.append({**_entry_from(source, entry, folder), **renamed, "rename": rename})
    return _manifest(spec, fingerprint, per_video, shards, members=members)


def _scene_subset(bench: Benchmark, spec: ShardSpec, fingerprint: str, cache_root: Path, folder: Path, show_progress: bool) -> dict[str, Any]:
    """The manifest of `spec.scenes` of the benchmark: the whole benchmark's shards (written now if absent) that
    hold one of those scenes' videos, and only those videos. A listed scene without videos in the split is an error."""
    from vadcore.data.loader import load_manifest

    source, _ = ensure_shards(bench, dataclasses.replace(spec, scenes=()), cache_root, show_progress=show_progress)
    m = load_manifest(source)
    have = sorted({v["scene"] for v in m["per_video"].values()})
    missing = [s for s in spec.scenes if s not in have]
    if missing:
        raise DataError(f"data.scenes: {spec.benchmark} has no {spec.split} videos of scene {missing[0]!r}; "
                        f"its {spec.split} scenes: {', '.join(have)}")
    per_video = {v: info for v, info in m["per_video"].items() if info["scene"] in spec.scenes}
    shards = []
    for e in m["shards"]:  # an entry without `videos` (written before they were recorded) may hold any of them
        mine = sorted(per_video.keys() & set(e.get("videos", per_video)))
        if mine:  # `videos`: what the loader yields from the shard, which also holds other scenes' videos
            shards.append({**_entry_from(source, e, folder), "videos": mine})
    return _manifest(spec, fingerprint, per_video, shards, source=source.name, scenes=list(spec.scenes))


def ensure_shards(bench: Benchmark, spec: ShardSpec, cache_root: Path, *, show_progress: bool = True) -> tuple[Path, bool]:
    """The shard folder for `spec`, writing it first if absent. Returns (folder, written_now).

    Concurrent callers for the same spec wait on a lock; the folder appears atomically with its manifest. A
    composite benchmark's folder and a scene subset's hold a manifest only, over shards this writes (once) in
    the members' or the whole benchmark's folders.
    """
    fingerprint = bench.fingerprint(spec.split)
    folder = spec.folder(cache_root, fingerprint)
    if (folder / "manifest.json").is_file():
        return folder, False
    with atomic.build_lock(folder):
        if (folder / "manifest.json").is_file():
            return folder, False
        t0 = time.perf_counter()
        with atomic.staging_dir(folder) as tmp:
            if spec.scenes:
                manifest = _scene_subset(bench, spec, fingerprint, cache_root, folder, show_progress)
            elif isinstance(bench, Composite):
                manifest = _composite(bench, spec, fingerprint, cache_root, folder, show_progress)
            else:
                manifest = _write(bench, spec, fingerprint, tmp, show_progress)
            manifest["write_seconds"] = round(time.perf_counter() - t0, 3)
            atomic.write_json(tmp / "manifest.json", manifest)
    return folder, True
