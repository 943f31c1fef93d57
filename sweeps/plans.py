"""A sweep's trials: each (variant, benchmark, seed) of a grid, or a search's base config per benchmark and seed, as a
`TrialPlan` whose config is resolved here, once, and the `python -m vadcore run` command that reproduces it.

    plans = expand(load_sweep("ablation-paths"), extra_sets=["itae_train.epochs=1"])
    plans[0].command  # 'OMP_NUM_THREADS=1 python -m vadcore run --benchmark synthetic --profile smoke --set ... --out ...'
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from results.layout import per_scene_name, trial_id
from sweeps.spec import SweepSpec, check_extra_sets, forced
from vadcore.config import PROFILES, TrialConfig, resolve_config
from vadcore.configtools import flatten, parse_sets, unflatten
from vadcore.errors import ConfigError, DataError


@dataclass(frozen=True)
class TrialPlan:
    """One trial of a grid sweep: what it runs, and the command that runs it outside the sweep."""

    variant: str
    benchmark: str
    seed: int
    overrides: dict[str, Any]  # flat dotted keys: fixed <- variant <- seed <- extra --set
    config: TrialConfig
    command: str

    @property
    def trial_id(self) -> str:
        return trial_id(self.variant, self.benchmark, self.seed)


def command(benchmark: str, profile: str, overrides: dict[str, Any], out: str, data_root: str | None = None, threads: int = 1) -> str:
    """The `python -m vadcore run` line that reproduces a trial outside the sweep, on the trial's CPU threads (float
    sums in another order on another thread count: the same AUCs to the last digit need the same count)."""
    parts = ["python", "-m", "vadcore", "run", "--benchmark", benchmark, "--profile", profile]
    if data_root:
        parts += ["--data-root", str(data_root)]
    for k, v in overrides.items():
        parts += ["--set", f"{k}={toml_value(v)}"]
    parts += ["--out", out]
    return f"OMP_NUM_THREADS={threads} " + shlex.join(parts)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def plan_overrides(spec: SweepSpec, variant: dict[str, Any], seed: int, extra_sets: list[str] | None) -> dict[str, Any]:
    flat = {**flatten(spec.fixed), **variant, "seed": seed}
    if extra_sets:
        flat.update(flatten(parse_sets(extra_sets)))
    return {**flat, **forced(spec)}


def make_plan(spec: SweepSpec, name: str, variant: dict[str, Any], bench: str, seed: int, profile: str,
              extra_sets: list[str] | None, out_root: str = "runs", data_root: str | None = None) -> TrialPlan:
    flat = plan_overrides(spec, variant, seed, extra_sets)
    try:
        cfg = resolve_config(bench, profile, None, extra=unflatten(flat))
    except ConfigError as e:
        raise ConfigError(f"{spec.path}: variant {name!r} on benchmark {bench!r} is not a valid trial: {e}") from None
    out = f"{out_root}/{trial_id(name, bench, seed)}"
    return TrialPlan(name, bench, seed, flat, cfg, command(bench, profile, flat, out, data_root, spec.threads))


def expand(spec: SweepSpec, benchmarks: list[str] | None = None, profile: str | None = None, extra_sets: list[str] | None = None,
           *, out_root: str = "runs", data_root: str | None = None) -> list[TrialPlan]:
    """Every (variant, benchmark, seed) trial of a grid, a `per_scene` variant expanded into one trial per scene
    of the benchmark (which lists its files: `vadcore.data.benchmark_scenes`); for a search, one base plan per
    benchmark and seed (the fixed config the sampled parameters are set on)."""
    from vadcore.data import benchmark_members

    for b in benchmarks or ():
        try:
            benchmark_members(b, where="--benchmarks")
        except DataError as e:
            raise ConfigError(str(e)) from None
    if profile is not None and profile not in PROFILES:
        raise ConfigError(f"--profile {profile!r} unknown; allowed: {', '.join(PROFILES)}")
    check_extra_sets(spec, extra_sets)
    profile = profile or spec.profile
    return [
        make_plan(spec, name, sets, bench, seed, profile, extra_sets, out_root, data_root)
        for bench in (benchmarks or spec.benchmarks)
        for name, sets in _variants(spec, bench, data_root)
        for seed in spec.seeds
    ]


def _variants(spec: SweepSpec, bench: str, data_root: str | None) -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides) of every trial of one benchmark and seed: grid variants, per-scene ones once per scene."""
    from vadcore.data import benchmark_scenes

    if not spec.grid:
        return [("search-base", {})]
    scenes = benchmark_scenes(bench, data_root) if any(v.per_scene for v in spec.grid) else []
    out = []
    for v in spec.grid:
        out += [(per_scene_name(v.name, s), {**v.set, "data.scenes": [s]}) for s in scenes] if v.per_scene else [(v.name, v.set)]
    return out
