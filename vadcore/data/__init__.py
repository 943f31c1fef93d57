"""Benchmarks by name, and where their files are looked for.

    from vadcore.data import get_benchmark
    bench = get_benchmark("ped2", data_root="../shared/data")
    videos = bench.videos("test")
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from vadcore.data.base import DEV, SPLITS, Benchmark, Split, Video
from vadcore.errors import DataError

DATA_ROOT_ENV = "VAD_DATA_ROOT"

# name -> "module:Class"; imported on demand so listing benchmarks decodes nothing.
BENCHMARKS = {
    "synthetic": "vadcore.data.synthetic:SyntheticBenchmark",
    "ped2": "vadcore.data.ped2:Ped2",
    "avenue": "vadcore.data.avenue:Avenue",
    "shanghaitech": "vadcore.data.shanghaitech:ShanghaiTech",
}
NEEDS_DATA = {"ped2", "avenue", "shanghaitech"}


def resolve_data_root(data_root: str | Path | None) -> Path | None:
    """The --data-root flag, else $VAD_DATA_ROOT, else None (only the synthetic benchmark works then)."""
    value = data_root if data_root not in (None, "") else os.environ.get(DATA_ROOT_ENV)
    return Path(value).expanduser().resolve() if value else None


def get_benchmark(name: str, data_root: str | Path | None = None) -> Benchmark:
    if name not in BENCHMARKS:
        raise DataError(f"unknown benchmark {name!r}; allowed: {', '.join(BENCHMARKS)}")
    root = resolve_data_root(data_root)
    if name in NEEDS_DATA:
        if root is None:
            raise DataError(
                f"benchmark {name!r} needs its files: pass --data-root DIR or set ${DATA_ROOT_ENV} "
                f"(DIR holds {name}/ in the benchmark's original layout)"
            )
        if not root.is_dir():
            raise DataError(f"data root {root} does not exist (from --data-root or ${DATA_ROOT_ENV})")
        if not (root / name).is_dir():
            raise DataError(f"benchmark folder {root / name} not found under data root {root}")
    return benchmark_class(name)(root)


def benchmark_class(name: str) -> type[Benchmark]:
    """The class registered under `name` (imported now: what it offers, e.g. `has_dev`, without reading data)."""
    module, cls = BENCHMARKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["BENCHMARKS", "DEV", "Benchmark", "SPLITS", "Split", "Video", "benchmark_class", "get_benchmark", "resolve_data_root"]
