import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vadcore.evaluate import frame_auc_report, group_reports, per_group_auc, per_video_auc, roc_points
from vadcore.scoring import ScoreConfig, anomaly_score

# Two videos whose protocols disagree (R alone, raw values):
#   A: r = [0, 1, 4],    labels [0, 0, 1] -> per-video norm [0, .25, 1],  AUC_A = 1
#   B: r = [10, 12, 14], labels [0, 1, 0] -> per-video norm [0, .5, 1],   AUC_B = 1/2 (12 beats 10, loses to 14)
LABELS = np.array([0, 0, 1, 0, 1, 0])
VIDEOS = np.array(["A", "A", "A", "B", "B", "B"])
R = np.array([0.0, 1.0, 4.0, 10.0, 12.0, 14.0])
# micro (per-video norm): positives 1.0 (A), .5 (B); negatives 0, .25, 0, 1.
#   1.0 beats 0, .25, 0 and ties 1 -> 3.5; .5 beats 0, .25, 0 -> 3.  (3.5 + 3) / 8 = 0.8125
# micro_global (raw order): positives 4, 12; negatives 0, 1, 10, 14.
#   4 beats 0, 1 -> 2; 12 beats 0, 1, 10 -> 3.  5 / 8 = 0.625
# macro: (1 + 1/2) / 2 = 0.75


def test_three_protocols_by_hand():
    rep = frame_auc_report(LABELS, VIDEOS, R)
    assert rep["auc_micro"] == pytest.approx(0.8125)
    assert rep["auc_micro_global"] == pytest.approx(0.625)
    assert rep["auc_macro"] == pytest.approx(0.75)
    assert rep["r_auc_micro"] == rep["auc_micro"]  # no L: S = norm(R)
    assert not any(k.startswith("l_") for k in rep)
    assert (rep["macro_videos_used"], rep["macro_videos_excluded"]) == (2, 0)


def test_one_class_video_excluded_from_macro():
    labels = np.append(LABELS, [0, 0])
    videos = np.append(VIDEOS, ["C", "C"])
    rep = frame_auc_report(labels, videos, np.append(R, [3.0, 5.0]))
    assert rep["auc_macro"] == pytest.approx(0.75)
    assert (rep["macro_videos_used"], rep["macro_videos_excluded"]) == (2, 1)
    assert per_video_auc(labels, videos, np.append(R, [3.0, 5.0])) == {"A": 1.0, "B": 0.5, "C": None}


def test_report_with_l_uses_eq9():
    l = np.array([5.0, 0.0, 1.0, 3.0, 9.0, 1.0])
    rep = frame_auc_report(LABELS, VIDEOS, R, l, ScoreConfig(lambda_L=0.5))
    s = anomaly_score(R, l, VIDEOS, ScoreConfig(lambda_L=0.5)).score
    assert rep["auc_micro"] == pytest.approx(roc_auc_score(LABELS, s))
    # L alone, raw order: positives 1, 9; negatives 5, 0, 3, 1 -> (1 + 0.5) + 4 = 5.5 / 8.
    assert rep["l_auc_micro_global"] == pytest.approx(5.5 / 8)
    assert frame_auc_report(LABELS, VIDEOS, R, l, ScoreConfig(lambda_L=0.0))["auc_micro"] == rep["r_auc_micro"]


def test_report_with_local_term():
    l = np.array([5.0, 0.0, 1.0, 3.0, 9.0, 1.0])
    local = np.array([0.0, 1.0, 2.0, 7.0, 8.0, 0.0])
    rep = frame_auc_report(LABELS, VIDEOS, R, l, ScoreConfig(lambda_L=0.5, lambda_local=2.0), local)
    s = anomaly_score(R, l, VIDEOS, ScoreConfig(lambda_L=0.5, lambda_local=2.0), local).score
    assert rep["auc_micro"] == pytest.approx(roc_auc_score(LABELS, s))
    # local alone, raw order: positives 2, 8; negatives 0, 1, 7, 0 -> 3 + 4 = 7 / 8.
    assert rep["local_auc_micro_global"] == pytest.approx(7 / 8)
    without = frame_auc_report(LABELS, VIDEOS, R, l, ScoreConfig(lambda_L=0.5), local)  # reported, but not in S
    assert without["auc_micro"] == frame_auc_report(LABELS, VIDEOS, R, l, ScoreConfig(lambda_L=0.5))["auc_micro"]
    assert without["local_auc_micro_global"] == rep["local_auc_micro_global"]


def test_group_reports_score_each_group_alone():
    """Groups of whole videos: A and B as one group gives the by-hand numbers above, B alone its own video's AUC
    (1/2 under every protocol); a one-class group (C) is left out; the counts of one-class videos are dropped."""
    labels, videos = np.append(LABELS, [0, 0]), np.append(VIDEOS, ["C", "C"])
    r = np.append(R, [3.0, 5.0])
    groups = {"ab": videos != "C", "b": videos == "B", "c": videos == "C"}
    reps = group_reports(groups, labels, videos, r)
    assert set(reps) == {"ab", "b"}
    assert (reps["ab"]["auc_micro"], reps["ab"]["auc_micro_global"], reps["ab"]["auc_macro"]) == pytest.approx((0.8125, 0.625, 0.75))
    assert reps["b"] == pytest.approx({k: 0.5 for k in ("auc_micro", "auc_micro_global", "auc_macro",
                                                         "r_auc_micro", "r_auc_micro_global", "r_auc_macro")})
    # L is the whole split's, cut to the group: Eq. 9 inside group b equals S computed on b's frames alone
    l = np.array([5.0, 0.0, 1.0, 3.0, 9.0, 1.0, 2.0, 2.0])
    rep = group_reports({"b": videos == "B"}, labels, videos, r, l, ScoreConfig(lambda_L=0.5))["b"]
    alone = frame_auc_report(labels[3:6], videos[3:6], r[3:6], l[3:6], ScoreConfig(lambda_L=0.5))
    assert rep == {k: v for k, v in alone.items() if not k.startswith("macro_videos_")}
    assert rep["l_auc_micro_global"] == pytest.approx(1.0)  # B's L: 3, 9, 1 with the anomaly at 9


def test_all_one_class_raises():
    with pytest.raises(ValueError, match="same label"):
        frame_auc_report(np.zeros(6), VIDEOS, R)
    with pytest.raises(ValueError, match="same label"):
        roc_points(np.ones(3), np.arange(3.0))


def test_per_group_auc_and_roc_points():
    scenes = np.array([1, 1, 1, 1, 2, 2])  # scene 1 = A + frame 0 of B; scene 2 = frames 1, 2 of B
    # scene 1: positive 4 beats 0 and 1, loses to 10 -> 2 / 3; scene 2: positive 12 loses to 14 -> 0.
    assert per_group_auc(LABELS, scenes, R) == {1: pytest.approx(2 / 3), 2: 0.0}
    fpr, tpr = roc_points(LABELS, R)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
