"""Step 2: a Glow flow (with its prior) per ITAE path, trained on the frozen ITAE's pooled latents, and what the
score stage needs of its normal training windows (mean NLL maps, NLL percentiles)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vadcore.config import TrialConfig
from vadcore.data.loader import load_manifest
from vadcore.models.glow import Glow, bits_per_dim, nll_map, nll_per_dim
from vadcore.models.hgad_prior import build_prior
from vadcore.models.itae import ITAE, pool_channels
from vadcore.progress import Bar, progress_bar
from vadcore.stages import StageRecord
from vadcore.steps.itae import load_itae, run_itae
from vadcore.steps.windows import Report, clip_to_float, seed_everything, window_loader
from vadcore.train import describe_run, device, fit, steps_in, world
from vadcore.runtime import apply_runtime


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
    its info has the NLL percentile of its normal training windows (`normal_nll_percentile`). One progress bar
    over the whole build: "features" while the frozen ITAE runs over the windows, then the training steps."""
    with progress_bar(f"step 2: flow {path}: features", None, enabled=show and world()[0] == 0) as bar:
        return _train_flow(cfg, path, itae_stage, train_folder, out, report, bar)


def _train_flow(cfg: TrialConfig, path: str, itae_stage: StageRecord, train_folder: Path, out: Path, report: Report | None, bar: Bar) -> dict[str, Any]:
    apply_runtime(cfg.runtime)
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

        bar.describe(f"step 2: flow {path}")
        bar.set_total(steps * step.epochs)
        result = fit(
            model, loss_fn, batches, steps, step, cfg.deepspeed,
            validate=validate if x_val is not None else None,
            report=(lambda r: report({"stage": f"flow_{path}", **r})) if report else None,
            fp32=True, progress=bar,
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
