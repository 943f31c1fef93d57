"""The model-free floors: frame difference and position in video, their AUCs under the variants' protocols on toy
shard folders computed by hand, and the position floor on the real Ped2 test split."""
from __future__ import annotations

import numpy as np
import pytest

from vadcore.baselines import baseline_aucs, baseline_scores, frame_difference, position
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
    baseline_aucs of the test and dev shard folders, from stages keyed by those folders alone, so a trial that
    changes anything else (here a score weight) reuses them."""
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
        assert first["metrics"][key] == baseline_aucs(baseline_scores(folder))
    stage = tmp_path / "cache" / "stages" / "baselines" / first["stages"]["baselines"]["key"]
    assert json.loads((stage / "slice.json").read_text()) == {"shards": first["stages"]["shards_test"]["key"]}
    assert (stage / "baselines.npz").is_file()

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
