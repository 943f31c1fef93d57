"""Overhead of a sweep: (a) its wall time against the work it cannot avoid, (b) Ray Tune's cost per trial.

    python benchmarks/bench_sweep.py                                  # ablation-paths, synthetic, TINY sizes, temp folders
    python benchmarks/bench_sweep.py --sweep ablation-extra-input --num-cpus 2
    python benchmarks/bench_sweep.py --from-results results/ablation-paths   # a finished sweep: nothing runs

(a) wall ÷ distinct-stage time. "Distinct stage time" is the sum, over every stage that was *trained* in the
sweep, of its own build time (`build_seconds` in trial.json; for the shards, which the sweep's driver writes, the
manifest's `write_seconds`), each (stage, key) counted once — the work a perfect scheduler running one stage
after the other could not avoid. Reused stages, waits on another trial's lock, per-trial evaluation, Ray
start-up, actor spawns and report writing are all overhead that only the wall time contains. So 1.0 means "the sweep costs exactly its distinct trainings, run serially", and
the target ≤ 1.10 says sharing plus orchestration add at most 10 %. With concurrent trials (max_concurrent > 1
on > 1 CPU) independent stages overlap and the ratio can drop below 1: it is then a throughput figure, not a
pure overhead one, so the concurrency used and the mean parallelism (Σ trial seconds ÷ fit span) are printed
beside it. A second ratio counts the per-trial evaluation (computed in every trial, never cached) as work too.

(b) Ray per-trial overhead = Tune's `time_total_s` of the trial's final result (from the first `train()` call
of its actor to its last `tune.report`, i.e. what Ray itself says the trial took) minus the pipeline's own
`seconds` (trial.json: `run_trial` from entry to its record written). It holds the trainable's imports, plan
writing, per-epoch reports and the final report. In a live run the driver-side span as well (Tune callback
`on_trial_start` → `on_trial_complete`, which adds result processing in the driver; the actor's process spawn
happens before `on_trial_start` and is only in (a)). Target ≤ 1.5 s, as mean and max.

Prints a table, then one JSON line of flat dotted keys.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repo root: vadcore, sweeps need not be installed

from ray import tune  # noqa: E402

from vadcore.configtools import flatten  # noqa: E402


class TrialTimes(tune.Callback):
    """Appends driver-side trial start/end times to a JSON-lines file (a file, not memory: Tune may copy its
    callbacks); given to the sweep beside its own callbacks."""

    def __init__(self, path: str):
        self.path = path

    def _log(self, event: str, trial) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"event": event, "trial_id": trial.trial_id, "t": time.time()}) + "\n")

    def on_trial_start(self, iteration, trials, trial, **info):
        self._log("start", trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._log("complete", trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._log("error", trial)


def tiny_sets() -> list[str]:
    from vadcore.testing import TINY  # the sizes the test-suite uses: one trial in seconds

    return list(TINY)


def run_live(sweep: str, num_cpus: int, keep: str | None) -> tuple[Path, dict[str, Any]]:
    """Run the sweep in-process into temporary results/cache folders; return its folder and live timings."""
    from sweeps.cluster import init_ray
    from sweeps.options import RunOptions, sweep_dir
    from sweeps.runner import run_sweep
    from sweeps.spec import load_sweep

    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    events = root / "driver_events.jsonl"
    events.unlink(missing_ok=True)
    spec = load_sweep(sweep)
    opts = RunOptions(results=str(root / "results"), cache=str(root / "cache"), sets=tiny_sets())
    os.environ.pop("VAD_DATA_ROOT", None)
    t0 = time.perf_counter()
    init_ray(None, num_cpus=num_cpus)
    ray_start = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        run_sweep(spec, opts, callbacks=(TrialTimes(str(events)),))  # init_ray inside finds Ray running: the timing below excludes its start
        wall = time.perf_counter() - t0
    finally:
        import ray

        ray.shutdown()
    driver: dict[str, dict[str, float]] = {}
    for line in events.read_text().splitlines() if events.is_file() else []:
        e = json.loads(line)
        driver.setdefault(e["trial_id"], {})[e["event"]] = e["t"]
    return sweep_dir(spec, opts.results), {"wall": wall, "ray_start": ray_start, "driver": driver,
                                                   "max_concurrent": spec.max_concurrent, "num_cpus": num_cpus, "root": str(root)}


def final_result(sweep_root: Path, tune_trial_id: str) -> dict[str, Any] | None:
    """The last result Tune stored for a trial (results/<sweep>/ray/<experiment>/<trial id>/result.json)."""
    files = sorted(sweep_root.glob(f"ray/*/{tune_trial_id}/result.json"), key=lambda p: p.stat().st_mtime)
    for f in reversed(files):
        lines = [ln for ln in f.read_text().splitlines() if ln.strip()]
        if lines:
            return json.loads(lines[-1])
    return None


def analyse(sweep_root: Path, live: dict[str, Any] | None) -> dict[str, Any]:
    trials = []
    for plan_file in sorted((sweep_root / "trials").glob("*/plan.json")):
        tfile = plan_file.with_name("trial.json")
        if not tfile.is_file():
            continue
        plan, t = json.loads(plan_file.read_text()), json.loads(tfile.read_text())
        trials.append({"id": plan_file.parent.name, "plan": plan, "trial": t, "plan_mtime": plan_file.stat().st_mtime,
                       "trial_mtime": tfile.stat().st_mtime, "result": final_result(sweep_root, plan.get("tune_trial_id", ""))})
    if not trials:
        raise SystemExit(f"no finished trials under {sweep_root}/trials")

    distinct: dict[tuple[str, str], float] = {}
    evaluate = 0.0
    cache = Path(json.loads((sweep_root / "sweep.json").read_text())["cache"])
    for tr in trials:
        for name, s in tr["trial"]["stages"].items():
            if name == "evaluate":
                evaluate += s["seconds"]
            elif name.startswith("shards_"):  # written by the sweep's driver before any trial: the manifest's time
                manifest = cache / "shards" / tr["plan"]["benchmark"] / s["key"] / "manifest.json"
                distinct[(name, s["key"])] = float(json.loads(manifest.read_text()).get("write_seconds", 0.0)) if manifest.is_file() else 0.0
            elif s["status"] == "trained":
                distinct[(name, s["key"])] = float(s.get("build_seconds") or s["seconds"])
    work = sum(distinct.values())
    by_kind: dict[str, float] = {}
    for (name, _), sec in distinct.items():
        by_kind[name] = by_kind.get(name, 0.0) + sec
    # from files alone: first trainable entry (plan.json written) to last trial.json; live: the timed run_sweep call
    span_files = max(t["trial_mtime"] for t in trials) - min(t["plan_mtime"] for t in trials)
    wall = live["wall"] if live else span_files
    sum_trial = sum(t["trial"]["seconds"] for t in trials)

    rows = []
    for tr in trials:
        r, sec = tr["result"], tr["trial"]["seconds"]
        row = {"id": tr["id"], "seconds": sec, "time_total_s": r["time_total_s"] if r else None}
        row["overhead"] = row["time_total_s"] - sec if r else None
        d = (live or {}).get("driver", {}).get(tr["plan"].get("tune_trial_id"), {})
        row["driver_span"] = d["complete"] - d["start"] if "start" in d and "complete" in d else None
        row["driver_overhead"] = row["driver_span"] - sec if row["driver_span"] is not None else None
        row["stages"] = " ".join(f"{k.removeprefix('flow_')}:{s['status'][0]}" for k, s in tr["trial"]["stages"].items() if k in ("itae", "flow_app", "flow_mot", "score"))
        rows.append(row)
    ov = [r["overhead"] for r in rows if r["overhead"] is not None]
    dov = [r["driver_overhead"] for r in rows if r["driver_overhead"] is not None]
    n_itae = sum(1 for k in distinct if k[0] == "itae")
    n_flow = sum(1 for k in distinct if k[0].startswith("flow_"))
    return {
        "rows": rows,
        "figures": {
            "sweep": sweep_root.name, "trials": len(trials), "wall_s": round(wall, 3),
            "wall_from": "timed run_sweep (Ray start excluded)" if live else "first plan.json -> last trial.json (files)",
            "span_files_s": round(span_files, 3), "ray_start_s": round(live["ray_start"], 3) if live else None,
            "distinct_stage_s": round(work, 3), "distinct_stages": len(distinct), "trained_itae": n_itae, "trained_flow": n_flow,
            "distinct_stage_s_by_kind": {k: round(v, 3) for k, v in sorted(by_kind.items())},
            "evaluate_s": round(evaluate, 3),
            "ratio": round(wall / work, 3) if work else None,
            "ratio_with_evaluate": round(wall / (work + evaluate), 3) if work + evaluate else None,
            "max_concurrent": live["max_concurrent"] if live else None, "num_cpus": live["num_cpus"] if live else None,
            "mean_parallelism": round(sum_trial / span_files, 2) if span_files > 0 else None,
            "ray_overhead_mean_s": round(statistics.mean(ov), 3) if ov else None,
            "ray_overhead_max_s": round(max(ov), 3) if ov else None,
            "driver_overhead_mean_s": round(statistics.mean(dov), 3) if dov else None,
            "driver_overhead_max_s": round(max(dov), 3) if dov else None,
        },
    }


def show(res: dict[str, Any]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    f = res["figures"]
    console = Console(width=max(140, Console().width))
    table = Table(title=f"sweep {f['sweep']}: per-trial Ray overhead (target ≤ 1.5 s)", box=box.SIMPLE)
    for col in ("trial", "stages", "pipeline s", "Tune time_total_s", "overhead s", "driver span s", "driver overhead s"):
        table.add_column(col, justify="left" if col in ("trial", "stages") else "right")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for r in res["rows"]:
        table.add_row(r["id"], r["stages"], fmt(r["seconds"]), fmt(r["time_total_s"]), fmt(r["overhead"]), fmt(r["driver_span"]), fmt(r["driver_overhead"]))
    console.print(table)
    console.print(
        f"(a) wall {f['wall_s']:.1f} s ({f['wall_from']}) ÷ distinct trained stages {f['distinct_stage_s']:.1f} s "
        f"({f['distinct_stages']} stages: {f['trained_itae']} ITAE, {f['trained_flow']} flow; {f['distinct_stage_s_by_kind']}) "
        f"= [bold]{f['ratio']}[/] (target ≤ 1.10); with per-trial evaluation ({f['evaluate_s']:.1f} s) counted as work: {f['ratio_with_evaluate']}",
        highlight=False)
    console.print(f"    concurrency: max_concurrent {f['max_concurrent']}, Ray num_cpus {f['num_cpus']}, mean parallelism "
                  f"{f['mean_parallelism']} (Σ trial seconds ÷ first-plan→last-record span {f['span_files_s']:.1f} s); Ray start "
                  f"{fmt(f['ray_start_s'])} s (not in the wall)", highlight=False)
    console.print(f"(b) Ray per-trial overhead (Tune time_total_s − pipeline seconds): mean [bold]{f['ray_overhead_mean_s']}[/] s, "
                  f"max [bold]{f['ray_overhead_max_s']}[/] s (target ≤ 1.5 s); driver-side span − pipeline seconds: mean "
                  f"{f['driver_overhead_mean_s']} s, max {f['driver_overhead_max_s']} s", highlight=False)
    print(json.dumps(flatten(f)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default="ablation-paths", help="sweep name or .toml path (default: ablation-paths)")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs given to the in-process Ray (default 2)")
    p.add_argument("--keep", help="run into this folder instead of a temporary one (kept afterwards)")
    p.add_argument("--from-results", metavar="DIR", help="a finished sweep's folder (results/<sweep>): analyse it, run nothing")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.from_results:
        root = Path(args.from_results).resolve()
        if not (root / "trials").is_dir() and (root / args.sweep / "trials").is_dir():
            root = root / args.sweep
        res = analyse(root, None)
        saved = root / "sweep.json"  # the last run's options: its sweep file gives max_concurrent
        if saved.is_file():
            from sweeps.spec import load_sweep

            try:
                res["figures"]["max_concurrent"] = load_sweep(json.loads(saved.read_text())["file"]).max_concurrent
            except Exception:  # the file moved or no longer validates: leave it unknown
                pass
        show(res)
        return 0
    root, live = run_live(args.sweep, args.num_cpus, args.keep)
    show(analyse(root, live))
    if not args.keep:
        import shutil

        shutil.rmtree(live["root"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
