"""How a stage runs on its machine, apart from what it computes: TF32, cuDNN autotuning, deterministic kernels
(`runtime.*` in the config), and the DataLoader workers that /dev/shm has room for.

| field | default | torch's default | why |
|---|---|---|---|
| `tf32` | true | convolutions true, matmuls false | the ITAE trains under bf16 autocast, so TF32 reaches only its fp32 passes (validation, flow features, scoring) and the flows, whose convolutions torch runs in TF32 anyway; true makes the matmuls (HGAD's prior) agree. false: IEEE fp32 throughout, about 7x slower convolutions on an H100 |
| `cudnn_benchmark` | true | false | a stage's clip shape never changes, so timing cuDNN's 3-D convolution algorithms on the first batch of each shape pays back within a few steps |
| `deterministic` | false | false | true: `torch.use_deterministic_algorithms` (an op with no deterministic kernel raises, naming itself), `cudnn.deterministic` and `CUBLAS_WORKSPACE_CONFIG=:4096:8`; needs `cudnn_benchmark = false` |

None of them enters a stage's cache key: like the GPU model or the thread count they change a stage's rounding,
not what it computes. Each training stage records the values it ran with (`vadcore.train.describe_run`).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from vadcore.errors import ConfigError


@dataclass(frozen=True)
class RuntimeConfig:
    """Numerics switches of the GPU backends; see the module docstring for each default and its reason."""

    tf32: bool = True  # TF32 multiplies for fp32 convolutions and matmuls (Ampere and later)
    cudnn_benchmark: bool = True  # time cuDNN's algorithms on the first batch of each shape
    deterministic: bool = False  # deterministic kernels only (slower); an op without one raises

    def validate(self) -> None:
        if self.deterministic and self.cudnn_benchmark:
            raise ConfigError("runtime.deterministic=true needs runtime.cudnn_benchmark=false: benchmark mode picks cuDNN's "
                              "algorithms by timing them, which differs from run to run")


def apply_runtime(cfg: RuntimeConfig) -> None:
    """Set torch's process-wide switches to `cfg`: every stage build calls this first, in its own process."""
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    torch.backends.cudnn.allow_tf32 = cfg.tf32
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    torch.backends.cudnn.deterministic = cfg.deterministic
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reads it when it makes its handle
    torch.use_deterministic_algorithms(cfg.deterministic)


def runtime_record() -> dict[str, bool]:
    """The switches in force now, as a stage records them."""
    return {"tf32": torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark, "deterministic": torch.are_deterministic_algorithms_enabled()}


# ------------------------------------------------------------------------------------------ loader workers

SHM = Path("/dev/shm")
SHM_SHARE = 0.5  # of /dev/shm's free space the clip batches may take: NCCL and DeepSpeed's shm comm use it too
PREFETCH = 2  # batches a DataLoader worker keeps ready (torch's prefetch_factor)
_warned: set[tuple[int, int]] = set()


def shm_free(shm: Path = SHM) -> int:
    """Free bytes of the shared-memory file system (0 where there is none)."""
    try:
        st = os.statvfs(shm)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def loader_workers(requested: int, batch_bytes: int, shm: Path = SHM) -> int:
    """The DataLoader workers /dev/shm has room for, at most `requested`.

    A worker hands every batch to the trainer in a shared-memory segment under /dev/shm and keeps PREFETCH
    batches ready, so (workers x PREFETCH + 1) batches are in flight. Where /dev/shm is small (a container's
    default is 64 MB, and a Ped2 batch of 32 paper-size clips is 44 MB) the worker fails to allocate, or the
    process dies of a bus error. So only as many workers as fit in SHM_SHARE of the free space are started,
    down to 0 (the training process then decodes the batches itself), and a warning says why, once.
    """
    if requested <= 0:
        return 0
    free = shm_free(shm)
    room = int(SHM_SHARE * free) // max(batch_bytes, 1) - 1  # batches that fit, less the one being trained on
    workers = max(0, min(requested, room // PREFETCH))
    if workers < requested and (requested, batch_bytes) not in _warned:
        _warned.add((requested, batch_bytes))
        print(f"note: data.loader_workers={requested} lowered to {workers}: {shm} has {free / 2**20:.0f} MiB free and each worker "
              f"keeps {PREFETCH} batches of {batch_bytes / 2**20:.1f} MiB there; a larger {shm} (docker run --shm-size=16g) "
              f"lifts the limit", file=sys.stderr, flush=True)
    return workers
