"""Run a sweep on Ray Tune: one Tune trial per plan (grid) or per Optuna sample (search), each running
`vadcore.pipeline.run_trial` against ONE shared stage cache, so trials that share a stage (an ITAE, a flow)
train it once and reuse it — the pipeline's lock-and-reuse cache does the sharing, whatever the concurrency.

The run, in order: the plans (every trial's config resolved once, `sweeps.plans.expand`), the data and storage
checks, the shards (written here, with a progress bar, before any trial), Ray (`sweeps.cluster`), then Tune with
the trainable and callbacks of `sweeps.trainable`; results/<sweep>/ is laid out as `results.layout` says. A plan
whose trial.json exists is skipped on `run` and `resume`: finished trials keep their results, and the stage cache
reuses every finished stage of the others. Ctrl-C stops the sweep between Tune's steps: what finished is kept,
and `SweepInterrupted` says what to resume.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from results.layout import BILL, SWEEP_FILE, TRIAL, TRIALS_DIR
from sweeps.cluster import check_job_storage, check_shared_storage, init_ray
from sweeps.options import RunOptions, TrialContext, sweep_dir
from sweeps.plans import TrialPlan, expand
from sweeps.spec import SweepSpec, check, with_seeds, with_variants
from sweeps.summary import collect
from sweeps.trainable import progress_callback, trainable, trial_recorder
from vadcore import atomic
from vadcore.configtools import flatten, to_dict
from vadcore.errors import ConfigError
from vadcore.paths import cache_root, data_root, ray_address


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep, after Ray has stopped: the records of every trial so far (finished, failed, and the
    interrupted ones as stopped without a record) and the sweep's name, for the message and `sweeps resume`."""

    def __init__(self, name: str, records: list[dict[str, Any]]):
        super().__init__(name)
        self.name, self.records = name, records


# ---------------------------------------------------------------------------------------------- planning


def stage_keys(plan: TrialPlan, cache: Path, data_root: str | None) -> dict[str, str]:
    """The stage keys `run_trial` will use for this plan, computed without running anything.

    Shard keys need the benchmark's source fingerprint; without data they are "?".
    """
    from vadcore.data import get_benchmark, scene_holdout
    from vadcore.data.shards import ShardSpec
    from vadcore.errors import VadError
    from vadcore.pipeline import stage_slices, trial_splits
    from vadcore.stages import StageStore

    cfg, store = plan.config, StageStore(cache)
    try:
        bench = get_benchmark(cfg.data.benchmark, data_root)
        shards = {s: ShardSpec(cfg.data.benchmark, s, cfg.data.height, cfg.data.width, cfg.data.channels, cfg.data.scenes).folder(cache, bench.fingerprint(s)).name
                  for s in trial_splits(cfg)}
    except VadError:
        return {"shards": "? (no data)"}
    keys = {f"shards_{s}": key for s, key in shards.items()}
    keys.update({name: store.key(name, slice_) for name, slice_ in stage_slices(cfg, shards, store, scene_holdout(bench, cfg.data.scenes), bench).items()})
    return keys


def write_bill(root: Path, plans: list[TrialPlan], keys: list[dict[str, str]], cache: Path, opts: RunOptions) -> None:
    """results/<sweep>/bill.json: the grid's compute bill as `sweeps show` prints it (sweeps.bill; keys: each
    plan's `stage_keys`), written before any trial runs; the report sets it beside the times the stages took."""
    from sweeps.bill import load_throughput, sweep_bill

    atomic.write_json(root / BILL, sweep_bill(plans, keys, load_throughput(opts.throughput), opts.data_root, cache).as_dict())


def launch_order(todo: list[int], keys: list[dict[str, str]]) -> list[int]:
    """`todo` (indices into the plans, whose `stage_keys` are `keys`) with the trials whose ITAE no earlier trial
    trains first, the rest after, each group in its own order. Trials that share an ITAE would otherwise start
    together and all but one wait on its lock (unified-prior's three priors share one; its per-scene trials, which
    could train meanwhile, queued behind them). Plans whose keys cannot be computed (no data) count as distinct."""
    seen: set[str] = set()
    first, later = [], []
    for i in todo:
        key = keys[i].get("itae") or f"plan {i}"
        (later if key in seen else first).append(i)
        seen.add(key)
    return first + later


def with_options(spec: SweepSpec, opts: RunOptions) -> SweepSpec:
    """The sweep with the command line's --num-samples, --variants, --seeds, --workers-per-trial and --max-concurrent."""
    if opts.num_samples is not None:
        if spec.search is None or opts.num_samples < 1:
            raise ConfigError(f"--num-samples={opts.num_samples}: " + ("must be >= 1" if spec.search else f"{spec.name} is a grid, not a search"))
        spec = dataclasses.replace(spec, search=dataclasses.replace(spec.search, num_samples=opts.num_samples))
    spec = with_seeds(with_variants(spec, opts.variants), opts.seeds)
    res = spec.resources
    if opts.workers_per_trial is not None:
        if opts.workers_per_trial < 0:
            raise ConfigError(f"--workers-per-trial={opts.workers_per_trial} must be >= 0 (0: train in the trial's process)")
        res = dataclasses.replace(res, workers=opts.workers_per_trial)
    if opts.max_concurrent is not None and opts.max_concurrent < 0:
        raise ConfigError(f"--max-concurrent={opts.max_concurrent} must be >= 0 (0: as many as resources allow)")
    return dataclasses.replace(spec, resources=res, max_concurrent=spec.max_concurrent if opts.max_concurrent is None else opts.max_concurrent)


def with_gpus(spec: SweepSpec, plans: list[TrialPlan]) -> SweepSpec:
    """A GPU per trial (or per worker) where the plans train on GPUs (a `gpu-*` DeepSpeed config, as `paper`) and the
    sweep file asks for none."""
    if spec.resources.gpu == 0 and any(p.config.deepspeed.startswith("gpu") for p in plans):
        return dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, gpu=1.0))
    return spec


def check_data(benchmarks: list[str] | tuple[str, ...], data_root: str | None, cache: Path | None = None) -> None:
    """Each benchmark's files are where the sweep will look and fit for trials, before Ray starts: a mistyped
    --data-root or a cut-short video is one sentence naming the file, not a Ray traceback per trial. The check
    (`vadcore data check`) is remembered by the files' fingerprint in the sweep's cache (`cache`, else the
    default one), so a sweep on checked data decodes nothing."""
    from vadcore.data.check import check_data_root

    check_data_root(benchmarks, data_root, cache)


def write_shards(plans: list[TrialPlan], cache: Path, data_root: str | None) -> None:
    """Every shard set the plans read, written here (a progress bar each, the first run only) so that no trial
    spends its first minutes decoding videos out of sight, and two trials never wait on one shard lock. A set
    whose files cannot be read (a variant naming a benchmark without data) is left to its trials, which fail
    with that error in their record."""
    from vadcore.data import get_benchmark
    from vadcore.data.shards import ShardSpec, ensure_shards
    from vadcore.errors import VadError
    from vadcore.pipeline import trial_splits

    specs = {ShardSpec(p.config.data.benchmark, s, p.config.data.height, p.config.data.width, p.config.data.channels, p.config.data.scenes)
             for p in plans for s in trial_splits(p.config)}
    for spec in sorted(specs, key=lambda s: (s.benchmark, s.split, s.height, s.width, s.channels, s.scenes)):
        try:
            bench = get_benchmark(spec.benchmark, data_root)
        except VadError:
            continue
        ensure_shards(bench, spec, cache)


def finished(trial_dir: Path, plan: TrialPlan) -> bool:
    """A trial is kept iff it finished with exactly this plan's resolved config (a profile or code edit that
    changes the config makes it stale, and it runs again, reusing whatever stages still match)."""
    record = trial_dir / TRIAL
    return record.is_file() and json.loads(record.read_text())["config"] == to_dict(plan.config)


def progress_metric(spec: SweepSpec, plans: list[TrialPlan]) -> tuple[str, str]:
    """(metric, mode) of the progress lines' "best": a search's objective; a grid's development-split AUC when every
    trial scores that split (choices are made there, so the test AUC waits for the summary), else its test AUC."""
    if spec.search:
        return spec.search.metric, spec.search.mode
    return ("dev_auc" if plans and all(p.config.data.dev for p in plans) else "auc"), "max"


# ---------------------------------------------------------------------------------------------- the search


def search_space(spec: SweepSpec) -> dict[str, Any]:
    from ray import tune

    space = {}
    for key, p in spec.search.space.items():
        if p.choices is not None:
            space[key] = tune.choice(list(p.choices))
        elif isinstance(p.low, int) and isinstance(p.high, int):
            space[key] = (tune.lograndint if p.log else tune.randint)(p.low, p.high + 1)
        else:
            space[key] = (tune.loguniform if p.log else tune.uniform)(p.low, p.high)
    return space


def default_point(spec: SweepSpec, base: TrialPlan, console) -> dict[str, Any] | None:
    """The profile's own values of the searched keys (those of the benchmark's base plan), evaluated first (trial
    "default"), so the report can say whether the search found anything better than the config it started from;
    None (said) where a default lies outside the space."""
    values = flatten(to_dict(base.config))
    point = {k: values[k] for k in spec.search.space}
    outside = [k for k, p in spec.search.space.items()
               if (p.choices is not None and point[k] not in p.choices) or (p.choices is None and not p.low <= point[k] <= p.high)]
    if outside:
        console.print(f"{base.benchmark}: the profile's {', '.join(f'{k}={point[k]!r}' for k in outside)} lie outside the search space: "
                      "no default trial to compare the search with", highlight=False, soft_wrap=True)
        return None
    return point


def optuna_search(spec: SweepSpec, root: Path, bench: str, default: dict[str, Any] | None):
    """OptunaSearch whose study lives in results/<sweep>/optuna.db (load_if_exists: a resumed sweep continues it)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(f"sqlite:///{root / 'optuna.db'}")
    return OptunaSearch(metric=spec.search.metric, mode=spec.search.mode, storage=storage, study_name=f"{spec.name}-{bench}",
                        sampler=optuna.samplers.TPESampler(seed=spec.search.seed), points_to_evaluate=[default] if default else None)


# ---------------------------------------------------------------------------------------------- the sweep


def tune_fit(ctx: TrialContext, param_space: dict[str, Any], total: int, *, search=None, quiet: bool = False, callbacks: tuple = ()) -> None:
    """One Tune run of `total` trials: a grid's plans (param_space {"plan": grid of indices}) or a search's samples."""

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    spec = ctx.spec
    scheduler = None
    if spec.scheduler.type == "asha":
        s = spec.scheduler
        scheduler = ASHAScheduler(metric="itae_loss", mode="min", time_attr="itae_epoch", grace_period=s.grace_period,  # see trainable.rung
                                  max_t=s.max_t, reduction_factor=s.reduction_factor, stop_last_trials=False)
    metric, mode = progress_metric(spec, list(ctx.plans))
    resources = {"cpu": 0, "gpu": 0, "memory": 1} if spec.resources.workers else {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    # (a trial that drives Ray Train workers holds no CPU, they hold theirs; Ray wants a non-empty request: 1 byte)
    callbacks = [trial_recorder(ctx), *([] if quiet else [progress_callback(total, metric, mode, [p.trial_id for p in ctx.plans], spec.retries)]), *callbacks]
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, ctx=ctx), resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search, scheduler=scheduler, num_samples=total if search else 1,
            max_concurrent_trials=spec.max_concurrent or None, trial_dirname_creator=lambda t: t.trial_id,
            reuse_actors=True,  # a trial process keeps torch + DeepSpeed imported for the next trial
        ),
        run_config=tune.RunConfig(
            name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(ctx.trials.parent / "ray"),
            failure_config=tune.FailureConfig(max_failures=spec.retries), callbacks=callbacks, verbose=0,  # lost trials only: `trainable`
        ),
    )
    with _environ(TUNE_DISABLE_SIGINT_HANDLER="1",  # Ctrl-C reaches run_sweep (Tune's handler would advise Tuner.restore)
                  RAY_AIR_NEW_OUTPUT="0"):  # Tune's new output prints its experiment box whatever `verbose`; the old obeys 0
        tuner.fit()


@contextlib.contextmanager
def _environ(**values: str):
    """os.environ with `values` set for the block, as it was after it."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_sweep(spec: SweepSpec, opts: RunOptions, console=None, callbacks: tuple = ()) -> list[dict[str, Any]]:
    """Run every unfinished trial of the sweep; return the records of all trials (finished before or now).

    callbacks: more Tune callbacks (benchmarks/bench_sweep.py times the trials with one). Ctrl-C raises
    `SweepInterrupted` once Ray has stopped; the tables and report are then written only if a trial finished.
    """
    from rich.console import Console

    console = console or Console()
    spec = with_options(spec, opts)
    root_dir = data_root(opts.data_root)  # absolute: Ray workers run in other working directories
    opts.data_root = str(root_dir) if root_dir else None
    benchmarks = opts.benchmarks or list(spec.benchmarks)
    root, cache, profile = sweep_dir(spec, opts.results), cache_root(opts.cache), opts.profile or spec.profile
    trials_dir = root / TRIALS_DIR
    if spec.search:  # every choice and each range's ends, on every benchmark
        check(spec, tuple(benchmarks), opts.profile, opts.sets)
    # a grid's trials or a search's base configs: every config resolved here, once, before anything runs
    plans = expand(spec, opts.benchmarks, opts.profile, opts.sets, out_root=str(trials_dir), data_root=opts.data_root)
    spec = with_gpus(spec, plans)
    check_data(benchmarks, opts.data_root, cache)
    check_job_storage(opts.results, opts.cache)
    if spec.grid:
        todo = [i for i, p in enumerate(plans) if not finished(trials_dir / p.trial_id, p)]
        if len(todo) < len(plans):
            console.print(f"{len(plans) - len(todo)} of {len(plans)} trials already finished: kept, not re-run", soft_wrap=True)
    write_shards(plans, cache, opts.data_root)
    ctx = TrialContext(spec, trials_dir, cache, opts.data_root, profile, tuple(opts.sets), opts.share_stages)

    address = ray_address(opts.address)
    console.print(f"joining the Ray cluster at {address}" if address else "starting Ray in this process (listening on 127.0.0.1 only)",
                  highlight=False, soft_wrap=True)
    t0 = time.perf_counter()
    started = init_ray(opts.address)
    try:
        if not started:  # joined a running Ray: its nodes must share the folders (an in-process Ray has one node)
            check_shared_storage({"results folder": root.parent, "stage cache": cache}, always=bool(address))
        trials_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_json(root / SWEEP_FILE, {"file": str(spec.path), **opts.__dict__, "results": str(root.parent), "cache": str(cache)})
        keys = [stage_keys(p, cache, opts.data_root) for p in plans] if spec.grid else []  # the bill's and the launch order's
        if spec.grid:
            write_bill(root, plans, keys, cache, opts)
        if spec.resources.workers > 1:
            from vadcore.dist import prepare_comm_op

            prepare_comm_op(lambda line: console.print(line, highlight=False, soft_wrap=True))
        if spec.grid and todo:
            todo = launch_order(todo, keys) if opts.share_stages else todo
            console.print(f"Ray up after {time.perf_counter() - t0:.0f} s; {len(todo)} trial(s) to run, {spec.max_concurrent or 'as many as fit'} at a time",
                          highlight=False, soft_wrap=True)
            from ray import tune

            tune_fit(dataclasses.replace(ctx, plans=tuple(plans)), {"plan": tune.grid_search(todo)}, len(todo), quiet=opts.quiet, callbacks=callbacks)
        for base in ([] if spec.grid else [p for p in plans if p.seed == spec.seeds[0]]):
            bench = base.benchmark
            done = sum(1 for r in collect(trials_dir) if r["benchmark"] == bench and (r["status"] == "finished" or r.get("stop_reason")))
            left = spec.search.num_samples - done
            if done:
                console.print(f"{bench}: {done} of {spec.search.num_samples} search trials already ran; the Optuna study continues", soft_wrap=True)
            default = None if done else default_point(spec, base, console)
            if left > 0:
                tune_fit(dataclasses.replace(ctx, bench=bench, default_point=default), search_space(spec), left,
                         search=optuna_search(spec, root, bench, default), quiet=opts.quiet, callbacks=callbacks)
    except KeyboardInterrupt:
        interrupted = True
    else:
        interrupted = False
        console.print(f"sweep {spec.name}: {time.perf_counter() - t0:.1f} s", soft_wrap=True)
    finally:
        if started:
            import ray

            ray.shutdown()
    records = collect(trials_dir)
    if any(r["status"] == "finished" for r in records) or (records and not interrupted):  # never a report of nothing
        from results.report import publish

        publish(root)  # trials.parquet, frame_scores.parquet, all_trials.parquet, report.md/html, index
    if interrupted:
        raise SweepInterrupted(spec.name, records)
    return records
