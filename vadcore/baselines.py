"""Floors every variant is read against: per-frame scores that need no model, scored by the variants' evaluator.

Under the paper's protocol (Eq. 9's min-max within each test video) any score with a trend inside a video is
rewarded, and Ped2's anomalies move faster than its walkers, so a number means little until it is set beside
what no model at all gets. From the trial's shard frames (its resolution and channels):

- `position`: the frame's index in its video, / (n - 1). Ped2's anomalies mostly arrive late in a clip.
- `frame_difference`: the mean |x_t - x_{t-1}| over pixels and channels, the simplest motion energy.

From the benchmark's own frames at their native size (`native_scores`, whatever the trial's resolution), the
motion-energy floors a model has to beat, each the largest mean over PATCH x PATCH native pixels every
PATCH_STRIDE pixels (Eq. 7's Ped2 patch max, `vadcore.scoring.patch_max`), parameters fixed once (issue 25,
from a script outside the project, never tuned on test labels):

- `flow_magnitude`: OpenCV's Farneback optical flow between consecutive grey frames at FLOW_SCALE of the
  native size (FARNEBACK), its magnitude in native pixels per frame;
- `difference_patch`: |x_t - x_{t-1}| averaged over channels, at the native size.

`baseline_aucs` runs `vadcore.evaluate.frame_auc_report` on each floor as the only score (S = norm(R)), so the
three protocols are exactly the variants'. The pipeline caches the shard floors as the `baselines` stage
(keyed by the shard folder) and the native ones as `native_baselines` (keyed by the benchmark's source files
and split): one build each, shared by every trial at any resolution.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vadcore.data.base import Benchmark, Video
from vadcore.data.loader import iter_shard, load_manifest
from vadcore.errors import DataError
from vadcore.evaluate import frame_auc_report
from vadcore.scoring import ScoreConfig

BASELINES = ("frame_difference", "position")
NATIVE = ("flow_magnitude", "difference_patch")  # computed on the benchmark's native frames (`native_scores`)
AUCS = ("auc_micro", "auc_micro_global", "auc_macro")
SCORES_FILE = "baselines.npz"  # in a baselines stage: video, label and one column per baseline, every frame
PATCH, PATCH_STRIDE = 32, 16  # native pixels: the paper's Ped2 patch, half-overlapping
FLOW_SCALE = 0.5  # Farneback runs on frames at half the native size (Ped2: 120x180), 4x cheaper
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2, "flags": 0}
NATIVE_FORMAT = 1  # bump when the native floors' definition changes (it is in their stage key)


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


def native_frame_scores(frames: Iterator[np.ndarray], chunk: int = 64) -> dict[str, np.ndarray]:
    """The NATIVE floors of every frame of one video, {floor: (n,) float64}, from its RGB uint8 (H, W, 3) frames
    in order. Frame 0 has no predecessor and gets frame 1's values, as `frame_difference` does. Maps are
    patch-maxed `chunk` frames at a time: memory holds one chunk of maps whatever the video's length."""
    import cv2
    import torch

    from vadcore.scoring import patch_max

    flow_patch = round(PATCH * FLOW_SCALE), round(PATCH_STRIDE * FLOW_SCALE)  # the same patches at the flow's size
    out: dict[str, list[np.ndarray]] = {k: [] for k in NATIVE}
    maps: dict[str, list[np.ndarray]] = {k: [] for k in NATIVE}

    def flush() -> None:
        for k, (size, stride) in (("flow_magnitude", flow_patch), ("difference_patch", (PATCH, PATCH_STRIDE))):
            if maps[k]:
                out[k].append(patch_max(torch.from_numpy(np.stack(maps[k])), size, stride).double().numpy())
                maps[k].clear()

    before = small_before = None
    n = 0
    for rgb in frames:
        n += 1
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        small = cv2.resize(grey, None, fx=FLOW_SCALE, fy=FLOW_SCALE, interpolation=cv2.INTER_AREA)
        if before is not None:
            flow = cv2.calcOpticalFlowFarneback(small_before, small, None, **FARNEBACK)
            maps["flow_magnitude"].append(np.hypot(flow[..., 0], flow[..., 1]) / FLOW_SCALE)  # native pixels per frame
            maps["difference_patch"].append(np.abs(rgb.astype(np.int16) - before.astype(np.int16)).mean(-1, dtype=np.float32))
            if len(maps["flow_magnitude"]) == chunk:
                flush()
        before, small_before = rgb, small
    flush()
    if n < 2:
        return {k: np.zeros(n) for k in NATIVE}
    return {k: np.concatenate([v[0][:1], *v]) for k, v in out.items()}


def native_scores(videos: list[Video], show: bool = False) -> dict[str, np.ndarray]:
    """Every frame of `videos` (a split of a benchmark, read at its native size): {"video", "label", *NATIVE}.

    Streams each video frame by frame (Farneback at FLOW_SCALE: Ped2's 4,560 frames in about 30 s of a core);
    memory holds two frames whatever the video's length. Training videos have no labels: all 0.
    """
    from vadcore.progress import progress_bar

    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("video", "label", *NATIVE)}
    with progress_bar("native motion floors", len(videos), enabled=show) as advance:
        for v in videos:
            scores = native_frame_scores(v.frames())
            n = len(scores[NATIVE[0]])
            labels = np.zeros(n, np.uint8) if v.labels is None else v.labels
            if len(labels) != n:
                raise DataError(f"{v.source}: video {v.id} has {n} frames but {len(labels)} labels")
            cols["video"].append(np.full(n, v.id))
            cols["label"].append(labels.astype(np.uint8))
            for k in NATIVE:
                cols[k].append(scores[k])
            advance(1)
    return {k: np.concatenate(v) for k, v in cols.items()}


def baseline_aucs(scores: dict[str, np.ndarray], smooth: float = 0.0) -> dict[str, dict[str, float]]:
    """{baseline: {auc_micro, auc_micro_global, auc_macro}}, each floor in `scores` evaluated as the variants' S is.

    scores: `baseline_scores`' or `native_scores`' columns. `frame_auc_report` with the floor as R and no L gives
    S = norm(R): min-max within each video for auc_micro, over the split for auc_micro_global (for a raw score,
    the AUC of the score itself), per-video AUCs for auc_macro. smooth: the trial's `score.smooth`, so a floor
    gets the same temporal smoothing as the score it is set beside.
    """
    labels, videos = scores["label"].astype(int), scores["video"]
    cfg = ScoreConfig(smooth=smooth)
    floors = [b for b in (*BASELINES, *NATIVE) if b in scores]
    reports = {b: frame_auc_report(labels, videos, scores[b], cfg=cfg) for b in floors}
    return {b: {k: reports[b][k] for k in AUCS} for b in floors}


def strongest(floors: dict[str, dict[str, float]], protocol: str) -> tuple[str, float] | None:
    """(name, AUC) of the floor with the highest AUC under `protocol` ("auc_micro", ...), None without floors.
    floors: a trial's metrics.baselines (or dev_baselines), as `baseline_aucs` gives them."""
    have = [(name, aucs[protocol]) for name, aucs in floors.items() if aucs.get(protocol) is not None]
    return max(have, key=lambda item: item[1]) if have else None


def below_floor(aucs: dict[str, float], floors: dict[str, dict[str, float]], protocols: tuple[str, ...] = AUCS[:2]) -> dict[str, str]:
    """{protocol: "" when the score (`aucs`: {protocol: AUC}) beats or ties every floor under it, else the strongest
    floor and its AUC, "flow_magnitude 0.916"} for each protocol with a floor. A model below a floor has learned
    nothing that floor did not know, and every table that shows it must say so in words (trial.json's
    metrics.below_floor, a column per protocol in trials.parquet)."""
    out = {}
    for protocol in protocols:
        best = strongest(floors, protocol)
        if best is not None and aucs.get(protocol) is not None:
            out[protocol] = f"{best[0]} {best[1]:.3f}" if aucs[protocol] < best[1] else ""
    return out


def group_aucs(scores: dict[str, np.ndarray], groups: dict[str, np.ndarray], smooth: float = 0.0) -> dict[str, dict[str, dict[str, float]]]:
    """{group: `baseline_aucs` of that group's frames}, groups as {name: (n,) bool mask over the frames of
    `scores` (whole videos, e.g. the development split's copies of one pseudo-anomaly kind)."""
    return {name: baseline_aucs({k: v[mask] for k, v in scores.items()}, smooth) for name, mask in groups.items()}


def build_stage(folder: Path, out: Path) -> dict[str, Any]:
    """The `baselines` stage's build: every frame's baseline scores to out/SCORES_FILE, their AUCs in the info."""
    return _save(baseline_scores(folder), out)


def build_native_stage(videos: list[Video], out: Path, show: bool = False) -> dict[str, Any]:
    """The `native_baselines` stage's build: `native_scores` of a split's videos to out/SCORES_FILE, AUCs in the info."""
    return _save(native_scores(videos, show), out)


def native_slice(bench: Benchmark, split: str) -> dict[str, Any]:
    """What the native floors of a split depend on: the benchmark's source files, the split, their definition."""
    return {"benchmark": bench.name, "split": split, "source": bench.fingerprint(split), "format": NATIVE_FORMAT,
            "patch": [PATCH, PATCH_STRIDE], "flow_scale": FLOW_SCALE, "farneback": FARNEBACK}


def _save(scores: dict[str, np.ndarray], out: Path) -> dict[str, Any]:
    np.savez(out / SCORES_FILE, **scores)
    labelled = len(set(scores["label"].tolist())) == 2  # a training split has no AUC
    return {"aucs": baseline_aucs(scores) if labelled else {}, "frames": len(scores["label"]), "videos": len(set(scores["video"].tolist()))}
