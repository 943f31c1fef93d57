"""One trial: shards -> ITAE (step 1) -> flows on the frozen ITAE's latents (step 2) -> scores -> AUC.

Each stage is a function of its config slice and the keys of the stages it reads, cached by `StageStore`,
so trials that share a stage reuse it and a trial that only changes `score.lambda_L` re-scores nothing but
Eq. 8-9. This is the unit every sweep trial runs, and the reproduction command of any sweep trial:

    python -m vadcore run --benchmark synthetic --profile smoke --out runs/t1
    python -m vadcore run --benchmark ped2 --data-root ../shared/data --profile smoke --out runs/t2
"""
from __future__ import annotations

import json
import os
import platform
import random
import resource
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vadcore import atomic, baselines
from vadcore.config import TrialConfig, resolve_config
from vadcore.configtools import to_dict
from vadcore.data import DEV, SPLITS, Benchmark, get_benchmark, scene_holdout
from vadcore.data.devsplit import kind_masks
from vadcore.data.loader import ClipDataset, clip_batches, iter_shard, load_manifest
from vadcore.data.shards import ShardSpec, ensure_shards
from vadcore.errors import DataError
from vadcore.evaluate import frame_auc_report, group_reports, homogeneous_report, per_group_auc
from vadcore.models.glow import Glow, bits_per_dim, nll_map, nll_per_dim
from vadcore.models.hgad_prior import build_prior
from vadcore.models.itae import ITAE, pool_channels
from vadcore.models.losses import reconstruction_loss
from vadcore.progress import progress_bar
from vadcore.scoring import combine_nll, frames_from_windows, local_nll, mog2_foreground, recon_error
from vadcore.stages import StageRecord, StageStore
from vadcore.train import Launch, autocast_dtype, describe_run, device, fit, in_process, inference_autocast, steps_in, world

Report = Callable[[dict[str, Any]], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_videos(manifest: dict[str, Any], fraction: float, seed: int, holdout: frozenset[str] = frozenset()) -> tuple[set[str], set[str]]:
    """(train, validation) normal training videos, split by video.

    The validation videos are `holdout` when it is not empty: a benchmark's `dev_holdout`, the training videos
    its development split is made from, so that no stage trains on them and they are what selects each
    stage's checkpoint. Otherwise a seeded `fraction` of the videos, at least one of each side if possible.
    """
    videos = sorted(manifest["per_video"])
    if holdout:
        unknown = sorted(holdout - set(videos))
        if unknown:
            raise DataError(f"dev holdout video(s) {', '.join(unknown)} are not training videos of these shards "
                            f"({len(videos)} videos: {', '.join(videos[:8])}{', ...' if len(videos) > 8 else ''})")
        if len(holdout) == len(videos):
            raise DataError(f"the dev holdout holds out all {len(videos)} training videos: none is left to train on")
        return set(videos) - holdout, set(holdout)
    n_val = min(len(videos) - 1, max(1 if fraction > 0 else 0, round(fraction * len(videos))))
    val = set(random.Random(seed).sample(videos, n_val)) if n_val > 0 else set()
    return set(videos) - val, val


def window_loader(folder: Path, cfg: TrialConfig, *, train: bool, batch: int, videos: set[str] | None = None, epoch: int = 0, stride: int | None = None):
    """(dataset, one pass of its batches): windows of the training split (shuffled, train=True, cut to
    `itae_train.crop` when set) or whole and in order (train=False: every frame covered). ceil(windows / batch)
    batches whatever `data.loader_workers` is."""
    stride = stride or (cfg.data.train_stride if train else cfg.data.test_stride)
    crop = tuple(cfg.itae_train.crop) if train and cfg.itae_train.crop else None
    ds = ClipDataset(folder, cfg.itae.frames, stride, train=train, seed=cfg.seed, videos=videos, crop=crop)
    ds.set_epoch(epoch)
    return ds, clip_batches(ds, batch, cfg.data.loader_workers)


def clip_to_float(clip: torch.Tensor, dev: torch.device) -> torch.Tensor:
    return clip.to(dev, non_blocking=True).float().div_(255.0)  # uint8 (B, C, T, H, W) -> float in [0, 1]


def run_itae(cfg: TrialConfig, itae: ITAE, x: torch.Tensor):
    """An inference pass of the ITAE (validation, flow features, scoring) in the precision it trained in
    (`inference_autocast`); callers cast what they keep to float32."""
    with inference_autocast(cfg.deepspeed):
        return itae(x)


# ----------------------------------------------------------------------------------------------- step 1


def build_itae(cfg: TrialConfig, train_folder: Path, out: Path, report: Report | None, show: bool, holdout: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Train the ITAE on the training videos less the validation ones (`split_videos`: the benchmark's dev
    holdout, else a seeded share), which select the epoch saved. The flows reuse this split (info's videos)."""
    seed_everything(cfg.seed)
    manifest = load_manifest(train_folder)
    fit_videos, val_videos = split_videos(manifest, cfg.itae_train.val_fraction, cfg.seed, holdout)
    model = ITAE(cfg.itae)
    dev = device()
    ds, _ = window_loader(train_folder, cfg, train=True, batch=cfg.itae_train.batch_size, videos=fit_videos)
    steps = steps_in(ds.num_windows(), cfg.itae_train.batch_size, cfg.itae_train.max_steps)

    def loss_fn(engine, batch, _progress):
        x = clip_to_float(batch["clip"], dev)
        out = engine(x)  # under autocast (gpu-bf16) the reconstruction is bf16: the loss is taken in fp32
        return reconstruction_loss(x, out.recon.float(), cfg.loss)

    def validate(module) -> float:
        _, loader = window_loader(train_folder, cfg, train=False, batch=cfg.itae_train.batch_size, videos=val_videos, stride=cfg.data.train_stride)
        losses = [reconstruction_loss(x := clip_to_float(b["clip"], dev), run_itae(cfg, module, x).recon.float(), cfg.loss)[0].item() for b in loader]
        return float(np.mean(losses))

    with progress_bar("step 1: ITAE", steps * cfg.itae_train.epochs, enabled=show and world()[0] == 0) as advance:
        result = fit(
            model,
            loss_fn,
            lambda epoch: window_loader(train_folder, cfg, train=True, batch=cfg.itae_train.batch_size, videos=fit_videos, epoch=epoch)[1],
            steps,
            cfg.itae_train,
            cfg.deepspeed,
            validate=validate if val_videos else None,
            report=(lambda r: report({"stage": "itae", **r})) if report else None,
            progress=advance,
        )
    if world()[0] == 0:
        torch.save(model.state_dict(), out / "itae.pt")
    return {"history": result.history, "steps": result.steps, **result.selection(), "fit_videos": sorted(fit_videos), "val_videos": sorted(val_videos),
            **describe_run(cfg.deepspeed)}


def load_itae(cfg: TrialConfig, stage: Path) -> ITAE:
    model = ITAE(cfg.itae)
    model.load_state_dict(torch.load(stage / "itae.pt", map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False).to(device())


# ----------------------------------------------------------------------------------------------- step 2


def flow_input(cfg: TrialConfig, x: torch.Tensor, out, path: str) -> torch.Tensor:
    """Flow input for one path: channel max+mean of its latent (2t, h, w), plus Table 4's extra input for F_app.

    intensity: the appearance frames' intensity resized to (h, w); error_map: |x - recon| at those frames.
    """
    if path == "mot":
        return pool_channels(out.mot)  # (B, Cm, T, h, w) -> (B, 2T, h, w)
    feats = pool_channels(out.app)  # (B, Ca, T/tau, h, w) -> (B, 2T/tau, h, w)
    if cfg.flow.extra_input == "none":
        return feats
    frames = x if cfg.flow.extra_input == "intensity" else (x - out.recon).abs()
    frames = frames[:, :, :: cfg.itae.tau].mean(1)  # (B, C, T/tau, H, W) -> (B, T/tau, H, W)
    extra = F.adaptive_avg_pool2d(frames, feats.shape[-2:])  # (B, T/tau, h, w)
    return torch.cat([feats, extra], dim=1)


class FeatureFile:
    """Flow inputs of N windows, float32 (N, c, h, w), in a file: indexed like a tensor, read a batch at a time.

    Why a file: ShanghaiTech's training windows at paper size have ~32 GB of flow inputs; held in RAM (and
    concatenated) they were the flow stage's peak memory. Rows are read with pread, not mmap, so what was read
    stays in the OS page cache, not in this process's resident set: memory does not grow with N.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path, self.shape = path, tuple(shape)
        self.row_bytes = int(np.prod(self.shape[1:])) * 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows with the given indices (1-D integer tensor), in that order: (len(rows), c, h, w)."""
        out = np.empty((len(rows), *self.shape[1:]), np.float32)
        with open(self.path, "rb", buffering=0) as f:
            for k, i in enumerate(rows.tolist()):
                os.preadv(f.fileno(), [out[k]], i * self.row_bytes)
        return torch.from_numpy(out)

    def split(self, size: int) -> Iterator[torch.Tensor]:
        """Consecutive batches of at most `size` rows, as `Tensor.split` gives them."""
        for start in range(0, len(self), size):
            rows = min(size, len(self) - start)
            block = np.fromfile(self.path, np.float32, rows * self.row_bytes // 4, offset=start * self.row_bytes)
            yield torch.from_numpy(block.reshape(rows, *self.shape[1:]))


@torch.no_grad()
def extract_features(cfg: TrialConfig, itae: ITAE, folder: Path, path: str, videos: set[str], scenes: list[str], file: Path) -> tuple[FeatureFile, torch.Tensor]:
    """(features (N, c, h, w) written to `file`, scene index (N,)) of every training window of `videos`, in
    loader order. Written batch by batch: memory holds one batch of features, whatever N."""
    dev = device()
    _, batches = window_loader(folder, cfg, train=False, batch=32, videos=videos, stride=cfg.data.train_stride)
    ys = []
    with open(file, "wb") as f:
        for b in batches:
            x = clip_to_float(b["clip"], dev)
            feats = flow_input(cfg, x, run_itae(cfg, itae, x), path).float().cpu().numpy()  # (B, c, h, w)
            feats.tofile(f)
            ys.append(torch.tensor([scenes.index(s) for s in b["scene"]]))
            shape = feats.shape[1:]
            del b, x, feats  # alive beside the next batch, they fragment the heap: +170 MB peak RSS, measured
    y = torch.cat(ys)
    return FeatureFile(file, (len(y), *shape)), y


def random_crops(x: torch.Tensor, size: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Each map of x (N, c, h, w) cut to a size = (h', w') region at a place of its own drawn from `gen`, (N, c, h', w');
    x itself when size is () (`flow.train.crop` unset)."""
    if not size:
        return x
    fh, fw = size
    tops = torch.randint(0, x.shape[2] - fh + 1, (len(x),), generator=gen).tolist()
    lefts = torch.randint(0, x.shape[3] - fw + 1, (len(x),), generator=gen).tolist()
    return torch.stack([m[:, t : t + fh, l : l + fw] for m, t, l in zip(x, tops, lefts)])


class FlowModel(nn.Module):
    """Glow + its prior as one module, so one DeepSpeed engine optimises both."""

    def __init__(self, cfg: TrialConfig, channels: int, h: int, w: int, num_classes: int):
        super().__init__()
        self.glow = Glow(cfg.flow.glow, channels, h, w)
        self.prior = build_prior(cfg.flow.prior, self.glow.top_shape, num_classes)

    def forward(self, x):
        return self.glow(x)

    @property
    def has_map(self) -> bool:
        """Whether the prior factorises over positions (N(0, I), per-position HGAD), so the flow has a
        per-position NLL map; the same as ``cfg.flow.prior.per_position``."""
        return hasattr(self.prior, "log_prob_map")

    def bits_per_dim(self, x: torch.Tensor, with_map: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """NLL of each input in bits/dim, (B,), and with_map: its per-position map (B, H_top, W_top), else None.

        The map's mean is the NLL (`vadcore.models.glow.nll_map`); both come from one forward pass.
        """
        out = self.glow(x)
        whole = bits_per_dim(nll_per_dim(out, self.prior, self.glow.input_dim))
        return whole, bits_per_dim(nll_map(out, self.prior, self.glow.input_dim)) if with_map else None


def build_flow(cfg: TrialConfig, path: str, itae_stage: StageRecord, train_folder: Path, out: Path, report: Report | None, show: bool) -> dict[str, Any]:
    """Train one flow on the frozen ITAE's features of the training windows, kept in files under `out` for the
    build (`FeatureFile`) and deleted before it ends: the stage's files are flow.pt and the NLL map means;
    its info has the NLL percentile of its normal training windows (`normal_nll_percentile`)."""
    seed_everything(cfg.seed)
    itae = load_itae(cfg, itae_stage.path)
    scenes = sorted({v["scene"] for v in load_manifest(train_folder)["per_video"].values()})
    fit_videos, val_videos = set(itae_stage.info["fit_videos"]), set(itae_stage.info["val_videos"])
    with tempfile.TemporaryDirectory(prefix=".features-", dir=out) as tmp:
        x_fit, y_fit = extract_features(cfg, itae, train_folder, path, fit_videos, scenes, Path(tmp) / "fit.f32")
        x_val, y_val = extract_features(cfg, itae, train_folder, path, val_videos, scenes, Path(tmp) / "val.f32") if val_videos else (None, None)
        c, h, w = x_fit.shape[1:]
        step = cfg.flow.train
        dev = device()
        model = FlowModel(cfg, c, h, w, len(scenes)).to(dev)  # on the engine's device before its first batch
        gen = torch.Generator().manual_seed(cfg.seed)
        with torch.no_grad():  # ActNorm's data-dependent init on a first batch, before the engine copies weights
            model.glow(random_crops(x_fit[torch.randperm(len(x_fit))[: max(step.batch_size, 64)]], step.crop, gen).to(dev))
        steps = steps_in(len(x_fit), step.batch_size, step.max_steps)

        def batches(epoch: int):
            for idx in torch.randperm(len(x_fit), generator=gen).split(step.batch_size):
                yield random_crops(x_fit[idx], step.crop, gen), y_fit[idx]

        def loss_fn(engine, batch, progress):
            xb, yb = (t.to(dev) for t in batch)
            out = engine(xb)
            return engine.module.prior.loss(out.z, out.logdet + out.split_logp, yb, progress)

        def validate(module) -> float:
            return float(torch.cat([module.bits_per_dim(xb.to(dev))[0] for xb in x_val.split(256)]).mean())

        with progress_bar(f"step 2: flow {path}", steps * step.epochs, enabled=show and world()[0] == 0) as advance:
            result = fit(
                model, loss_fn, batches, steps, step, cfg.deepspeed,
                validate=validate if x_val is not None else None,
                report=(lambda r: report({"stage": f"flow_{path}", **r})) if report else None,
                fp32=True, progress=advance,
            )
        normal = {}  # rank 0's: the launcher returns its info
        if world()[0] == 0:
            torch.save(model.state_dict(), out / "flow.pt")
            # normal statistics from the windows trained on: the validation videos are a benchmark's dev holdout,
            # whose normal copies the dev split scores; only a scene no fit video shows takes them in
            unseen = x_val is not None and bool(set(range(len(scenes))) - set(y_fit.tolist()))
            nll, maps, y = training_nll(model.eval(), [(x_fit, y_fit)] + ([(x_val, y_val)] if unseen else []))
            if maps is not None:
                np.save(out / NLL_MAP_MEAN, scene_mean_maps(maps, y, len(scenes)))
            normal = {"train_nll_p95": normal_nll_percentile(nll, y, scenes)}
    return {**normal, "history": result.history, "steps": result.steps, **result.selection(), "input_shape": [c, h, w], "scenes": scenes,
            **describe_run(cfg.deepspeed, fp32=True)}


NLL_MAP_MEAN = "nll_map_mean.npy"  # in a flow stage: (scenes, H_top, W_top) mean NLL map of its training windows
NORMAL_PERCENTILE = 95  # the top of a flow's "normal region": this percentile of its training windows' NLL


@torch.no_grad()
def training_nll(model: FlowModel, parts: list[tuple[FeatureFile | torch.Tensor, torch.Tensor]]) -> tuple[np.ndarray, torch.Tensor | None, torch.Tensor]:
    """(NLL (N,) in bits/dim, NLL maps (N, H_top, W_top) or None if the prior has none, scene index (N,)) of
    the normal training windows after training, one forward pass per 256 windows.

    parts: (features, scene index) pairs: the fit windows (and the validation ones of a scene no fit video shows).
    """
    pairs = [model.bits_per_dim(xb.to(device()), with_map=model.has_map) for x, _ in parts for xb in x.split(256)]
    nll = torch.cat([whole.cpu() for whole, _ in pairs]).numpy()
    maps = torch.cat([m.cpu() for _, m in pairs]) if model.has_map else None
    return nll, maps, torch.cat([y for _, y in parts])


def scene_mean_maps(maps: torch.Tensor, y: torch.Tensor, num_scenes: int) -> np.ndarray:
    """Mean per-position NLL map (bits/dim) of the normal training windows of each scene, (S, H_top, W_top).

    `local_nll` subtracts it, so positions where normal frames are always hard to model (a busy walkway, a
    scene border) do not look anomalous. Every training scene has windows, so no mean is empty.
    """
    return np.stack([maps[y == k].mean(0).numpy() for k in range(num_scenes)]).astype(np.float32)


def normal_nll_percentile(nll: np.ndarray, y: torch.Tensor, scenes: list[str]) -> dict[str, Any]:
    """{"all": p, "per_scene": {scene: p}}: the NORMAL_PERCENTILE-th percentile of the training windows' NLL
    (bits/dim), overall and per scene, the thresholds of the homogeneous-mapping check (`homogeneous_report`)."""
    y = y.numpy()
    return {"all": float(np.percentile(nll, NORMAL_PERCENTILE)),
            "per_scene": {s: float(np.percentile(nll[y == k], NORMAL_PERCENTILE)) for k, s in enumerate(scenes)}}


def load_flow(cfg: TrialConfig, stage: StageRecord) -> FlowModel:
    c, h, w = stage.info["input_shape"]
    model = FlowModel(cfg, c, h, w, len(stage.info["scenes"]))
    model.load_state_dict(torch.load(stage.path / "flow.pt", map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False).to(device())


# ----------------------------------------------------------------------------------------------- scoring


def _foreground_masks(test_folder: Path) -> dict[str, np.ndarray]:
    """MOG2 foreground per test video, run over each whole video in order (ShanghaiTech option)."""
    frames: dict[str, list[np.ndarray]] = {}
    folder = Path(test_folder)
    for entry in load_manifest(folder)["shards"]:
        for chunk in iter_shard(folder, entry):
            frames.setdefault(chunk.video, []).append(chunk.frames)
    return {v: mog2_foreground(np.concatenate(f)[..., 0] if f[0].shape[-1] == 1 else np.concatenate(f)) for v, f in frames.items()}


@torch.no_grad()
def build_scores(cfg: TrialConfig, itae_stage: StageRecord, flows: dict[str, StageRecord], test_folder: Path, out: Path, show: bool) -> dict[str, Any]:
    """Per-frame R (Eq. 7), NLLs in bits/dim and excess NLL maps, each averaged over the windows containing the frame.

    The excess map of a flow (`local_nll`'s input) is its per-position NLL map minus the mean map of the
    normal training windows of the frame's scene; flows whose prior has no map (whole-latent HGAD) have none.
    Per test window, for the homogeneous-mapping check (`homogeneous_report`): `win_label` (1 if any of its
    frames is anomalous), `win_scene`, each flow's `win_nll_{p}` and `win_train_p95_{p}` (the NLL percentile
    of the flow's training windows of that scene, nan for a scene without any), and `train_p95_{p}` (that of
    all its training windows).
    """
    itae = load_itae(cfg, itae_stage.path)
    flow_models = {p: load_flow(cfg, s) for p, s in flows.items()}
    mapped = [p for p, m in flow_models.items() if m.has_map]
    manifest = load_manifest(test_folder)
    masks = _foreground_masks(test_folder) if cfg.score.background == "mog2" else None
    dev = device()
    ds, loader = window_loader(test_folder, cfg, train=False, batch=16)
    per_video: dict[str, dict[str, list]] = {}
    with progress_bar("scoring test windows", ds.num_windows(), enabled=show) as advance:
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
            advance(len(b["video"]))
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


# ----------------------------------------------------------------------------------------------- evaluation


def evaluate(cfg: TrialConfig, scores: dict[str, np.ndarray], kinds: dict[str, np.ndarray] | None) -> tuple[dict[str, Any], np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Eq. 8-9 and the AUC protocols, and each flow's homogeneous-mapping fraction (`homogeneous_report`:
    metrics["homogeneous"][path] and the flat homogeneous_app, homogeneous_mot). Returns (metrics, final
    per-frame score, L, local L)."""
    from sklearn.metrics import roc_auc_score

    from vadcore.scoring import anomaly_score

    labels, videos = scores["label"].astype(int), scores["video"]
    nll_app = None if np.isnan(scores["nll_app"]).all() else scores["nll_app"]
    nll_mot = None if np.isnan(scores["nll_mot"]).all() else scores["nll_mot"]
    l = combine_nll(nll_app, nll_mot)
    excess = {p: scores[f"excess_{p}"] for p in cfg.score.local_paths if f"excess_{p}" in scores}
    local = combine_nll(*(local_nll(excess[p], cfg.score.local_patch) if p in excess else None for p in ("app", "mot")))
    metrics: dict[str, Any] = frame_auc_report(labels, videos, scores["r"], l, cfg.score, local)
    final = anomaly_score(scores["r"], l, videos, cfg.score, local).score  # normalised as cfg.score.normalise says
    metrics["auc"] = metrics["auc_micro_global"] if cfg.score.normalise == "global" else metrics["auc_micro"]
    scenes = scores["scene"]
    if len(set(scenes)) > 1:
        metrics["per_scene_auc"] = per_group_auc(labels, scenes, final)
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
    metrics["protocol"] = {
        "auc_micro": "all test frames concatenated, Eq. 9 min-max within each video (the paper's protocol)",
        "auc_micro_global": "min-max over the whole test set: no per-video test statistics",
        "auc_macro": "mean of per-video AUCs, one-class videos excluded",
        "lambda_from_test_set": nll_app is not None and nll_mot is not None,  # Eq. 8's lambda_i use test NLL ranges
        "dropped_frames": 0,
    }
    return metrics, final, l, local


# ----------------------------------------------------------------------------------------------- the trial


def evaluate_stage(cfg: TrialConfig, bench, stage: StageRecord):
    """(metrics, scores, final score, L, local L) of one scored split (a score stage's scores.npz)."""
    with np.load(stage.path / "scores.npz") as z:
        scores = {k: z[k] for k in z.files}
    kinds = None
    if hasattr(bench, "anomaly_kinds"):
        kinds = {v: bench.anomaly_kinds(v) for v in sorted(set(scores["video"]))}
    metrics, final, l, local = evaluate(cfg, scores, kinds)
    return metrics, scores, final, l, local


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "deepspeed", "ray", "vad-sweeps", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def stage_slices(cfg: TrialConfig, shard_keys: dict[str, str], store: StageStore, holdout: frozenset[str], bench: Benchmark) -> dict[str, dict[str, Any]]:
    """The config slice of every cached stage, upstream keys included: what a stage's output depends on.

    The single source of truth for stage identity: `run_trial` builds with it, `python -m sweeps show`
    plans with it (shard_keys: the shard folders' names, which hash the shard spec and the source files;
    holdout: the benchmark's `dev_holdout`, the ITAE's validation videos when not empty; bench: whose source
    files the native floors read).
    """
    c = to_dict(cfg)
    # fields added since the first stages were cached enter a slice only when set, so those stages keep their keys
    inference = {"inference": dtype} if (dtype := autocast_dtype(cfg.deepspeed)) else {}  # the ITAE's passes (run_itae)
    itae = {"shards": shard_keys["train"], "itae": cfg.itae.built_fields(), "loss": c["loss"], "train": _step(c["itae_train"]), "train_stride": cfg.data.train_stride, "seed": cfg.seed, "deepspeed": cfg.deepspeed,
            "holdout": sorted(holdout), **inference}
    slices = {"itae": itae}
    itae_key = store.key("itae", itae)
    flow_keys = {}
    for path in ("app", "mot"):
        if getattr(cfg.flow, path):
            flow = {"itae": itae_key, "glow": c["flow"]["glow"], "prior": c["flow"]["prior"], "train": _step(c["flow"]["train"]), "seed": cfg.seed, **inference}
            if path == "app":
                flow["extra_input"] = cfg.flow.extra_input
            slices[f"flow_{path}"] = flow
            flow_keys[path] = store.key(f"flow_{path}", flow)
    slices["score"] = {"itae": itae_key, "flows": flow_keys, "shards": shard_keys["test"], "patch": cfg.score.patch, "background": cfg.score.background, "test_stride": cfg.data.test_stride,
                       **({"patch_stride": cfg.score.patch_stride} if cfg.score.patch_stride else {}), **inference}
    if DEV in shard_keys:  # the development split, scored exactly as the test split
        slices["score_dev"] = {**slices["score"], "shards": shard_keys[DEV]}
    for name, split in (("baselines", "test"), ("baselines_dev", DEV)):  # model-free floors: the shard folder alone
        if split in shard_keys:
            slices[name] = {"shards": shard_keys[split]}
            slices[f"native_{name}"] = baselines.native_slice(bench, split)  # and at the benchmark's own size
    return slices


def _step(step: dict[str, Any]) -> dict[str, Any]:
    """A StepConfig's fields in a stage slice: `crop` only when set (see `stage_slices`)."""
    return {k: v for k, v in step.items() if k != "crop" or v}


def trial_splits(cfg: TrialConfig) -> tuple[str, ...]:
    """The shard sets a trial reads: training, test, and the development split when `data.dev` asks for it."""
    return (*SPLITS, DEV) if cfg.data.dev else SPLITS


def trial_floors(cfg: TrialConfig, bench: Benchmark, store: StageStore, slices: dict[str, dict[str, Any]], folders: dict[str, Path],
                 record: Callable[[StageRecord, float], None], show: bool) -> dict[str, Any]:
    """`vadcore.baselines`' AUCs to set beside the variants', smoothed as the trial's score is: {"baselines",
    "dev_baselines": {floor: {auc_micro, ...}}, "dev_kinds_baselines": {kind: {floor: ...}}}. The shard floors are
    one build per split and resolution, the native ones one per split, each reused by every trial; the native
    ones are read on the videos this trial scores (a scene subset's)."""
    floors: dict[str, Any] = {}
    for name, split, key in (("baselines", "test", "baselines"), ("baselines_dev", DEV, "dev_baselines")):
        if name not in slices:
            continue
        parts = []
        for stage, build in ((name, partial(baselines.build_stage, folders[split])),
                             (f"native_{name}", partial(baselines.build_native_stage, bench.videos(split), show=show))):
            t0 = time.perf_counter()
            rec = store.get_or_build(stage, slices[stage], build, files=(baselines.SCORES_FILE,))
            record(rec, time.perf_counter() - t0)
            with np.load(rec.path / baselines.SCORES_FILE) as z:
                parts.append({k: z[k] for k in z.files})
        shard, native = parts
        mine = np.isin(native["video"], list(load_manifest(folders[split])["per_video"]))
        native = {k: v[mine] for k, v in native.items()}
        floors[key] = {**baselines.baseline_aucs(shard, cfg.score.smooth), **baselines.baseline_aucs(native, cfg.score.smooth)}
        if split == DEV and (kinds := kind_masks(shard["video"])):  # how hard each kind's copies are without a model
            by_kind = [baselines.group_aucs(part, kind_masks(part["video"]), cfg.score.smooth) for part in (shard, native)]
            floors["dev_kinds_baselines"] = {kind: {**by_kind[0][kind], **by_kind[1].get(kind, {})} for kind in kinds}
    return floors


TRAINING_FIELDS = ("world_size", "device", "precision", "deepspeed", "kept_epoch", "epochs_run", "stopped_early", "selected_by")  # trial.json's `training`


def run_trial(cfg: TrialConfig, data_root: str | Path | None, cache_root: Path, out_dir: Path, *, show: bool = True, report: Report | None = None,
              launch: Launch = in_process, stage_root: Path | None = None) -> dict[str, Any]:
    """Run (or reuse) every stage of one trial; write trial.json and frame_scores.parquet to out_dir.

    launch runs each stage's build: here (a world of one), or on the ranks a launcher starts (Ray Train in
    sweeps); training stages use all its ranks, scoring one. The stage lock and rename stay in this process.
    stage_root: where the stages live, if not in cache_root (shards always do): a folder of one's own trains everything.
    """
    t_start = time.perf_counter()
    bench = get_benchmark(cfg.data.benchmark, data_root)
    store = StageStore(stage_root or cache_root)
    stages: dict[str, dict[str, Any]] = {}

    def record(rec: StageRecord, own_seconds: float) -> None:
        stages[rec.name] = {"key": rec.key, "status": rec.status, "seconds": round(own_seconds, 3), "build_seconds": rec.seconds}
        if rec.rebuilt:
            stages[rec.name]["rebuilt_because"] = rec.rebuilt
        if rec.status == "reused" and report is not None:  # the same per-epoch stream as if trained here, so a
            for epoch in rec.info.get("history", []):  # scheduler compares a reusing trial on the same numbers
                report({"stage": rec.name, "replayed": True, **epoch})

    folders = {}
    for split in trial_splits(cfg):
        t0 = time.perf_counter()
        spec = ShardSpec(cfg.data.benchmark, split, cfg.data.height, cfg.data.width, cfg.data.channels, cfg.data.scenes)
        folders[split], written = ensure_shards(bench, spec, cache_root, show_progress=show)
        stages[f"shards_{split}"] = {"key": folders[split].name, "status": "trained" if written else "reused", "seconds": round(time.perf_counter() - t0, 3)}

    holdout = scene_holdout(bench, cfg.data.scenes)
    slices = stage_slices(cfg, {split: f.name for split, f in folders.items()}, store, holdout, bench)
    t0 = time.perf_counter()
    itae_stage = store.get_or_build("itae", slices["itae"], lambda out: launch(partial(build_itae, cfg, folders["train"], out, show=show, holdout=holdout), report, out),
                                    files=("itae.pt",))
    record(itae_stage, time.perf_counter() - t0)

    flows: dict[str, StageRecord] = {}
    for path in ("app", "mot"):
        if f"flow_{path}" in slices:
            t0 = time.perf_counter()
            build = lambda out, p=path: launch(partial(build_flow, cfg, p, itae_stage, folders["train"], out, show=show), report, out)  # noqa: E731
            flows[path] = store.get_or_build(f"flow_{path}", slices[f"flow_{path}"], build, files=("flow.pt",), inputs=(itae_stage,))
            record(flows[path], time.perf_counter() - t0)

    scored = {}
    for name, split in (("score", "test"), ("score_dev", DEV)):
        if name in slices:
            t0 = time.perf_counter()
            build = lambda out, s=split: launch(lambda _report: build_scores(cfg, itae_stage, flows, folders[s], out, show), None, out, ranks=1)  # noqa: E731
            scored[name] = store.get_or_build(name, slices[name], build, files=("scores.npz",), inputs=(itae_stage, *flows.values()))
            record(scored[name], time.perf_counter() - t0)

    floors = trial_floors(cfg, bench, store, slices, folders, record, show)

    t0 = time.perf_counter()
    metrics, scores, final, l, local = evaluate_stage(cfg, bench, scored["score"])
    if "score_dev" in scored:  # dev_auc, dev_auc_micro, ...: the numbers a search may choose settings by
        dev_metrics, dev, _, dev_l, dev_local = evaluate_stage(cfg, bench, scored["score_dev"])
        metrics.update({f"dev_{k}": v for k, v in dev_metrics.items() if isinstance(v, (int, float))})
        if kinds := kind_masks(dev["video"]):  # a dev split made from training videos: each pseudo-anomaly kind alone
            metrics["dev_kinds"] = group_reports(kinds, dev["label"].astype(int), dev["video"], dev["r"], dev_l, cfg.score, dev_local)
    metrics.update(floors)  # baselines, dev_baselines: {frame_difference, position, flow_magnitude, ...: {auc_micro, ...}}
    for prefix in ("", "dev_"):  # in words, for every table that shows the trial: "" when it beats every floor
        if f"{prefix}baselines" in floors:
            own = {p: metrics.get(f"{prefix}{p}") for p in baselines.AUCS}
            metrics[f"{prefix}below_floor"] = "; ".join(baselines.below_floor(own, floors[f"{prefix}baselines"]))
    stages["evaluate"] = {"key": None, "status": "computed", "seconds": round(time.perf_counter() - t0, 3)}

    trial = {
        "config": to_dict(cfg),
        "metrics": metrics,
        "stages": stages,
        "seconds": round(time.perf_counter() - t_start, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "versions": versions(),
        "seed": cfg.seed,
        "history": {name: rec.info.get("history", []) for name, rec in [("itae", itae_stage), *((f"flow_{p}", s) for p, s in flows.items())]},
        "training": {name: {k: rec.info.get(k) for k in TRAINING_FIELDS}  # as each stage was trained, and which epoch it kept
                     for name, rec in [("itae", itae_stage), *((f"flow_{p}", s) for p, s in flows.items())]},
    }
    write_outputs(out_dir, trial, scores, final, l, local)
    return trial


def write_outputs(out_dir: Path, trial: dict[str, Any], scores: dict[str, np.ndarray], final: np.ndarray, l: np.ndarray | None, local: np.ndarray | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "video": scores["video"].astype(str),
            "frame": scores["frame"].astype(np.int32),
            "label": scores["label"].astype(np.int8),
            "scene": scores["scene"].astype(str),
            "score_r": scores["r"],
            "score_nll_app": scores["nll_app"],
            "score_nll_mot": scores["nll_mot"],
            "score_l": l if l is not None else np.full(len(final), np.nan),
            "score_l_local": local if local is not None else np.full(len(final), np.nan),
            "score": final,
        }
    )
    tmp = out_dir / ".frame_scores.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.replace(out_dir / "frame_scores.parquet")
    atomic.write_json(out_dir / "trial.json", trial)


def run_trial_cli(args, cache_root: Path) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cfg = resolve_config(args.benchmark, args.profile, args.sets)
    trial = run_trial(cfg, args.data_root, cache_root, Path(args.out), show=not args.no_progress)
    table = Table(title=f"{cfg.data.benchmark} / {args.profile}: trial in {trial['seconds']:.1f} s")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    for name, s in trial["stages"].items():
        table.add_row(name, s["status"], f"{s['seconds']:.1f}")
    console.print(table)
    m = trial["metrics"]
    keys = [k for k in m if k.startswith(("auc", "r_auc", "l_auc", "local_auc")) and isinstance(m[k], float)]
    console.print(json.dumps({k: round(m[k], 4) for k in keys}))
    console.print(f"wrote {Path(args.out) / 'trial.json'} and frame_scores.parquet")
    return 0
