"""What a sweep costs the system itself as it grows: a search of TINY trials on a local Ray cluster of several nodes.

    just bench --only scale                          # inside `just bench`'s private network namespace
    python benchmarks/bench_scale.py --quick         # (the same, run where a local cluster can start: `just netns ...`)

A local cluster (`sweeps.testing.local_cluster`, the machinery of `just cluster-test`) of --nodes nodes with --cpus
logical CPUs each (more than the machine's cores: Ray schedules by the number given, so 8 trials at once on 2 cores
are 8 processes sharing 2 cores, and every figure below carries that contention) runs benchmarks/scale.toml, a
search whose trials share two ITAEs and differ in lambda_L, joined by this process as its driver:

(a) per-trial overhead against the trials running at once: a search of --samples trials at the top concurrency
    first (fresh stage cache: the first trials race for the two ITAEs), then shorter ones at lower concurrencies on
    the now-warm cache. Overhead = the driver's span of a trial (Tune's on_trial_start -> on_trial_complete) minus
    the pipeline's own seconds (trial.json); also Tune's time_total_s minus those seconds (the trial process' side).
    Median and p95 per concurrency; target: median <= 0.5 s at 8 at once.
(b) Optuna's suggest time against the trials its study has seen: TPE (the runner's sampler, seed and sqlite
    storage) asked for one more sample by a study holding 10, 100, 1,000 trials, replicated from the real
    search's trials (parameters and objective values, cycled).
(c) stage-lock waits of the real search (trial.json's lock_wait_seconds: time a trial blocked on another's build).
(d) publishing (`results.report.publish`: trials.parquet, frame_scores.parquet, all_trials.parquet, report.md/html,
    the index) of 10, 100, 1,000 trials, replicated from the real search's finished trial folders (each replica a
    copy under its own name; the study replicated as in (b)), each in a fresh process: seconds, the memory it adds
    over the process after its imports (peak RSS - RSS before publishing), and the results folder's size (Ray's
    own ray/ folder measured apart, on the real search). Targets: <= 30 s at 1,000 trials, growing no faster than
    the trials (t(1,000) / t(100) <= 10).

Prints the tables, then one JSON line of flat figures (`just bench` keeps them in results/bench/).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(HERE))
from gpu_carry import folder_bytes  # noqa: E402  (a results folder is sized as the GPU carry is)

SWEEP = HERE / "scale.toml"
PUBLISH_SIZES = (10, 100, 1000)
ASKS = 5  # suggest calls timed per study size (their median)


def summary(values: list[float]) -> dict[str, float | None]:
    """Median and p95 (numpy's linear interpolation), None without values."""
    median, p95 = (float(x) for x in np.percentile(values, [50, 95])) if values else (None, None)
    return {"median": median, "p95": p95, "n": len(values)}


# ---------------------------------------------------------------------------------------------- (a) the searches


def run_search(address: str, root: Path, cache: Path, concurrent: int, samples: int) -> dict[str, Any]:
    """One search of `samples` trials, `concurrent` at once, driven from this process; its overheads per trial."""
    from bench_sweep import TrialTimes, analyse
    from rich.console import Console

    from sweeps.options import RunOptions, sweep_dir
    from sweeps.runner import run_sweep
    from sweeps.spec import load_sweep
    from vadcore.testing import TINY

    events = root / f"driver-{concurrent}.jsonl"
    spec = load_sweep(SWEEP)
    opts = RunOptions(results=str(root / f"results-{concurrent}"), cache=str(cache), address=address, sets=list(TINY),
                      num_samples=samples, max_concurrent=concurrent, quiet=True)
    t0 = time.perf_counter()
    run_sweep(spec, opts, console=Console(file=open(os.devnull, "w")), callbacks=(TrialTimes(str(events)),))
    wall = time.perf_counter() - t0
    driver: dict[str, dict[str, float]] = {}
    for line in events.read_text().splitlines():
        e = json.loads(line)
        driver.setdefault(e["trial_id"], {})[e["event"]] = e["t"]
    folder = sweep_dir(spec, opts.results)
    rows = analyse(folder, {"wall": wall, "ray_start": 0.0, "driver": driver, "max_concurrent": concurrent, "num_cpus": None})["rows"]
    return {"concurrent": concurrent, "trials": len(rows), "wall_s": wall, "folder": folder,
            "driver": summary([r["driver_overhead"] for r in rows if r["driver_overhead"] is not None]),
            "tune": summary([r["overhead"] for r in rows if r["overhead"] is not None]),
            "pipeline": summary([r["seconds"] for r in rows])}


def lock_waits(folder: Path) -> dict[str, Any]:
    """Every stage a trial of the search found unbuilt and took the lock of: how long it blocked on another's build."""
    waits = [s["lock_wait_seconds"] for f in (folder / "trials").glob("*/trial.json")
             for s in json.loads(f.read_text())["stages"].values() if "lock_wait_seconds" in s]
    blocked = [w for w in waits if w > 0.01]
    return {"locks_taken": len(waits), "blocked": len(blocked), **{f"blocked_{k}": v for k, v in summary(blocked).items() if k != "n"},
            "blocked_max": max(blocked, default=None)}


# ---------------------------------------------------------------------------------------------- (b) Optuna


def replicated_study(src_db: Path, dst_db: Path, n: int) -> tuple[Any, dict[str, Any]]:
    """A study in a new sqlite file (the runner's storage and sampler) holding `n` completed trials cycled from the
    real search's; returns it and the search space's distributions."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    src_url = f"sqlite:///{src_db}"
    (name,) = optuna.get_all_study_names(storage=src_url)
    real = [t for t in optuna.load_study(study_name=name, storage=src_url).trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not real:
        raise RuntimeError(f"{src_db}: no completed trial to replicate")
    study = optuna.create_study(storage=optuna.storages.RDBStorage(f"sqlite:///{dst_db}"), study_name=name, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0))
    study.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=t.value) for t in
                      (real[i % len(real)] for i in range(n))])
    return study, real[0].distributions


def suggest_ms(study, distributions: dict[str, Any], real_values: list[float]) -> float:
    """Median milliseconds of TPE's ask over ASKS asks (each told a real value after, as Tune's searcher would)."""
    times = []
    for i in range(ASKS):
        t0 = time.perf_counter()
        trial = study.ask(fixed_distributions=distributions)  # what ray.tune's OptunaSearch does per suggestion
        times.append(time.perf_counter() - t0)
        study.tell(trial, real_values[i % len(real_values)])
    return statistics.median(times) * 1e3


# ---------------------------------------------------------------------------------------------- (d) publish


def replicate(real: Path, dst: Path, n: int, study_db: Path) -> Path:
    """results/<sweep>/ with `n` trial folders copied (cycling) from the real search's finished ones, each under a name
    of its own (folder and plan.json's variant), and the replicated study as its optuna.db."""
    sources = sorted(p.parent for p in (real / "trials").glob("*/trial.json"))
    sweep = dst / real.name
    (sweep / "trials").mkdir(parents=True)
    for i in range(n):
        src = sources[i % len(sources)]
        plan = json.loads((src / "plan.json").read_text())
        name = f"{plan['variant']}-r{i}"
        out = sweep / "trials" / f"{name}-{plan['benchmark']}-s{plan['seed']}"
        shutil.copytree(src, out)
        (out / "plan.json").write_text(json.dumps({**plan, "variant": name}, indent=2))
    shutil.copy(real / "sweep.json", sweep / "sweep.json")
    shutil.copy(study_db, sweep / "optuna.db")
    return sweep


PUBLISH = """
import json, resource, sys, time
from results.report import publish
import matplotlib, optuna, pyarrow  # the imports publish makes, before the baseline
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
before = rss_mb()
t0 = time.perf_counter()
publish(sys.argv[1])
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "rss_before_mb": before, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def publish_in_fresh_process(sweep: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", PUBLISH, str(sweep)], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"publish of {sweep} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def publish_scaling(real: Path, tmp: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(publish rows, suggest rows) at each of PUBLISH_SIZES trials."""
    import optuna

    real_values = [t.value for t in optuna.load_study(study_name=optuna.get_all_study_names(f"sqlite:///{real / 'optuna.db'}")[0],
                                                     storage=f"sqlite:///{real / 'optuna.db'}").trials if t.value is not None]
    publish, suggest = [], []
    for n in PUBLISH_SIZES:
        db = tmp / f"study-{n}.db"
        study, dists = replicated_study(real / "optuna.db", db, n)
        suggest.append({"trials_seen": n, "suggest_ms": suggest_ms(study, dists, real_values)})
        sweep = replicate(real, tmp / f"results-{n}", n, db)
        res = publish_in_fresh_process(sweep)
        size = folder_bytes(sweep)
        publish.append({"trials": n, "seconds": res["seconds"], "rss_growth_mb": res["peak_rss_mb"] - res["rss_before_mb"],
                        "peak_rss_mb": res["peak_rss_mb"], "folder_mb": size / 2**20, "kb_per_trial": size / n / 1024,
                        "tables_mb": sum(f.stat().st_size for f in sweep.glob("*.parquet")) / 2**20})
    return publish, suggest


# ---------------------------------------------------------------------------------------------- the run


def measure(nodes: int, cpus: int, samples: int, levels: list[int], keep: Path | None) -> dict[str, Any]:
    from sweeps.testing import local_cluster

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=keep))
    try:
        with local_cluster(workers=nodes - 1, num_cpus=cpus) as cluster:
            os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=cluster.env["RAY_AUTH_TOKEN"], OMP_NUM_THREADS="1")
            os.environ.pop("VAD_DATA_ROOT", None)
            import ray  # only now: Ray reads its auth mode from the environment once, when it is first imported
            cache = cluster.shared / "cache"
            top, *rest = sorted(levels, reverse=True)
            runs = [run_search(cluster.address, cluster.shared, cache, top, samples)]  # the cold cache: lock waits
            for c in sorted(rest):
                runs.append(run_search(cluster.address, cluster.shared, cache, c, max(8, 2 * c)))
            ray.shutdown()
            real = runs[0]["folder"]
            locks = lock_waits(real)
            ray_kb = folder_bytes(real / "ray") / max(1, runs[0]["trials"]) / 1024
            publish, suggest = publish_scaling(real, tmp)
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"nodes": nodes, "cpus_per_node": cpus, "cores": os.cpu_count(), "runs": [{k: v for k, v in r.items() if k != "folder"} for r in runs],
            "locks": locks, "ray_folder_kb_per_trial": ray_kb, "publish": publish, "suggest": suggest}


def figures(res: dict[str, Any]) -> dict[str, float | None]:
    """The flat figures `just bench` keeps (bench.py's scale section gives them their targets)."""
    out: dict[str, float | None] = {"nodes": res["nodes"], "logical_cpus": res["nodes"] * res["cpus_per_node"], "cores": res["cores"]}
    for r in res["runs"]:
        c = r["concurrent"]
        out.update({f"c{c}.trials": r["trials"], f"c{c}.wall_per_trial_s": r["wall_s"] / max(1, r["trials"]),
                    f"c{c}.overhead_median_s": r["driver"]["median"], f"c{c}.overhead_p95_s": r["driver"]["p95"],
                    f"c{c}.tune_overhead_median_s": r["tune"]["median"], f"c{c}.tune_overhead_p95_s": r["tune"]["p95"],
                    f"c{c}.pipeline_median_s": r["pipeline"]["median"]})
    out.update({f"lock.{k}": v for k, v in res["locks"].items()})
    out["ray_folder_kb_per_trial"] = res["ray_folder_kb_per_trial"]
    for s in res["suggest"]:
        out[f"optuna.suggest_ms.n{s['trials_seen']}"] = s["suggest_ms"]
    for p in res["publish"]:
        n = p["trials"]
        out.update({f"publish.n{n}.s": p["seconds"], f"publish.n{n}.rss_growth_mb": p["rss_growth_mb"],
                    f"publish.n{n}.folder_mb": p["folder_mb"], f"publish.n{n}.kb_per_trial": p["kb_per_trial"]})
    t = {p["trials"]: p["seconds"] for p in res["publish"]}
    out["publish.growth_100_to_1000"] = t[1000] / t[100] if t.get(100) else None
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def show(res: dict[str, Any]) -> None:
    f = lambda v, d=2: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    print(f"\n{res['nodes']} nodes x {res['cpus_per_node']} logical CPUs = {res['nodes'] * res['cpus_per_node']} on {res['cores']} cores")
    print("\n| trials at once | trials | overhead median s | overhead p95 s | Tune-side median s | Tune-side p95 s | pipeline median s | wall per trial s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(res["runs"], key=lambda r: r["concurrent"]):
        print(f"| {r['concurrent']} | {r['trials']} | {f(r['driver']['median'])} | {f(r['driver']['p95'])} | {f(r['tune']['median'])} | "
              f"{f(r['tune']['p95'])} | {f(r['pipeline']['median'])} | {f(r['wall_s'] / max(1, r['trials']))} |")
    lk = res["locks"]
    print(f"\nstage locks taken: {lk['locks_taken']}, blocked on another trial's build: {lk['blocked']} (median {f(lk['blocked_median'])} s, "
          f"p95 {f(lk['blocked_p95'])} s, max {f(lk['blocked_max'])} s); Ray's ray/ folder: {res['ray_folder_kb_per_trial']:.0f} KB per trial")
    print("\n| trials | Optuna suggest ms | publish s | publish adds MB (peak RSS) | results folder MB | KB per trial |")
    print("|---|---|---|---|---|---|")
    for s, p in zip(res["suggest"], res["publish"]):
        print(f"| {p['trials']} | {f(s['suggest_ms'], 1)} | {f(p['seconds'])} | {f(p['rss_growth_mb'], 0)} | {f(p['folder_mb'], 1)} | {f(p['kb_per_trial'], 0)} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=4, help="Ray nodes, the head included (default 4)")
    p.add_argument("--cpus", type=int, default=2, help="logical CPUs per node (default 2: 8 trials at once on 4 nodes)")
    p.add_argument("--samples", type=int, default=64, help="trials of the search at the top concurrency (default 64)")
    p.add_argument("--quick", action="store_true", help="concurrencies 1 and the top one only (default: 1, 2, 4 and the top)")
    p.add_argument("--keep", type=Path, help="keep the replicated results folders under this folder")
    args = p.parse_args(argv)
    top = args.nodes * args.cpus
    levels = [1, top] if args.quick else sorted({1, 2, 4, top})
    res = measure(args.nodes, args.cpus, args.samples, [c for c in levels if c <= top], args.keep)
    show(res)
    print(json.dumps(figures(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
