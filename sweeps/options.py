"""A sweep run's options, typed: the command line's (`RunOptions`, saved to results/<sweep>/sweep.json so that
`sweeps resume` repeats them) and what every trial of the run is handed (`TrialContext`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from results.layout import SWEEP_FILE
from sweeps.plans import TrialPlan
from sweeps.spec import SweepSpec, load_sweep
from vadcore.errors import ConfigError
from vadcore.paths import results_root


@dataclass
class RunOptions:
    profile: str | None = None
    benchmarks: list[str] | None = None
    data_root: str | None = None
    results: str | None = None  # default: $VAD_RESULTS or results/ (vadcore.paths)
    cache: str | None = None  # default: $VAD_CACHE or .cache/vad, as `python -m vadcore`
    address: str | None = None
    sets: list[str] = field(default_factory=list)
    num_samples: int | None = None  # a search's sample count, in place of the sweep file's search.num_samples
    seeds: list[int] | None = None  # every trial's seeds, in place of the sweep file's seeds
    variants: list[str] | None = None  # only these variants of a grid (None: all)
    workers_per_trial: int | None = None  # Ray Train workers per training stage, in place of resources.workers
    max_concurrent: int | None = None  # trials at once, in place of the sweep file's max_concurrent
    share_stages: bool = True  # False: every trial trains its own stages (as a plain Ray Tune or W&B sweep); shards stay shared
    throughput: str | None = None  # gpu-check's throughput.json: the bill's TFLOP/s (default: $VAD_THROUGHPUT, else assumed)
    quiet: bool = False  # no per-trial progress lines (tests)


@dataclass(frozen=True)
class TrialContext:
    """What a Tune trial needs beyond its Tune config (a grid plan's index, or a search sample's values): handed to
    every trial of one fit, so it is pickled once per trial actor."""

    spec: SweepSpec
    trials: Path  # results/<sweep>/trials
    cache: Path  # the stage cache (shards always live there)
    data_root: str | None
    profile: str
    sets: tuple[str, ...] = ()
    share_stages: bool = True
    plans: tuple[TrialPlan, ...] = ()  # a grid's plans, indexed by the Tune config's "plan"
    bench: str | None = None  # a search's benchmark
    default_point: dict[str, Any] | None = None  # a search's sample that is the profile's own config: trial "default"


def sweep_dir(spec: SweepSpec, results: str | None) -> Path:
    return results_root(results) / spec.name


def results_name(name_or_path: str, results: str | None) -> str:
    """The folder under results/ of a sweep named as on the command line: a .toml path gives its file's `name`;
    a bare name is that folder if it exists (a sweep run from a file outside sweeps/ is found by its name
    alone), else the `name` of sweeps/NAME.toml (which may differ from the file's name)."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.is_file() or not (results_root(results) / name_or_path).is_dir():
        return load_sweep(name_or_path, resolve=False).name
    return name_or_path


def load_run_options(name_or_path: str, results: str | None) -> tuple[str, RunOptions]:
    """The file and options of a sweep's last run, for `resume`."""
    name = results_name(name_or_path, results)
    f = results_root(results) / name / SWEEP_FILE
    if not f.is_file():
        raise ConfigError(f"nothing to resume: {f} does not exist (run `python -m sweeps run {name_or_path}` first)")
    saved = json.loads(f.read_text())
    file = saved.pop("file")
    return file, RunOptions(**{k: v for k, v in saved.items() if k in RunOptions.__dataclass_fields__})
