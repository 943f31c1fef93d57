"""The synthetic benchmark: deterministic, well-formed, and its motion anomalies invisible frame by frame."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from vadcore.data.synthetic import APPEARANCE, MOTION, NONE, SyntheticBenchmark
from vadcore.errors import ConfigError

TAU = 4  # the appearance path's frame stride the motion anomalies are designed to hide from


@pytest.fixture(scope="module")
def bench() -> SyntheticBenchmark:
    return SyntheticBenchmark()


@pytest.fixture(scope="module")
def frames(bench) -> dict[str, np.ndarray]:
    """Every video rendered once: id -> (n, H, W, 3) uint8."""
    return {v.id: np.stack(list(v.frames())) for split in ("train", "test") for v in bench.videos(split)}


def test_same_seed_same_bytes_other_seed_differs(bench, frames):
    again = SyntheticBenchmark(seed=0)
    for v in again.videos("test"):
        assert np.array_equal(np.stack(list(v.frames())), frames[v.id]), v.id
        assert np.array_equal(v.labels, bench.anomaly_kinds(v.id) != NONE)
    first = bench.videos("train")[0]
    assert np.array_equal(np.stack(list(first.frames())), frames[first.id])  # frames() repeats itself
    other = SyntheticBenchmark(seed=1)
    assert not np.array_equal(np.stack(list(other.videos("train")[0].frames())), frames[first.id])
    assert any(not np.array_equal(a.labels, b.labels) for a, b in zip(other.videos("test"), bench.videos("test")))


def test_videos_are_well_formed(bench, frames):
    for split, per_scene, has_labels in (("train", 4, False), ("test", 3, True)):
        videos = bench.videos(split)
        ids = [v.id for v in videos]
        assert ids == sorted(set(ids)) and len(ids) == 3 * per_scene
        assert {v.scene for v in videos} == {"s0", "s1", "s2"}
        assert all(v.id.startswith(f"{v.scene}_{split}_") and v.split == split for v in videos)
        for v in videos:
            assert frames[v.id].shape == (160, 64, 80, 3) and frames[v.id].dtype == np.uint8
            if has_labels:
                assert v.labels.dtype == np.uint8 and v.labels.shape == (160,)
                assert set(np.unique(v.labels)) == {0, 1}, f"{v.id} needs normal and anomalous frames"
            else:
                assert v.labels is None
    small = SyntheticBenchmark(scenes=4, train_videos_per_scene=1, test_videos_per_scene=2, frames_per_video=120,
                               height=48, width=56)
    assert [v.id for v in small.videos("test")][-1] == "s3_test_001"
    assert next(small.videos("test")[-1].frames()).shape == (48, 56, 3)


def test_fingerprint_tracks_the_settings(bench):
    fp = bench.fingerprint("train")
    assert fp == SyntheticBenchmark().fingerprint("train") and len(fp) == 16
    assert fp != bench.fingerprint("test")
    for change in (dict(seed=1), dict(scenes=2), dict(train_videos_per_scene=5), dict(frames_per_video=200),
                   dict(height=72)):
        assert SyntheticBenchmark(**change).fingerprint("train") != fp, change
    assert SyntheticBenchmark(test_videos_per_scene=5).fingerprint("train") == fp  # train videos unchanged


def test_both_kinds_labelled_and_recorded(bench):
    kinds = {v.id: bench.anomaly_kinds(v.id) for v in bench.videos("test")}
    for v in bench.videos("test"):
        assert np.array_equal(v.labels, (kinds[v.id] != NONE).astype(np.uint8))
    every = np.concatenate(list(kinds.values()))
    assert {APPEARANCE, MOTION} <= set(np.unique(every))
    assert 0.3 <= np.mean(every != NONE) <= 0.5
    assert not bench.anomaly_kinds("s1_train_002").any()
    with pytest.raises(KeyError):
        bench.anomaly_kinds("s7_test_000")


def _frame_stats(video: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: largest foreground blob (px) and the darkest / brightest foreground grey level."""
    fg = np.abs(video.astype(np.float32) - background).max(-1) > 25  # (n, H, W)
    grey = video.mean(-1)
    area, low, high = [], [], []
    for mask, g in zip(fg, grey):
        blobs, n = ndimage.label(mask)
        area.append(np.bincount(blobs.ravel())[1:].max() if n else 0)
        low.append(g[mask].min() if n else np.inf)
        high.append(g[mask].max() if n else -np.inf)
    return np.array(area), np.array(low), np.array(high)


def test_motion_anomalies_look_normal_frame_by_frame(bench, frames):
    """Against each scene's training frames, motion-anomaly frames keep the normal colours and blob sizes;
    appearance-anomaly frames do not (so this check can fail)."""
    for k in range(3):
        train = np.concatenate([frames[v.id] for v in bench.videos("train") if v.scene == f"s{k}"])
        background = np.median(train, axis=0)  # the pedestrians move, the background stays
        area, low, high = _frame_stats(train, background)
        for v in (v for v in bench.videos("test") if v.scene == f"s{k}"):
            kinds = bench.anomaly_kinds(v.id)
            t_area, t_low, t_high = _frame_stats(frames[v.id], background)
            odd_colour = (t_low < low.min() - 5) | (t_high > high.max() + 5)
            assert not odd_colour[kinds != APPEARANCE].any(), v.id
            big = t_area > area.max()
            assert not big[kinds != APPEARANCE].any(), v.id
            if (kinds == APPEARANCE).any():  # an object half out of the frame may be small, never normal-coloured
                assert odd_colour[kinds == APPEARANCE].all(), v.id
                assert np.mean(big[kinds == APPEARANCE]) > 0.5, v.id


def test_motion_anomalies_hidden_at_stride_tau(bench):
    """Every TAU-th frame the anomalous pedestrian steps like a normal one; frame to frame it does not."""
    def steps(track, axis, stride):
        along = track.y if axis == "y" else track.x
        seen = track.visible[:-stride] & track.visible[stride:]
        return np.abs(along[stride:] - along[:-stride])[seen]

    normal = {1: [], TAU: []}
    for v in bench.videos("train"):
        axis = bench._scene(int(v.scene[1:])).axis
        for track in bench._plan(v.id).tracks:
            for stride in normal:
                normal[stride].append(steps(track, axis, stride))
    normal = {s: np.concatenate(x) for s, x in normal.items()}
    motion = [v for v in bench.videos("test") if (bench.anomaly_kinds(v.id) == MOTION).any()]
    assert motion
    for v in motion:
        odd, axis = bench._plan(v.id).tracks[-1], bench._scene(int(v.scene[1:])).axis
        assert normal[TAU].min() <= steps(odd, axis, TAU).min() and steps(odd, axis, TAU).max() <= normal[TAU].max()
        assert steps(odd, axis, 1).max() > normal[1].max() + 1, v.id


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="scenes=0"):
        SyntheticBenchmark(scenes=0)
    with pytest.raises(ConfigError, match="frames_per_video=60"):
        SyntheticBenchmark(frames_per_video=60)


def test_dev_split_is_new_labelled_videos_of_the_same_scenes(bench, frames):
    """The development split a search optimises on: test-like videos (one anomaly each, both kinds) from the
    same scenes and generator, none of them a test video; the existing splits are unchanged by its presence."""
    dev = bench.videos("dev")
    assert bench.has_dev and len(dev) == len(bench.videos("test"))
    assert all(v.labels is not None and v.labels.any() and not v.labels.all() for v in dev)
    kinds = {int(k) for v in dev for k in np.unique(bench.anomaly_kinds(v.id))}
    assert kinds == {NONE, APPEARANCE, MOTION}
    test_frames = [f for vid, f in frames.items() if "_test_" in vid]
    for v in dev:
        f = np.stack(list(v.frames()))
        assert not any(np.array_equal(f, t) for t in test_frames), v.id
    # same scenes: a dev video's median frame is closest to a test video of its own scene (shared background)
    medians = {vid: np.median(f, 0) for vid, f in frames.items() if "_test_" in vid}
    for v in dev:
        m = np.median(np.stack(list(v.frames())), 0)
        nearest = min(medians, key=lambda t: np.abs(medians[t] - m).mean())
        assert nearest.split("_")[0] == v.scene, (v.id, nearest)
