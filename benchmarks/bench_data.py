"""Is the data path fast enough? Ped2 shard writing, then training-clip throughput against what training consumes.

    python benchmarks/bench_data.py                               # data root: $VAD_DATA_ROOT or ../shared/data
    python benchmarks/bench_data.py --data-root ~/data --steps 5

At Ped2's smoke profile (64×96 grey, T = 16, train stride 2, batch 8):
1. shard writing time per split (decode JPEGs, resize, write tars, hash), into a temporary cache folder;
2. ClipDataset throughput in clips/s over one training epoch (train=True) with 0 DataLoader workers at torch's
   default threads and at 1 (the process collates the batches itself), and with 2 workers;
3. the clips/s one ITAE training step consumes (forward + backward + Adam on random clips, the median of
   --steps steps after 2 warm-up steps, at torch's default threads and at 1; the faster counts).
The loader/training ratio should be ≥ 10, so the loader never starves training. On a shared machine the
timings are noisy. Prints a table, then one JSON line of flat dotted keys.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich import box
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repo root: vadcore need not be installed
from bench_model import interleaved, make_step  # beside this script, so on sys.path

from vadcore.config import resolve_config
from vadcore.data import SPLITS, get_benchmark, resolve_data_root
from vadcore.data.loader import ClipDataset, load_manifest
from vadcore.data.shards import ShardSpec, ensure_shards

def loader_clips_per_s(folder: Path, frames: int, stride: int, batch: int, workers: int, threads: int) -> tuple[float, int]:
    """(clips/s, clips) over one training epoch, worker start-up included (the trainer restarts them every epoch).

    `threads`: torch's threads in this process, which collates batches when workers = 0 (workers use 1).
    """
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    ds = ClipDataset(folder, frames, stride, train=True, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers)
    t0 = time.perf_counter()
    clips = sum(len(b["clip"]) for b in loader)
    seconds = time.perf_counter() - t0
    torch.set_num_threads(default)
    return clips / seconds, clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", help="folder holding ped2/ (default: $VAD_DATA_ROOT, else ../shared/data)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps, after 2 warm-up steps")
    args = parser.parse_args()

    cfg = resolve_config("ped2", "smoke")
    d, batch = cfg.data, cfg.itae_train.batch_size
    bench = get_benchmark("ped2", resolve_data_root(args.data_root) or REPO.parent / "shared" / "data")
    thread_counts = sorted({torch.get_num_threads(), 1}, reverse=True)  # torch's default, and 1
    record: dict[str, float | int | str] = {"bench": "data", "threads": thread_counts[0]}
    table = Table(title=f"Ped2 data path at the smoke profile ({d.height}×{d.width}×{d.channels}, T={cfg.itae.frames}, stride {d.train_stride}, batch {batch})", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("measure", "seconds", "items", "per second"):
        table.add_column(col, justify="left" if col == "measure" else "right")

    with tempfile.TemporaryDirectory(prefix="bench-data-") as cache:
        folders = {}
        for split in SPLITS:
            t0 = time.perf_counter()
            folders[split], _ = ensure_shards(bench, ShardSpec("ped2", split, d.height, d.width, d.channels), Path(cache), show_progress=False)
            seconds, frames = time.perf_counter() - t0, load_manifest(folders[split])["frames"]
            record.update({f"shard.{split}.seconds": round(seconds, 2), f"shard.{split}.frames_per_s": round(frames / seconds, 1)})
            table.add_row(f"write {split} shards", f"{seconds:.2f}", f"{frames} frames", f"{frames / seconds:.0f} frames/s")
        loader = {}  # (workers, threads) -> clips/s
        for workers, threads in [(0, t) for t in thread_counts] + [(2, thread_counts[0])]:
            speed, clips = loader_clips_per_s(folders["train"], cfg.itae.frames, d.train_stride, batch, workers, threads)
            loader[workers, threads] = speed
            record[f"loader.{workers}_workers.{threads}_threads.clips_per_s"] = round(speed, 1)
            table.add_row(f"ClipDataset, {workers} workers, {threads} thr", f"{clips / speed:.2f}", f"{clips} clips", f"{speed:.0f} clips/s")

    steps = interleaved({f"{t}_threads": (make_step(cfg, batch), t) for t in thread_counts}, 2, args.steps)
    if errors := [r for r in steps.values() if isinstance(r, str)]:
        sys.exit(f"ITAE training step failed: {errors[0]}")
    for t, (seconds, _) in zip(thread_counts, steps.values()):
        record[f"train.{t}_threads.clips_per_s"] = round(batch / seconds, 2)
        table.add_row(f"ITAE training step, {t} thr", f"{seconds:.2f}", f"{batch} clips", f"{batch / seconds:.1f} clips/s")
    train = max(batch / seconds for seconds, _ in steps.values())
    for (workers, threads), speed in loader.items():
        record[f"ratio.{workers}_workers.{threads}_threads"] = round(speed / train, 1)
    table.caption = (
        f"loader ÷ fastest training step: {', '.join(f'{v / train:.1f}× at {w} workers, {t} thr' for (w, t), v in loader.items())} "
        "(target ≥ 10×). Shared machine: timings are noisy."
    )
    Console().print(table)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
