"""The typed configuration of one trial, and the profiles (smoke / laptop / paper) that fill it in.

Defaults in the dataclasses are the paper's values where it gives one. A profile (`vadcore/profiles/*.toml`)
overrides them for a compute budget, with a `[default]` table and one table per benchmark; `--set key=value`
overrides last. The resolved config is validated once, across fields, and saved with every stage and result.

    cfg = resolve_config("ped2", "smoke", ["score.lambda_L=0.5"])
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from vadcore.configtools import flatten, from_dict, load_toml, merge, parse_sets
from vadcore.errors import ConfigError
from vadcore.models.glow import GlowConfig
from vadcore.models.hgad_prior import PriorConfig
from vadcore.models.itae import ITAEConfig
from vadcore.models.losses import LossConfig
from vadcore.runtime import RuntimeConfig
from vadcore.paths import PROFILE_DIR
from vadcore.scoring import ScoreConfig

PROFILES = ("smoke", "laptop", "paper")


@dataclass(frozen=True)
class DataConfig:
    benchmark: str = "synthetic"  # a name in vadcore.data.BENCHMARKS, or several joined by "+" (one composite benchmark)
    height: int = 256  # frames are resized once, at shard time (paper: 256x256; Ped2 240x360)
    width: int = 256
    channels: int = 3  # 1 = grey, 3 = RGB (itae.in_channels must match)
    train_stride: int = 1  # frames between consecutive training windows ("randomly segment" in the paper)
    test_stride: int = 1  # frames between test windows; every frame is scored whatever the stride
    loader_workers: int = 0  # DataLoader worker processes (0 = in the training process)
    dev: bool = False  # also score the benchmark's development split (dev_* metrics): what a search optimises
    scenes: tuple[str, ...] = ()  # train and score on these scenes' videos only (a model per scene); () = every scene.
    # A scene subset's shards reuse the whole benchmark's (vadcore.data.shards); an unknown scene fails at shard time.


@dataclass(frozen=True)
class StepConfig:
    """Optimisation of one training step (ITAE, or the flows). Adam + cosine annealing, as the paper."""

    epochs: int = 10  # passes over the training windows (not given by the paper)
    batch_size: int = 4
    lr: float = 1e-3
    min_lr: float = 0.0  # cosine annealing floor
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # 0 = off
    max_steps: int = 0  # cap on optimiser steps per epoch (0 = a full pass); small profiles use it
    # Held-out NORMAL training videos, never trained on: their loss is the early-stopping metric (`select`). The
    # benchmark's `dev_holdout` (the videos its development split is built from) replaces this seeded share when
    # it has one. The flows train and validate on the ITAE's split.
    val_fraction: float = 0.1
    # Which epoch's weights the stage keeps. "best": the lowest held-out loss, so the held-out videos pay for
    # themselves (the default: a stage saved at its last epoch would have taken them out of training for a
    # report alone); with none held out (val_fraction = 0 and no dev holdout) there is nothing to select by and
    # the last epoch is kept, which the stage records (`selected_by`). "last": the last epoch; held-out videos
    # are then only a report, so pair it with val_fraction = 0 to train on every video.
    select: Literal["best", "last"] = "best"
    patience: int = 0  # select = "best": stop after this many epochs without a lower held-out loss (0 = run every epoch)
    # Train on random (height, width) crops of each input, () = whole inputs: the ITAE on crops of its clips (pixels,
    # so a model trained at the native scale sees a walker at full size for a fraction of a frame's cost), a flow on
    # crops of its latent maps (positions). Both are convolutional: validation and scoring read whole inputs.
    crop: tuple[int, ...] = ()


@dataclass(frozen=True)
class FlowConfig:
    app: bool = True  # F_app on the appearance latent
    mot: bool = True  # F_mot on the motion latent (needs itae.paths = "app+mot")
    extra_input: Literal["none", "intensity", "error_map"] = "none"  # Table 4: appended to F_app's input
    glow: GlowConfig = field(default_factory=GlowConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    train: StepConfig = field(default_factory=lambda: StepConfig(batch_size=20, lr=5e-4))


@dataclass(frozen=True)
class TrialConfig:
    data: DataConfig = field(default_factory=DataConfig)
    itae: ITAEConfig = field(default_factory=ITAEConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    itae_train: StepConfig = field(default_factory=lambda: StepConfig(batch_size=4, lr=1e-3))
    flow: FlowConfig = field(default_factory=FlowConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    seed: int = 0
    deepspeed: str = "cpu"  # a config in vadcore/deepspeed/ (cpu: fp32 + gloo; gpu-bf16, gpu-zero2, ...)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # TF32, cuDNN benchmark, determinism (vadcore.runtime)

    def validate(self) -> None:
        """One pass over every field and the rules that tie fields together."""
        from vadcore.data import BENCHMARKS, benchmark_class, benchmark_members
        from vadcore.errors import DataError

        d, m = self.data, self.itae
        for key, value in flatten(dataclasses.asdict(self)).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{key}={value!r} must be a finite number")
        try:
            benchmark_members(d.benchmark, where="data.benchmark")
        except DataError as e:
            raise ConfigError(str(e)) from None
        if d.dev and not benchmark_class(d.benchmark).has_dev:
            have = [b for b in BENCHMARKS if benchmark_class(b).has_dev]
            raise ConfigError(f"data.dev=true: benchmark {d.benchmark!r} has no development split yet (a composite has one when "
                              f"every member has); benchmarks with one: {', '.join(have)}")
        for i, scene in enumerate(d.scenes):
            if not scene or scene in d.scenes[:i]:
                raise ConfigError(f"data.scenes[{i}]={scene!r} must be a scene name, distinct from the others (data.scenes={list(d.scenes)!r})")
        if d.channels not in (1, 3):
            raise ConfigError(f"data.channels={d.channels} must be 1 (grey) or 3 (RGB)")
        if m.in_channels != d.channels:
            raise ConfigError(f"itae.in_channels={m.in_channels} must equal data.channels={d.channels}")
        steps = (("itae_train", self.itae_train), ("flow.train", self.flow.train))
        minimums = [  # (section, its config, lowest allowed value, fields)
            ("data", d, 1, ("height", "width", "train_stride", "test_stride")),
            ("data", d, 0, ("loader_workers",)),
            *((name, step, 1, ("epochs", "batch_size")) for name, step in steps),
            *((name, step, 0, ("max_steps", "min_lr", "weight_decay", "grad_clip", "patience")) for name, step in steps),
        ]
        for section, sub, lowest, names in minimums:
            for name in names:
                if getattr(sub, name) < lowest:
                    raise ConfigError(f"{section}.{name}={getattr(sub, name)!r} must be >= {lowest}")
        for step_name, step in steps:
            if not step.lr > 0:
                raise ConfigError(f"{step_name}.lr={step.lr!r} must be > 0")
            if step.min_lr > step.lr:
                raise ConfigError(f"{step_name}.min_lr={step.min_lr!r} must be <= {step_name}.lr={step.lr!r}: it is the cosine annealing floor")
            if not 0 <= step.val_fraction < 1:
                raise ConfigError(f"{step_name}.val_fraction={step.val_fraction} must be in [0, 1)")
            if step.crop and (len(step.crop) != 2 or min(step.crop) < 1):
                raise ConfigError(f"{step_name}.crop={list(step.crop)!r} must be [] (whole inputs) or [height, width], both >= 1")
            if step.patience and step.select != "best":
                raise ConfigError(f"{step_name}.patience={step.patience} needs {step_name}.select='best' (got {step.select!r}): "
                                  "early stopping keeps the best epoch, not the last one; set patience=0")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed={self.seed} must be in [0, 2**32): numpy's seed range")
        for sub in (m, self.loss, self.flow.glow, self.flow.prior, self.score, self.runtime):
            sub.validate()
        m.latent_size(d.height, d.width)  # raises when the strides do not divide the frame size
        if self.flow.mot and m.paths != "app+mot":
            raise ConfigError(f"flow.mot=true needs itae.paths='app+mot' (got itae.paths={m.paths!r})")
        h, w = m.latent_size(d.height, d.width)
        if self.itae_train.crop:
            ch, cw = self.itae_train.crop
            if ch > d.height or cw > d.width:
                raise ConfigError(f"itae_train.crop={list(self.itae_train.crop)} must fit the {d.height}x{d.width} frames (data.height, data.width)")
            m.latent_size(ch, cw)  # a crop must pass the strides as a frame does
        if self.flow.train.crop:
            fh, fw = self.flow.train.crop
            if fh > h or fw > w:
                raise ConfigError(f"flow.train.crop={list(self.flow.train.crop)} must fit the flows' {h}x{w} latent maps")
            self.flow.glow.check_input(2, fh, fw)
            if not self.flow.prior.per_position:
                raise ConfigError(f"flow.train.crop={list(self.flow.train.crop)} needs a prior over positions (flow.prior.kind='gaussian' or "
                                  f"'hgad_position'): {self.flow.prior.kind!r} models the whole latent, whose size a crop changes")
        if self.flow.app or self.flow.mot:
            self.flow.glow.check_input(2, h, w)
        if self.flow.app or self.flow.mot:
            top = (h >> self.flow.glow.levels, w >> self.flow.glow.levels)
            if self.score.local_patch > min(top):
                raise ConfigError(f"score.local_patch={self.score.local_patch} must fit the flows' {top[0]}x{top[1]} NLL map")
            if self.score.lambda_local > 0 and not self.flow.prior.per_position:
                raise ConfigError(
                    f"score.lambda_local={self.score.lambda_local} needs flow.prior.kind='gaussian' or 'hgad_position': a mixture "
                    f"prior over the whole latent (got {self.flow.prior.kind!r}) has no per-position NLL; set score.lambda_local=0"
                )


def _profile_tables(profile: str) -> dict[str, Any]:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    return load_toml(PROFILE_DIR / f"{profile}.toml")


def profile_dict(benchmark: str, profile: str) -> dict[str, Any]:
    """The profile's overrides for one benchmark: `[default]` merged with `[benchmarks.NAME]`."""
    tables = _profile_tables(profile)
    out = merge(tables.get("default", {}), tables.get("benchmarks", {}).get(benchmark, {}))
    return merge(out, {"data": {"benchmark": benchmark}})


def resolve_config(benchmark: str, profile: str, sets: list[str] | None = None, extra: dict[str, Any] | None = None) -> TrialConfig:
    """Defaults <- profile <- `extra` (a sweep's fixed/variant fields) <- `--set` overrides, validated."""
    data = profile_dict(benchmark, profile)
    if extra:
        data = merge(data, extra)
    if sets:
        data = merge(data, parse_sets(sets))
    source = f"profile {profile!r} for {benchmark}" + (" with --set overrides" if sets else "")
    return from_dict(TrialConfig, data, source=source)
