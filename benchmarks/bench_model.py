"""CPU cost of one ITAE training step (forward + backward + Adam), beside torch's own float32 matmul speed.

    python benchmarks/bench_model.py                  # laptop and paper variants: ~8 minutes on 2 busy cores
    python benchmarks/bench_model.py --paper-steps 0  # laptop only
    python benchmarks/bench_model.py --no-compile     # skip torch.compile (first compile: ~2 min per thread count)

Laptop: Ped2's laptop profile, a batch of its training clips (its `itae_train.crop` when set). Paper: Avenue's
paper profile, batch 1 of 3×16×256×256. FLOPs per step = 3 × forward FLOPs (torch's FlopCounterMode: 2 ×
conv/deconv multiply-adds). Variants: the profile's own precision ("as trained": bf16 autocast under a
`torch_autocast` DeepSpeed config, as the engine's forward runs), float32 and bf16 autocast explicitly,
channels_last_3d memory format and torch.compile, each at torch's default threads and at 1. Variants take turns
step by step and report the median, so load from other jobs hits them alike; still, on a shared machine compare
variants within one run, not across runs. Each is compared with torch's float32 matmul at its own thread count
(bf16 autocast can beat it: oneDNN runs bf16 convolutions on AMX where the CPU has it). Prints a table, then one
JSON line of flat dotted keys.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from rich import box
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: vadcore need not be installed
from vadcore.config import TrialConfig, resolve_config
from vadcore.describe import flow_inputs, forward_flops
from vadcore.models.itae import ITAE
from vadcore.models.losses import reconstruction_loss
from vadcore.train import autocast_dtype

MATMUL_N = 2048


def matmul_gflops(threads: int, repeats: int = 10) -> float:
    """Torch's float32 GFLOP/s on a 2048×2048 matmul at `threads` threads: the ceiling for a conv network."""
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    times = []
    for _ in range(repeats + 2):  # the first 2 warm up
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    torch.set_num_threads(default)
    return 2 * MATMUL_N**3 / statistics.median(times[2:]) / 1e9


def clip_size(cfg: TrialConfig) -> tuple[int, int]:
    """(H, W) of the clips the ITAE trains on: its `itae_train.crop`, else the frames."""
    return tuple(cfg.itae_train.crop) if cfg.itae_train.crop else (cfg.data.height, cfg.data.width)


def step_flops(cfg: TrialConfig, batch: int) -> int:
    """FLOPs of one training step on `batch` clips: 3 x the forward's (backward ~ 2 x forward)."""
    return 3 * forward_flops(cfg.itae, *clip_size(cfg), batch)[0]


def make_step(cfg: TrialConfig, batch: int, *, channels_last: bool = False, compiled: bool = False, dtype: str | None = "as trained") -> Callable[[], None]:
    """One training step as the trainer takes it: forward (under autocast, as DeepSpeed's engine runs it when the
    profile's config has one), reconstruction loss (Eq. 4) in float32, backward, Adam.

    Input: random clips (batch, C, T, H, W) at the size the profile trains on (`clip_size`). dtype: "as trained"
    (the profile's DeepSpeed config), None (float32) or an autocast dtype ("bfloat16").
    """
    torch.manual_seed(0)
    d = cfg.data
    model = ITAE(cfg.itae)
    x = torch.rand(batch, d.channels, cfg.itae.frames, *clip_size(cfg))
    cast = autocast_dtype(cfg.deepspeed) if dtype == "as trained" else dtype
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.itae_train.lr)
    forward = torch.compile(model) if compiled else model

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=getattr(torch, cast or "float32"), enabled=cast is not None):
            recon = forward(x).recon
        loss, _ = reconstruction_loss(x, recon.float(), cfg.loss)
        loss.backward()
        opt.step()

    return step


def make_flow_step(cfg: TrialConfig, batch: int, path: str = "mot") -> tuple[Callable[[], None], int]:
    """(one flow training step as build_flow takes it: Glow forward, prior loss, backward, Adam; its FLOPs).

    Input: random features of the flow's input shape at the profile's size (`vadcore.describe.flow_inputs`).
    FLOPs = 3 x the forward's (FlopCounterMode: the couplings' convolutions and the invertible 1x1 convolutions;
    ActNorm, slogdet and the prior's arithmetic uncounted), as for the ITAE.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from vadcore.steps.flow import FlowModel

    torch.manual_seed(0)
    c, h, w = flow_inputs(cfg)[f"F_{path}"]
    model = FlowModel(cfg, c, h, w, num_classes=1)
    x, y = torch.randn(batch, c, h, w), torch.zeros(batch, dtype=torch.long)
    with torch.no_grad():
        model.glow(x)  # ActNorm's data-dependent init, as build_flow does before training
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.glow(x)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.flow.train.lr)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss, _ = model.prior.loss(out.z, out.logdet + out.split_logp, y, 0.5)
        loss.backward()
        opt.step()

    return step, 3 * counter.get_total_flops()


def interleaved(steps: dict[str, tuple[Callable[[], None], int]], warmup: int, repeats: int) -> dict[str, tuple[float, float] | str]:
    """name -> (median seconds per step, seconds of its warm-up steps), or the error that stopped it.

    `steps` maps a name to (step function, threads). After each variant's warm-up, the variants take turns
    one step at a time, so a change of load from other jobs hits them all alike.
    """
    default = torch.get_num_threads()

    def timed(name: str) -> float:
        fn, threads = steps[name]
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        try:
            fn()
        finally:
            torch.set_num_threads(default)
        return time.perf_counter() - t0

    errors: dict[str, str] = {}
    warm: dict[str, float] = {}
    for name in steps:
        try:
            warm[name] = sum(timed(name) for _ in range(warmup))
        except Exception as e:  # torch.compile fails without a working C++ toolchain: report why, go on
            errors[name] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
    times: dict[str, list[float]] = {name: [] for name in warm}
    for _ in range(repeats):
        for name in warm:
            times[name].append(timed(name))
    return {name: errors[name] if name in errors else (statistics.median(times[name]), warm[name]) for name in steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed smoke steps per variant, after 2 warm-up steps")
    parser.add_argument("--paper-steps", type=int, default=2, help="timed paper steps per variant, after 1 warm-up; 0 skips paper")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = parser.parse_args()

    default = torch.get_num_threads()
    thread_counts = sorted({default, 1}, reverse=True)
    matmul = {t: matmul_gflops(t) for t in thread_counts}
    record: dict[str, float | int | str] = {"bench": "model", "threads": default}
    record.update({f"matmul_gflops.{t}_threads": round(g, 1) for t, g in matmul.items()})
    laptop = resolve_config("ped2", "laptop")
    profiles = [("laptop", laptop, laptop.itae_train.batch_size, args.steps, 2)]
    if args.paper_steps > 0:
        profiles.append(("paper", resolve_config("avenue", "paper"), 1, args.paper_steps, 1))

    table = Table(title=f"ITAE training step on CPU; matmul GFLOP/s: {', '.join(f'{g:.0f} at {t} thr' for t, g in matmul.items())}", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("variant", "thr", "ms/step", "clips/s", "GFLOP/s", "÷matmul", "warm s"):
        table.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
    shapes = []
    for profile, cfg, batch, repeats, warmup in profiles:
        shapes.append(f"{profile} {batch}×{cfg.data.channels}×{cfg.itae.frames}×{'×'.join(map(str, clip_size(cfg)))} "
                      f"(as trained: {autocast_dtype(cfg.deepspeed) or 'float32'})")
        kinds = {"as trained": {}, "float32": {"dtype": None}, "bf16 autocast": {"dtype": "bfloat16"},
                 "channels_last_3d": {"channels_last": True}}
        if profile == "laptop" and not args.no_compile:
            kinds["compile"] = {"compiled": True}
        variants = {(v, t): make_step(cfg, batch, **kw) for v, kw in kinds.items() for t in thread_counts}  # (variant, threads) -> step
        flops = step_flops(cfg, batch)
        results = interleaved({f"{profile}.{v}.{t}_threads": (fn, t) for (v, t), fn in variants.items()}, warmup, repeats)
        for (variant, threads), (key, result) in zip(variants, results.items()):  # both in insertion order
            label = f"{profile} {variant}"
            if isinstance(result, str):
                record[f"{key}.error"] = result
                table.add_row(label, str(threads), "failed", "", "", "", "", style="red")
                continue
            seconds, warm = result
            gflops = flops / seconds / 1e9
            record.update({
                f"{key}.ms_per_step": round(seconds * 1e3, 1),
                f"{key}.clips_per_s": round(batch / seconds, 2),
                f"{key}.gflops": round(gflops, 1),
                f"{key}.ratio": round(gflops / matmul[threads], 3),
                f"{key}.warmup_s": round(warm, 1),
            })
            cells = (seconds * 1e3, batch / seconds, gflops, gflops / matmul[threads], warm)
            table.add_row(label, str(threads), *(f"{v:.2f}" if v < 10 else f"{v:.1f}" for v in cells))
    table.caption = f"inputs: {'; '.join(shapes)}. Target: laptop as trained ÷matmul ≥ 0.5. Shared machine: timings are noisy."
    console = Console()
    console.print(table)
    for key, value in record.items():
        if key.endswith(".error"):
            console.print(f"{key.removesuffix('.error')} failed: {value}", style="red")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
