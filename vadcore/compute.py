"""What a trial's stages compute, counted before anything runs: FLOPs per sample of the ITAE and of each flow,
windows per split, and from them each stage's optimiser steps and FLOPs (`stage_work`).

`python -m sweeps show` prints a sweep's bill from these (`sweeps.bill`); `benchmarks/gpu_check.py` turns
measured step times into achieved TFLOP/s with them.

FLOPs are counted, not estimated: torch's FlopCounterMode runs the model's forward, its training loss and the
backward pass on the meta device (nothing is allocated or computed, so the paper's models take seconds), and
counts 2 x the multiply-adds of every convolution, transposed convolution and matrix product, forward and
backward (input and weight gradients), the loss's included (MS-SSIM's Gaussian filters are convolutions).
Normalisation, activations, elementwise arithmetic and the optimiser are not counted: they are memory-bound
and a few percent of the time. Paper sizes, training FLOPs per sample: Ped2's two-path ITAE 988 G, F_app
126 G, F_mot 302 G; Avenue's 258.5 G, 37 G, 145 G (tests/test_compute.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from vadcore.config import TrialConfig
from vadcore.data.loader import window_count
from vadcore.models.glow import GlowConfig
from vadcore.models.hgad_prior import PriorConfig
from vadcore.models.itae import ITAE, ITAEConfig
from vadcore.models.losses import LossConfig, reconstruction_loss


@dataclass(frozen=True)
class Flops:
    """FLOPs of one sample: a forward pass (inference: validation, features, scoring), and a training step (on the
    sample's crop when the stage trains on crops: `per_sample`)."""

    forward: int
    train: int


def _counted(build, inputs, loss) -> Flops:
    """Flops of loss(model(*inputs)) and its backward, on meta tensors; build() and inputs() make them there."""
    counter = FlopCounterMode(display=False)
    with torch.device("meta"):
        model, args = build(), inputs()
    with counter:
        value = loss(model, *args)
        forward = counter.get_total_flops()
        value.backward()
    return Flops(forward, counter.get_total_flops())


@lru_cache(maxsize=64)
def itae_flops(itae: ITAEConfig, loss: LossConfig, height: int, width: int) -> Flops:
    """Per clip of `height` x `width`: the ITAE's forward, and forward + Eq. 4's loss (+ MS-SSIM) + backward."""
    def step(model, x):
        return reconstruction_loss(x, model(x).recon, loss)[0]

    return _counted(lambda: ITAE(itae), lambda: (torch.empty(1, itae.in_channels, itae.frames, height, width),), step)


@lru_cache(maxsize=64)
def flow_flops(glow: GlowConfig, prior: PriorConfig, channels: int, height: int, width: int, classes: int) -> Flops:
    """Per flow input (channels, height, width): Glow + prior NLL forward, and with the prior's loss + backward.

    ActNorm's data-dependent initialisation (one batch, before training) is marked done, as for every step."""
    from vadcore.config import FlowConfig
    from vadcore.steps.flow import FlowModel

    def build():
        model = FlowModel(TrialConfig(flow=FlowConfig(glow=glow, prior=prior)), channels, height, width, classes)
        flags = {k: torch.tensor(True, device="cpu") for k, b in model.named_buffers() if b.dtype == torch.bool}  # ActNorm.initialized
        model.load_state_dict(flags, strict=False, assign=True)
        return model

    def step(model, x, y):
        out = model(x)
        return model.prior.loss(out.z, out.logdet + out.split_logp, y, 0.5)[0]

    return _counted(build, lambda: (torch.empty(1, channels, height, width), torch.zeros(1, dtype=torch.long)), step)


def per_sample(cfg: TrialConfig, classes: int) -> dict[str, Flops]:
    """{"itae", "flow_app", "flow_mot"} (the enabled flows) per sample at the config's sizes: inference on whole
    inputs, a training step on its `crop` of them (itae_train.crop: pixels; flow.train.crop: latent positions)."""
    from vadcore.describe import flow_inputs

    d = cfg.data
    train = itae_flops(cfg.itae, cfg.loss, *(cfg.itae_train.crop or (d.height, d.width))).train
    out = {"itae": Flops(itae_flops(cfg.itae, cfg.loss, d.height, d.width).forward, train)}
    for name, (c, h, w) in flow_inputs(cfg).items():
        train = flow_flops(cfg.flow.glow, cfg.flow.prior, c, *(cfg.flow.train.crop or (h, w)), classes).train
        out["flow_" + name[2:]] = Flops(flow_flops(cfg.flow.glow, cfg.flow.prior, c, h, w, classes).forward, train)
    return out


# ------------------------------------------------------------------------------------------------ windows


@dataclass(frozen=True)
class Videos:
    """Frame counts of a trial's videos: {id: frames} per role, and the number of training scenes."""

    fit: dict[str, int]  # training videos the stages train on
    val: dict[str, int]  # training videos held out: validation (the dev holdout, else a seeded share)
    test: dict[str, int]
    dev: dict[str, int]  # empty unless data.dev
    scenes: int


def split_frames(bench, cfg: TrialConfig, split: str, cache_root: Path | None) -> dict[str, tuple[str, int]]:
    """{video id: (scene, frames)} of a split as the trial's shards hold it: their manifest when they are in the
    cache, else the reader's count (image files, a container's frame count, or decoding the video)."""
    from vadcore.data.devsplit import frame_count
    from vadcore.data.loader import load_manifest
    from vadcore.data.shards import ShardSpec

    spec = ShardSpec(cfg.data.benchmark, split, cfg.data.height, cfg.data.width, cfg.data.channels, cfg.data.scenes)
    if cache_root is not None:
        folder = spec.folder(Path(cache_root), bench.fingerprint(split))
        if (folder / "manifest.json").is_file():
            return {v: (i["scene"], i["frames"]) for v, i in load_manifest(folder)["per_video"].items()}
    return {v.id: (v.scene, frame_count(v)) for v in bench.videos(split) if not cfg.data.scenes or v.scene in cfg.data.scenes}


def trial_videos(cfg: TrialConfig, data_root: str | Path | None, cache_root: Path | None = None) -> Videos:
    """The videos each stage of a trial reads, split as `vadcore.pipeline.run_trial` splits them."""
    from vadcore.data import DEV, get_benchmark, scene_holdout
    from vadcore.pipeline import trial_splits
    from vadcore.steps.windows import split_videos

    bench = get_benchmark(cfg.data.benchmark, data_root)
    frames = {split: split_frames(bench, cfg, split, cache_root) for split in trial_splits(cfg)}
    train = frames["train"]
    manifest = {"per_video": {v: {"frames": n, "scene": s} for v, (s, n) in train.items()}}
    fit, val = split_videos(manifest, cfg.itae_train.val_fraction, cfg.seed, scene_holdout(bench, cfg.data.scenes))
    counts = lambda split, ids=None: {v: n for v, (_, n) in frames.get(split, {}).items() if ids is None or v in ids}  # noqa: E731
    return Videos(counts("train", fit), counts("train", val), counts("test"), counts(DEV), len({s for s, _ in train.values()}))


# ------------------------------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class StageWork:
    """What one stage of a trial computes: its optimiser steps, the samples they train on, training FLOPs, and
    the FLOPs of its inference passes (validation, flow features, the normal NLLs, scoring)."""

    name: str
    steps: int
    samples: int
    train_flops: int
    forward_flops: int
    kind: str  # which measured throughput times it: "itae" (bf16 autocast or fp32 by its DeepSpeed config), "flow", "forward"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "samples": self.samples, "train_flops": self.train_flops,
                "forward_flops": self.forward_flops, "kind": self.kind}


def _windows(videos: dict[str, int], cfg: TrialConfig, stride: int, cover_all: bool) -> int:
    return sum(window_count(n, cfg.itae.frames, stride, cover_all) for n in videos.values())


def _trained(windows: int, step) -> tuple[int, int]:
    """(optimiser steps, samples trained on) over all epochs of a stage with `windows` training samples."""
    from vadcore.train import steps_in

    steps = steps_in(windows, step.batch_size, step.max_steps)
    return step.epochs * steps, step.epochs * min(windows, steps * step.batch_size)


def training_windows(cfg: TrialConfig, videos: Videos) -> int:
    """Windows an epoch of the ITAE or a flow trains on: the fit videos' windows at data.train_stride."""
    return _windows(videos.fit, cfg, cfg.data.train_stride, False)


def stage_work(cfg: TrialConfig, videos: Videos) -> dict[str, StageWork]:
    """Each stage of the trial (`vadcore.pipeline.stage_slices`' names, baselines aside: they run no model), at
    most what it computes: a stage stopped early by `patience` runs fewer epochs. Window counts follow the
    loader: training passes at data.train_stride, validation, feature and scoring passes cover every frame."""
    flops = per_sample(cfg, videos.scenes)
    s = cfg.data.train_stride
    fit_train, fit_cover, val_cover = training_windows(cfg, videos), _windows(videos.fit, cfg, s, True), _windows(videos.val, cfg, s, True)
    steps, samples = _trained(fit_train, cfg.itae_train)
    itae = flops["itae"]
    out = {"itae": StageWork("itae", steps, samples, samples * itae.train, cfg.itae_train.epochs * val_cover * itae.forward, "itae")}
    flows = [p for p in ("app", "mot") if f"flow_{p}" in flops]
    for p in flows:
        f = flops[f"flow_{p}"]
        steps, samples = _trained(fit_train, cfg.flow.train)
        # features of the fit and held-out windows (one ITAE forward each), validation every epoch, the normal NLLs
        inference = (fit_cover + val_cover) * itae.forward + cfg.flow.train.epochs * val_cover * f.forward + fit_cover * f.forward
        out[f"flow_{p}"] = StageWork(f"flow_{p}", steps, samples, samples * f.train, inference, "flow")
    per_window = itae.forward + sum(flops[f"flow_{p}"].forward for p in flows)
    for name, split in (("score", videos.test), ("score_dev", videos.dev)):
        if split:
            out[name] = StageWork(name, 0, 0, 0, _windows(split, cfg, cfg.data.test_stride, True) * per_window, "forward")
    return out
