"""One trial's stages measured one by one: peak RSS of each stage, and data-parallel efficiency of an ITAE stage.

    python benchmarks/bench_stages.py memory [--set KEY=VALUE ...]    # full variant, synthetic, cold temporary cache
    python benchmarks/bench_stages.py parallel --workers 2 [--set ...]  # one ITAE stage on 1 and on 2 Ray Train workers

`just bench` runs both as child processes, so the bench's own memory is not counted. Each prints one JSON line.

memory: Linux keeps a process's peak RSS (VmHWM) and lets the process reset it (`/proc/self/clear_refs` = 5), so
one trial measures every stage on its own: reset, build the stage, read the peak. A stage's figure therefore
includes what the process already held when it started (interpreter, torch, the previous stages' leftovers):
`baseline_mb` is the RSS at the reset before the first stage. Shards are written first, through the same code
the trial uses, so the trial then reuses them.

parallel: the ITAE stage of the smoke profile (one epoch, `--steps` optimiser steps) trained through
`sweeps.distributed.RayTrain` on 1 worker, then on N, each in a fresh cache. The global batch is the same on
both (each rank trains on its slice), so efficiency = T1 / (N x TN): 1.0 is perfect scaling. Two times each: the
training loop (fit's own clock, `history[-1].seconds`) and the whole stage (Ray Train start-up included).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repo root: vadcore, sweeps need not be installed

from vadcore.config import resolve_config  # noqa: E402
from vadcore.data import SPLITS, get_benchmark  # noqa: E402
from vadcore.data.shards import ShardSpec, ensure_shards  # noqa: E402


def peak_rss_mb() -> float:
    """This process's peak RSS since the last reset (VmHWM), in MB."""
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def rss_mb() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def memory(sets: list[str], benchmark: str, profile: str) -> dict[str, Any]:
    """Peak RSS (MB) of each stage of the full variant (both flows), cold cache, in this process."""
    from vadcore.pipeline import run_trial
    from vadcore.train import in_process

    cfg = resolve_config(benchmark, profile, ["flow.app=true", "flow.mot=true", *sets])
    bench = get_benchmark(benchmark)
    peaks: dict[str, float] = {}

    def measured(build, report, out: Path, ranks: int | None = None):
        reset_peak()
        info = in_process(build, report, out, ranks)
        peaks[out.parent.name] = round(peak_rss_mb(), 1)  # out: the stage's staging folder, beside its key
        return info

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        cache = Path(tmp) / "cache"
        reset_peak()
        baseline = round(rss_mb(), 1)
        for split in SPLITS:
            reset_peak()
            ensure_shards(bench, ShardSpec(benchmark, split, cfg.data.height, cfg.data.width, cfg.data.channels), cache, show_progress=False)
            peaks[f"shards_{split}"] = round(peak_rss_mb(), 1)
        t0 = time.perf_counter()
        trial = run_trial(cfg, None, cache, Path(tmp) / "trial", show=False, launch=measured)
    return {"baseline_mb": baseline, "stages": peaks, "trial_peak_rss_mb": trial["peak_rss_mb"], "seconds": round(time.perf_counter() - t0, 1),
            "benchmark": benchmark, "profile": profile}


def parallel(sets: list[str], workers: int, steps: int, profile: str) -> dict[str, Any]:
    """One ITAE stage on 1 and on `workers` Ray Train workers (1 CPU and 1 torch thread each)."""
    import ray

    from sweeps.distributed import RayTrain
    from sweeps.cluster import init_ray
    from vadcore.pipeline import run_trial

    os.environ["OMP_NUM_THREADS"] = "1"  # each worker on one core, as a sweep's `resources.cpu = 1` gives it
    cfg = resolve_config("synthetic", profile, ["flow.app=false", "flow.mot=false", "itae_train.epochs=1", f"itae_train.max_steps={steps}", *sets])
    init_ray(None, num_cpus=workers)
    out: dict[str, Any] = {"workers": workers, "steps": steps, "profile": profile, "batch": cfg.itae_train.batch_size}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp:
            shards = Path(tmp) / "cache"
            for n in (1, workers):
                t0 = time.perf_counter()
                trial = run_trial(cfg, None, shards, Path(tmp) / f"trial-{n}", show=False, launch=RayTrain(n), stage_root=Path(tmp) / f"stages-{n}")
                stage = trial["stages"]["itae"]
                out[f"w{n}"] = {"stage_s": stage["build_seconds"], "loop_s": trial["history"]["itae"][-1]["seconds"],
                                "world_size": trial["training"]["itae"]["world_size"], "trial_s": round(time.perf_counter() - t0, 2)}
    finally:
        ray.shutdown()
    one, many = out["w1"], out[f"w{workers}"]
    out["efficiency_loop"] = round(one["loop_s"] / (workers * many["loop_s"]), 3)
    out["efficiency_stage"] = round(one["stage_s"] / (workers * many["stage_s"]), 3)
    out["speedup_loop"] = round(one["loop_s"] / many["loop_s"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("memory", "parallel"))
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--benchmark", default="synthetic")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=60, help="parallel: optimiser steps of the ITAE stage")
    args = p.parse_args(argv)
    result = memory(args.sets, args.benchmark, args.profile) if args.what == "memory" else parallel(args.sets, args.workers, args.steps, args.profile)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
