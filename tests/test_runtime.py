"""vadcore.runtime: the numerics switches as config, and DataLoader workers sized to /dev/shm, proved against a
real /dev/shm too small for the batches (a tmpfs in a private mount namespace)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from vadcore import runtime
from vadcore.config import resolve_config
from vadcore.errors import ConfigError
from vadcore.runtime import RuntimeConfig, apply_runtime, loader_workers, runtime_record

MIB = 2**20


@pytest.fixture
def restore_switches():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
     torch.backends.cudnn.deterministic) = saved[:4]
    torch.use_deterministic_algorithms(saved[4])


def test_runtime_switches_are_config_with_written_defaults(restore_switches):
    cfg = resolve_config("synthetic", "smoke", ["runtime.deterministic=true", "runtime.cudnn_benchmark=false"])
    apply_runtime(cfg.runtime)
    assert runtime_record() == {"tf32": True, "cudnn_benchmark": False, "deterministic": True}
    assert torch.backends.cudnn.deterministic
    apply_runtime(RuntimeConfig(tf32=False))
    assert runtime_record() == {"tf32": False, "cudnn_benchmark": True, "deterministic": False}
    with pytest.raises(ConfigError, match=r"runtime.deterministic=true needs runtime.cudnn_benchmark=false"):
        resolve_config("synthetic", "smoke", ["runtime.deterministic=true"])


@pytest.mark.parametrize("free_mib, batch_mib, requested, expected", [
    (64, 44, 8, 0),  # Docker's default /dev/shm and 32 Ped2 paper clips: no room for a single worker
    (64, 2.64, 8, 5),  # 32 MiB usable: 12 batches, less the one trained on, 2 per worker
    (24 * 1024, 101, 8, 8),  # this machine, 32 Avenue paper clips: all 8
    (64, 44, 0, 0),
])
def test_loader_workers_fit_half_of_shm(monkeypatch, free_mib, batch_mib, requested, expected):
    monkeypatch.setattr(runtime, "shm_free", lambda shm=None: int(free_mib * MIB))
    assert loader_workers(requested, int(batch_mib * MIB)) == expected


SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from vadcore.config import resolve_config
    from vadcore.data import get_benchmark
    from vadcore.data.loader import clip_batches
    from vadcore.data.shards import ShardSpec, ensure_shards
    from vadcore.steps.windows import window_loader
    from vadcore.testing import TINY

    cfg = resolve_config("synthetic", "smoke", [*TINY, "data.loader_workers=2"])
    spec = ShardSpec("synthetic", "train", cfg.data.height, cfg.data.width, cfg.data.channels)
    folder, _ = ensure_shards(get_benchmark("synthetic"), spec, Path(sys.argv[1]), show_progress=False)
    batch = 128  # 128 x 1 x 8 x 32 x 48 uint8: 1.5 MiB a batch, a 2 MiB /dev/shm
    ds, sized = window_loader(folder, cfg, train=True, batch=batch)
    print("sized", sum(len(b["start"]) for b in sized), ds.num_windows(), flush=True)
    try:
        print("unsized", sum(len(b["start"]) for b in clip_batches(ds, batch, 2)), flush=True)
    except RuntimeError as e:
        print("unsized failed:", str(e).splitlines()[-1], flush=True)
""")


@pytest.mark.skipif(not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode != 0,
                    reason="needs unprivileged user and mount namespaces (unshare -rm)")
def test_a_small_shm_lowers_the_workers_instead_of_killing_the_loader(tmp_path):
    """/dev/shm of 2 MiB (a container's is 64 MB; Ped2 paper batches are 44 MB): two workers passing 1.5 MiB
    batches through it fail; window_loader starts none and yields every window."""
    mount = f"mount -t tmpfs -o size=2m tmpfs /dev/shm && exec {sys.executable} -c \"$0\" {tmp_path}"
    run = subprocess.run(["unshare", "-rm", "sh", "-c", mount, SCRIPT], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    sized = next(ln for ln in lines if ln.startswith("sized")).split()
    assert sized[1] == sized[2]  # every window, in batches made by the training process
    assert any(ln.startswith("unsized failed:") for ln in lines), run.stdout
    assert "data.loader_workers=2 lowered to 0" in run.stderr
