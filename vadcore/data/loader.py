"""Streaming clip loader over shards: T-frame windows for training, and test windows covering every frame.

Memory stays bounded (one chunk per video plus a shuffle buffer), shards are split across DataLoader
workers (`clip_batches` regroups the workers' last, partial batches; distributed ranks each read every
shard and keep their slice of each batch, see vadcore.train), and each
shard's sha256 and sample count are checked against the manifest while it streams, so a corrupted or
truncated shard raises `ShardError` naming it instead of yielding fewer samples. Windows are uint8
(C, T, H, W); the trainer converts to float on its device (4x less copy). The appearance path's
every-tau-th frames are `clip[:, ::tau]` of the same window.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vadcore.errors import DataError, ShardError


# What the loader, the pipeline and the CLI read from a manifest (written by `shards._write`).
_MANIFEST_KEYS = ("videos", "frames", "anomalous", "per_video", "shards")
_SHARD_KEYS = ("path", "sha256", "samples")
_VIDEO_KEYS = ("frames", "scene")


def load_manifest(folder: Path) -> dict[str, Any]:
    """A shard folder's manifest.json, checked for every key its readers use.

    Manifests are written atomically, so an unreadable or incomplete one was edited or damaged later; its
    shards cannot be trusted either, and the remedy is to delete the folder so the next run rewrites it.
    """
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"no shard manifest at {path}; run `python -m vadcore shard` first") from None
    except ValueError as e:  # invalid JSON or not UTF-8
        problem = f"is not valid JSON ({e})"
    else:
        problem = _manifest_problem(manifest)
    if problem:
        raise ShardError(
            f"shard manifest {path} {problem}; it was damaged after it was written: delete {folder} and it will "
            f"be rewritten (by `python -m vadcore shard` or the next run)"
        )
    return manifest


def _manifest_problem(m: Any) -> str | None:
    """What makes `m` unusable as a manifest (e.g. "lacks shards[0].sha256"), or None."""
    if not isinstance(m, dict):
        return "is not a JSON object"
    missing = [k for k in _MANIFEST_KEYS if k not in m]
    if not missing:
        if not isinstance(m["shards"], list) or not isinstance(m["per_video"], dict):
            return "needs a list 'shards' and an object 'per_video'"
        entries = [(f"shards[{i}]", e, _SHARD_KEYS) for i, e in enumerate(m["shards"])]
        entries += [(f"per_video.{v}", e, _VIDEO_KEYS) for v, e in m["per_video"].items()]
        missing = [f"{name}.{k}" for name, e, keys in entries for k in keys if not isinstance(e, dict) or k not in e]
    return f"lacks {', '.join(missing[:5])}" if missing else None


@dataclass(frozen=True)
class Chunk:
    """Consecutive frames of one video from `start` on: a shard sample, or a loader window of T frames."""

    video: str
    scene: str
    start: int
    frames: np.ndarray  # (n, H, W, C) uint8
    labels: np.ndarray  # (n,) uint8


class _HashingReader(io.RawIOBase):
    """A read-only file wrapper that hashes every byte read, so verification costs no second pass."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.f.readinto(b)
        self.sha.update(memoryview(b)[:n])
        return n


def iter_shard(folder: Path, entry: dict[str, Any]) -> Iterator[Chunk]:
    """Chunks of one shard in order; raises ShardError on checksum, count or format mismatch.

    The shard may lie in another folder (a composite benchmark's or a scene subset's manifest lists the shards
    it reuses, `vadcore.data.shards`); an entry's `rename` turns the member's video ids and scenes into the
    composite's, and only the entry's `videos` (when it lists them) are yielded: a scene subset's reader sees
    its scenes alone, whoever reads the shard. Every byte is read and verified all the same."""
    path = Path(os.path.normpath(folder / entry["path"]))
    # what to delete to rebuild: the shard's folder, and this manifest too when it only lists another folder's shard
    rebuild = f"delete {folder}" if path.parent == Path(os.path.normpath(folder)) else f"delete {path.parent} and {folder}, which lists it,"
    rename, keep = entry.get("rename"), set(entry["videos"]) if "videos" in entry else None
    samples = 0
    try:
        with open(path, "rb") as raw:
            reader = _HashingReader(raw)
            with tarfile.open(fileobj=io.BufferedReader(reader, 1 << 20), mode="r|") as tar:
                for sample in _samples(tar):
                    samples += 1
                    chunk = _decode(sample, rename, keep)
                    if chunk is not None:
                        yield chunk
            while reader.read(1 << 20):  # hash whatever trails the tar end marker
                pass
    except FileNotFoundError:
        raise ShardError(f"shard {path} is missing; {rebuild} to rebuild the shards") from None
    except (tarfile.TarError, KeyError, ValueError, EOFError) as e:
        raise ShardError(f"shard {path} is corrupted or truncated ({e}); {rebuild} to rebuild") from None
    if samples != entry["samples"]:
        raise ShardError(
            f"shard {path} holds {samples} samples but {folder / 'manifest.json'} lists {entry['samples']}; "
            f"it is truncated or was replaced: {rebuild} to rebuild"
        )
    if reader.sha.hexdigest() != entry["sha256"]:
        raise ShardError(
            f"shard {path} has sha256 {reader.sha.hexdigest()[:12]}... but {folder / 'manifest.json'} lists "
            f"{entry['sha256'][:12]}...; its bytes changed after it was written: {rebuild} to rebuild"
        )


def _samples(tar: tarfile.TarFile) -> Iterator[dict[str, bytes]]:
    """The tar's members grouped by key, in order: {field: bytes} per WebDataset sample."""
    current: dict[str, bytes] = {}
    key = None
    for member in tar:
        k, _, field = member.name.partition(".")
        if key is not None and k != key:
            yield current
            current = {}
        key = k
        current[field] = tar.extractfile(member).read()
    if current:
        yield current


def _decode(sample: dict[str, bytes], rename: dict[str, Any] | None, keep: set[str] | None) -> Chunk | None:
    """The sample as a Chunk, renamed; None for a video not in `keep` (its frames are not decoded)."""
    meta = json.loads(sample["meta.json"])
    video, scene = meta["video"], meta["scene"]
    if rename is not None:  # a KeyError (a scene the manifest does not map) reads as a corrupted shard
        video, scene = rename["prefix"] + video, rename["scenes"][scene]
    if keep is not None and video not in keep:
        return None
    frames = np.load(io.BytesIO(sample["frames.npy"]), allow_pickle=False)
    labels = np.load(io.BytesIO(sample["labels.npy"]), allow_pickle=False)
    return Chunk(video, scene, meta["start"], frames, labels)


def window_count(frames: int, length: int, stride: int, cover_all: bool) -> int:
    """Windows of `length` frames every `stride` frames of a video of `frames` frames, plus one flush with its
    end when cover_all (test passes: every frame in some window), as `video_windows` makes them."""
    regular = max(0, (frames - length) // stride + 1)
    tail = cover_all and regular > 0 and (regular - 1) * stride + length < frames
    return regular + int(tail)


def video_windows(chunks: Iterator[Chunk], frames: int, stride: int, cover_all: bool, lengths: dict[str, int]) -> Iterator[Chunk]:
    """Windows of `frames` consecutive frames every `stride` frames, video by video.

    cover_all (test): one more window flush with each video's end, so every frame lies in some window.
    Chunks of a video arrive consecutively and in order (shards hold whole videos).
    """
    buf: np.ndarray | None = None
    buf_start = next_start = 0
    video = scene = None
    labels: np.ndarray | None = None

    def finish() -> Iterator[Chunk]:
        n = lengths[video]
        if n < frames:
            raise DataError(f"video {video} has {n} frames, fewer than a window of {frames}; lower itae.frames")
        if cover_all and (next_start - stride + frames < n):
            s = n - frames - buf_start
            yield Chunk(video, scene, n - frames, buf[s : s + frames], labels[s : s + frames])

    for chunk in chunks:
        if chunk.video != video:
            if video is not None:
                yield from finish()
            video, scene, buf, labels = chunk.video, chunk.scene, chunk.frames, chunk.labels
            buf_start = next_start = chunk.start
            if chunk.start != 0:
                raise ShardError(f"video {video} starts at frame {chunk.start}: its first chunk is missing")
        else:
            buf = np.concatenate([buf, chunk.frames])
            labels = np.concatenate([labels, chunk.labels])
        while next_start + frames <= buf_start + len(buf):
            s = next_start - buf_start
            yield Chunk(video, scene, next_start, buf[s : s + frames], labels[s : s + frames])
            next_start += stride
        keep = max(0, min(next_start, buf_start + len(buf) - frames) - buf_start)  # drop frames no window needs
        buf, labels, buf_start = buf[keep:], labels[keep:], buf_start + keep
    if video is not None:
        yield from finish()


def _consumer() -> tuple[int, int]:
    """(index, count) of this DataLoader worker. Distributed ranks each read the whole stream and train on
    their slice of each global batch (vadcore.train.rank_slice), so ranks do not split the shards here."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class ClipDataset(IterableDataset):
    """T-frame windows from a shard folder.

    train=True: shard order reshuffled every epoch (`set_epoch`), windows every `stride` frames, mixed in a
    seeded shuffle buffer. train=False: every window in order plus one flush with each video's end.
    Each item: {"clip": uint8 (C, T, H, W), "video", "scene", "start", "labels": uint8 (T,)}.
    `videos` restricts the windows to a subset of videos (shards are still read whole and verified).
    `crop` (h, w): each window is cut to an h x w region at a seeded random place (train=True only: a model
    trained on crops at the native scale scores whole frames), the same region in all T frames.
    """

    def __init__(
        self,
        folder: Path,
        frames: int,
        stride: int,
        *,
        train: bool,
        seed: int = 0,
        shuffle_buffer: int = 256,
        videos: set[str] | None = None,
        crop: tuple[int, int] | None = None,
    ):
        self.folder, self.frames, self.stride, self.train = Path(folder), frames, stride, train
        self.seed, self.shuffle_buffer, self.epoch = seed, shuffle_buffer, 0
        self.manifest = load_manifest(self.folder)
        if crop is not None:
            if not train:
                raise ValueError("crop applies to training windows only: scoring reads whole frames")
            h, w = self.manifest.get("resolution", crop)
            if crop[0] > h or crop[1] > w:
                raise DataError(f"a {crop[0]}x{crop[1]} crop does not fit the {h}x{w} frames of {self.folder}")
        self.crop = crop
        # videos: a subset (e.g. the held-out validation videos); None = all
        self.lengths = {v: i["frames"] for v, i in self.manifest["per_video"].items() if videos is None or v in videos}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def num_windows(self) -> int:
        """Windows per epoch (train) or per pass (test), for progress bars and schedules."""
        return sum(window_count(n, self.frames, self.stride, not self.train) for n in self.lengths.values())

    def _windows(self, shards: list[dict[str, Any]]) -> Iterator[Chunk]:
        def chunks() -> Iterator[Chunk]:
            for entry in shards:
                yield from (c for c in iter_shard(self.folder, entry) if c.video in self.lengths)

        return video_windows(chunks(), self.frames, self.stride, not self.train, self.lengths)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        index, count = _consumer()
        shards = list(self.manifest["shards"])
        rng = random.Random(hash((self.seed, self.epoch, index)) if self.train else 0)
        if self.train:
            random.Random(hash((self.seed, self.epoch))).shuffle(shards)
        mine = shards[index::count]
        windows = self._windows(mine)
        if self.train:
            windows = _shuffled(windows, self.shuffle_buffer, rng)
        for w in windows:
            frames = w.frames
            if self.crop is not None:  # the same region of every frame: (T, h, w, C)
                top, left = rng.randrange(frames.shape[1] - self.crop[0] + 1), rng.randrange(frames.shape[2] - self.crop[1] + 1)
                frames = frames[:, top : top + self.crop[0], left : left + self.crop[1]]
            clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (T,H,W,C) -> (C,T,H,W)
            yield {"clip": clip, "video": w.video, "scene": w.scene, "start": w.start, "labels": torch.from_numpy(w.labels)}


def clip_batches(ds: ClipDataset, batch_size: int, workers: int) -> Iterator[dict[str, Any]]:
    """One pass of `ds` in batches of `batch_size` windows, all full but the last, whatever `workers` is.

    Each DataLoader worker batches its own shards, so each ends on a partial batch: with W workers a pass
    would hold up to W - 1 batches more than ceil(windows / batch_size), the steps a training schedule
    plans for (`vadcore.train.steps_in`), and a trainer stopping there would never see the rest. Full
    batches pass straight through; the partial ones (at most W) are regrouped at the end of the pass. With
    0 or 1 workers this is exactly the DataLoader's batching.
    """
    rest = []
    for batch in DataLoader(ds, batch_size=batch_size, num_workers=workers):
        if len(batch["start"]) == batch_size:
            yield batch
        else:
            rest.append(batch)
    if rest:  # tensors concatenated, lists (video, scene) joined
        merged = {k: torch.cat([b[k] for b in rest]) if torch.is_tensor(v) else sum((b[k] for b in rest), [])
                  for k, v in rest[0].items()}
        for i in range(0, len(merged["start"]), batch_size):
            yield {k: v[i : i + batch_size] for k, v in merged.items()}


def _shuffled(items: Iterator[Chunk], size: int, rng: random.Random) -> Iterator[Chunk]:
    buf: list[Chunk] = []
    for item in items:
        buf.append(item)
        if len(buf) >= size:
            yield buf.pop(rng.randrange(len(buf)))
    rng.shuffle(buf)
    yield from buf
