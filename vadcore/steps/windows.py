"""Windows of a trial's shards, as every stage reads them: seeding, the split of the normal training videos into
fit and validation, the loaders, and uint8 clips to float."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vadcore.config import TrialConfig
from vadcore.data.loader import ClipDataset, clip_batches
from vadcore.errors import DataError
from vadcore.runtime import loader_workers

Report = Callable[[dict[str, Any]], None]  # a stage's per-epoch records, on their way to a sweep's scheduler


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
    batches whatever `data.loader_workers` is; as many of those workers as /dev/shm has room for
    (`vadcore.runtime.loader_workers`)."""
    stride = stride or (cfg.data.train_stride if train else cfg.data.test_stride)
    crop = tuple(cfg.itae_train.crop) if train and cfg.itae_train.crop else None
    ds = ClipDataset(folder, cfg.itae.frames, stride, train=train, seed=cfg.seed, videos=videos, crop=crop)
    ds.set_epoch(epoch)
    h, w = crop or (cfg.data.height, cfg.data.width)
    batch_bytes = batch * cfg.data.channels * cfg.itae.frames * h * w  # uint8 clips
    return ds, clip_batches(ds, batch, loader_workers(cfg.data.loader_workers, batch_bytes))


def clip_to_float(clip: torch.Tensor, dev: torch.device) -> torch.Tensor:
    return clip.to(dev, non_blocking=True).float().div_(255.0)  # uint8 (B, C, T, H, W) -> float in [0, 1]
