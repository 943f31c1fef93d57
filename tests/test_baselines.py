"""The model-free floors: frame difference and position in video, their AUCs under the variants' protocols on toy
shard folders computed by hand, and the position floor on the real Ped2 test split; the native motion floors
(optical flow magnitude and frame difference, patch-maxed) on moving squares of known speed."""
from __future__ import annotations

import numpy as np
import pytest

from vadcore import baselines
from vadcore.baselines import baseline_aucs, baseline_scores, frame_difference, native_frame_scores, native_scores, position
from vadcore.data import get_benchmark
from vadcore.data.shards import CHUNK, ShardSpec, ensure_shards
from vadcore.scoring import smooth_in_videos
from vadcore.testing import ArrayBenchmark


def stepped_video(steps: list[int], side: int = 8) -> np.ndarray:
    """(n, side, side, 3) uint8 frames, every pixel of frame t = steps[1] + ... + steps[t]: frame t differs from
    frame t-1 by exactly steps[t] everywhere (steps[0] is unused)."""
    values = np.cumsum([0, *steps[1:]])
    assert values.max() < 256
    return np.broadcast_to(values[:, None, None, None], (len(steps), side, side, 3)).astype(np.uint8)


def folder_of(videos, cache):
    """A test-split shard folder of ArrayBenchmark videos [(id, frames, labels)], at their own 8x8 size, grey."""
    bench = ArrayBenchmark({"test": [(v, "s0", frames, labels) for v, frames, labels in videos]})
    folder, _ = ensure_shards(bench, ShardSpec("arrays", "test", 8, 8, 1), cache, show_progress=False)
    return folder


def test_frame_difference_per_frame_and_the_first_frame_takes_its_successors_value():
    frames = stepped_video([0, 2, 3, 7])
    np.testing.assert_array_equal(frame_difference(frames), [2, 2, 3, 7])
    np.testing.assert_array_equal(frame_difference(frames[2:], before=frames[1]), [3, 7])  # a later chunk
    down = stepped_video([0, 9, 1])[::-1]  # values 10, 9, 0: absolute differences, not signed ones
    np.testing.assert_array_equal(frame_difference(down), [1, 1, 9])
    mixed = np.zeros((2, 1, 2, 3), np.uint8)
    mixed[1, 0, 0] = [6, 0, 0]  # one channel of one pixel: the mean over all 6 values
    np.testing.assert_array_equal(frame_difference(mixed), [1, 1])
    np.testing.assert_array_equal(frame_difference(frames[:1]), [0])
    np.testing.assert_array_equal(position(5), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(position(1), [0])


def test_position_auc_by_hand(cache):
    """a: labels 0011, b: 100, c: 00000 (one class). Positions a: 0, 1/3, 2/3, 1; b: 0, 1/2, 1; c: 0, 1/4, ..., 1,
    already in [0, 1] within each video, so per-video and global min-max agree. Positives 2/3, 1, 0 against the
    nine negatives 0, 1/3, 1/2, 1, 0, 1/4, 1/2, 3/4, 1: 2/3 beats 6; 1 beats 7 and ties 2; 0 ties 2. AUC =
    (6 + 7 + 2/2 + 2/2) / 27 = 15/27. Macro: a's AUC 1, b's 0, c excluded: 0.5."""
    videos = [(v, stepped_video([0] * len(y)), np.array(y, np.uint8)) for v, y in
              (("a", [0, 0, 1, 1]), ("b", [1, 0, 0]), ("c", [0, 0, 0, 0, 0]))]
    scores = baseline_scores(folder_of(videos, cache))
    assert scores["video"].tolist() == ["a"] * 4 + ["b"] * 3 + ["c"] * 5
    got = baseline_aucs(scores)["position"]
    assert got == pytest.approx({"auc_micro": 15 / 27, "auc_micro_global": 15 / 27, "auc_macro": 0.5}, abs=1e-12)


def test_frame_difference_separates_fast_segments_within_each_video(cache):
    """x: 70 frames (three shard chunks) moving 1 a frame, 3 in its anomalous frames 40-49; y: 30 frames moving 5,
    12 in frames 10-19; z: 20 normal frames moving 2. Within each video the anomalous frames move most: auc_micro
    and auc_macro are 1. Across videos y's normal 5 beats x's anomalous 3: positives 3 (x10) beat 80 of the 100
    negatives (60 at 1, 20 at 2), 12 (x10) beat all: auc_micro_global = (10*80 + 10*100) / (20*100) = 0.9."""
    def video(n, normal, fast, segment):
        labels = np.zeros(n, np.uint8)
        labels[segment] = 1
        return stepped_video(np.where(labels == 1, fast, normal).tolist()), labels

    videos = [("x", *video(70, 1, 3, slice(40, 50))), ("y", *video(30, 5, 12, slice(10, 20))), ("z", *video(20, 2, 2, slice(0, 0)))]
    assert len(videos[0][1]) > 2 * CHUNK  # differences across chunk boundaries are taken too
    scores = baseline_scores(folder_of(videos, cache))
    np.testing.assert_array_equal(scores["frame_difference"][:70], frame_difference(videos[0][1]))
    got = baseline_aucs(scores)["frame_difference"]
    assert got == pytest.approx({"auc_micro": 1.0, "auc_micro_global": 0.9, "auc_macro": 1.0}, abs=1e-12)


def test_ped2_position_floor_is_0749_at_smoke_size(data_root, cache):
    """Real data: Ped2's 12 test clips sharded at 64x96 grey (the smoke size). Position reads no pixel, so its
    floor is the full-resolution 0.749 of issue 14."""
    bench = get_benchmark("ped2", data_root)
    folder, _ = ensure_shards(bench, ShardSpec("ped2", "test", 64, 96, 1), cache, show_progress=False)
    scores = baseline_scores(folder)
    assert len(scores["label"]) == 2010 and int(scores["label"].sum()) == 1648
    aucs = baseline_aucs(scores)
    assert aucs["position"]["auc_micro"] == pytest.approx(0.749, abs=0.005)
    assert set(aucs["frame_difference"]) == {"auc_micro", "auc_micro_global", "auc_macro"}


def test_trials_record_the_floors_of_a_stage_built_once_per_split(tmp_path):
    """Through run_trial (TINY synthetic, with its development split): metrics.baselines and dev_baselines are
    baseline_aucs of the test and dev shard folders and of the benchmark's native frames, from stages keyed by
    those folders and by the benchmark's source files alone, so a trial that changes anything else (here a score
    weight and the frame size) reuses the native ones, and one that changes only a weight reuses both."""
    import json

    from vadcore.config import resolve_config
    from vadcore.data.loader import load_manifest
    from vadcore.pipeline import run_trial
    from vadcore.testing import TINY

    sets = [*TINY, "data.dev=true"]
    first = run_trial(resolve_config("synthetic", "smoke", sets), None, tmp_path / "cache", tmp_path / "t1", show=False)
    assert first["stages"]["baselines"]["status"] == first["stages"]["baselines_dev"]["status"] == "trained"
    shards = tmp_path / "cache" / "shards" / "synthetic"
    for split, key in (("test", "baselines"), ("dev", "dev_baselines")):
        folder = shards / first["stages"][f"shards_{split}"]["key"]
        assert load_manifest(folder)["split"] == split
        native = native_scores(get_benchmark("synthetic").videos(split))
        assert first["metrics"][key] == {**baseline_aucs(baseline_scores(folder)), **baseline_aucs(native)}
    stage = tmp_path / "cache" / "stages" / "baselines" / first["stages"]["baselines"]["key"]
    assert json.loads((stage / "slice.json").read_text()) == {"shards": first["stages"]["shards_test"]["key"]}
    assert (stage / "baselines.npz").is_file()
    assert first["metrics"]["below_floor"] == baselines.below_floor(first["metrics"], first["metrics"]["baselines"])
    assert set(first["metrics"]["below_floor"]) == {"auc_micro", "auc_micro_global"} and "dev_below_floor" in first["metrics"]

    resized = run_trial(resolve_config("synthetic", "smoke", [*sets, "data.height=48", "data.width=64"]), None, tmp_path / "cache", tmp_path / "t3", show=False)
    assert resized["stages"]["native_baselines"]["status"] == resized["stages"]["native_baselines_dev"]["status"] == "reused"
    assert {k: v for k, v in resized["metrics"]["baselines"].items() if k in baselines.NATIVE} == {k: v for k, v in first["metrics"]["baselines"].items() if k in baselines.NATIVE}

    again = run_trial(resolve_config("synthetic", "smoke", [*sets, "score.lambda_L=0.3"]), None, tmp_path / "cache", tmp_path / "t2", show=False)
    assert again["stages"]["baselines"]["status"] == again["stages"]["baselines_dev"]["status"] == "reused"
    assert again["metrics"]["baselines"] == first["metrics"]["baselines"]
    assert json.loads((tmp_path / "t2" / "trial.json").read_text())["metrics"]["dev_baselines"] == first["metrics"]["dev_baselines"]


def test_a_smoothed_trial_reads_floors_smoothed_alike():
    """One isolated fast frame (1) outscores the two anomalous ones (3, 4) raw; smoothed over time (sigma 1) the
    anomalous pair lifts its neighbourhood above the lone spike. baseline_aucs(smooth=...) smooths each video's
    series first, exactly as `score.smooth` does to a variant's parts."""
    labels = np.array([0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0], np.uint8)
    videos = np.repeat(["a", "b"], 6)
    scores = {"video": videos, "label": labels, "frame_difference": np.array([0, 5, 0, 4, 4, 0, 0, 0, 1, 1, 3, 1.0]),
              "position": np.r_[position(6), position(6)]}
    raw, smoothed = baseline_aucs(scores), baseline_aucs(scores, smooth=1.0)
    by_hand = baseline_aucs({**scores, **{b: smooth_in_videos(scores[b], videos, 1.0) for b in ("frame_difference", "position")}})
    assert smoothed == by_hand
    assert smoothed["frame_difference"]["auc_micro"] > raw["frame_difference"]["auc_micro"]


def moving_square(n: int, speed: int, size: int = 32, height: int = 96, width: int = 160) -> np.ndarray:
    """(n, H, W, 3) uint8: a textured size x size square moving `speed` pixels a frame to the right over a flat
    grey background, starting at row 32, column 16. The texture (a smooth blob pattern) gives the optical flow
    something to track inside the square, not only at its edges."""
    yy, xx = np.mgrid[:size, :size]
    texture = (128 + 60 * np.sin(yy / 3.0) * np.cos(xx / 4.0)).astype(np.uint8)
    frames = np.full((n, height, width, 3), 60, np.uint8)
    for t in range(n):
        left = 16 + speed * t
        frames[t, 32 : 32 + size, left : left + size] = texture[..., None]
    return frames


def test_native_difference_patch_by_hand():
    """Frame 1 differs from frame 0 by 90 on one channel of a 32x32 block aligned to the 16-pixel grid (its mean
    over channels: 30), frame 2 by 30 on all channels of a 16x16 block (the best patch holds it whole: 30 x 256 /
    1024 = 7.5). Frame 0 takes frame 1's value."""
    frames = np.zeros((3, 64, 96, 3), np.uint8)
    frames[1, 16:48, 32:64, 0] = 90
    frames[2] = frames[1]
    frames[2, 0:16, 0:16] = 30
    got = native_frame_scores(iter(frames))["difference_patch"]
    np.testing.assert_allclose(got, [30.0, 30.0, 7.5])


def test_native_flow_magnitude_reads_the_speed_in_native_pixels():
    """A square at 2 and at 6 pixels a frame: the best patch's mean flow is below the speed (the flow is smooth
    and the patch holds some background) but within a third of it, and three times as fast reads about three
    times as much; a still video reads ~0."""
    slow, fast = (native_frame_scores(iter(moving_square(6, s)))["flow_magnitude"] for s in (2, 6))
    still = native_frame_scores(iter(moving_square(4, 0)))["flow_magnitude"]
    assert np.all((slow[1:] > 2 * 2 / 3) & (slow[1:] < 2 * 1.1)), slow
    assert np.all((fast[1:] > 6 * 2 / 3) & (fast[1:] < 6 * 1.1)), fast
    assert 2.4 < fast[1:].mean() / slow[1:].mean() < 3.6
    assert np.all(still < 0.05) and slow[0] == slow[1]


def test_native_scores_of_a_split_and_their_aucs(tmp_path):
    """Two labelled videos whose square speeds up on its anomalous frames: every floor finds them within each
    video (auc_micro 1); a training split (no labels) gets all-0 labels and no AUCs in its stage info."""
    def video(speeds):
        frames = [moving_square(1, 0)[0]]
        left = 0
        for s in speeds[1:]:
            left += s
            frames.append(np.roll(moving_square(1, 0)[0], left, axis=1))
        return np.stack(frames)

    a = video([1] * 6 + [5] * 4 + [1] * 6)
    b = video([2] * 5 + [8] * 5)
    bench = ArrayBenchmark({"test": [("a", "s0", a, np.array([0] * 6 + [1] * 4 + [0] * 6)), ("b", "s0", b, np.array([0] * 5 + [1] * 5))],
                            "train": [("t", "s0", a, None)]})
    scores = native_scores(bench.videos("test"))
    assert scores["video"].tolist() == ["a"] * 16 + ["b"] * 10 and set(scores) == {"video", "label", *baselines.NATIVE}
    aucs = baseline_aucs(scores)
    assert set(aucs) == set(baselines.NATIVE) and all(aucs[k]["auc_micro"] == 1.0 for k in baselines.NATIVE)
    info = baselines.build_native_stage(bench.videos("train"), tmp_path)
    assert info == {"aucs": {}, "frames": 16, "videos": 1}
    with np.load(tmp_path / baselines.SCORES_FILE) as z:
        assert z["label"].tolist() == [0] * 16


def test_below_floor_names_the_protocol_and_the_strongest_floor():
    floors = {"frame_difference": {"auc_micro": 0.87, "auc_micro_global": 0.70},
              "flow_magnitude": {"auc_micro": 0.916, "auc_micro_global": 0.93}, "position": {"auc_micro": 0.75, "auc_micro_global": 0.75}}
    assert baselines.strongest(floors, "auc_micro") == ("flow_magnitude", 0.916)
    assert baselines.below_floor({"auc_micro": 0.92, "auc_micro_global": 0.90}, floors) == {"auc_micro": "", "auc_micro_global": "flow_magnitude 0.930"}
    assert baselines.below_floor({"auc_micro": 0.832, "auc_micro_global": 0.782}, floors) == {
        "auc_micro": "flow_magnitude 0.916", "auc_micro_global": "flow_magnitude 0.930"}
    assert baselines.below_floor({"auc_micro": 0.95, "auc_micro_global": 0.93}, floors) == {"auc_micro": "", "auc_micro_global": ""}  # a tie is not below
    assert baselines.below_floor({"auc_micro": 0.5}, {}) == {} and baselines.strongest({}, "auc_micro") is None
