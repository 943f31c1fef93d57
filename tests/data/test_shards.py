"""Shards and the clip loader: manifest counts, every test frame covered, checksums, workers, atomicity."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from vadcore.data.base import Video
from vadcore.data.loader import ClipDataset, load_manifest
from vadcore.data.shards import CHUNK, ShardSpec, ensure_shards
from vadcore.errors import DataError, ShardError
from vadcore.testing import ArrayBenchmark, counting_video

LENGTHS = {"a": 70, "b": CHUNK, "c": 17, "d": 45}


@pytest.fixture
def bench() -> ArrayBenchmark:
    test = []
    for i, (vid, n) in enumerate(LENGTHS.items()):
        labels = (np.arange(n) >= n // 2).astype(np.uint8)
        test.append((vid, f"s{i % 2}", counting_video(n, offset=100 * i), labels))
    train = [("t0", "s0", counting_video(40), None), ("t1", "s1", counting_video(33, offset=7), None)]
    return ArrayBenchmark({"train": train, "test": test})


def shards(bench, cache, split="test", channels=1) -> Path:
    folder, written = ensure_shards(bench, ShardSpec("arrays", split, 8, 8, channels), cache, show_progress=False)
    assert written
    return folder


def test_manifest_counts_and_second_call_is_a_no_op(bench, cache):
    folder = shards(bench, cache)
    m = load_manifest(folder)
    assert (m["videos"], m["frames"]) == (4, sum(LENGTHS.values()))
    assert m["anomalous"] == sum(n - n // 2 for n in LENGTHS.values())
    assert m["per_video"]["a"] == {"frames": 70, "anomalous": 35, "scene": "s0"}
    assert {"benchmark", "split", "resolution", "channels", "splits_source_fingerprint", "shards"} <= set(m)
    assert sum(s["samples"] for s in m["shards"]) == sum(-(-n // CHUNK) for n in LENGTHS.values())
    again, written = ensure_shards(bench, ShardSpec("arrays", "test", 8, 8, 1), cache, show_progress=False)
    assert again == folder and not written


def test_test_windows_cover_every_frame_with_consecutive_frames(bench, cache):
    ds = ClipDataset(shards(bench, cache), frames=16, stride=5, train=False)
    covered = {v: np.zeros(n, int) for v, n in LENGTHS.items()}
    items = list(ds)
    assert len(items) == ds.num_windows()
    for item in items:
        clip, vid, start = item["clip"], item["video"], item["start"]
        assert clip.shape == (1, 16, 8, 8) and clip.dtype == torch.uint8
        offset = 100 * list(LENGTHS).index(vid)
        # grey conversion of an equal-channel frame keeps its value: frame k holds (offset + k) % 256
        np.testing.assert_array_equal(clip[0, :, 0, 0].numpy(), (offset + start + np.arange(16)) % 256)
        np.testing.assert_array_equal(item["labels"].numpy(), (start + np.arange(16) >= LENGTHS[vid] // 2))
        covered[vid][start : start + 16] += 1
    assert all((c > 0).all() for c in covered.values()), "a test frame was dropped"


def test_train_windows_are_shuffled_deterministically(bench, cache):
    folder = shards(bench, cache, split="train")
    ds = ClipDataset(folder, frames=8, stride=2, train=True, seed=3, shuffle_buffer=8)
    first = [(i["video"], i["start"]) for i in ds]
    assert first == [(i["video"], i["start"]) for i in ds]
    assert len(first) == ds.num_windows() == (40 - 8) // 2 + 1 + (33 - 8) // 2 + 1
    assert first != sorted(first)
    ds.set_epoch(1)
    assert [(i["video"], i["start"]) for i in ds] != first


def test_train_crops_cut_every_frame_of_a_window_at_one_seeded_place(cache):
    """Frames whose pixel (r, c) holds 16 r + c + 20 (k % 3) in frame k: a crop's corner gives its place, the same in
    all frames of a window; places vary, repeat for the same seed and epoch, and reach both far borders."""
    rows, cols = np.mgrid[:12, :16]
    frames = np.stack([16 * rows + cols + 20 * (k % 3) for k in range(60)]).astype(np.uint8)
    bench = ArrayBenchmark({"train": [("v", "s", np.repeat(frames[..., None], 3, -1), None)]})
    folder, _ = ensure_shards(bench, ShardSpec("arrays", "train", 12, 16, 1), cache, show_progress=False)

    def places(seed: int) -> list[tuple[int, int]]:
        out = []
        for item in ClipDataset(folder, frames=4, stride=1, train=True, seed=seed, crop=(5, 7)):
            clip = item["clip"][0].numpy().astype(int)  # (T, 5, 7)
            assert clip.shape == (4, 5, 7)
            corner = clip[:, 0, 0] - 20 * ((item["start"] + np.arange(4)) % 3)
            assert (corner == corner[0]).all()  # one place for the whole window
            np.testing.assert_array_equal(clip - clip[:, :1, :1], np.broadcast_to(16 * np.arange(5)[:, None] + np.arange(7), (4, 5, 7)))
            out.append(divmod(int(corner[0]), 16))
        return out

    first = places(1)
    assert first == places(1) and first != places(2)
    assert len(set(first)) > 10 and max(r for r, _ in first) == 12 - 5 and max(c for _, c in first) == 16 - 7
    with pytest.raises(DataError, match="13x7 crop does not fit the 12x16 frames"):
        ClipDataset(folder, frames=4, stride=1, train=True, crop=(13, 7))
    with pytest.raises(ValueError, match="training windows only"):
        ClipDataset(folder, frames=4, stride=1, train=False, crop=(5, 7))


def test_dataloader_workers_split_shards_without_loss_or_duplicates(bench, cache):
    ds = ClipDataset(shards(bench, cache), frames=16, stride=4, train=False)
    single = Counter((i["video"], i["start"]) for i in ds)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    multi = Counter((v, int(s)) for b in loader for v, s in zip(b["video"], b["start"]))
    assert multi == single


def test_webdataset_reads_the_shards(bench, cache):
    import webdataset as wds

    folder = shards(bench, cache)
    urls = [str(folder / s["path"]) for s in load_manifest(folder)["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert len(samples) == sum(s["samples"] for s in load_manifest(folder)["shards"])
    assert samples[0]["frames.npy"].shape[1:] == (8, 8, 1)


def test_corrupted_shard_names_the_shard(bench, cache):
    folder = shards(bench, cache)
    shard = folder / load_manifest(folder)["shards"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF  # inside the first sample's array bytes: the tar still parses
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=rf"{shard.name}.*sha256") as e:
        list(ClipDataset(folder, frames=16, stride=4, train=False))
    assert "sample count" not in str(e.value)


def test_truncated_shard_names_the_shard(bench, cache):
    folder = shards(bench, cache)
    shard = folder / load_manifest(folder)["shards"][-1]["path"]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ShardError, match=shard.name):
        list(ClipDataset(folder, frames=16, stride=4, train=False))


def test_failing_reader_leaves_no_manifest(bench, cache):
    def broken():
        yield counting_video(1)[0]
        raise DataError("frame 1 unreadable")

    bad = ArrayBenchmark({"test": []})
    bad.videos = lambda split: [Video("x", "s", split, broken, np.zeros(5, np.uint8))]
    spec = ShardSpec("arrays", "test", 8, 8, 1)
    with pytest.raises(DataError, match="unreadable"):
        ensure_shards(bad, spec, cache, show_progress=False)
    assert not list((cache / "shards").rglob("manifest.json"))
    assert not [p for p in (cache / "shards").rglob("*") if p.is_dir() and p.name.startswith("test-")]


def test_rgb_shards_keep_three_channels(bench, cache):
    ds = ClipDataset(shards(bench, cache, channels=3), frames=16, stride=16, train=False)
    assert next(iter(ds))["clip"].shape == (3, 16, 8, 8)


def test_sample_count_mismatch_says_what_was_counted(bench, cache):
    folder = shards(bench, cache)
    m = load_manifest(folder)
    shard, n = m["shards"][0]["path"], m["shards"][0]["samples"]
    m["shards"][0]["samples"] = n + 1
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShardError, match=rf"{shard} holds {n} samples but {folder}/manifest.json lists {n + 1}"):
        list(ClipDataset(folder, frames=16, stride=4, train=False))


def _without(m: dict, *path) -> str:
    """The manifest `m` as JSON, with the key at `path` (e.g. "shards", 0, "sha256") removed."""
    m = json.loads(json.dumps(m))
    *parents, key = path
    node = m
    for p in parents:
        node = node[p]
    del node[key]
    return json.dumps(m)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda m: '{"videos": 4, "frames"', "not valid JSON"),
        (lambda m: "", "not valid JSON"),
        (lambda m: "[]", "not a JSON object"),
        (lambda m: '{"videos": 4}', "lacks frames, anomalous, per_video, shards"),
        (lambda m: _without(m, "shards", 0, "sha256"), r"lacks shards\[0\]\.sha256"),
        (lambda m: _without(m, "per_video", "a", "scene"), r"lacks per_video\.a\.scene"),
    ],
    ids=["truncated", "empty", "list", "keys", "shard-key", "video-key"],
)
def test_corrupt_manifest_is_a_shard_error_naming_the_remedy(bench, cache, damage, problem):
    folder = shards(bench, cache)
    (folder / "manifest.json").write_text(damage(load_manifest(folder)))
    with pytest.raises(ShardError, match=rf"{folder}/manifest\.json.*{problem}.*delete {folder}"):
        ClipDataset(folder, frames=16, stride=4, train=False)
