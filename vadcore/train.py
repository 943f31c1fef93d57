"""Training through a DeepSpeed engine, the same code path on a laptop CPU and on a GPU cluster.

The engine's precision, ZeRO stage and communication come from `vadcore/deepspeed/<name>.json`; batch size,
Adam and the cosine schedule come from the trial's `StepConfig`. On CPU the accelerator is DeepSpeed's CPU
accelerator with gloo; a single process initialises a world of size 1 on 127.0.0.1.

Mixed precision is autocast (the configs' `torch_autocast` section): weights, gradients, optimiser state and
saved state dicts stay float32, and the engine's forward runs convolutions in bf16. DeepSpeed's `bf16`
section would instead cast the weights, which float32 inputs then fail to meet, so configs may not enable
it. The CPU accelerator runs the GPU configs too, so tests exercise the GPU's precision path.

`fit` knows nothing of ITAE or Glow: it takes a loss function of a batch and a validation function, and
reports one metrics dict per epoch to a callback (a sweep scheduler such as ASHA stops trials on it). The
validation loss (held-out normal videos) selects what the model holds when `fit` returns: with
`StepConfig.select = "best"` the weights of its lowest epoch, optionally stopping after `patience` epochs
without improvement; the result says which epoch was kept and why.

Data parallelism keeps the optimisation of one worker: `batch_size` is the GLOBAL batch, whatever the number
of ranks. Every rank walks the same seeded stream of global batches and trains on its slice of each
(`rank_slice`), so the ranks take equal step counts (no collective waits for a rank that ran out), see
disjoint windows, and each optimiser step averages the gradients of the same samples one worker with the
whole batch would use: adding workers changes speed, not results (tests/test_data_parallel.py). The price is
that every rank decodes every window (the loader is ~100x faster than training at smoke size). Per-epoch
losses are averaged over the ranks, validation runs whole on each rank and its loss is averaged too, so every
rank keeps and stops at the same epoch; only rank 0 writes a stage.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from vadcore.dist import device, import_deepspeed, init_distributed, world
from vadcore.errors import ConfigError
from vadcore.paths import DEEPSPEED_DIR
from vadcore.runtime import runtime_record

__all__ = ["FitResult", "Launch", "autocast_dtype", "deepspeed_config", "describe_run", "device", "fit", "in_process", "inference_autocast", "init_distributed", "rank_slice",
           "steps_in", "timing", "world"]

DEEPSPEED_BUCKET = 500_000_000  # DeepSpeed's reduce_bucket_size and allgather_bucket_size defaults, in elements
BUCKET_ROUND = 1 << 20  # our bucket sizes: the model's parameters rounded up to this (even: NCCL's alignment)
WARMUP_STEPS = 3  # a run's first steps (cuDNN autotuning, allocator growth, lazy set-up) are left out of its step time
FINITE_CHECK_EVERY = 50  # steps between checks that the training loss is finite: each waits for the device


def read_deepspeed_json(name: str) -> dict[str, Any]:
    """The named JSON config as written, checked: it exists, and it casts no weights (autocast does that)."""
    path = DEEPSPEED_DIR / f"{name}.json"
    if not path.is_file():
        allowed = sorted(p.stem for p in DEEPSPEED_DIR.glob("*.json"))
        raise ConfigError(f"deepspeed={name!r}: no {path}; allowed: {', '.join(allowed)}")
    cfg = json.loads(path.read_text())
    cast = [k for k in ("bf16", "fp16") if cfg.get(k, {}).get("enabled")]
    if cast:
        raise ConfigError(f"deepspeed={name!r}: {path} enables {cast[0]!r}, which casts the weights while inputs stay "
                          f'float32; use autocast instead: "torch_autocast": {{"enabled": true, "dtype": "bfloat16"}}')
    return cfg


def deepspeed_config(name: str, step, *, fp32: bool = False, params: int = 0) -> dict[str, Any]:
    """The named JSON config completed with the step's batch size, Adam and clipping, and two choices of ours
    where the file is silent:

    - ZeRO's gradient buckets sized to the model (`params` trainable parameters; 0: DeepSpeed's defaults).
      DeepSpeed allocates each bucket whole, 5e8 elements by default: ZeRO-1 and -2 stage the gradients in a
      float32 buffer of that size per gradient dtype (two with overlap_comm), 1.9 GiB each on the GPU, for a
      paper ITAE of 7 M parameters. A bucket as large as the model holds every gradient, so a step is still
      reduced in one collective, as with the default (the largest model, Avenue's F_mot, has 246 M).
    - autocast's `lower_precision_safe_modules` empty: DeepSpeed's default ([Linear, Conv1d-3d]) reduces those
      layers' gradients in bf16, which rounds every ITAE convolution's float32 gradient to 8 bits of mantissa
      before Adam, even on one rank where nothing crosses a wire, and gives the model a second bucket. The
      ITAE's float32 gradients are 28 MB a step: little bandwidth across ranks.

    fp32=True drops autocast: flows sum per-layer log-determinants, which half precision ruins.
    """
    cfg = read_deepspeed_json(name)
    _, size = world()
    if step.batch_size % size:
        raise ConfigError(f"batch_size={step.batch_size} is the global batch and must be divisible by the {size} workers")
    cfg.update(
        train_micro_batch_size_per_gpu=step.batch_size // size,
        gradient_accumulation_steps=1,
        gradient_clipping=step.grad_clip,
        optimizer={
            "type": "Adam",
            "params": {"lr": step.lr, "weight_decay": step.weight_decay, "adam_w_mode": False, "torch_adam": True},
        },
    )
    zero = cfg.get("zero_optimization", {})
    if zero.get("stage", 0) > 0 and params > 0:
        bucket = min(DEEPSPEED_BUCKET, -(-params // BUCKET_ROUND) * BUCKET_ROUND)
        cfg["zero_optimization"] = {"reduce_bucket_size": bucket, "allgather_bucket_size": bucket, **zero}
    if fp32:
        cfg.pop("torch_autocast", None)
    elif cfg.get("torch_autocast", {}).get("enabled"):
        cfg["torch_autocast"] = {"lower_precision_safe_modules": [], **cfg["torch_autocast"]}
    return cfg


def rank_slice(batch: Any, rank: int, size: int) -> Any:
    """This rank's part of a global batch (a tensor, or a dict / tuple / list of tensors and lists): the
    rank-th of `size` near-equal contiguous parts."""
    if size == 1:
        return batch
    if isinstance(batch, dict):
        return {k: rank_slice(v, rank, size) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(rank_slice(v, rank, size) for v in batch)
    n = len(batch)
    lo, hi = rank * n // size, (rank + 1) * n // size
    return batch[lo:hi]


def _batch_len(batch: Any) -> int:
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0] if isinstance(batch, tuple) else batch
    return len(first)


Launch = Callable[..., dict[str, Any]]  # launch(build, report, out, ranks=None) -> rank 0's info, as in_process


def in_process(build: Callable[[Callable | None], dict[str, Any]], report: Callable | None, out: Path, ranks: int | None = None) -> dict[str, Any]:
    """The default launcher: run a stage's build here, as a world of one (`python -m vadcore run`, CI).

    A launcher runs build(report) -> info on `ranks` ranks (None: all it has), rank 0 writing the stage's files
    into `out`, and returns rank 0's info; sweeps.distributed.RayTrain starts the ranks with Ray Train."""
    return build(report)


def describe_run(ds_name: str, fp32: bool = False) -> dict[str, Any]:
    """World size, device, precision and runtime switches (`vadcore.runtime`) of a stage's training, for its info
    (and the trial's record). On a CUDA device with runtime.tf32, "fp32" stages multiply in TF32 and say so."""
    dtype = autocast_dtype(ds_name)
    precision = f"{dtype} autocast, fp32 weights" if dtype and not fp32 else "fp32"
    switches = runtime_record()
    if precision == "fp32" and switches["tf32"] and device().type == "cuda":
        precision = "fp32, TF32 multiplies"
    return {"world_size": world()[1], "device": device().type, "precision": precision, "deepspeed": ds_name, "runtime": switches}


def inference_autocast(ds_name: str):
    """The autocast an ITAE trained with the named config runs its inference passes under (validation, flow
    features, scoring, error maps): its training forward's (the config's `torch_autocast`), or none. A model is
    then scored in the precision it was fitted in, at that precision's speed (bf16 on a CPU with AMX: ~2.5x fp32)."""
    dtype = autocast_dtype(ds_name)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device().type, dtype=getattr(torch, dtype))


def autocast_dtype(ds_name: str) -> str | None:
    """The dtype of the named config's autocast ("bfloat16"), None without one (float32)."""
    autocast = read_deepspeed_json(ds_name).get("torch_autocast", {})
    return autocast.get("dtype", "bfloat16") if autocast.get("enabled") else None


@dataclass
class FitResult:
    history: list[dict[str, float]]  # one record per epoch run, `val_loss` included when there is a validation
    steps: int
    seconds: float
    kept_epoch: int  # 1-based: the epoch whose weights the model holds after `fit`
    epochs_run: int  # < step.epochs when early stopping ended the run
    stopped_early: bool
    selected_by: str  # "val_loss" (the lowest held-out loss) or "last" (select="last", or nothing held out)

    def selection(self) -> dict[str, Any]:
        """What a stage records of the selection: in its info, and so in trial.json's `training`."""
        return {"kept_epoch": self.kept_epoch, "epochs_run": self.epochs_run, "stopped_early": self.stopped_early, "selected_by": self.selected_by}


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
    """Train `model` for `step.epochs` epochs of at most `steps_per_epoch` optimiser steps; leave in it the
    weights `step.select` keeps.

    loss_fn(engine, batch, progress in [0, 1]) -> (loss, parts); batches(epoch) -> the epoch's batches, of
    which the first `steps_per_epoch` are trained on: `steps_in` of the epoch's windows, so that only a
    max_steps cap leaves batches out; validate(module) -> a held-out loss computed without gradients and
    outside autocast. Adam with cosine annealing from step.lr to step.min_lr over the whole run, as in the paper
    (an early stop ends the run part way down the cosine).

    select="best" with a validate: a CPU copy of the module's state is taken at each new lowest validation loss
    (the first epoch of a tie) and loaded back into `model` at the end, so what the caller saves is that epoch;
    patience > 0 stops the run once that many epochs have passed without one. Without a validate there is
    nothing to select by: the last epoch is kept and `selected_by` says "last".
    """
    deepspeed = import_deepspeed()
    from deepspeed.accelerator import get_accelerator

    init_distributed()
    total = max(1, step.epochs * steps_per_epoch)
    trained = [p for p in model.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=trained,
        config=deepspeed_config(ds_name, step, fp32=fp32, params=sum(p.numel() for p in trained)),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=step.min_lr),
    )
    history: list[dict[str, float]] = []
    done = 0
    rank, size = world()
    by_val = validate is not None and step.select == "best"
    best_loss, best_epoch, best_state = math.inf, 0, None
    t0 = time.perf_counter()
    for epoch in range(step.epochs):
        engine.train()
        sums: dict[str, torch.Tensor] = {}
        n = timed = 0
        start = time.perf_counter()  # of the epoch's timed steps: those after the run's warm-up
        for batch in batches(epoch):
            if n >= steps_per_epoch:
                break
            if _batch_len(batch) < size:  # a last global batch too small to give every rank a sample: all skip it
                continue
            loss, parts = loss_fn(engine, rank_slice(batch, rank, size), done / total)
            engine.backward(loss)
            engine.step()
            for k, v in {"loss": loss, **parts}.items():  # tensors: no device sync per step
                sums[k] = sums.get(k, 0.0) + v.detach()
            n += 1
            done += 1
            timed += done > WARMUP_STEPS
            if done == WARMUP_STEPS:
                get_accelerator().synchronize()
                start = time.perf_counter()
            if n % FINITE_CHECK_EVERY == 0:
                _check_finite(sums["loss"], size, f"epoch {epoch + 1}, steps {n - FINITE_CHECK_EVERY + 1}-{n}")
            progress(1)
        if n % FINITE_CHECK_EVERY:
            _check_finite(sums["loss"], size, f"epoch {epoch + 1}, steps {n - n % FINITE_CHECK_EVERY + 1}-{n}")
        get_accelerator().synchronize()
        steady = time.perf_counter() - start if timed else 0.0
        if size > 1 and sums:  # every rank's mean, so the history does not depend on the number of ranks
            names = sorted(sums)
            total_sums = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64) for k in names])
            torch.distributed.all_reduce(total_sums)
            sums = dict(zip(names, total_sums / size))
        record = {"epoch": epoch + 1, "steps": n, "lr": engine.get_lr()[0], "timed_steps": timed, "train_seconds": round(steady, 4)}
        record.update({f"train_{k}": float(v) / max(n, 1) for k, v in sums.items()})
        if validate is not None:
            engine.eval()
            with torch.no_grad():
                val = torch.tensor(float(validate(engine.module)), dtype=torch.float64, device=device())
            if size > 1:  # the ranks' mean: one value, so one keep / stop decision, on every rank
                torch.distributed.all_reduce(val)
                val /= size
            record["val_loss"] = float(val)
            if not math.isfinite(record["val_loss"]):
                raise FloatingPointError(f"non-finite validation loss {record['val_loss']} at epoch {epoch + 1}: no epoch can be selected by it")
        record["seconds"] = round(time.perf_counter() - t0, 3)
        history.append(record)
        if report is not None:
            report(record)
        if by_val:
            if record["val_loss"] < best_loss:
                best_loss, best_epoch = record["val_loss"], epoch + 1
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in engine.module.state_dict().items()}
            elif step.patience and epoch + 1 - best_epoch >= step.patience:
                break
    if by_val and best_epoch < len(history):  # engine.module is `model`: the caller saves the kept epoch
        engine.module.load_state_dict(best_state)
    kept = best_epoch if by_val else len(history)
    return FitResult(history, done, time.perf_counter() - t0, kept_epoch=kept, epochs_run=len(history),
                     stopped_early=len(history) < step.epochs, selected_by="val_loss" if by_val else "last")


def _check_finite(loss_sum: torch.Tensor, size: int, where: str) -> None:
    """Raise FloatingPointError unless the sum of the training losses since the epoch began is finite on every
    rank. Checked every FINITE_CHECK_EVERY steps, not every step: each check waits for the device to finish
    its queue, and a diverged run wastes at most that many steps before it stops (a non-finite loss stays so).
    All ranks decide together, so none is left waiting in a collective for one that stopped."""
    ok = torch.isfinite(loss_sum).to(torch.float32).reshape(1)
    if size > 1:
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    if not bool(ok):
        raise FloatingPointError(f"non-finite training loss at {where} (the sum of the epoch's losses is {float(loss_sum)} on rank "
                                 f"{world()[0]}; checked every {FINITE_CHECK_EVERY} steps)")


def timing(history: list[dict[str, float]]) -> dict[str, float]:
    """{"timed_steps", "train_seconds", "step_ms"} of a stage's epochs: the optimiser steps after the warm-up, the
    seconds they took (their batches' loading included; validation, warm-up and set-up not), and ms per step."""
    steps = sum(e.get("timed_steps", 0) for e in history)
    seconds = sum(e.get("train_seconds", 0.0) for e in history)
    return {"timed_steps": steps, "train_seconds": round(seconds, 4), "step_ms": round(1000 * seconds / steps, 3) if steps else None}


def steps_in(windows: int, batch_size: int, max_steps: int) -> int:
    """Steps of an epoch: its batches, all full but the last (as `vadcore.data.loader.clip_batches` makes them
    whatever the number of DataLoader workers), capped at max_steps when that is > 0."""
    full = math.ceil(windows / batch_size)
    return min(full, max_steps) if max_steps > 0 else full
