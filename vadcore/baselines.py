"""Floors every variant is read against: per-frame scores that need no model, scored by the variants' evaluator.

Under the paper's protocol (Eq. 9's min-max within each test video) any score with a trend inside a video is
rewarded, so a number means little until it is set beside what no model at all gets:

- `position`: the frame's index in its video, / (n - 1). On Ped2, whose anomalies mostly arrive late in a clip,
  it gets auc_micro 0.749 — at any resolution, since it reads no pixel.
- `frame_difference`: the mean absolute difference of consecutive frames over pixels and channels, the simplest
  motion energy (Ped2 at full resolution: 0.860 auc_micro, 0.700 auc_micro_global). It is computed on the shard
  frames, so at the trial's resolution and channels, not the benchmark's originals.

`baseline_scores` reads a shard folder (the test or the development split); `baseline_aucs` runs
`vadcore.evaluate.frame_auc_report` on each baseline as the only score (S = norm(R), R the baseline), so the
three protocols are exactly the variants'. The pipeline caches both as the `baselines` stage (`build_stage`),
keyed by the shard folder alone: one build per benchmark, split and resolution, shared by every trial.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vadcore.data.loader import iter_shard, load_manifest
from vadcore.evaluate import frame_auc_report
from vadcore.scoring import ScoreConfig

BASELINES = ("frame_difference", "position")
AUCS = ("auc_micro", "auc_micro_global", "auc_macro")
SCORES_FILE = "baselines.npz"  # in a baselines stage: video, label and one column per baseline, every frame


def frame_difference(frames: np.ndarray, before: np.ndarray | None = None) -> np.ndarray:
    """Mean |x_t - x_{t-1}| over pixels and channels of each frame, (n,) float64.

    frames: (n, H, W, C) uint8, consecutive frames of one video. before: the frame just before frames[0]
    (streaming a video chunk by chunk), or None when frames[0] is the video's first frame: that frame has no
    predecessor and gets its successor's value (the difference of frames 0 and 1), so it is neither a false
    peak nor a false floor of its video's min-max; a one-frame video scores 0.
    """
    x = np.asarray(frames, dtype=np.int16)
    if before is not None:
        x = np.concatenate([np.asarray(before, dtype=np.int16)[None], x])
    diffs = np.abs(np.diff(x, axis=0)).mean(axis=(1, 2, 3))
    if before is not None:
        return diffs
    return np.concatenate([diffs[:1], diffs]) if len(diffs) else np.zeros(len(x))


def position(n: int) -> np.ndarray:
    """Each frame's index in its video of n frames, / (n - 1): 0 at the first frame, 1 at the last; (n,) float64.
    A one-frame video scores 0."""
    return np.arange(n) / max(n - 1, 1)


def baseline_scores(folder: Path) -> dict[str, np.ndarray]:
    """Every frame of a shard folder, in shard order: {"video", "label", "frame_difference", "position"}, (N,) each.

    Streams the shards chunk by chunk (`iter_shard` verifies each one), keeping one frame per video for the
    difference across a chunk boundary: memory is one chunk, whatever the video's length.
    """
    folder = Path(folder)
    manifest = load_manifest(folder)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("video", "label", *BASELINES)}
    last: tuple[str, np.ndarray] | None = None  # (video, its latest frame); a video's chunks arrive in order
    for entry in manifest["shards"]:
        for chunk in iter_shard(folder, entry):
            k = len(chunk.frames)
            before = last[1] if last is not None and last[0] == chunk.video else None
            cols["video"].append(np.full(k, chunk.video))
            cols["label"].append(chunk.labels)
            cols["frame_difference"].append(frame_difference(chunk.frames, before))
            cols["position"].append(position(manifest["per_video"][chunk.video]["frames"])[chunk.start : chunk.start + k])
            last = (chunk.video, chunk.frames[-1])
    return {k: np.concatenate(v) for k, v in cols.items()}


def baseline_aucs(scores: dict[str, np.ndarray], smooth: float = 0.0) -> dict[str, dict[str, float]]:
    """{baseline: {auc_micro, auc_micro_global, auc_macro}}, each baseline evaluated as the variants' S is.

    scores: `baseline_scores`' columns. `frame_auc_report` with the baseline as R and no L gives S = norm(R):
    min-max within each video for auc_micro, over the split for auc_micro_global (for a raw score, the AUC of
    the score itself), per-video AUCs for auc_macro. smooth: the trial's `score.smooth`, so a floor gets the
    same temporal smoothing as the score it is set beside.
    """
    labels, videos = scores["label"].astype(int), scores["video"]
    cfg = ScoreConfig(smooth=smooth)
    reports = {b: frame_auc_report(labels, videos, scores[b], cfg=cfg) for b in BASELINES}
    return {b: {k: reports[b][k] for k in AUCS} for b in BASELINES}


def group_aucs(scores: dict[str, np.ndarray], groups: dict[str, np.ndarray], smooth: float = 0.0) -> dict[str, dict[str, dict[str, float]]]:
    """{group: `baseline_aucs` of that group's frames}, groups as {name: (n,) bool mask over the frames of
    `scores` (whole videos, e.g. the development split's copies of one pseudo-anomaly kind)."""
    return {name: baseline_aucs({k: v[mask] for k, v in scores.items()}, smooth) for name, mask in groups.items()}


def build_stage(folder: Path, out: Path) -> dict[str, Any]:
    """The `baselines` stage's build: every frame's baseline scores to out/SCORES_FILE, their AUCs in the info."""
    scores = baseline_scores(folder)
    np.savez(out / SCORES_FILE, **scores)
    return {"aucs": baseline_aucs(scores), "frames": len(scores["label"]), "videos": len(set(scores["video"].tolist()))}
