"""Frame-level ROC AUC under the three protocols found in the video anomaly detection literature.

- micro (the ITAE paper's): all test frames concatenated, after Eq. 9's min-max *within each video*. This uses
  each test video's own min and max, a statistic an online detector would not have, and is the number the
  paper's tables report.
- micro_global: all test frames concatenated, min-max over the whole test set instead, so no per-video test
  statistics enter; for R or L alone it equals the AUC of the raw score.
- macro: the mean of per-video AUCs (videos of one class only have no AUC and are left out and counted).

`frame_auc_report` takes the *raw* per-frame R and L (and local L) and does the normalisation itself, through
`vadcore.scoring.trial_scores`, so the three protocols always see the same Eq. 9 score. `trial_metrics` is a
trial's whole evaluation: those AUCs and the checks below, and its frame columns (frame_scores.parquet).

Beside the AUCs, `homogeneous_report` measures HGAD's motivation ("homogeneous mapping": a flow trained on
all normal data may map anomalies into the normal region) per flow, on windows rather than frames.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from vadcore.scoring import PART_COLUMNS, PARTS, ScoreConfig, raw_parts, trial_scores

PROTOCOLS = ("auc_micro", "auc_micro_global", "auc_macro")  # each score's AUCs, S's unprefixed, a part's as r_auc_micro


def _check(labels: np.ndarray, *arrays: np.ndarray | None) -> np.ndarray:
    labels = np.asarray(labels)
    for a in arrays:
        if a is not None and len(a) != len(labels):
            raise ValueError(f"{len(labels)} labels but an array of {len(a)} scores or ids")
    if len(np.unique(labels)) < 2:
        raise ValueError(f"all {len(labels)} test frames have the same label: "
                         "frame AUC needs both normal and anomalous frames")
    return labels


def per_group_auc(labels: np.ndarray, groups: np.ndarray, score: np.ndarray) -> dict:
    """AUC of `score` within each group (a video, a scene); None for a group whose frames are all one class.

    Keys are the group ids as Python values. For per-scene AUC pass the final (per-video normalised) score.
    """
    labels, groups, score = np.asarray(labels), np.asarray(groups), np.asarray(score)
    out = {}
    for g in np.unique(groups):
        sel = groups == g
        y = labels[sel]
        out[g.item()] = float(roc_auc_score(y, score[sel])) if len(np.unique(y)) == 2 else None
    return out


def per_video_auc(labels: np.ndarray, videos: np.ndarray, score: np.ndarray) -> dict:
    """AUC of each video on its own (`per_group_auc` by video id); None for a one-class video."""
    return per_group_auc(labels, videos, score)


def protocol_aucs(labels: np.ndarray, videos: np.ndarray, s_video: np.ndarray, s_global: np.ndarray) -> dict:
    """The three AUCs (PROTOCOLS) of one score, given its per-video and its global min-max normalisation."""
    aucs = [a for a in per_video_auc(labels, videos, s_video).values() if a is not None]
    return {
        "auc_micro": float(roc_auc_score(labels, s_video)),
        "auc_micro_global": float(roc_auc_score(labels, s_global)),
        "auc_macro": float(np.mean(aucs)) if aucs else float("nan"),
    }


def frame_auc_report(
    labels: np.ndarray,
    videos: np.ndarray,
    r: np.ndarray,
    l: np.ndarray | None = None,
    cfg: ScoreConfig = ScoreConfig(),
    local: np.ndarray | None = None,
) -> dict[str, float | int]:
    """Frame AUCs of the Eq. 9 score S and of each of its parts alone, under the micro, micro_global and macro
    protocols.

    labels: (n,) 1 = anomalous frame; videos: (n,) video id of each frame; r, l, local: raw per-frame R
    (Eq. 7, window-averaged), L (Eq. 8) and local L (`vadcore.scoring.local_nll`) over the whole test set,
    l None without flows (then S = norm(R)), local None without NLL maps; cfg: the weights (lambda_L,
    lambda_local), as for `anomaly_score` (its `normalise` is ignored: each protocol sets its own).
    Keys: auc_micro, auc_micro_global, auc_macro for S; r_auc_* for R; l_auc_* for L and local_auc_* for
    local L when given; macro_videos_used, macro_videos_excluded (one-class videos, no AUC). auc_macro is
    nan if no video has both classes. Raises ValueError if all frames are one class.
    """
    labels = _check(labels, videos, r, l, local)
    videos = np.asarray(videos)
    columns = {"video": videos, **{PART_COLUMNS[p]: v for p, v in zip(PARTS, (r, l, local))}}
    by_video, overall = (trial_scores(cfg, columns, normalise) for normalise in ("video", "global"))
    report: dict[str, float | int] = protocol_aucs(labels, videos, by_video.score, overall.score)
    for name in PARTS:
        if getattr(by_video, name) is not None:
            sv, sg = getattr(by_video, name), getattr(overall, name)
            report |= {f"{name}_{k}": v for k, v in protocol_aucs(labels, videos, sv, sg).items()}
    used = int(sum(len(np.unique(labels[videos == v])) == 2 for v in np.unique(videos)))
    report |= {"macro_videos_used": used, "macro_videos_excluded": len(np.unique(videos)) - used}
    return report


def group_reports(
    groups: dict[str, np.ndarray],
    labels: np.ndarray,
    videos: np.ndarray,
    r: np.ndarray,
    l: np.ndarray | None = None,
    cfg: ScoreConfig = ScoreConfig(),
    local: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """`frame_auc_report`'s AUCs of each group of whole videos on its own: {group: {auc_micro, r_auc_micro, ...}}.

    groups: {name: (n,) bool mask of the frames in the group}, e.g. the development split's copies of one
    pseudo-anomaly kind; a group whose frames are all one class is left out. L and local L are the whole split's
    (Eq. 8's lambda_i from all its frames); a group's global min-max runs over the group only. The counts of
    one-class videos are dropped: the AUCs are what a group's row compares.
    """
    labels = _check(labels, videos, r, l, local)
    videos = np.asarray(videos)
    out = {}
    for name, mask in groups.items():
        if len(np.unique(labels[mask])) < 2:
            continue
        part = frame_auc_report(labels[mask], videos[mask], r[mask], None if l is None else l[mask], cfg,
                                None if local is None else local[mask])
        out[name] = {k: v for k, v in part.items() if not k.startswith("macro_videos_")}
    return out


def homogeneous_fraction(anomalous_nll: np.ndarray, threshold: float | np.ndarray) -> float:
    """Fraction of anomalous windows whose NLL lies strictly below `threshold`, the top of the flow's normal
    region (the 95th percentile of its normal training windows' NLL): anomalies the flow maps among normal
    data. `threshold` is one number or one per window (its scene's). nan when there is no anomalous window.
    """
    nll = np.asarray(anomalous_nll, dtype=np.float64)
    return float(np.mean(nll < threshold)) if nll.size else float("nan")


def homogeneous_report(nll: np.ndarray, anomalous: np.ndarray, scenes: np.ndarray, threshold: float,
                       scene_threshold: np.ndarray) -> dict:
    """`homogeneous_fraction` of one flow over all anomalous windows and within each scene:
    {"all": f, "per_scene": {scene: f}}.

    nll, anomalous, scenes, scene_threshold: (N,) per test window: its NLL (bits/dim), whether any of its
    frames is anomalous, its scene, the threshold of its scene's training windows (nan for a scene without
    training windows). "all" compares with `threshold`, that of all training windows; a scene with its own,
    since scenes differ in how hard their normal windows are to model. Scenes without anomalous windows are
    left out; a scene without a threshold maps to None.
    """
    nll, anomalous, scenes = np.asarray(nll), np.asarray(anomalous, dtype=bool), np.asarray(scenes)
    scene_threshold = np.asarray(scene_threshold, dtype=np.float64)
    per_scene = {}
    for s in np.unique(scenes[anomalous]):
        sel = anomalous & (scenes == s)
        known = not np.isnan(scene_threshold[sel]).any()
        per_scene[s.item()] = homogeneous_fraction(nll[sel], scene_threshold[sel]) if known else None
    return {"all": homogeneous_fraction(nll[anomalous], threshold), "per_scene": per_scene}


def roc_points(labels: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the ROC curve of `score` over all frames, for the report's plots."""
    labels = _check(labels, score)
    fpr, tpr, _ = roc_curve(labels, score)
    return fpr, tpr


PROTOCOL_TEXT = {
    "auc_micro": "all test frames concatenated, Eq. 9 min-max within each video (the paper's protocol)",
    "auc_micro_global": "min-max over the whole test set: no per-video test statistics",
    "auc_macro": "mean of per-video AUCs, one-class videos excluded",
}


def trial_metrics(cfg: ScoreConfig, scores: dict[str, np.ndarray], kinds: dict[str, np.ndarray] | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metrics, frame columns) of one scored split (a score stage's scores.npz): Eq. 8-9 and the AUC protocols,
    per-scene AUCs of a multi-scene split, each flow's homogeneous-mapping fraction (`homogeneous_report`:
    metrics["homogeneous"][path] and the flat homogeneous_app, homogeneous_mot), and on the synthetic benchmark
    (`kinds`: each video's per-frame anomaly kind) each kind's AUC. The frame columns are frame_scores.parquet's:
    identity, label, the raw parts (NaN where absent) and the final score S, normalised as cfg.normalise says."""
    labels, videos = scores["label"].astype(int), scores["video"]
    parts = raw_parts(cfg, scores)
    n = len(labels)
    columns = {"video": videos.astype(str), "frame": scores["frame"].astype(np.int32), "label": scores["label"].astype(np.int8),
               "scene": scores["scene"].astype(str), "score_r": scores["r"], "score_nll_app": scores["nll_app"], "score_nll_mot": scores["nll_mot"],
               **{PART_COLUMNS[p]: np.full(n, np.nan) if parts[p] is None else parts[p] for p in ("l", "local")}}
    metrics: dict[str, Any] = frame_auc_report(labels, videos, parts["r"], parts["l"], cfg, parts["local"])
    final = columns["score"] = trial_scores(cfg, columns).score
    metrics["auc"] = metrics["auc_micro_global"] if cfg.normalise == "global" else metrics["auc_micro"]
    if len(set(scores["scene"])) > 1:
        metrics["per_scene_auc"] = per_group_auc(labels, scores["scene"], final)
    homogeneous = {p: homogeneous_report(scores[f"win_nll_{p}"], scores["win_label"] == 1, scores["win_scene"], float(scores[f"train_p95_{p}"]),
                                         scores[f"win_train_p95_{p}"]) for p in ("app", "mot") if f"win_nll_{p}" in scores}
    if homogeneous:  # HGAD's question: how many anomalous windows each flow maps into its normal region
        metrics["homogeneous"] = homogeneous
        metrics.update({f"homogeneous_{p}": h["all"] for p, h in homogeneous.items()})
    if kinds is not None:  # synthetic benchmark: AUC of the final score on each anomaly kind vs all normal frames
        kind = np.concatenate([kinds[v] for v in sorted(set(videos))])
        for code, name in ((1, "appearance"), (2, "motion")):
            keep = (kind == 0) | (kind == code)
            if labels[keep].min() != labels[keep].max():
                metrics[f"auc_micro_{name}"] = float(roc_auc_score(labels[keep], final[keep]))
    both_flows = not (np.isnan(scores["nll_app"]).all() or np.isnan(scores["nll_mot"]).all())
    metrics["protocol"] = {**PROTOCOL_TEXT, "lambda_from_test_set": both_flows,  # Eq. 8's lambda_i use test NLL ranges
                           "dropped_frames": 0}
    return metrics, columns
