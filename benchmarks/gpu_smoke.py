"""The `paper` profile's model sizes, each training stage cut to a few hundred steps, then scoring: does the
GPU path run end to end, and how fast? Prints per stage the step time, samples/s and the world size,
device and precision it trained with, then peak GPU memory (peak RSS on a machine without CUDA) and the AUCs.

    just gpu-smoke                                      # synthetic at the paper's 256x256 RGB, 200 steps a stage
    python benchmarks/gpu_smoke.py --steps 300 --benchmark ped2 --data-root ../shared/data
    python benchmarks/gpu_smoke.py --set itae.width=0.0625 ...  # any override; the test suite runs it at TINY size on CPU

Runs in-process (world size 1, the same code path as a sweep trial); the stage cache is a temporary folder
unless --cache is given, so each run trains. Ends with one JSON line of the figures.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: vadcore need not be installed
from vadcore.errors import guarded  # noqa: E402
from vadcore.config import resolve_config  # noqa: E402
from vadcore.pipeline import run_trial  # noqa: E402


def figures(trial: dict, cfg) -> dict:
    """Per training stage: step time, samples/s (global batch x steps / seconds), world size, device, precision."""
    out = {}
    batch = {"itae": cfg.itae_train.batch_size, "flow_app": cfg.flow.train.batch_size, "flow_mot": cfg.flow.train.batch_size}
    for name, history in trial["history"].items():
        steps, seconds = sum(e["steps"] for e in history), history[-1]["seconds"] if history else 0.0
        out[name] = {"steps": steps, "step_ms": round(1000 * seconds / max(steps, 1), 2),
                     "samples_per_s": round(batch[name] * steps / max(seconds, 1e-9), 2), **trial["training"][name]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", default="synthetic")
    p.add_argument("--data-root")
    p.add_argument("--steps", type=int, default=200, help="optimiser steps per training stage (one epoch)")
    p.add_argument("--cache", help="stage cache (default: a temporary folder: every stage trains)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    return guarded(run, p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    sets = [f"{s}.{k}" for s in ("itae_train", "flow.train") for k in ("epochs=1", f"max_steps={args.steps}")] + args.sets
    cfg = resolve_config(args.benchmark, "paper", sets)
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "cache"
        trial = run_trial(cfg, args.data_root, cache, Path(tmp) / "trial", show=False)
    m = trial["metrics"]
    result = {
        "benchmark": args.benchmark, "stages": figures(trial, cfg),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "auc_micro": m["auc_micro"], "auc_micro_global": m["auc_micro_global"], "seconds": trial["seconds"],
    }
    for name, f in result["stages"].items():
        print(f"{name:9s} {f['steps']:5d} steps  {f['step_ms']:9.2f} ms/step  {f['samples_per_s']:9.2f} samples/s  "
              f"world {f['world_size']} on {f['device']}, {f['precision']}")
    memory = f"peak GPU memory {result['peak_gpu_mb']} MB ({result['gpu']})" if result["gpu"] else "no CUDA device"
    print(f"{memory}; peak RSS {result['peak_rss_mb']} MB; auc_micro {m['auc_micro']:.4f}, auc_micro_global {m['auc_micro_global']:.4f}; "
          f"trial {trial['seconds']:.1f} s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
