"""The score stage: one pass of the frozen ITAE and flows over a split's windows, giving per-frame R (Eq. 7), each
flow's NLL and excess NLL map, and per-window NLLs for the homogeneous-mapping check (scores.npz)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vadcore.config import TrialConfig
from vadcore.data.loader import iter_shard, load_manifest
from vadcore.errors import DataError
from vadcore.progress import Bar, progress_bar
from vadcore.scoring import frames_from_windows, mog2_foreground, recon_error
from vadcore.stages import StageRecord
from vadcore.steps.flow import NLL_MAP_MEAN, flow_input, load_flow
from vadcore.steps.itae import load_itae, run_itae
from vadcore.steps.windows import clip_to_float, window_loader
from vadcore.train import device
from vadcore.runtime import apply_runtime


def _foreground_masks(test_folder: Path) -> dict[str, np.ndarray]:
    """MOG2 foreground per test video, run over each whole video in order (ShanghaiTech option)."""
    frames: dict[str, list[np.ndarray]] = {}
    folder = Path(test_folder)
    for entry in load_manifest(folder)["shards"]:
        for chunk in iter_shard(folder, entry):
            frames.setdefault(chunk.video, []).append(chunk.frames)
    return {v: mog2_foreground(np.concatenate(f)[..., 0] if f[0].shape[-1] == 1 else np.concatenate(f)) for v, f in frames.items()}


def build_scores(cfg: TrialConfig, itae_stage: StageRecord, flows: dict[str, StageRecord], test_folder: Path, out: Path, show: bool) -> dict[str, Any]:
    """Per-frame R (Eq. 7), NLLs in bits/dim and excess NLL maps, each averaged over the windows containing the frame.

    The excess map of a flow (`local_nll`'s input) is its per-position NLL map minus the mean map of the
    normal training windows of the frame's scene; flows whose prior has no map (whole-latent HGAD) have none.
    Per test window, for the homogeneous-mapping check (`homogeneous_report`): `win_label` (1 if any of its
    frames is anomalous), `win_scene`, each flow's `win_nll_{p}` and `win_train_p95_{p}` (the NLL percentile
    of the flow's training windows of that scene, nan for a scene without any), and `train_p95_{p}` (that of
    all its training windows). One progress bar over the whole build.
    """
    split = Path(test_folder).name.split("-")[0]  # the shard folder's name starts with its split (ShardSpec.folder)
    with progress_bar(f"scoring {split} windows", None, enabled=show) as bar:
        return _score(cfg, itae_stage, flows, test_folder, out, bar)


@torch.no_grad()
def _score(cfg: TrialConfig, itae_stage: StageRecord, flows: dict[str, StageRecord], test_folder: Path, out: Path, bar: Bar) -> dict[str, Any]:
    apply_runtime(cfg.runtime)
    itae = load_itae(cfg, itae_stage.path)
    flow_models = {p: load_flow(cfg, s) for p, s in flows.items()}
    mapped = [p for p, m in flow_models.items() if m.has_map]
    manifest = load_manifest(test_folder)
    masks = _foreground_masks(test_folder) if cfg.score.background == "mog2" else None
    dev = device()
    ds, loader = window_loader(test_folder, cfg, train=False, batch=16)
    per_video: dict[str, dict[str, list]] = {}
    bar.set_total(ds.num_windows())
    for b in loader:
        x = clip_to_float(b["clip"], dev)
        rec_out = run_itae(cfg, itae, x)
        mask = None
        if masks is not None:
            mask = torch.stack([torch.from_numpy(masks[v][s : s + cfg.itae.frames]) for v, s in zip(b["video"], b["start"].tolist())])
            mask = mask[:, None].to(dev, torch.float32)  # (B, 1, T, H, W)
        r = recon_error(x, rec_out.recon.float(), cfg.score.patch, mask, cfg.score.patch_stride).cpu().numpy()
        nll = {p: m.bits_per_dim(flow_input(cfg, x, rec_out, p), p in mapped) for p, m in flow_models.items()}
        nll = {p: tuple(None if t is None else t.cpu().numpy() for t in pair) for p, pair in nll.items()}  # one copy per batch
        for i, (v, s) in enumerate(zip(b["video"], b["start"].tolist())):
            rec = per_video.setdefault(v, {"start": [], "r": [], "label": np.zeros(manifest["per_video"][v]["frames"], np.uint8), "win_label": [],
                                           **{k: [] for p in flow_models for k in (p, f"map_{p}")}})
            rec["start"].append(s)
            rec["label"][s : s + cfg.itae.frames] = b["labels"][i].numpy()
            rec["win_label"].append(int(b["labels"][i].any()))
            rec["r"].append(r[i])
            for p, (whole, nll_maps) in nll.items():
                rec[p].append(whole[i])
                if nll_maps is not None:
                    rec[f"map_{p}"].append(nll_maps[i])
        bar(len(b["video"]))
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("video", "frame", "label", "scene", "r", "nll_app", "nll_mot", *(f"excess_{p}" for p in mapped),
                                                         "win_label", "win_scene", *(f"win_{k}_{p}" for p in flow_models for k in ("nll", "train_p95")))}
    train_means = {p: (flows[p].info["scenes"], np.load(flows[p].path / NLL_MAP_MEAN)) for p in mapped}
    for v in sorted(per_video):
        n = manifest["per_video"][v]["frames"]
        rec = per_video[v]
        starts = np.array(rec["start"])
        cols["video"].append(np.full(n, v))
        cols["frame"].append(np.arange(n))
        cols["label"].append(rec["label"])
        cols["scene"].append(np.full(n, manifest["per_video"][v]["scene"]))
        cols["r"].append(frames_from_windows(n, starts, np.stack(rec["r"])))
        cols["win_label"].append(np.array(rec["win_label"], np.uint8))
        cols["win_scene"].append(np.full(len(starts), manifest["per_video"][v]["scene"]))
        for p in flow_models:
            cols[f"win_nll_{p}"].append(np.array(rec[p]))
            threshold = flows[p].info["train_nll_p95"]["per_scene"].get(manifest["per_video"][v]["scene"], np.nan)
            cols[f"win_train_p95_{p}"].append(np.full(len(starts), threshold))
        for p in ("app", "mot"):
            values = frames_from_windows(n, starts, np.array(rec[p]), cfg.itae.frames) if p in rec else np.full(n, np.nan)
            cols[f"nll_{p}"].append(values)
        for p in mapped:
            scenes, means = train_means[p]
            scene = manifest["per_video"][v]["scene"]
            if scene not in scenes:
                raise DataError(f"test video {v} is of scene {scene!r}, which has no training videos "
                                f"(training scenes: {', '.join(scenes)}): its excess NLL map needs a training mean")
            maps = np.stack(rec[f"map_{p}"])  # (N, h, w), one per window
            per_frame = np.stack([frames_from_windows(n, starts, m, cfg.itae.frames) for m in maps.reshape(len(maps), -1).T], 1)
            cols[f"excess_{p}"].append((per_frame.reshape(n, *maps.shape[1:]) - means[scenes.index(scene)]).astype(np.float32))
    overall = {f"train_p95_{p}": np.array(flows[p].info["train_nll_p95"]["all"]) for p in flow_models}
    np.savez(out / "scores.npz", **{k: np.concatenate(v) for k, v in cols.items()}, **overall)
    return {"frames": int(sum(len(a) for a in cols["frame"])), "videos": len(per_video)}
