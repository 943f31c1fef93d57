"""The homogeneous-mapping check (HGAD's motivation: a flow may map anomalies into the normal region): the
fraction of anomalous test windows below the 95th percentile of the normal training windows' NLL, on
hand-made numbers, and end to end with the per-position HGAD prior, whose NLL map feeds the local score."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vadcore.config import resolve_config
from vadcore.evaluate import homogeneous_fraction, homogeneous_report
from vadcore.pipeline import run_trial
from vadcore.steps.flow import NLL_MAP_MEAN
from vadcore.testing import TINY


def test_homogeneous_fraction_counts_strictly_below_the_threshold():
    assert homogeneous_fraction(np.array([1.0, 2.0, 3.0, 4.0]), 3.0) == 0.5  # 3.0 itself is outside
    assert homogeneous_fraction(np.array([1.0, 2.0, 3.0]), np.array([0.5, 2.5, 3.5])) == pytest.approx(2 / 3)
    assert homogeneous_fraction(np.array([5.0, 6.0]), 1.0) == 0.0
    assert math.isnan(homogeneous_fraction(np.array([]), 1.0))  # no anomalous window: undefined


def test_homogeneous_report_uses_anomalous_windows_and_each_scenes_threshold():
    nll = np.array([1.0, 2.0, 3.0, 4.0, 0.5, 9.0, 1.0, 1.0])
    anomalous = np.array([1, 1, 1, 1, 0, 1, 1, 0], bool)  # the normal windows (0.5, 1.0) never count
    scenes = np.array(["a", "a", "a", "b", "b", "b", "c", "c"])
    scene_threshold = np.array([2.5, 2.5, 2.5, 5.0, 5.0, 5.0, np.nan, np.nan])  # scene c had no training windows
    report = homogeneous_report(nll, anomalous, scenes, 3.5, scene_threshold)
    # all anomalous windows vs the overall threshold 3.5: 1, 2, 3 and 1 of (1, 2, 3, 4, 9, 1) lie below
    assert report["all"] == pytest.approx(4 / 6)
    assert report["per_scene"] == {"a": pytest.approx(2 / 3), "b": 0.5, "c": None}
    only_normal_in_b = homogeneous_report(nll, anomalous & (scenes != "b"), scenes, 3.5, scene_threshold)
    assert set(only_normal_in_b["per_scene"]) == {"a", "c"}  # a scene without anomalous windows has no figure


def test_trial_with_per_position_hgad_scores_locally_and_reports_homogeneous_mapping(tmp_path):
    """A TINY synthetic trial with flow.prior.kind='hgad_position' and the smoke profile's local term: the
    flows have NLL maps, and the metrics hold each flow's homogeneous fraction, which the stored per-window
    arrays and the flow stage's training percentile reproduce."""
    cfg = resolve_config("synthetic", "smoke", [*TINY, "flow.prior.kind='hgad_position'"])
    assert cfg.score.lambda_local > 0  # allowed: this prior has a per-position NLL
    trial = run_trial(cfg, None, tmp_path / "cache", tmp_path / "out", show=False)
    m, stages = trial["metrics"], tmp_path / "cache/stages"
    assert 0 <= m["local_auc_micro"] <= 1
    with np.load(stages / "score" / trial["stages"]["score"]["key"] / "scores.npz") as z:
        scores = {k: z[k] for k in z.files}
    assert scores["excess_mot"].ndim == 3  # the motion flow's excess NLL map, from the prior's log_prob_map
    assert set(m["homogeneous"]) == {"app", "mot"}
    n_windows = len(scores["win_label"])
    assert 0 < scores["win_label"].sum() < n_windows and n_windows < len(scores["label"])  # windows, not frames
    for p in ("app", "mot"):
        flow = stages / f"flow_{p}" / trial["stages"][f"flow_{p}"]["key"]
        assert (flow / NLL_MAP_MEAN).is_file()
        train = json.loads((flow / "info.json").read_text())["train_nll_p95"]
        assert set(train["per_scene"]) == set(np.unique(scores["win_scene"]))
        anomalous = scores["win_label"] == 1
        assert float(scores[f"train_p95_{p}"]) == train["all"]
        assert m[f"homogeneous_{p}"] == m["homogeneous"][p]["all"] == pytest.approx(np.mean(scores[f"win_nll_{p}"][anomalous] < train["all"]))
        for scene, fraction in m["homogeneous"][p]["per_scene"].items():
            sel = anomalous & (scores["win_scene"] == scene)
            assert fraction == pytest.approx(np.mean(scores[f"win_nll_{p}"][sel] < train["per_scene"][scene]))
