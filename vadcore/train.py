"""Training through a DeepSpeed engine, the same code path on a laptop CPU and on a GPU cluster.

The engine's precision, ZeRO stage and communication come from `cluster/deepspeed/<name>.json`; batch size,
Adam and the cosine schedule come from the trial's `StepConfig`. On CPU the accelerator is DeepSpeed's CPU
accelerator with gloo; a single process initialises a world of size 1 on 127.0.0.1.

Mixed precision is autocast (the configs' `torch_autocast` section): weights, gradients, optimiser state and
saved state dicts stay float32, and the engine's forward runs convolutions in bf16. DeepSpeed's `bf16`
section would instead cast the weights, which float32 inputs then fail to meet, so configs may not enable
it. The CPU accelerator runs the GPU configs too, so tests exercise the GPU's precision path.

`fit` knows nothing of ITAE or Glow: it takes a loss function of a batch and a validation function, and
reports one metrics dict per epoch to a callback (a sweep scheduler such as ASHA stops trials on it).
"""
from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from vadcore.errors import ConfigError

DEEPSPEED_DIR = Path(__file__).resolve().parents[1] / "cluster" / "deepspeed"


def deepspeed_config(name: str, step, *, fp32: bool = False) -> dict[str, Any]:
    """The named JSON config completed with the step's batch size, Adam and clipping.

    fp32=True drops autocast: flows sum per-layer log-determinants, which half precision ruins.
    """
    path = DEEPSPEED_DIR / f"{name}.json"
    if not path.is_file():
        allowed = sorted(p.stem for p in DEEPSPEED_DIR.glob("*.json"))
        raise ConfigError(f"deepspeed={name!r}: no {path}; allowed: {', '.join(allowed)}")
    cfg = json.loads(path.read_text())
    cast = [k for k in ("bf16", "fp16") if cfg.get(k, {}).get("enabled")]
    if cast:
        raise ConfigError(f"deepspeed={name!r}: {path} enables {cast[0]!r}, which casts the weights while inputs stay "
                          f'float32; use autocast instead: "torch_autocast": {{"enabled": true, "dtype": "bfloat16"}}')
    cfg.update(
        train_micro_batch_size_per_gpu=step.batch_size,
        gradient_accumulation_steps=1,
        gradient_clipping=step.grad_clip,
        optimizer={
            "type": "Adam",
            "params": {"lr": step.lr, "weight_decay": step.weight_decay, "adam_w_mode": False, "torch_adam": True},
        },
    )
    if fp32:
        cfg.pop("torch_autocast", None)
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _import_deepspeed():
    """DeepSpeed, told up front that a machine without CUDA uses its CPU accelerator (no detection warning)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    return deepspeed


def init_distributed() -> None:
    """Join the process group set up by a launcher, or start a one-process group on 127.0.0.1."""
    deepspeed = _import_deepspeed()

    if torch.distributed.is_initialized():
        return
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)


def device() -> torch.device:
    _import_deepspeed()
    from deepspeed.accelerator import get_accelerator

    return torch.device(get_accelerator().device_name(int(os.environ.get("LOCAL_RANK", 0))))


@dataclass
class FitResult:
    history: list[dict[str, float]]
    steps: int
    seconds: float


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any, float], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    batches: Callable[[int], Iterable[Any]],
    steps_per_epoch: int,
    step,
    ds_name: str,
    *,
    validate: Callable[[nn.Module], float] | None = None,
    report: Callable[[dict[str, float]], None] | None = None,
    fp32: bool = False,
    progress: Callable[[int], None] = lambda n: None,
) -> FitResult:
    """Train `model` for `step.epochs` epochs of at most `steps_per_epoch` optimiser steps.

    loss_fn(engine, batch, progress in [0, 1]) -> (loss, parts); batches(epoch) -> the epoch's batches, of
    which the first `steps_per_epoch` are trained on: `steps_in` of the epoch's windows, so that only a
    max_steps cap leaves batches out; validate(module) -> a held-out loss computed without gradients and
    outside autocast. Adam with cosine annealing from step.lr to step.min_lr over the whole run, as in the paper.
    """
    deepspeed = _import_deepspeed()
    init_distributed()
    total = max(1, step.epochs * steps_per_epoch)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(ds_name, step, fp32=fp32),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=step.min_lr),
    )
    history: list[dict[str, float]] = []
    done = 0
    t0 = time.perf_counter()
    for epoch in range(step.epochs):
        engine.train()
        sums: dict[str, torch.Tensor] = {}
        n = 0
        for batch in batches(epoch):
            if n >= steps_per_epoch:
                break
            loss, parts = loss_fn(engine, batch, done / total)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()} at epoch {epoch}, step {n}")
            engine.backward(loss)
            engine.step()
            for k, v in {"loss": loss, **parts}.items():  # tensors: no device sync per step
                sums[k] = sums.get(k, 0.0) + v.detach()
            n += 1
            done += 1
            progress(1)
        record = {"epoch": epoch + 1, "steps": n, "lr": engine.get_lr()[0]}
        record.update({f"train_{k}": float(v) / max(n, 1) for k, v in sums.items()})
        if validate is not None:
            engine.eval()
            with torch.no_grad():
                record["val_loss"] = float(validate(engine.module))
        record["seconds"] = round(time.perf_counter() - t0, 3)
        history.append(record)
        if report is not None:
            report(record)
    return FitResult(history, done, time.perf_counter() - t0)


def steps_in(windows: int, batch_size: int, max_steps: int) -> int:
    """Steps of an epoch: its batches, all full but the last (as `vadcore.data.loader.clip_batches` makes them
    whatever the number of DataLoader workers), capped at max_steps when that is > 0."""
    full = math.ceil(windows / batch_size)
    return min(full, max_steps) if max_steps > 0 else full
