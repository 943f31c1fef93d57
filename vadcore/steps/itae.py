"""Step 1: the ITAE (two-path 3D-conv autoencoder) trained on the normal training windows, and loaded frozen."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vadcore.config import TrialConfig
from vadcore.data.loader import load_manifest
from vadcore.models.itae import ITAE
from vadcore.models.losses import reconstruction_loss
from vadcore.progress import Bar, progress_bar
from vadcore.steps.windows import Report, clip_to_float, seed_everything, split_videos, window_loader
from vadcore.train import describe_run, device, fit, inference_autocast, steps_in, world
from vadcore.runtime import apply_runtime


def build_itae(cfg: TrialConfig, train_folder: Path, out: Path, report: Report | None, show: bool, holdout: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Train the ITAE on the training videos less the validation ones (`split_videos`: the benchmark's dev
    holdout, else a seeded share), which select the epoch saved. The flows reuse this split (info's videos).
    One progress bar over the whole build, set-up and save included."""
    with progress_bar("step 1: ITAE", None, enabled=show and world()[0] == 0) as bar:
        return _train_itae(cfg, train_folder, out, report, bar, holdout)


def _train_itae(cfg: TrialConfig, train_folder: Path, out: Path, report: Report | None, bar: Bar, holdout: frozenset[str]) -> dict[str, Any]:
    apply_runtime(cfg.runtime)
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

    bar.set_total(steps * cfg.itae_train.epochs)
    result = fit(
        model,
        loss_fn,
        lambda epoch: window_loader(train_folder, cfg, train=True, batch=cfg.itae_train.batch_size, videos=fit_videos, epoch=epoch)[1],
        steps,
        cfg.itae_train,
        cfg.deepspeed,
        validate=validate if val_videos else None,
        report=(lambda r: report({"stage": "itae", **r})) if report else None,
        progress=bar,
    )
    if world()[0] == 0:
        torch.save(model.state_dict(), out / "itae.pt")
    return {"history": result.history, "steps": result.steps, **result.selection(), "fit_videos": sorted(fit_videos), "val_videos": sorted(val_videos),
            **describe_run(cfg.deepspeed)}


def run_itae(cfg: TrialConfig, itae: ITAE, x: torch.Tensor):
    """An inference pass of the ITAE (validation, flow features, scoring, error maps) in the precision it trained
    in (`inference_autocast`); callers cast what they keep to float32."""
    with inference_autocast(cfg.deepspeed):
        return itae(x)


def load_itae(cfg: TrialConfig, stage: Path) -> ITAE:
    model = ITAE(cfg.itae)
    model.load_state_dict(torch.load(stage / "itae.pt", map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False).to(device())
