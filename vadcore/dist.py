"""The process group and DeepSpeed's import: the one module that reads and writes the launcher's environment
(DS_ACCELERATOR, RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, TORCH_EXTENSIONS_DIR) and decides whether DeepSpeed
builds its C++ shared-memory all-reduce op.

That op (`deepspeed_shm_comm`) is compiled with g++ the first time a process group starts, a minute or two without
a line of output, and only speeds up all-reduces between ranks on one machine: a world of one never builds it, a
machine without a C++ compiler runs without it (gloo does the all-reduces, same results), and a sweep that trains
data-parallel on CPU builds it once in the driver, saying so (`prepare_comm_op`), and says so when a build killed
mid-way left torch's lock behind (`stale_build_lock`). Each Python install builds it in a folder of its own: in
torch's one per-user folder two installs (two clones, a wheel and an editable install) rebuilt it in turn, each
waiting on the other's lock.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

SHM_OP = "deepspeed_shm_comm"
STALE_LOCK_S = 120  # torch's build lock: a live build starts its compiler in its folder within seconds of taking it
_said: set[str] = set()  # notes printed once per process


def import_deepspeed():
    """DeepSpeed, told up front that a machine without CUDA uses its CPU accelerator (no detection warning), and
    where this Python install keeps the C++ ops it builds (unless $TORCH_EXTENSIONS_DIR says)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    prefix = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions" / f"vad-sweeps-{prefix}"))
    import deepspeed

    return deepspeed


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def local_rank() -> int:
    """This rank's index on its machine, as the launcher set it (0 for a world of one)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def device() -> torch.device:
    import_deepspeed()
    from deepspeed.accelerator import get_accelerator

    return torch.device(get_accelerator().device_name(local_rank()))


def compiler() -> str | None:
    """The C++ compiler torch's extension builder would run ($CXX, else c++), if it exists."""
    return shutil.which(os.environ.get("CXX", "c++"))


def _skip_comm_op(deepspeed, world_size: int) -> None:
    """Keep DeepSpeed from building the op where it cannot help (a world of one) or cannot be built (no compiler)."""
    if torch.cuda.is_available() or (world_size > 1 and compiler()):
        return
    if world_size > 1 and "no compiler" not in _said:
        print(f"note: no C++ compiler ({os.environ.get('CXX', 'c++')}): DeepSpeed's shared-memory CPU all-reduce op is not "
              "built; the ranks all-reduce through gloo (same results, slower)", file=sys.stderr, flush=True)
        _said.add("no compiler")
    deepspeed.ops.__compatible_ops__[SHM_OP] = False  # DeepSpeed's own table: an op marked incompatible is never built


def init_distributed() -> None:
    """Join the process group a launcher set up (Ray Train, torchrun), or start a one-process group.

    The one-process group meets through a file, not torch's TCP store: that store listens on every
    interface, and a laptop trial should open no port at all.
    """
    deepspeed = import_deepspeed()
    if torch.distributed.is_initialized():  # Ray Train's group: DeepSpeed's engine joins it
        _skip_comm_op(deepspeed, torch.distributed.get_world_size())
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "MASTER_ADDR" in os.environ:  # a launcher's rendezvous (RANK, WORLD_SIZE, MASTER_ADDR/PORT)
        _skip_comm_op(deepspeed, int(os.environ.get("WORLD_SIZE", 1)))
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
        return
    _skip_comm_op(deepspeed, 1)
    # DeepSpeed reads these; they stay set in this process, so its children (Ray's workers, started after an
    # in-process trial) inherit RANK=0 too: only MASTER_ADDR, which this path never sets, marks a launcher
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    store = Path(tempfile.mkdtemp(prefix="vad-dist-")) / "store"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False, init_method=f"file://{store}", rank=0, world_size=1)


def prepare_comm_op(say: Callable[[str], None]) -> None:
    """Build the shared-memory op here, with a line, before ranks would each build it in silence (a sweep whose
    trials train data-parallel on CPU calls this before its first trial). Nothing where it is built already,
    where there is a GPU, or where no compiler exists (the ranks then go without it, and say so)."""
    if torch.cuda.is_available():
        return
    if compiler() is None:
        say(f"no C++ compiler: the data-parallel ranks all-reduce through gloo, without DeepSpeed's {SHM_OP} op")
        return
    import_deepspeed()
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder
    from torch.utils.cpp_extension import _get_build_directory

    build = Path(_get_build_directory(SHM_OP, False))
    if not (build / f"{SHM_OP}.so").is_file():
        say(f"compiling DeepSpeed's CPU comm op {SHM_OP} with {compiler()} (first run in this Python only, a minute or two)")
    if stale := stale_build_lock(build):
        say(stale)
    ShareMemCommBuilder().load(verbose=False)


def stale_build_lock(build: Path, now: float | None = None) -> str | None:
    """What to do about torch's build lock in `build`, when it looks left behind: older than STALE_LOCK_S, and no
    process on this machine works in that folder (the compiler runs there). Torch removes the lock when a build
    ends, but a build killed mid-way (Ctrl-C, kill -9) leaves it, and every later build waits on it for ever
    without a line. Only said, never deleted: on a home folder that several machines share, another machine may
    be compiling there."""
    lock = build / "lock"
    try:
        age = (now or time.time()) - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    if age < STALE_LOCK_S or any(_works_in(pid, build.resolve()) for pid in os.listdir("/proc") if pid.isdigit()):
        return None
    return (f"waiting on {lock}, {age / 60:.0f} min old, though no process here builds in {build}: a build killed mid-way "
            f"leaves it and torch then waits for ever. If no other machine is compiling there, delete it (rm {lock}) and run again")


def _works_in(pid: str, folder: Path) -> bool:
    """Whether process `pid` has `folder` (resolved) as its working directory."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == folder
    except OSError:  # gone, or another user's
        return False
