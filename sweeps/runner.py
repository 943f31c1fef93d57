"""Run a sweep on Ray Tune: one Tune trial per plan (grid) or per Optuna sample (search), each running
`vadcore.pipeline.run_trial` against ONE shared stage cache, so trials that share a stage (an ITAE, a flow)
train it once and reuse it — the pipeline's lock-and-reuse cache does the sharing, whatever the concurrency.

Layout of results/<sweep>/:
    sweep.json               the options of the last run (resume reads them)
    ray/                     Tune's experiment storage
    optuna.db                the Optuna study (search sweeps; optuna-dashboard sqlite:///results/<sweep>/optuna.db)
    trials/<id>/plan.json    variant, benchmark, seed, overrides, the reproducing command, the node and host it ran on
    trials/<id>/trial.json   the pipeline's record (metrics, stages trained/reused) — its presence = finished
    trials/<id>/error.json   a failed trial's error

A plan whose trial.json exists is skipped on `run` and `resume`: finished trials keep their results, and the
stage cache reuses every finished stage of the others.

On a cluster the results folder and the stage cache must be one folder that every node mounts at the same path
(`check_shared_storage` checks it before any trial), and under `ray job submit` both must be named
(`check_job_storage`): the job's working directory is a temporary copy, deleted with the job.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vadcore import atomic
from vadcore.configtools import stable_hash, to_dict
from vadcore.errors import ConfigError
from sweeps.spec import SweepSpec, TrialPlan, check, expand, make_plan, with_seeds, with_variants


REPO = Path(__file__).resolve().parents[1]


@dataclass
class RunOptions:
    profile: str | None = None
    benchmarks: list[str] | None = None
    data_root: str | None = None
    results: str | None = None  # default: $VAD_RESULTS or results/
    cache: str | None = None  # default: $VAD_CACHE or .cache/vad, as `python -m vadcore`
    address: str | None = None
    sets: list[str] = field(default_factory=list)
    num_samples: int | None = None  # a search's sample count, in place of the sweep file's search.num_samples
    seeds: list[int] | None = None  # every trial's seeds, in place of the sweep file's seeds
    variants: list[str] | None = None  # only these variants of a grid (None: all)
    workers_per_trial: int | None = None  # Ray Train workers per training stage, in place of resources.workers
    max_concurrent: int | None = None  # trials at once, in place of the sweep file's max_concurrent
    share_stages: bool = True  # False: every trial trains its own stages (as a plain Ray Tune or W&B sweep); shards stay shared
    quiet: bool = False  # no per-trial progress lines (tests)


# ---------------------------------------------------------------------------------------------- stage keys


def stage_keys(plan: TrialPlan, cache_root: Path, data_root: str | None) -> dict[str, str]:
    """The stage keys `run_trial` will use for this plan, computed without running anything.

    Shard keys need the benchmark's source fingerprint; without data they are "?".
    """
    from vadcore.data import get_benchmark, scene_holdout
    from vadcore.data.shards import ShardSpec
    from vadcore.errors import VadError
    from vadcore.pipeline import stage_slices, trial_splits
    from vadcore.stages import StageStore

    cfg, store = plan.config, StageStore(cache_root)
    try:
        bench = get_benchmark(cfg.data.benchmark, data_root)
        shards = {s: ShardSpec(cfg.data.benchmark, s, cfg.data.height, cfg.data.width, cfg.data.channels, cfg.data.scenes).folder(cache_root, bench.fingerprint(s)).name
                  for s in trial_splits(cfg)}
    except VadError:
        return {"shards": "? (no data)"}
    keys = {f"shards_{s}": key for s, key in shards.items()}
    keys.update({name: store.key(name, slice_) for name, slice_ in stage_slices(cfg, shards, store, scene_holdout(bench, cfg.data.scenes), bench).items()})
    return keys


def launch_order(plans: list[TrialPlan], todo: list[int], cache_root: Path, data_root: str | None) -> list[int]:
    """`todo` (indices into plans) with the trials whose ITAE no earlier trial trains first, the rest after, each
    group in its own order. Trials that share an ITAE would otherwise start together and all but one wait on its
    lock (unified-prior's three priors share one; its per-scene trials, which could train meanwhile, queued
    behind them). Plans whose keys cannot be computed (no data) count as distinct."""
    seen: set[str] = set()
    first, later = [], []
    for i in todo:
        key = stage_keys(plans[i], cache_root, data_root).get("itae") or f"plan {i}"
        (later if key in seen else first).append(i)
        seen.add(key)
    return first + later


# ---------------------------------------------------------------------------------------------- the trial


def rung(r: dict[str, Any]) -> dict[str, Any]:
    """ASHA's rung fields of one per-epoch report: one rung per ITAE epoch, judged on the ITAE's loss on the
    held-out normal training videos (its training loss when none are held out).

    Every trial reports them for the same epochs, whether it trained its ITAE or reused it (the pipeline
    replays a reused stage's history). Flow epochs make no rung: a flow's bits/dim on one ITAE's latents
    says nothing about another trial's flow on another ITAE's latents."""
    if r["stage"] != "itae":
        return {}
    return {"itae_epoch": r["epoch"], "itae_loss": float(r.get("val_loss", r.get("train_loss", float("nan"))))}


def _trainable(config: dict[str, Any], *, spec: SweepSpec, plans: list[TrialPlan], bench: str | None, opts: dict[str, Any]) -> None:
    """One Tune trial: run the pipeline trial of a plan, report per-epoch losses (ASHA's rungs) and the final metrics."""
    import ray
    import torch
    from ray import tune

    from sweeps.distributed import RayTrain
    from vadcore.pipeline import run_trial
    from vadcore.testing import trial_gate
    from vadcore.train import in_process

    res = spec.resources
    torch.set_num_threads(max(1, int(res.cpu)))
    launch = RayTrain(res.workers, res.cpu, res.gpu) if res.workers else in_process  # data-parallel stages, or here
    if "plan" in config:
        plan = plans[config["plan"]]
    else:  # a search sample: the dotted keys Optuna chose, on the first seed
        params = {k: v for k, v in config.items()}
        name = "default" if params == opts.get("default_point") else f"trial-{stable_hash(params, 8)}"
        plan = make_plan(spec, name, params, bench, spec.seeds[0], opts["profile"], opts["sets"], data_root=opts["data_root"])
    out = Path(opts["trials"]) / plan.trial_id
    out.mkdir(parents=True, exist_ok=True)
    info = {"variant": plan.variant, "benchmark": plan.benchmark, "seed": plan.seed, "overrides": plan.overrides,
            "command": plan.command.replace("--out runs/", f"--out {opts['trials']}/"), "tune_trial_id": tune.get_context().get_trial_id(),
            "config": to_dict(plan.config),  # what the trial tries, recorded even if it never finishes
            "objective": spec.search.metric if spec.search else None,
            "node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname()}  # where it ran
    atomic.write_json(out / "plan.json", info)
    trial_gate(plan.trial_id)

    reached: dict[str, Any] = {}  # the last rung: Tune wants the scheduler's metric in every result, so flow
    # epochs and the final result repeat it (ASHA records a trial once per rung, so a repeat changes nothing)

    def report(r: dict[str, Any]) -> None:
        reached.update(rung(r))
        train = plan.config.itae_train if r["stage"] == "itae" else plan.config.flow.train
        row = {"stage": r["stage"], "epoch": r["epoch"], "epochs": train.epochs, "replayed": bool(r.get("replayed")),
               **{k: float(r[k]) for k in ("train_loss", "val_loss") if k in r}, **reached}
        if spec.search is not None:  # Tune and OptunaSearch want the objective in every result: nan until the end
            row.setdefault(spec.search.metric, float("nan"))
        tune.report(row)

    try:
        cache = Path(opts["cache"])
        stage_root = None if opts.get("share_stages", True) else cache / UNSHARED / spec.name / plan.trial_id
        trial = run_trial(plan.config, opts["data_root"], cache, out, show=False, report=report, launch=launch, stage_root=stage_root)
    except Exception as e:
        atomic.write_json(out / "error.json", {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        raise
    metrics = {k: v for k, v in trial["metrics"].items() if isinstance(v, (int, float))}
    tune.report({**metrics, **reached, "stage": "done", "trial_seconds": trial["seconds"]})


# ---------------------------------------------------------------------------------------------- progress


UNSHARED = "unshared"  # in the cache: per-trial stage folders of a sweep run with share_stages off
STOP_FILE = "stop.json"  # in a trial folder: why a trial ended without trial.json (ASHA), and its last report


def _stop_recorder(trials_dir: str):
    from ray import tune

    class StopRecorder(tune.Callback):
        """A trial that ends without its trial.json was stopped by the scheduler (ASHA): write its rung, its last
        reported numbers and the reason beside its plan.json, so the results table says what happened to it.
        (A trial killed with the sweep leaves neither file: "stopped" without a reason.)"""

        def on_trial_complete(self, iteration, trials, trial, **info):
            for plan in Path(trials_dir).glob("*/plan.json"):
                if json.loads(plan.read_text()).get("tune_trial_id") == trial.trial_id and not plan.with_name("trial.json").is_file():
                    last = {k: v for k, v in (trial.last_result or {}).items() if k in ("stage", "epoch", "itae_epoch", "itae_loss", "train_loss", "val_loss")}
                    atomic.write_json(plan.with_name(STOP_FILE), {"reason": f"stopped by ASHA at ITAE epoch {last.get('itae_epoch', '?')}",
                                                                  "rung": last.get("itae_epoch"), "last": last})

    return StopRecorder()


def epoch_line(result: dict[str, Any]) -> str | None:
    """"itae epoch 3/12, val_loss 0.0337" for a training epoch a trial just ran; None for any other report (an
    epoch replayed from a reused stage, the trial's final metrics): a trial that trains for minutes shows how
    far it is, one that reuses its stages stays quiet until it finishes."""
    if result.get("replayed") or not result.get("epoch"):  # the final report carries no epoch
        return None
    val = result.get("val_loss")
    return f"{result['stage']} epoch {result['epoch']}/{result.get('epochs', '?')}" + (f", val_loss {val:.4g}" if val is not None else "")


def _progress_callback(total: int, metric: str | None, mode: str, names: list[str]):
    from ray import tune

    class Progress(tune.Callback):
        """One line per finished or failed trial (done/running/failed, current best, ETA from the trials that
        trained something) and, indented, one per training epoch a trial runs (`epoch_line`)."""

        def __init__(self):
            self.t0 = time.perf_counter()
            self.done = self.failed = 0
            self.running: set[str] = set()
            self.training: set[str] = set()  # trials that ran a training epoch (not only replayed reused stages)
            self.trained = 0  # of those, how many ended
            self.best: float | None = None

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.trial_id)

        def _line(self, what: str) -> None:
            n = self.done + self.failed
            el = time.perf_counter() - self.t0
            eta = f", ETA {el / self.trained * (total - n):.0f} s" if self.trained and n < total else ""
            best = f", best {metric} {self.best:.4f}" if self.best is not None else ""
            from rich import get_console  # not held by the callback: Tune pickles its callbacks

            get_console().print(f"[{n}/{total}] {what} — {self.done} done, {len(self.running)} running, {self.failed} failed{best}, {el:.0f} s{eta}", highlight=False)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if (line := epoch_line(result)) is not None:
                self.training.add(trial.trial_id)
                from rich import get_console

                get_console().print(f"      {self.name(trial)}: {line}, {time.perf_counter() - self.t0:.0f} s", highlight=False)

        def _ended(self, trial) -> None:
            """The ETA counts the trials that trained: one that reused every stage ends in seconds and would
            promise the rest as fast."""
            self.running.discard(trial.trial_id)
            self.trained += trial.trial_id in self.training

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._ended(trial)
            self.done += 1
            value = (trial.last_result or {}).get(metric) if metric else None
            if isinstance(value, float) and not math.isnan(value):
                if self.best is None or (value > self.best if mode == "max" else value < self.best):
                    self.best = value
            self._line(f"finished {self.name(trial)}")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._ended(trial)
            self.failed += 1
            self._line(f"[red]FAILED[/] {self.name(trial)}")

        def name(self, trial) -> str:
            i = trial.config.get("plan")
            return names[i] if i is not None and i < len(names) else trial.trial_id

    return Progress()


# ---------------------------------------------------------------------------------------------- the sweep


def init_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to a cluster (--address, or $RAY_ADDRESS under `ray job submit`) or start Ray in-process.

    Returns True when this call started a local Ray (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address if address.startswith(("ray://", "auto")) or ":" in address else "auto", configure_logging=False)
        return False
    with _loopback_node():
        ray.init(
            address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1",
            configure_logging=False, log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}},
        )
    node_ip = ray.util.get_node_ip_address()
    if node_ip != "127.0.0.1":  # a Ray whose private switch below stopped working: say so, do not hide it
        print(f"warning: the local Ray node took address {node_ip}, not 127.0.0.1: its servers listen beyond loopback", file=sys.stderr)
    return True


@contextlib.contextmanager
def _loopback_node():
    """Keep an in-process Ray node on 127.0.0.1, so every server it starts listens on loopback only.

    Ray 2.60 on Linux replaces _node_ip_address="127.0.0.1" by the machine's external address
    (ray._private.services.resolve_ip_for_localhost, when ray_constants.ENABLE_RAY_CLUSTER is on, its
    Linux default), and its gRPC servers then bind every interface; with a loopback node IP they bind
    127.0.0.1 and the agents bind the node IP. Ray has no bind-address setting, so the flag is turned off
    for the duration of ray.init only: a driver joining a cluster (--address) must keep its real address.
    """
    import ray._private.ray_constants as rc

    before = rc.ENABLE_RAY_CLUSTER
    rc.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        rc.ENABLE_RAY_CLUSTER = before


def with_resources(spec: SweepSpec, opts: RunOptions) -> SweepSpec:
    """The sweep with the command line's --workers-per-trial / --max-concurrent, and a GPU per trial (or per
    worker) where the profile trains on GPUs (a `gpu-*` DeepSpeed config, as `paper`) and the file asks for none."""
    from vadcore.config import resolve_config

    res = spec.resources
    if opts.workers_per_trial is not None:
        if opts.workers_per_trial < 0:
            raise ConfigError(f"--workers-per-trial={opts.workers_per_trial} must be >= 0 (0: train in the trial's process)")
        res = dataclasses.replace(res, workers=opts.workers_per_trial)
    if res.gpu == 0 and resolve_config((opts.benchmarks or spec.benchmarks)[0], opts.profile or spec.profile).deepspeed.startswith("gpu"):
        res = dataclasses.replace(res, gpu=1.0)
    if opts.max_concurrent is not None and opts.max_concurrent < 0:
        raise ConfigError(f"--max-concurrent={opts.max_concurrent} must be >= 0 (0: as many as resources allow)")
    return dataclasses.replace(spec, resources=res, max_concurrent=spec.max_concurrent if opts.max_concurrent is None else opts.max_concurrent)


def check_data(benchmarks: list[str] | tuple[str, ...], data_root: str | None) -> None:
    """Each benchmark's files are where the sweep will look and fit for trials, before Ray starts: a mistyped
    --data-root or a cut-short video is one sentence naming the file, not a Ray traceback per trial. The check
    (`vadcore data check`) is remembered by the files' fingerprint, so a sweep on checked data decodes nothing."""
    from vadcore.data.check import check_data_root

    check_data_root(benchmarks, data_root)


RESULTS_ENV = "VAD_RESULTS"


def results_root(value: str | None) -> Path:
    """The results folder: --results, else $VAD_RESULTS, else results/ (absolute: Ray workers run elsewhere)."""
    return Path(value or os.environ.get(RESULTS_ENV) or "results").expanduser().resolve()


def sweep_dir(spec: SweepSpec, results: str | None) -> Path:
    return results_root(results) / spec.name


def job_working_dir() -> Path | None:
    """The working directory of a driver that `ray job submit` started (Ray's unpacked copy of --working-dir, or
    the job server's own folder), deleted with the job; None outside a submitted job. The job server gives its
    drivers $RAY_JOB_CONFIG_JSON_ENV_VAR; Ray unpacks a working_dir under runtime_resources/working_dir_files/."""
    cwd = Path.cwd()
    return cwd if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "working_dir_files" in cwd.parts else None


def check_job_storage(results: str | None, cache: str | None) -> None:
    """Under `ray job submit`, results and the stage cache must be named (flag or environment) by absolute paths:
    the defaults, and any relative path, would land in the job's working directory and vanish with the job."""
    from vadcore.__main__ import CACHE_ENV

    job_dir = job_working_dir()
    if job_dir is None:
        return
    for what, flag, env, value in (("results folder", "--results", RESULTS_ENV, results), ("stage cache", "--cache", CACHE_ENV, cache)):
        named = value or os.environ.get(env)
        if not named or not Path(named).expanduser().is_absolute():
            raise ConfigError(f"under `ray job submit` the sweep runs in {job_dir}, a folder of Ray's job server (its copy of "
                              f"--working-dir is deleted with the job): name the {what} with {flag} or ${env}, an absolute path "
                              f"on storage every node mounts ({f'{named!r} is relative' if named else 'not given'}; cluster/README.md)")


STORAGE_CHECK_S = 300  # a node that has not answered by then (a runtime env still installing, a hung mount) is named


def check_shared_storage(folders: dict[str, Path], always: bool) -> None:
    """Every alive node of the cluster sees `folders` ({what: path}): a task pinned to each node looks for a marker
    file the driver has just written in each folder. A node that does not see one would write its trials and
    train its stages on its own disk (the report misses them, resume reruns them, every node retrains the shared
    stages), so the sweep stops here, before any trial, naming the node and the folder. A cluster of one node is
    checked only when `always` (a driver reaching it through an address may run on another machine)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2 and not always:
        return
    token = f".vad-shared-{os.urandom(8).hex()}"
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / token).touch()
    try:
        probe = ray.remote(num_cpus=0)(_unseen)
        refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote({what: str(folder / token) for what, folder in folders.items()}): n for n in nodes}
        done, late = ray.wait(list(refs), num_returns=len(refs), timeout=STORAGE_CHECK_S)
        unseen = {ref: ray.get(ref) for ref in done}
    finally:
        for folder in folders.values():
            (folder / token).unlink(missing_ok=True)

    def node(n: dict[str, Any]) -> str:
        return f"node {n['NodeID']} ({n['NodeManagerAddress']}, host {n['NodeManagerHostname']})"

    problems = [f"{node(refs[ref])} does not see the {what} {folders[what]}" for ref, whats in unseen.items() for what in whats]
    problems += [f"{node(refs[ref])} did not answer in {STORAGE_CHECK_S} s" for ref in late]
    if problems:
        raise ConfigError("; ".join(problems) + ": results and the stage cache must be folders every node of the "
                          "cluster mounts at the same path (a shared filesystem; cluster/README.md). Nothing was run.")


def _unseen(markers: dict[str, str]) -> list[str]:
    """On one node: the folders ({what: marker path}) whose marker this node does not see."""
    return [what for what, path in markers.items() if not os.path.isfile(path)]


def finished(trial_dir: Path, plan: TrialPlan) -> bool:
    """A trial is kept iff it finished with exactly this plan's resolved config (a profile or code edit that
    changes the config makes it stale, and it runs again, reusing whatever stages still match)."""
    record = trial_dir / "trial.json"
    return record.is_file() and json.loads(record.read_text())["config"] == to_dict(plan.config)


def run_sweep(spec: SweepSpec, opts: RunOptions, console=None) -> list[dict[str, Any]]:
    """Run every unfinished trial of the sweep; return the records of all trials (finished before or now)."""
    from rich.console import Console

    from vadcore.__main__ import cache_root

    from vadcore.data import resolve_data_root

    console = console or Console()
    if opts.num_samples is not None:
        if spec.search is None or opts.num_samples < 1:
            raise ConfigError(f"--num-samples={opts.num_samples}: " + ("must be >= 1" if spec.search else f"{spec.name} is a grid, not a search"))
        spec = dataclasses.replace(spec, search=dataclasses.replace(spec.search, num_samples=opts.num_samples))
    spec = with_resources(with_seeds(with_variants(spec, opts.variants), opts.seeds), opts)
    root_dir = resolve_data_root(opts.data_root)  # absolute: Ray workers run in other working directories
    opts.data_root = str(root_dir) if root_dir else None
    check(spec, tuple(opts.benchmarks) if opts.benchmarks else None, opts.profile, opts.sets)
    check_data(opts.benchmarks or spec.benchmarks, opts.data_root)
    check_job_storage(opts.results, opts.cache)
    root = sweep_dir(spec, opts.results)
    trials_dir = root / "trials"
    cache = cache_root(opts.cache)
    profile = opts.profile or spec.profile
    shared = {"trials": str(trials_dir), "cache": str(cache), "data_root": opts.data_root, "profile": profile, "sets": opts.sets,
              "share_stages": opts.share_stages}

    started = init_ray(opts.address)
    try:
        if not started:  # joined a running Ray: its nodes must share the folders (an in-process Ray has one node)
            check_shared_storage({"results folder": root.parent, "stage cache": cache}, always=bool(opts.address or os.environ.get("RAY_ADDRESS")))
        trials_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_json(root / "sweep.json", {"file": str(spec.path), **opts.__dict__, "results": str(root.parent), "cache": str(cache)})
        t0 = time.perf_counter()
        if spec.grid:
            plans = expand(spec, opts.benchmarks, opts.profile, opts.sets, data_root=opts.data_root)
            todo = [i for i, p in enumerate(plans) if not finished(trials_dir / p.trial_id, p)]
            if len(todo) < len(plans):
                console.print(f"{len(plans) - len(todo)} of {len(plans)} trials already finished: kept, not re-run")
            if todo:
                todo = launch_order(plans, todo, cache, opts.data_root) if opts.share_stages else todo
                _fit(spec, opts, root, {"plan": _grid(todo)}, plans, None, shared, len(todo), console, search=None)
        else:
            for bench in opts.benchmarks or spec.benchmarks:
                done = sum(1 for r in collect(trials_dir) if r["benchmark"] == bench and (r["status"] == "finished" or r.get("stop_reason")))
                left = spec.search.num_samples - done
                if done:
                    console.print(f"{bench}: {done} of {spec.search.num_samples} search trials already ran; the Optuna study continues")
                default = None if done else default_point(spec, bench, opts, console)
                if left > 0:
                    search = _optuna(spec, root, bench, default)
                    _fit(spec, opts, root, _search_space(spec), [], bench, {**shared, "default_point": default}, left, console, search=search)
        console.print(f"sweep {spec.name}: {time.perf_counter() - t0:.1f} s")
    finally:
        if started:
            import ray

            ray.shutdown()
    from results.report import publish

    publish(root)  # trials.parquet, frame_scores.parquet, all_trials.parquet, report.md/html, index
    return collect(trials_dir)


def _grid(indices: list[int]):
    from ray import tune

    return tune.grid_search(indices)


def _search_space(spec: SweepSpec) -> dict[str, Any]:
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


def default_point(spec: SweepSpec, bench: str, opts: RunOptions, console) -> dict[str, Any] | None:
    """The profile's own values of the searched keys, evaluated first (trial "default"), so the report can say
    whether the search found anything better than the config it started from; None (said) where a default
    lies outside the space."""
    from vadcore.configtools import flatten

    base = flatten(to_dict(make_plan(spec, "default", {}, bench, spec.seeds[0], opts.profile or spec.profile, opts.sets).config))
    point = {k: base[k] for k in spec.search.space}
    outside = [k for k, p in spec.search.space.items()
               if (p.choices is not None and point[k] not in p.choices) or (p.choices is None and not p.low <= point[k] <= p.high)]
    if outside:
        console.print(f"{bench}: the profile's {', '.join(f'{k}={point[k]!r}' for k in outside)} lie outside the search space: "
                      "no default trial to compare the search with", highlight=False)
        return None
    return point


def _optuna(spec: SweepSpec, root: Path, bench: str, default: dict[str, Any] | None):
    """OptunaSearch whose study lives in results/<sweep>/optuna.db (load_if_exists: a resumed sweep continues it)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(f"sqlite:///{root / 'optuna.db'}")
    return OptunaSearch(metric=spec.search.metric, mode=spec.search.mode, storage=storage, study_name=f"{spec.name}-{bench}",
                        sampler=optuna.samplers.TPESampler(seed=spec.search.seed), points_to_evaluate=[default] if default else None)


def progress_metric(spec: SweepSpec, plans: list[TrialPlan]) -> tuple[str, str]:
    """(metric, mode) of the progress lines' "best": a search's objective; a grid's development-split AUC when every
    trial scores that split (choices are made there, so the test AUC waits for the summary), else its test AUC."""
    if spec.search:
        return spec.search.metric, spec.search.mode
    return ("dev_auc" if plans and all(p.config.data.dev for p in plans) else "auc"), "max"


def _fit(spec, opts, root, param_space, plans, bench, shared, total, console, *, search) -> None:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    scheduler = None
    if spec.scheduler.type == "asha":
        s = spec.scheduler
        scheduler = ASHAScheduler(metric="itae_loss", mode="min", time_attr="itae_epoch", grace_period=s.grace_period,  # see rung()
                                  max_t=s.max_t, reduction_factor=s.reduction_factor, stop_last_trials=False)
    metric, mode = progress_metric(spec, plans)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, spec=spec, plans=plans, bench=bench, opts=shared),
        # a trial that drives Ray Train workers holds no CPU (they hold theirs); Ray wants a non-empty request: 1 byte
        {"cpu": 0, "gpu": 0, "memory": 1} if spec.resources.workers else {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    callbacks = [_stop_recorder(shared["trials"])]
    if not opts.quiet:
        callbacks.append(_progress_callback(total, metric, mode, [p.trial_id for p in plans]))
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search, scheduler=scheduler, num_samples=total if search else 1,
            max_concurrent_trials=spec.max_concurrent or None, trial_dirname_creator=lambda t: t.trial_id,
            reuse_actors=True,  # a trial process keeps torch + DeepSpeed imported for the next trial
        ),
        run_config=tune.RunConfig(
            name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(root / "ray"),
            failure_config=tune.FailureConfig(max_failures=0), callbacks=callbacks, verbose=0,
        ),
    )
    tuner.fit()


# ---------------------------------------------------------------------------------------------- collection


def collect(trials_dir: Path) -> list[dict[str, Any]]:
    """One flat record per trial folder: plan fields, status, metrics, stage statuses, error."""
    out = []
    for plan_file in sorted(Path(trials_dir).glob("*/plan.json")):
        rec = json.loads(plan_file.read_text())
        rec["id"] = plan_file.parent.name
        trial_file, err_file = plan_file.with_name("trial.json"), plan_file.with_name("error.json")
        if trial_file.is_file():
            t = json.loads(trial_file.read_text())
            rec.update(status="finished", metrics=t["metrics"], stages={k: s["status"] for k, s in t["stages"].items()},
                       stage_keys={k: s["key"] for k, s in t["stages"].items()}, seconds=t["seconds"])
        elif err_file.is_file():
            rec.update(status="failed", error=json.loads(err_file.read_text())["error"])
        else:  # stopped early by ASHA (stop.json says at which rung), or killed (no record)
            stop = plan_file.with_name(STOP_FILE)
            rec.update(status="stopped", **({"stop_reason": json.loads(stop.read_text())["reason"]} if stop.is_file() else {}))
        out.append(rec)
    return out


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if isinstance(v, float) and not math.isnan(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return f"{m:.4f} ± {sd:.4f}"


def stage_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """How many times each stage kind was trained across the sweep (each build is 'trained' in one record)."""
    counts = {"itae": 0, "flow": 0}
    for r in records:
        for name, status in r.get("stages", {}).items():
            if status == "trained" and name == "itae":
                counts["itae"] += 1
            elif status == "trained" and name.startswith("flow_"):
                counts["flow"] += 1
    return counts


BEST_SHOWN = 3  # a search's held-out test AUC is shown for its best trials by the objective only


def summary_table(spec: SweepSpec, records: list[dict[str, Any]], width: int | None = None):
    """One row per (variant, benchmark): seeds, status, AUCs (mean ± sd over seeds) and stage reuse; under them, dim,
    a grid sweep's floors (trial.json's metrics.baselines: one row per benchmark, shard resolution and baseline).

    A search's rows are its trials, ranked by the objective (a dev_ AUC); the test AUC appears for the best
    BEST_SHOWN only. Below 120 columns (CI logs, `ray job logs`) the table keeps variant, status and the
    numbers, and wraps long names instead of cutting them; the report has every column.
    """
    from rich.table import Table

    narrow = width is not None and width < 120
    metrics = (spec.search.metric, "auc_micro") if spec.search else ("auc_micro", "auc_micro_global", "auc_macro")
    if narrow and not spec.search:
        metrics = metrics[:2]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["variant"], r["benchmark"]), []).append(r)
    benches = {b for _, b in groups}
    cols = ["variant", *(["benchmark"] if len(benches) > 1 or not narrow else []), *([] if narrow else ["seeds"]), "status",
            *metrics, *([] if narrow else ["stages"])]
    table = Table(title=f"sweep {spec.name}: {spec.description}", title_justify="left")
    for col in cols:
        numeric = col in metrics
        table.add_column(col.replace("_", " ") if narrow and numeric else col, justify="right" if numeric else "left",
                         overflow="fold", no_wrap=numeric, min_width=6 if numeric else None)

    def value(r: dict[str, Any], k: str) -> float:
        return r.get("metrics", {}).get(k, float("nan"))

    if spec.search:  # best objective first; unfinished trials after
        sign = -1 if spec.search.mode == "max" else 1
        def objective(rs: list[dict[str, Any]]) -> float:
            v = value(rs[0], spec.search.metric) if rs[0]["status"] == "finished" else float("nan")
            return math.inf if math.isnan(v) else sign * v

        ranked = sorted(groups.items(), key=lambda kv: (objective(kv[1]), kv[0]))
    else:
        order = [v.name for v in spec.grid]
        ranked = sorted(groups.items(), key=lambda kv: (kv[0][1], order.index(kv[0][0]) if kv[0][0] in order else len(order), kv[0][0]))
    for rank, ((variant, bench), rs) in enumerate(ranked):
        ok = [r for r in rs if r["status"] == "finished"]
        status = "ok" if len(ok) == len(rs) else ", ".join(f"{n} {s}" for s in ("finished", "failed", "stopped") if (n := sum(r["status"] == s for r in rs)))
        if any(r["status"] == "failed" for r in rs):
            status += ": " + next(r["error"] for r in rs if r["status"] == "failed")[:80]
        reasons = sorted({r.get("stop_reason", "killed, no record") for r in rs if r["status"] == "stopped"})
        if reasons:
            status = reasons[0] if len(rs) == 1 else status + " (" + "; ".join(reasons) + ")"
        cells = {"variant": variant, "benchmark": bench, "seeds": ",".join(str(r["seed"]) for r in rs), "status": status,
                 "stages": " ".join(f"{k.removeprefix('flow_')}:{'/'.join(sorted({r['stages'][k][0] for r in ok}))}"
                                    for k in ("itae", "flow_app", "flow_mot", "score") if ok and k in ok[0]["stages"])}
        for k in metrics:
            hidden = spec.search and k == "auc_micro" and rank >= BEST_SHOWN
            cells[k] = "·" if hidden else _mean_std([value(r, k) for r in ok])
        table.add_row(*(cells[c] for c in cols))
    if not spec.search:  # the floors (vadcore.baselines), dim, in a block under the variants: a search ranks trials only
        from results.report import FLOORS

        floors: dict[tuple[str, str, str], dict[str, float]] = {}
        for r in (r for r in records if r["status"] == "finished"):
            data = r.get("config", {}).get("data", {})
            for name, aucs in r["metrics"].get("baselines", {}).items():
                floors.setdefault((r["benchmark"], f"{data.get('height', '?')}x{data.get('width', '?')}", name), aucs)
        if floors:
            table.add_section()
        for (bench, frames, name), aucs in sorted(floors.items()):
            cells = {"variant": "baseline: " + FLOORS.get(name, (name.replace("_", " "),))[0], "benchmark": bench, "seeds": "",
                     "status": f"no model, {frames}", "stages": "", **{k: _mean_std([aucs.get(k, math.nan)]) for k in metrics}}
            table.add_row(*(cells[c] for c in cols), style="dim")
    return table


def print_summary(spec: SweepSpec, records: list[dict[str, Any]], console) -> None:
    console.print(summary_table(spec, records, console.width))
    if spec.search:
        console.print(f"ranked by {spec.search.metric} (development split); auc_micro: the held-out test set, "
                      f"shown for the best {BEST_SHOWN} only and never optimised", highlight=False)
    c = stage_counts(records)
    console.print(f"stages trained in this sweep: {c['itae']} ITAE, {c['flow']} flow (t = trained, r = reused); "
                  f"{sum(r['status'] == 'failed' for r in records)} failed trial(s); reproduce any trial with the command in trials/<id>/plan.json")


def results_name(name_or_path: str, results: str | None) -> str:
    """The folder under results/ of a sweep named as on the command line: a .toml path gives its file's `name`;
    a bare name is that folder if it exists (a sweep run from a file outside sweeps/ is found by its name
    alone), else the `name` of sweeps/NAME.toml (which may differ from the file's name)."""
    from sweeps.spec import load_sweep

    p = Path(name_or_path)
    if p.suffix == ".toml" or p.is_file() or not (results_root(results) / name_or_path).is_dir():
        return load_sweep(name_or_path).name
    return name_or_path


def load_run_options(name_or_path: str, results: str | None) -> tuple[str, RunOptions]:
    """The file and options of a sweep's last run, for `resume`."""
    name = results_name(name_or_path, results)
    f = results_root(results) / name / "sweep.json"
    if not f.is_file():
        raise ConfigError(f"nothing to resume: {f} does not exist (run `python -m sweeps run {name_or_path}` first)")
    saved = json.loads(f.read_text())
    file = saved.pop("file")
    return file, RunOptions(**{k: v for k, v in saved.items() if k in RunOptions.__dataclass_fields__})
