"""Anomaly scores of the ITAE paper's test method (Eq. 7-9), as pure functions.

The pipeline runs them in this order, per test video and then over the test set:

1. `recon_error`: ITAE windows (B, C, T, H, W) -> R per frame of each window (Eq. 7), optionally with a Ped2-style
   patch max and a ShanghaiTech-style foreground mask from `mog2_foreground`;
2. `frames_from_windows`: window scores -> one score per video frame, the mean over the windows containing it
   (the paper: "for each frame, we compute the mean of error values in all segments in which it appears");
3. `combine_nll`: the two flows' NLLs -> L (Eq. 8), over the whole test set;
4. optionally `local_nll`: each flow's per-position NLL map, minus its mean on the training windows of the
   same scene, max over small patches -> a local L (ours, off in the paper profile);
5. `anomaly_score`: S = norm(R) + lambda_L norm(L) (Eq. 9) [+ lambda_local norm(local L)], each part first
   optionally smoothed over time within its video (`smooth_in_videos`, ours, off in the paper profile).

`raw_parts` runs steps 3-4 on a score stage's columns; `trial_scores` is step 5 for a trial, from its score config
and frame columns: the one function the pipeline and every report section take a trial's S from.
Everything after step 1 is numpy on the CPU: per-frame arrays of a whole test set are small.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vadcore.errors import ConfigError

NORMALISE = ("video", "global")
BACKGROUND = ("none", "mog2")
_EPS = 1e-6  # floor of 1 - |I - Î| in Eq. 7, so a pixel off by 1.0 scores 6 instead of inf


@dataclass(frozen=True)
class ScoreConfig:
    """How per-frame scores are computed; `score.*` in configs. Changing it only re-scores, never retrains."""

    lambda_L: float = 1.0  # Eq. 9 weight of norm(L); the paper does not give its value
    patch: int = 0  # 0: R is the mean over all pixels; >0: max over patch x patch means (paper, Ped2: 32 at
    # 240x360). A profile at a smaller resolution needs a proportionally smaller patch; the pipeline passes it.
    patch_stride: int = 0  # pixels between those patches; 0 = patch (tiles, as the paper's "patches" read)
    normalise: Literal["video", "global"] = "video"  # Eq. 9 min-max: within each video (paper) or over the test set
    background: Literal["none", "mog2"] = "none"  # "mog2": zero the error on MOG2 background (paper, ShanghaiTech)
    lambda_local: float = 0.0  # weight of norm(local L) added to Eq. 9; 0 = the paper's score
    local_patch: int = 2  # local L: max over local_patch x local_patch windows of the flow's top NLL map
    local_paths: tuple[str, ...] = ("mot",)  # the flows whose local NLLs make local L (Eq. 8 over several)
    smooth: float = 0.0  # sigma in frames of a Gaussian over each video's R, L and local L before Eq. 9 (0 = off, the paper)

    def validate(self) -> None:
        for name in ("lambda_L", "lambda_local", "smooth"):
            value = getattr(self, name)
            if not (value >= 0 and np.isfinite(value)):
                raise ConfigError(f"score.{name}={value!r} must be a finite number >= 0")
        if self.local_patch < 1:
            raise ConfigError(f"score.local_patch={self.local_patch!r} must be a patch size >= 1")
        if not self.local_paths or not set(self.local_paths) <= {"app", "mot"}:
            raise ConfigError(f"score.local_paths={list(self.local_paths)!r} must be a non-empty list of 'app', 'mot'")
        if self.patch < 0:
            raise ConfigError(f"score.patch={self.patch!r} must be 0 (mean over pixels) or a patch size > 0")
        if self.patch_stride < 0 or self.patch_stride > self.patch:
            raise ConfigError(f"score.patch_stride={self.patch_stride!r} must be 0 (= score.patch) or in 1..score.patch={self.patch}")
        for name, allowed in (("normalise", NORMALISE), ("background", BACKGROUND)):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"score.{name}={value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")


def error_map(frames: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Eq. 7 per pixel, -log10(1 - |I - Î|) averaged over channels: (B, C, T, H, W) twice -> (B, T, H, W)."""
    if frames.shape != recon.shape or frames.ndim != 5:
        raise ValueError(f"frames {tuple(frames.shape)} and recon {tuple(recon.shape)} must both be (B, C, T, H, W)")
    return -torch.log10((1 - (frames - recon).abs()).clamp_min(_EPS)).mean(1)


def recon_error(
    frames: torch.Tensor, recon: torch.Tensor, patch: int = 0, mask: torch.Tensor | None = None, stride: int = 0
) -> torch.Tensor:
    """Eq. 7 per frame: R = -log10(1 - |I - Î|), averaged over channels, then over pixels or patch-maxed.

    frames, recon: (B, C, T, H, W) in [0, 1], on any device (the model's: no copy to the CPU).
    patch: 0 for the mean over all pixels; p > 0 for the max over the means of p x p patches, which keeps a
        small anomaly (Ped2's bikes and carts) from being averaged away (`patch_max`). stride: pixels between
        patches, 0 = p (the patches tile the frame from the top-left and again from the bottom-right corner).
    mask: optional (B, 1, T, H, W) foreground mask in {0, 1} (`mog2_foreground`); background error is zeroed
        before pooling, so a mean still divides by all H*W pixels.
    Returns (B, T).
    """
    err = error_map(frames, recon)
    if mask is not None:
        err = err * mask[:, 0].to(err)
    B, T, H, W = err.shape
    if patch == 0:
        return err.mean((-2, -1))
    return patch_max(err.reshape(B * T, H, W), patch, stride or patch).view(B, T)


def patch_max(maps: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """The largest patch x patch mean of each map, (N, H, W) -> (N,); patches every `stride` pixels.

    Patches start at 0, stride, 2 stride, ... and again at the same steps back from the bottom-right corner,
    so every pixel lies in a full patch whatever H and W are (stride = patch: two tilings). patch is clipped
    to the map size. Eq. 7's Ped2 patch max and the motion floors of `vadcore.baselines` share it.
    """
    N, H, W = maps.shape
    ph, pw = min(patch, H), min(patch, W)
    flat = maps.reshape(N, 1, H, W)
    means = [F.avg_pool2d(flat[..., oh:, ow:], (ph, pw), stride).amax((1, 2, 3)) for oh in {0, (H - ph) % stride} for ow in {0, (W - pw) % stride}]
    return torch.stack(means).amax(0)


def mog2_foreground(frames: np.ndarray, dilate: int = 3, history: int = 500, var_threshold: float = 16.0) -> np.ndarray:
    """Foreground of one whole video by OpenCV's MOG2 background subtractor (the paper's ShanghaiTech step).

    frames: (T, H, W) or (T, H, W, 3) uint8, *all frames of one video in temporal order*: the background model
        is learnt as it goes, so windows or shuffled frames give a wrong mask. Frame 0 is all foreground (the
        model is still empty) and the first few frames are unreliable, which only keeps their error.
    dilate: radius in pixels by which the mask grows, so object borders keep their error.
    Returns (T, H, W) bool. Compute it at the resolution `recon_error` sees (or resize it, nearest).
    """
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
        raise ValueError(f"frames must be (T, H, W[, 3]) uint8, got {frames.shape} {frames.dtype}")
    sub = cv2.createBackgroundSubtractorMOG2(history=history, varThreshold=var_threshold, detectShadows=False)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
    return np.stack([cv2.dilate(sub.apply(np.ascontiguousarray(f)), kernel) > 0 for f in frames])


def frames_from_windows(
    n_frames: int, starts: np.ndarray, window_scores: np.ndarray, T: int | None = None
) -> np.ndarray:
    """Per-frame scores of one video: the mean over all windows that contain the frame (paper, Test method).

    starts: (N,) first frame of each window.
    window_scores: (N, T) a score per frame of each window (R from `recon_error`), or (N,) one score per
        window (a flow's NLL), then spread over the window's T frames, which must be given.
    Raises ValueError if a window leaves the video or a frame lies in no window: every frame gets a score,
    none is dropped silently from the AUC.
    Returns (n_frames,) float64.
    """
    s = np.asarray(window_scores, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.int64)
    if s.ndim == 1:
        if T is None:
            raise ValueError("window-level scores of shape (N,) need the window length T")
        s = np.repeat(s[:, None], T, axis=1)
    if s.ndim != 2 or (T is not None and s.shape[1] != T) or starts.shape != (len(s),):
        raise ValueError(f"window_scores {s.shape} must be (N, {T=}) with starts (N,), got starts {starts.shape}")
    T = s.shape[1]
    if len(starts) and (starts.min() < 0 or starts.max() + T > n_frames):
        raise ValueError(f"windows of T={T} starting at {starts.min()}..{starts.max()} leave the video of {n_frames=}")
    idx = (starts[:, None] + np.arange(T)).ravel()
    count = np.bincount(idx, minlength=n_frames)
    uncovered = np.flatnonzero(count == 0)
    if uncovered.size:
        raise ValueError(f"{uncovered.size} of {n_frames} frames lie in no window (first: {uncovered[:5].tolist()})")
    return np.bincount(idx, weights=s.ravel(), minlength=n_frames) / count


def minmax(x: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Min-max to [0, 1] within each group (video ids: Eq. 9's norm) or, with groups None, over all of x.

    A constant group maps to 0: it carries no ranking information, and 0 avoids a division by zero.
    """
    x = np.asarray(x, dtype=np.float64)
    if groups is None:
        inv, k = np.zeros(len(x), dtype=np.int64), 1
    else:
        uniq, inv = np.unique(np.asarray(groups), return_inverse=True)
        k = len(uniq)
    lo, hi = np.full(k, np.inf), np.full(k, -np.inf)
    np.minimum.at(lo, inv, x)
    np.maximum.at(hi, inv, x)
    span = (hi - lo)[inv]
    return np.divide(x - lo[inv], span, out=np.zeros_like(x), where=span > 0)


def combine_nll(nll_app: np.ndarray | None, nll_mot: np.ndarray | None) -> np.ndarray | None:
    """Eq. 8: L = (l1 NLL_app + l2 NLL_mot) / (l1 + l2), li = max - min of that NLL over the test set.

    Pass both flows' per-frame NLLs of the whole test set. The weights make the flow whose NLL spreads more
    count more. With one flow (an ablation), L is that flow's NLL; with none, None; with l1 + l2 = 0
    (both constant), the plain mean.
    """
    if nll_app is None or nll_mot is None:
        one = nll_mot if nll_app is None else nll_app
        return None if one is None else np.asarray(one, dtype=np.float64)
    a, m = np.asarray(nll_app, dtype=np.float64), np.asarray(nll_mot, dtype=np.float64)
    l1, l2 = np.ptp(a), np.ptp(m)
    if l1 + l2 == 0:
        return (a + m) / 2
    return (l1 * a + l2 * m) / (l1 + l2)


def local_nll(excess: np.ndarray, patch: int) -> np.ndarray:
    """Local L of each frame: the max over patch x patch windows (stride 1) of the mean excess NLL.

    excess: (n, h, w) a flow's per-position NLL map of each frame (`vadcore.models.glow.nll_map`, averaged
        over the windows containing the frame like R) minus the mean map of the normal training windows of
        the frame's scene. The whole-latent NLL sums over all positions, so it grows with the number of
        people in view and differs between videos by crowd; the excess at the worst place does not.
    patch: clipped to the map size. Returns (n,).
    """
    t = torch.from_numpy(np.ascontiguousarray(excess, dtype=np.float32))[:, None]  # (n, 1, h, w)
    ph, pw = min(patch, t.shape[2]), min(patch, t.shape[3])
    return F.avg_pool2d(t, (ph, pw), 1).amax((1, 2, 3)).double().numpy()


def smooth_in_videos(x: np.ndarray, videos: np.ndarray, sigma: float) -> np.ndarray:
    """Each video's per-frame scores convolved with a Gaussian of `sigma` frames (edges repeat the end frame).

    An anomaly lasts tens of frames while a part's frame-to-frame noise does not, so averaging over neighbouring
    frames lifts the anomalous stretch above isolated normal peaks. Offline, like Eq. 9's per-video min-max: a
    frame's score reads up to 4 sigma frames ahead. x and videos are (n,), the frames of each video in temporal
    order (as scores.npz and frame_scores.parquet hold them); videos never mix. sigma 0 returns x unchanged.
    """
    from scipy.ndimage import gaussian_filter1d

    x = np.asarray(x, dtype=np.float64)
    if sigma == 0:
        return x
    videos = np.asarray(videos)
    out = np.empty_like(x)
    for v in np.unique(videos):
        rows = videos == v
        out[rows] = gaussian_filter1d(x[rows], sigma, mode="nearest")
    return out


class Scores(NamedTuple):
    """Eq. 9's total score and its normalised parts, all (n_frames,); l and local are None when absent."""

    score: np.ndarray
    r: np.ndarray
    l: np.ndarray | None
    local: np.ndarray | None = None


def anomaly_score(
    r: np.ndarray, l: np.ndarray | None, videos: np.ndarray, cfg: ScoreConfig, local: np.ndarray | None = None
) -> Scores:
    """Eq. 9: S = norm(R) + lambda_L norm(L) [+ lambda_local norm(local)], norm = min-max per video
    (cfg.normalise="video") or over the test set ("global"), each part first smoothed within its video when
    cfg.smooth > 0 (`smooth_in_videos`; the returned parts are the smoothed, normalised ones).

    r, l, local: raw per-frame R (Eq. 7, from `frames_from_windows`), L (Eq. 8) and local L (`local_nll`,
    combined over the flows by Eq. 8) over the test set; videos: the video id of each frame. With l None (no
    flows), S = norm(R); the local term enters only when given and cfg.lambda_local > 0.
    """
    groups = videos if cfg.normalise == "video" else None

    def norm(part: np.ndarray) -> np.ndarray:
        return minmax(smooth_in_videos(part, videos, cfg.smooth), groups)

    r_n = norm(r)
    if l is None:
        return Scores(r_n, r_n, None)
    l_n = norm(l)
    score = r_n + cfg.lambda_L * l_n
    local_n = None if local is None else norm(local)
    if local_n is not None and cfg.lambda_local > 0:
        score = score + cfg.lambda_local * local_n
    return Scores(score, r_n, l_n, local_n)


PARTS = ("r", "l", "local")  # Eq. 9's parts as `Scores` names them; trial.json has each one's AUCs (r_auc_micro, ...)
PART_COLUMNS = {"r": "score_r", "l": "score_l", "local": "score_l_local"}  # their raw values in frame_scores.parquet


def raw_parts(cfg: ScoreConfig, scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | None]:
    """{part: raw per-frame values or None} from a score stage's columns (scores.npz): R as scored; L, Eq. 8 over
    the flows the trial has (a flow it lacks has an all-NaN NLL column); local L, `local_nll` of the excess maps
    of `cfg.local_paths` (those it has), Eq. 8 over them."""
    nll = {p: None if np.isnan(scores[f"nll_{p}"]).all() else scores[f"nll_{p}"] for p in ("app", "mot")}
    excess = {p: scores[f"excess_{p}"] for p in cfg.local_paths if f"excess_{p}" in scores}
    local = combine_nll(*(local_nll(excess[p], cfg.local_patch) if p in excess else None for p in ("app", "mot")))
    return {"r": scores["r"], "l": combine_nll(nll["app"], nll["mot"]), "local": local}


def column_parts(columns: Mapping[str, Any]) -> dict[str, np.ndarray | None]:
    """{part: raw values or None} of frame columns named as `PART_COLUMNS` (None or all-NaN: a part the trial lacks)."""
    out: dict[str, np.ndarray | None] = {}
    for part, name in PART_COLUMNS.items():
        values = None if columns.get(name) is None else np.asarray(columns[name], np.float64)  # None in a list: NaN
        out[part] = None if values is None or np.isnan(values).all() else values
    return out


def trial_scores(cfg: ScoreConfig, columns: Mapping[str, Any], normalise: str | None = None) -> Scores:
    """A trial's Eq. 9 score and normalised parts (`anomaly_score`) from its whole score config and its frame
    columns: `video` and the raw parts named as `PART_COLUMNS` (frame_scores.parquet's; see `column_parts`).

    normalise: in place of cfg.normalise ("video", "global"): each AUC protocol sets its own. The pipeline's final
    score and AUCs and every section of a sweep's report take a trial's score from here, so with smoothing, the
    local term or any later term they cannot disagree.
    """
    parts = column_parts(columns)
    cfg = cfg if normalise is None else replace(cfg, normalise=normalise)
    return anomaly_score(parts["r"], parts["l"], np.asarray(columns["video"]), cfg, parts["local"])
