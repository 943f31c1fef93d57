"""Benchmarks by name, and where their files are looked for.

    from vadcore.data import get_benchmark
    bench = get_benchmark("ped2", data_root="../shared/data")
    videos = bench.videos("test")
    both = get_benchmark("ped2+avenue", data_root="../shared/data")   # one benchmark: vadcore.data.composite
"""
from __future__ import annotations

import functools
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
ALLOWED = f"{', '.join(BENCHMARKS)}, or several of them joined by '+' (e.g. ped2+avenue)"


def benchmark_members(name: str, where: str | None = None) -> tuple[str, ...]:
    """The registered benchmarks `name` is made of: (name,) for a registered name, the members of a composite
    "a+b" otherwise. An unknown or repeated member is a DataError; `where` names the field in it (e.g.
    "data.benchmark"), else the message speaks of a benchmark."""
    from vadcore.data.composite import SEPARATOR

    members = tuple(name.split(SEPARATOR))
    field = f"{where}={name!r}" if where else None
    for i, m in enumerate(members):
        if m not in BENCHMARKS:
            if len(members) == 1:
                what = f"{field} unknown" if field else f"unknown benchmark {name!r}"
            else:
                what = (f"{field}: " if field else "") + f"unknown benchmark {m!r} in {name!r}"
            raise DataError(f"{what}; allowed: {ALLOWED}")
        if m in members[:i]:
            raise DataError(f"{field or f'benchmark {name!r}'} names {m!r} twice: a composite's members must be distinct")
    return members


def resolve_data_root(data_root: str | Path | None) -> Path | None:
    """The --data-root flag, else $VAD_DATA_ROOT, else None (only the synthetic benchmark works then)."""
    value = data_root if data_root not in (None, "") else os.environ.get(DATA_ROOT_ENV)
    return Path(value).expanduser().resolve() if value else None


def get_benchmark(name: str, data_root: str | Path | None = None) -> Benchmark:
    """The benchmark `name` (registered, or a composite "a+b" of registered ones) reading from `data_root`;
    a DataError names what is missing (for a composite: which member's files)."""
    members = benchmark_members(name)
    if len(members) > 1:
        return benchmark_class(name)([get_benchmark(m, data_root) for m in members])
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


@functools.cache
def benchmark_class(name: str) -> type[Benchmark]:
    """The class registered under `name`, or a composite's class (imported now: what it offers, e.g. `has_dev`,
    without reading data). Cached: a composite's class is made once per name."""
    members = benchmark_members(name)
    if len(members) > 1:
        from vadcore.data.composite import composite_class

        return composite_class(name, tuple(benchmark_class(m) for m in members))
    module, cls = BENCHMARKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def benchmark_scenes(name: str, data_root: str | Path | None = None) -> list[str]:
    """The scenes of `name` that have both training and test videos, sorted: the scenes a model of its own can
    be trained and scored on (ShanghaiTech's scene 13 has no test video). Lists files, decodes nothing."""
    bench = get_benchmark(name, data_root)
    train, test = ({v.scene for v in bench.videos(split)} for split in SPLITS)
    return sorted(train & test)


def scene_holdout(bench: Benchmark, scenes: tuple[str, ...] = ()) -> frozenset[str]:
    """The benchmark's `dev_holdout`, restricted to the training videos of `scenes` (`data.scenes`) when given:
    a scene subset's training shards hold only those scenes' videos, and only theirs can be held out of them."""
    holdout = bench.dev_holdout()
    if not scenes or not holdout:
        return holdout
    scene_of = {v.id: v.scene for v in bench.videos("train")}
    return frozenset(v for v in holdout if scene_of.get(v) in scenes)


__all__ = ["ALLOWED", "BENCHMARKS", "DEV", "Benchmark", "SPLITS", "Split", "Video", "benchmark_class", "benchmark_members",
           "benchmark_scenes", "get_benchmark", "resolve_data_root", "scene_holdout"]
