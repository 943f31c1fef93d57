"""A sweep file (TOML) as typed, frozen dataclasses, validated on load; `sweeps.plans` expands it into trials.

A sweep is either a grid of named variants (Table 3's columns) or an Optuna search space; both run every
configured benchmark and seed. Loading resolves the config of every (benchmark, variant) pair, so an
impossible variant (tau not dividing T, Glow levels too deep for the latent) fails before anything runs, with
the file and the variant named.

    spec = load_sweep("ablation-paths")          # a name in sweeps/, or a path to a .toml file
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from results.layout import REPORT_SECTIONS
from vadcore.config import PROFILES, resolve_config
from vadcore.configtools import flatten, load_toml, merge, parse_sets, unflatten
from vadcore.errors import ConfigError, DataError
from vadcore.evaluate import PROTOCOLS
from vadcore.scoring import PARTS

SWEEP_DIR = Path(__file__).resolve().parent  # the shipped sweep files (package data)

# What a trial reports at its end (sweeps.trainable): the pipeline's numeric AUCs (`vadcore.evaluate.frame_auc_report`,
# and `auc`, which follows score.normalise) of S and of each of its parts alone (R; L with a flow; local L with
# per-position NLL maps) on the test split, and with `data.dev` the same on the development split, prefixed dev_.
# A search optimises a dev_ metric only: the test videos are scored, and their AUC reported for the best trials,
# but never chosen by.
TRIAL_METRICS = ("auc", *PROTOCOLS, *(f"{part}_{p}" for part in PARTS for p in PROTOCOLS))
SEARCH_METRICS = tuple(f"dev_{m}" for m in TRIAL_METRICS)
SEARCH_FORCED = {"data.dev": True}  # every search trial scores the development split it is judged on

# The sweep's name and each variant's name become folder names (results/<sweep>/, trials/<variant>-<bench>-s<seed>/).
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SEED_MAX = 2**32 - 1  # numpy's seed range (vadcore.steps.windows.seed_everything)


@dataclass(frozen=True)
class Variant:
    """One grid column: a name and dotted config overrides on top of the sweep's `fixed` table.

    per_scene: one trial per scene of the benchmark instead of one over all of them, each trained and scored on
    its scene alone (`data.scenes`) and named `name@scene` (`per_scene_name`): separate models, which the
    report joins into one row beside the variants trained once over every scene."""

    name: str
    set: dict[str, Any] = field(default_factory=dict)  # {"flow.app": false, "itae.paths": "app"}
    per_scene: bool = False


@dataclass(frozen=True)
class Param:
    """One search dimension: either `choices`, or a range `low`..`high` (float, or int when both are ints)."""

    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False  # sample the range on a log scale


@dataclass(frozen=True)
class Search:
    metric: str = "dev_auc"  # one of SEARCH_METRICS: an AUC on the benchmark's development split, never the test set
    mode: str = "max"  # "max" | "min"
    num_samples: int = 8  # Optuna trials per benchmark and seed
    seed: int = 0  # the Optuna sampler's seed
    space: dict[str, Param] = field(default_factory=dict)  # dotted config key -> Param


@dataclass(frozen=True)
class Scheduler:
    type: str = "none"  # "none" | "asha"
    grace_period: int = 1  # ASHA: ITAE epochs before a trial may be stopped
    max_t: int = 100  # ASHA: rungs lie at ITAE epochs up to this one (a trial is never stopped for reaching it)
    reduction_factor: int = 2  # ASHA: keeps the best 1/reduction_factor of the trials at each rung (> 1)
    # ASHA's rungs are ITAE epochs, its metric the ITAE's loss on held-out normal training videos (runner.rung),
    # the same quantity in every trial whether it trained its ITAE or reused one; never a test AUC.


@dataclass(frozen=True)
class Resources:
    """What one trial asks Ray for. workers = 0: the trial trains in its own process (cpu, gpu are its own).
    workers = N: each training stage runs data-parallel on N Ray Train workers of `cpu` CPUs and `gpu` GPUs
    each (the global batch stays the config's batch_size: vadcore.train), and the trial process itself takes
    no CPU: it only drives them."""

    cpu: float = 1.0  # CPUs per trial, or per worker when workers > 0 (Ray resource and torch threads)
    gpu: float = 0.0  # GPUs per trial, or per worker when workers > 0
    workers: int = 0  # Ray Train workers per training stage (0 = train in the trial's process)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    path: Path
    description: str = ""
    benchmarks: tuple[str, ...] = ("synthetic",)
    profile: str = "smoke"
    seeds: tuple[int, ...] = (0,)  # distinct: each trial's `seed` (one folder per seed); nothing else may set it
    fixed: dict[str, Any] = field(default_factory=dict)  # nested like TrialConfig, merged into every trial
    grid: tuple[Variant, ...] = ()
    search: Search | None = None
    scheduler: Scheduler = field(default_factory=Scheduler)
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int = 2  # trials running at once (0 = as many as resources allow)
    retries: int = 2  # a trial whose process or node dies is run again up to this many times (Tune's max_failures);
    # one that fails for its own reason (a diverging loss, bad data, a bug) never is: it would fail again
    report: tuple[str, ...] = ()  # optional report sections (results.layout.REPORT_SECTIONS), beside every report's own

    @property
    def threads(self) -> int:
        """CPU threads of each trial's process (or worker): what its reproducing command sets OMP_NUM_THREADS to."""
        return max(1, int(self.resources.cpu))


# ---------------------------------------------------------------------------------------------- loading

_TOP = {"name", "description", "benchmarks", "profile", "seeds", "fixed", "grid", "search", "scheduler", "resources", "max_concurrent", "retries", "report"}


def available() -> list[str]:
    """Names of the sweep files shipped in sweeps/."""
    return sorted(p.stem for p in SWEEP_DIR.glob("*.toml"))


def sweep_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.is_file():
        if not p.is_file():
            raise ConfigError(f"sweep file {p} does not exist")
        return p.resolve()
    path = SWEEP_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown sweep {str(name_or_path)!r}; allowed: {', '.join(available())} (or a path to a .toml file)")
    return path


class _Checker:
    """Type checks that name the file and the field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, msg: str) -> None:
        raise ConfigError(f"{self.path}: {msg}")

    def table(self, value: Any, where: str, allowed: set[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(f"{where} must be a table, got {value!r}")
        if allowed is not None:
            unknown = sorted(set(value) - allowed)
            if unknown:
                self.fail(f"unknown field {where + '.' if where else ''}{unknown[0]}; allowed: {', '.join(sorted(allowed))}")
        return value

    def typed(self, value: Any, tp: type | tuple[type, ...], where: str) -> Any:
        tps = tp if isinstance(tp, tuple) else (tp,)
        ok = any(type(value) is t or (t is float and type(value) is int) for t in tps)
        if not ok:
            names = " or ".join(t.__name__ for t in tps)
            self.fail(f"{where}={value!r} must be {names}, got {type(value).__name__}")
        return float(value) if tps == (float,) else value

    def choice(self, value: Any, allowed: tuple[str, ...], where: str) -> str:
        if value not in allowed:
            self.fail(f"{where}={value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
        return value

    def list_of(self, value: Any, tp: type, where: str, nonempty: bool = True, unique: bool = False) -> tuple:
        if not isinstance(value, list):
            self.fail(f"{where}={value!r} must be a list")
        if nonempty and not value:
            self.fail(f"{where} must not be empty")
        out = tuple(self.typed(v, tp, f"{where}[{i}]") for i, v in enumerate(value))
        repeats = [i for i, v in enumerate(out) if v in out[:i]] if unique else []
        if repeats:
            i = repeats[0]
            self.fail(f"{where}[{i}]={out[i]!r} repeats {where}[{out.index(out[i])}]: the values must be distinct")
        return out

    def in_range(self, value: Any, low: Any, high: Any, where: str, why: str = "") -> Any:
        if not low <= value <= high:
            self.fail(f"{where}={value!r} must be in [{low}, {high}]" + (f": {why}" if why else ""))
        return value

    def folder_name(self, value: str, where: str, hint: str = "") -> str:
        """A name that becomes one folder: letters, digits, '.', '_', '-', not starting with '.' or '-', no '..'."""
        if not NAME_RULE.fullmatch(value) or ".." in value:
            self.fail(f"{where}={value!r} must be a single folder name: letters, digits, '.', '_' and '-', "
                      f"starting with a letter or digit, without '..'{hint}")
        return value

    def no_seed(self, table: dict[str, Any], where: str) -> None:
        """The sweep's `seeds` set every trial's seed, after `fixed` and the variant: a seed here would be ignored."""
        if "seed" in table:
            self.fail(f"{where}.seed={table['seed']!r} is not allowed: the sweep's seeds set every trial's seed and would "
                      "silently override it; list the seeds in the sweep's top-level `seeds = [...]` instead")


def _dataclass_fields(c: _Checker, cls: type, data: dict[str, Any], where: str, types: dict[str, Any]) -> Any:
    c.table(data, where, set(types))
    kwargs = {k: c.typed(v, types[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def load_sweep(name_or_path: str | Path, *, resolve: bool = True) -> SweepSpec:
    """Read and validate a sweep file; every error is a ConfigError naming the file and the field.

    resolve=False leaves out resolving every variant's config (`check`): for a caller that expands the sweep next
    (`sweeps.plans.expand` resolves each trial's config with the same error), so that a run resolves it once."""
    from vadcore.data import benchmark_members

    path = sweep_path(name_or_path)
    c = _Checker(path)
    raw = c.table(load_toml(path), "", _TOP)
    name = c.typed(raw.get("name", path.stem), str, "name")
    hint = "" if "name" in raw else " (no name is set, so it is the file's name: set name = \"...\")"
    kw: dict[str, Any] = {"name": c.folder_name(name, "name", hint), "path": path}
    if "description" in raw:
        kw["description"] = c.typed(raw["description"], str, "description")
    if "benchmarks" in raw:
        kw["benchmarks"] = c.list_of(raw["benchmarks"], str, "benchmarks")
        for i, b in enumerate(kw["benchmarks"]):
            try:
                benchmark_members(b, where=f"benchmarks[{i}]")
            except DataError as e:
                c.fail(str(e))
    if "profile" in raw:
        kw["profile"] = c.choice(raw["profile"], PROFILES, "profile")
    if "seeds" in raw:
        kw["seeds"] = c.list_of(raw["seeds"], int, "seeds", unique=True)
        for i, s in enumerate(kw["seeds"]):
            c.in_range(s, 0, SEED_MAX, f"seeds[{i}]", "numpy's seed range")
    if "fixed" in raw:
        kw["fixed"] = c.table(raw["fixed"], "fixed")
        c.no_seed(kw["fixed"], "fixed")
    if "report" in raw:
        kw["report"] = tuple(c.choice(s, tuple(REPORT_SECTIONS), f"report[{i}]")
                             for i, s in enumerate(c.list_of(raw["report"], str, "report", nonempty=False, unique=True)))
    if "max_concurrent" in raw:
        kw["max_concurrent"] = c.typed(raw["max_concurrent"], int, "max_concurrent")
        if kw["max_concurrent"] < 0:
            c.fail(f"max_concurrent={kw['max_concurrent']} must be >= 0 (0 = as many as resources allow)")
    if "retries" in raw:
        kw["retries"] = c.typed(raw["retries"], int, "retries")
        if kw["retries"] < 0:
            c.fail(f"retries={kw['retries']} must be >= 0 (0: a trial whose node dies fails with it)")
    if "resources" in raw:
        kw["resources"] = _dataclass_fields(c, Resources, raw["resources"], "resources", {"cpu": float, "gpu": float, "workers": int})
        if kw["resources"].cpu <= 0 or kw["resources"].gpu < 0 or kw["resources"].workers < 0:
            c.fail(f"resources: cpu={kw['resources'].cpu} must be > 0, gpu={kw['resources'].gpu} >= 0 and workers={kw['resources'].workers} >= 0")
    if "scheduler" in raw:
        s = _dataclass_fields(c, Scheduler, raw["scheduler"], "scheduler", {"type": str, "grace_period": int, "max_t": int, "reduction_factor": int})
        c.choice(s.type, ("none", "asha"), "scheduler.type")
        if not 1 <= s.grace_period <= s.max_t:
            c.fail(f"scheduler: grace_period={s.grace_period} must be in [1, max_t={s.max_t}]")
        if s.reduction_factor < 2:
            c.fail(f"scheduler.reduction_factor={s.reduction_factor} must be > 1: ASHA keeps the best 1/reduction_factor of the trials at each rung")
        kw["scheduler"] = s
    has_grid, has_search = "grid" in raw, "search" in raw
    if has_grid == has_search:
        c.fail("a sweep needs exactly one of [[grid]] (named variants) or [search] (an Optuna space); found " + ("both" if has_grid else "neither"))
    if has_grid:
        kw["grid"] = _load_grid(c, raw["grid"], kw.get("fixed", {}))
    else:
        kw["search"] = _load_search(c, raw["search"])
    spec = SweepSpec(**kw)
    if spec.grid and spec.scheduler.type != "none":
        c.fail(f"scheduler.type={spec.scheduler.type!r} only makes sense with [search]; a grid runs every variant to the end")
    if resolve:
        check(spec)
    return spec


def _load_grid(c: _Checker, value: Any, fixed: dict[str, Any]) -> tuple[Variant, ...]:
    if not isinstance(value, list) or not value:
        c.fail("grid must be a non-empty list of [[grid]] tables, each with a name, a `set` table and optionally per_scene = true")
    out, seen = [], []
    for i, entry in enumerate(value):
        c.table(entry, f"grid[{i}]", {"name", "set", "per_scene"})
        if "name" not in entry:
            c.fail(f"grid[{i}] needs a name")
        name = c.folder_name(c.typed(entry["name"], str, f"grid[{i}].name"), f"grid[{i}].name")
        if name in seen:
            c.fail(f"grid[{i}].name={name!r} repeats grid[{seen.index(name)}].name: variant names must be distinct")
        seen.append(name)
        sets = flatten(c.table(entry.get("set", {}), f"grid[{i}].set"))  # accepts dotted keys and subtables
        c.no_seed(sets, f"grid[{i}].set")
        per_scene = c.typed(entry.get("per_scene", False), bool, f"grid[{i}].per_scene")
        if per_scene and ("data.scenes" in sets or "data.scenes" in flatten(fixed)):
            c.fail(f"grid[{i}].per_scene = true sets each trial's data.scenes to its scene: "
                   f"remove data.scenes from {'grid[' + str(i) + '].set' if 'data.scenes' in sets else 'fixed'}")
        out.append(Variant(name, sets, per_scene))
    return tuple(out)


def _load_search(c: _Checker, value: Any) -> Search:
    t = c.table(value, "search", {"metric", "mode", "num_samples", "seed", "space"})
    kw: dict[str, Any] = {}
    for k, tp in (("metric", str), ("mode", str), ("num_samples", int), ("seed", int)):
        if k in t:
            kw[k] = c.typed(t[k], tp, f"search.{k}")
    c.choice(kw.get("metric", Search.metric), SEARCH_METRICS, "search.metric")
    c.choice(kw.get("mode", "max"), ("max", "min"), "search.mode")
    if "seed" in kw:
        c.in_range(kw["seed"], 0, SEED_MAX, "search.seed", "numpy's seed range (Optuna's TPE sampler)")
    if kw.get("num_samples", 1) < 1:
        c.fail(f"search.num_samples={kw['num_samples']} must be >= 1")
    space_raw = c.table(t.get("space", {}), "search.space")
    c.no_seed(flatten_space(space_raw), "search.space")
    space = {}
    for key, p in flatten_space(space_raw).items():
        where = f"search.space.{key}"
        c.table(p, where, {"choices", "low", "high", "log"})
        if ("choices" in p) == ("low" in p or "high" in p):
            c.fail(f"{where} needs either choices = [...] or low/high (and optional log), not both or neither")
        if "choices" in p:
            if not isinstance(p["choices"], list) or not p["choices"]:
                c.fail(f"{where}.choices={p['choices']!r} must be a non-empty list")
            space[key] = Param(choices=tuple(p["choices"]))
        else:
            if "low" not in p or "high" not in p:
                c.fail(f"{where} needs both low and high")
            low, high = c.typed(p["low"], (int, float), f"{where}.low"), c.typed(p["high"], (int, float), f"{where}.high")
            log = c.typed(p.get("log", False), bool, f"{where}.log")
            if not low < high or (log and low <= 0):
                c.fail(f"{where}: low={low} must be < high={high}" + (" and > 0 with log = true" if log else ""))
            space[key] = Param(low=low, high=high, log=log)
    if not space:
        c.fail("search.space must name at least one dotted config key, e.g. [search.space] \"itae.tau\" = {choices = [1, 2, 4]}")
    return Search(**kw, space=space)


def flatten_space(space: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """{"itae": {"tau": {"choices": [...]}}} or {"itae.tau": {...}} -> {"itae.tau": {"choices": [...]}}."""
    out = {}
    for k, v in space.items():
        if isinstance(v, dict) and not ({"choices", "low", "high", "log"} & set(v)):
            out.update(flatten_space(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check(spec: SweepSpec, benchmarks: tuple[str, ...] | None = None, profile: str | None = None, extra_sets: list[str] | None = None) -> None:
    """Resolve every (benchmark, variant) config (for a search: every choice, and each range's ends)."""
    check_extra_sets(spec, extra_sets)
    for bench in benchmarks or spec.benchmarks:
        for label, overrides in _variants_to_check(spec):
            try:
                resolve_config(bench, profile or spec.profile, extra_sets, extra=merge(spec.fixed, unflatten({**overrides, **forced(spec)})))
            except ConfigError as e:
                raise ConfigError(f"{spec.path}: {label} on benchmark {bench!r} is not a valid trial: {e}") from None


def with_seeds(spec: SweepSpec, seeds: list[int] | None) -> SweepSpec:
    """The sweep with `--seeds` in place of its file's `seeds` (None: unchanged): more seeds of the same trials."""
    if seeds is None:
        return spec
    if not seeds or len(set(seeds)) != len(seeds) or not all(0 <= s <= SEED_MAX for s in seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, seeds))}: give one or more distinct seeds in [0, {SEED_MAX}]")
    return dataclasses.replace(spec, seeds=tuple(seeds))


def with_variants(spec: SweepSpec, names: list[str] | None) -> SweepSpec:
    """The grid sweep with only the variants named by `--variants` (None: all), in the file's order: one lever run,
    stopped or re-run without editing the file; the results folder and report stay the whole sweep's."""
    if names is None:
        return spec
    if spec.search is not None:
        raise ConfigError(f"--variants: {spec.name} is a search; only grid sweeps have variants")
    known = [v.name for v in spec.grid]
    unknown = [n for n in names if n not in known]
    if not names or unknown or len(set(names)) != len(names):
        what = f"unknown {', '.join(map(repr, unknown))}" if unknown else "give one or more distinct names"
        raise ConfigError(f"--variants {' '.join(names)}: {what}; {spec.path.name}'s variants: {', '.join(known)}")
    return dataclasses.replace(spec, grid=tuple(v for v in spec.grid if v.name in names))


def check_extra_sets(spec: SweepSpec, extra_sets: list[str] | None) -> None:
    """--set applies to every trial, after the sweep's seeds: `--set seed=...` would run every seed's trial
    with one seed, in folders named after the others."""
    if extra_sets and "seed" in parse_sets(extra_sets):
        raise ConfigError(f"{spec.path}: --set seed=... is not allowed: the sweep's seeds = {list(spec.seeds)} set each trial's seed; "
                          "list the seeds in the sweep's top-level `seeds = [...]` or pass --seeds instead")
    per_scene = [v.name for v in spec.grid if v.per_scene]
    if extra_sets and per_scene and "scenes" in parse_sets(extra_sets).get("data", {}):
        raise ConfigError(f"{spec.path}: --set data.scenes=... is not allowed: variant {per_scene[0]!r} has per_scene = true, "
                          "which sets each of its trials' data.scenes to one scene")


def _variants_to_check(spec: SweepSpec) -> list[tuple[str, dict[str, Any]]]:
    if spec.grid:
        return [(f"variant {v.name!r}", v.set) for v in spec.grid]
    out = [("the search's fixed config", {})]
    for key, p in spec.search.space.items():
        values = p.choices if p.choices is not None else (p.low, p.high)
        out += [(f"search.space.{key}={v!r}", {key: v}) for v in values]
    return out


def forced(spec: SweepSpec) -> dict[str, Any]:
    """Overrides the sweep's kind imposes on every trial (a search: score the development split)."""
    return dict(SEARCH_FORCED) if spec.search else {}
