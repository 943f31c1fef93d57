"""`just bench`: every performance promise of vad-sweeps measured in one sitting, kept as a table.

    just bench              # full: smoke-size sweeps and stages, about 15-20 minutes on 2 cores
    just bench --quick      # the same figures, training stages cut to 80 / 40 steps: about 6 minutes
    python benchmarks/bench.py --only data,compute     # some sections (data, compute, sweep, memory, parallel, gpu, scale)

Sections, each a figure with its target where the project promises one:
  data      loader clips/s ÷ the clips/s one ITAE training step consumes, Ped2 smoke size (synthetic without data)
  compute   ITAE and Glow training-step GFLOP/s ÷ torch's own matmul GFLOP/s, same process, same threads
  sweep     `just sweep ablation-paths` in a fresh clone of HEAD (the project's .venv linked in: install
            excluded): wall time to its report; then the same sweep with `--no-stage-sharing` (every trial trains
            its own stages, as a plain Ray Tune or W&B sweep does): both walls, trainings executed, the speed-up;
            sweep wall ÷ distinct stage time and Ray's per-trial overhead (benchmarks/bench_sweep.py's analysis);
            the largest peak RSS of a trial
  memory    peak RSS of each stage on its own (benchmarks/bench_stages.py memory)
  parallel  one ITAE stage on 2 Ray Train workers against 1 (benchmarks/bench_stages.py parallel)
  gpu       with CUDA only: benchmarks/gpu_check.py's ms/step, samples/s, TFLOP/s and peak GPU memory per stage
            at the paper's Ped2 and Avenue geometries
  scale     benchmarks/bench_scale.py: a 64-trial TINY search on a local 4-node Ray cluster, 8 at once: per-trial
            overhead against trials at once, Optuna's suggest time, stage-lock waits, and publish time, memory
            and results-folder size at 10 / 100 / 1,000 trials

Every figure becomes a row of results/bench/bench.parquet (name, value, unit, target, pass, the machine, the
versions, the git commit, the time); results/bench/report.md shows this run beside the previous run of the same
mode on the same machine and flags a figure more than 20% worse. Timings on a shared machine are noisy: compare
figures measured in one run (the ratios are), and rerun before believing a flag.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # the repo root: vadcore need not be installed
sys.path.insert(1, str(HERE))  # the other benchmark scripts

SECTIONS = ("data", "compute", "sweep", "memory", "parallel", "gpu", "scale")
REGRESSION = 0.20  # a figure this much worse than the previous run's is flagged
OUT = REPO / "results" / "bench"


@dataclass
class Figure:
    section: str
    name: str
    value: float | None
    unit: str
    target: float | None = None
    op: str | None = None  # ">=" or "<=": how value must compare with target
    better: str | None = None  # "higher" | "lower": the direction a regression is judged in (None: informational)
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None  # informational
        if self.value is None:
            return False  # a promised figure that could not be measured
        return self.value >= self.target if self.op == ">=" else self.value <= self.target

    @property
    def target_text(self) -> str:
        return "" if self.target is None else f"{'≥' if self.op == '>=' else '≤'} {self.target:g}"


def at_least(target: float) -> dict[str, Any]:
    return {"target": target, "op": ">=", "better": "higher"}


def at_most(target: float) -> dict[str, Any]:
    return {"target": target, "op": "<=", "better": "lower"}


QUICK = ["itae_train.epochs=1", "itae_train.max_steps=80", "flow.train.epochs=1", "flow.train.max_steps=40", "data.test_stride=8"]


@dataclass(frozen=True)
class Mode:
    quick: bool
    data_root: str | None

    @property
    def sets(self) -> list[str]:
        """Config overrides of the sweeps and stages. Quick: the smoke profile's sizes (what memory and data
        loading depend on), one epoch of 80 ITAE and 40 flow steps, and every 8th test window scored, so that
        the trainings a sweep can share still outweigh what it cannot (shards, scoring, Ray): at the test
        suite's TINY sizes a stage takes a second and every ratio measures overhead only."""
        return list(QUICK) if self.quick else []

    @property
    def steps(self) -> int:
        return 5 if self.quick else 10


def data_section(mode: Mode) -> list[Figure]:
    """Loader clips/s (the trainer's own setting: data.loader_workers, torch's threads) ÷ the fastest training
    step's clips/s, at the smoke profile of Ped2 (synthetic when Ped2's files are not there), cold shards."""
    from bench_data import loader_clips_per_s
    from bench_model import interleaved, make_step

    from vadcore.config import resolve_config
    from vadcore.data import get_benchmark, resolve_data_root
    from vadcore.data.loader import load_manifest
    from vadcore.data.shards import ShardSpec, ensure_shards

    root = resolve_data_root(mode.data_root) or REPO.parent / "shared" / "data"
    name = "ped2" if (root / "ped2").is_dir() else "synthetic"
    cfg = resolve_config(name, "smoke")
    d, batch = cfg.data, cfg.itae_train.batch_size
    bench = get_benchmark(name, root if name == "ped2" else None)
    with tempfile.TemporaryDirectory(prefix="bench-data-") as cache:
        t0 = time.perf_counter()
        folder, _ = ensure_shards(bench, ShardSpec(name, "train", d.height, d.width, d.channels), Path(cache), show_progress=False)
        shard_rate = load_manifest(folder)["frames"] / (time.perf_counter() - t0)
        loader, _ = loader_clips_per_s(folder, cfg.itae.frames, d.train_stride, batch, d.loader_workers, torch.get_num_threads())
    threads = sorted({torch.get_num_threads(), 1})
    steps = interleaved({str(t): (make_step(cfg, batch), t) for t in threads}, 2, mode.steps)
    train = max(batch / seconds for seconds, _ in steps.values())
    where = f"{name} smoke {d.height}×{d.width}×{d.channels}, T={cfg.itae.frames}, batch {batch}"
    return [
        Figure("data", "shards.frames_per_s", round(shard_rate, 1), "frames/s", better="higher", note=f"{name} train split, decode + resize + write"),
        Figure("data", "loader.clips_per_s", round(loader, 1), "clips/s", better="higher", note=f"{d.loader_workers} loader workers, {where}"),
        Figure("data", "train.clips_per_s", round(train, 2), "clips/s", better="higher", note=f"fastest of {threads} threads"),
        Figure("data", "loader_over_training", round(loader / train, 2), "×", **at_least(10), note="the loader never starves training"),
    ]


def compute_section(mode: Mode) -> list[Figure]:
    """Training-step GFLOP/s of the ITAE, as the laptop profile trains it (its crops and its precision: bf16
    autocast under cpu-bf16), and of a Glow (motion flow), at Ped2's laptop size ÷ torch's float32 matmul GFLOP/s.
    The three take turns step by step (`interleaved`), so a change of load hits them alike."""
    from bench_model import MATMUL_N, clip_size, interleaved, make_flow_step, make_step, step_flops

    from vadcore.config import resolve_config
    from vadcore.train import autocast_dtype

    cfg = resolve_config("ped2", "laptop")
    itae_batch, flow_batch = cfg.itae_train.batch_size, cfg.flow.train.batch_size
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    flow_step, flow_flops = make_flow_step(cfg, flow_batch)
    flops = {"matmul": 2 * MATMUL_N**3, "itae": step_flops(cfg, itae_batch), "glow": flow_flops}
    batches = {"itae": itae_batch, "glow": flow_batch}
    where = {"itae": f"{'×'.join(map(str, clip_size(cfg)))} clips, {autocast_dtype(cfg.deepspeed) or 'float32'}", "glow": "float32"}
    out = []
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        steps = interleaved({"matmul": (lambda: a @ b, threads), "itae": (make_step(cfg, itae_batch), threads), "glow": (flow_step, threads)},
                            2, mode.steps)
        gflops = {k: flops[k] / seconds / 1e9 for k, (seconds, _) in steps.items()}
        out.append(Figure("compute", f"matmul.gflops.{threads}t", round(gflops["matmul"], 1), "GFLOP/s", better="higher",
                          note=f"float32 {MATMUL_N}×{MATMUL_N}, {threads} threads"))
        for model in ("itae", "glow"):
            out.append(Figure("compute", f"{model}_step.gflops.{threads}t", round(gflops[model], 1), "GFLOP/s", better="higher",
                              note=f"{steps[model][0] * 1e3:.1f} ms/step, batch {batches[model]}, Ped2 laptop, {where[model]}"))
            out.append(Figure("compute", f"{model}_step.over_matmul.{threads}t", round(gflops[model] / gflops["matmul"], 3), "×", **at_least(0.5)))
    return out


def child(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[dict[str, Any] | None, float]:
    """Run a command; (its last stdout line parsed as JSON, or None if that is not JSON; wall seconds).
    A failure raises with the end of its output, so the section's row says why."""
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(map(str, args[:4]))} ... exited {proc.returncode}:\n{tail}")
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None, seconds
    except json.JSONDecodeError:
        return None, seconds


def fresh_clone(into: Path) -> Path:
    """A clone of HEAD: what a user has after `git clone`; the sweep runs it with this checkout's installed .venv
    (the install is excluded from the timing). Not a link to .venv inside the clone: through a link, Python's
    prefix, hence DeepSpeed's include paths, differ, and DeepSpeed would recompile its CPU communication op
    (~30 s) for the clone and again for this checkout."""
    clone = into / "clone"
    subprocess.run(["git", "-c", "advice.detachedHead=false", "clone", "--quiet", str(REPO), str(clone)], check=True)
    return clone


def trainings(sweep_root: Path) -> int:
    """Training stages (ITAE, flows) the trials of a finished sweep trained themselves (not reused)."""
    from sweeps.summary import collect, stage_counts

    return sum(stage_counts(collect(sweep_root / "trials")).values())


def sweep_section(mode: Mode) -> list[Figure]:
    from bench_sweep import analyse

    from sweeps.spec import load_sweep

    just = shutil.which("just", path=str(REPO / ".venv" / "bin")) or shutil.which("just")
    if just is None:
        raise RuntimeError("`just` not found (pip install rust-just, or ./dev bench)")
    size = "smoke sizes, 80 ITAE / 40 flow steps" if mode.quick else "smoke profile"
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        clone = fresh_clone(Path(tmp))
        env = {k: v for k, v in os.environ.items() if k not in ("VAD_RESULTS", "VAD_CACHE", "VAD_DATA_ROOT", "RAY_ADDRESS")}
        env["PYTHONPATH"] = str(clone)  # the clone's code, not the editable install's
        sets = [a for s in mode.sets for a in ("--set", s)]
        python = f"python={REPO / '.venv' / 'bin' / 'python'}"  # the justfile's variable: the installed interpreter
        _, shared_s = child([just, python, "sweep", "ablation-paths", *sets], env=env, cwd=clone)
        _, plain_s = child([just, python, "sweep", "ablation-paths", *sets, "--no-stage-sharing", "--results", str(clone / "results-unshared"),
                            "--cache", str(clone / ".cache" / "unshared")], env=env, cwd=clone)
        shared_root, plain_root = clone / "results" / "ablation-paths", clone / "results-unshared" / "ablation-paths"
        f = analyse(shared_root, None)["figures"]
        concurrent = load_sweep(clone / "sweeps" / "ablation-paths.toml").max_concurrent
        peak = max(json.loads(p.read_text())["peak_rss_mb"] for p in (shared_root / "trials").glob("*/trial.json"))
        n_shared, n_plain = trainings(shared_root), trainings(plain_root)
    return [
        Figure("sweep", "fresh_clone.sweep_to_report_s", round(shared_s, 1), "s", better="lower",
               note=f"`just sweep ablation-paths`, {size}, cold cache, install excluded, Ray start and report included"),
        Figure("sweep", "reuse.shared_wall_s", round(shared_s, 1), "s", better="lower", note=f"{n_shared} trainings executed"),
        Figure("sweep", "reuse.plain_wall_s", round(plain_s, 1), "s", note=f"--no-stage-sharing: {n_plain} trainings executed (shards shared)"),
        Figure("sweep", "reuse.trainings_shared", n_shared, "stages"),
        Figure("sweep", "reuse.trainings_plain", n_plain, "stages"),
        Figure("sweep", "reuse.speedup", round(plain_s / shared_s, 2), "×", better="higher", note="plain wall ÷ shared wall, measured"),
        Figure("sweep", "wall_over_distinct_stages", f["ratio"], "×", **at_most(1.10),
               note=f"first plan → last record {f['span_files_s']:.1f} s ÷ distinct trained stages {f['distinct_stage_s']:.1f} s, "
                    f"{concurrent} trials at once"),
        Figure("sweep", "ray.trial_overhead_mean_s", f["ray_overhead_mean_s"], "s", **at_most(1.5), note="Tune time_total_s − pipeline seconds"),
        Figure("sweep", "ray.trial_overhead_max_s", f["ray_overhead_max_s"], "s", **at_most(1.5)),
        Figure("sweep", "trial.peak_rss_mb", peak, "MB", **at_most(4096), note="largest trial process of the shared sweep"),
    ]


def memory_section(mode: Mode) -> list[Figure]:
    sets = [a for s in mode.sets for a in ("--set", s)]
    res, _ = child([sys.executable, str(HERE / "bench_stages.py"), "memory", *sets])
    size = "smoke, 80 ITAE / 40 flow steps" if mode.quick else "smoke"
    out = [Figure("memory", "process.baseline_mb", res["baseline_mb"], "MB", note="RSS after imports, before the first stage")]
    out += [Figure("memory", f"stage.{name}.peak_rss_mb", mb, "MB", better="lower", note=f"synthetic {size}, full variant")
            for name, mb in res["stages"].items()]
    return out


def parallel_section(mode: Mode) -> list[Figure]:
    res, _ = child([sys.executable, str(HERE / "bench_stages.py"), "parallel", "--workers", "2", "--steps", "30" if mode.quick else "120"])
    note = f"{res['steps']} steps, global batch {res['batch']}, 1 CPU per worker"
    return [
        Figure("parallel", "dp2.loop_s", res["w2"]["loop_s"], "s", better="lower", note=note),
        Figure("parallel", "dp1.loop_s", res["w1"]["loop_s"], "s", better="lower"),
        Figure("parallel", "dp2.speedup_loop", res["speedup_loop"], "×", better="higher"),
        Figure("parallel", "dp2.efficiency_loop", res["efficiency_loop"], "", better="higher", note="T1 ÷ (2 × T2), training loop"),
        Figure("parallel", "dp2.efficiency_stage", res["efficiency_stage"], "", better="higher", note="whole stage, Ray Train start-up included"),
    ]


def gpu_section(mode: Mode) -> list[Figure]:
    if not torch.cuda.is_available():
        return []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as out:
        res, _ = child([sys.executable, str(HERE / "gpu_check.py"), "--carry", "none", "--out", out, "--steps", "50" if mode.quick else "200"])
    out = []
    for geometry in ("ped2", "avenue"):
        g = res[geometry]
        if g.get("status") != "ok":
            raise RuntimeError(f"gpu_check {geometry}: {g.get('status')}: {g.get('why')}")
        for stage, f in g["stages"].items():
            name, note = f"{geometry}.{stage}", f"{f.get('precision', 'fp32')}, paper geometry, {g['data']}"
            out.append(Figure("gpu", f"{name}.peak_mb", f["peak_mb"], "MB", better="lower", note=res["env"]["device"]["name"]))
            out.append(Figure("gpu", f"{name}.tflops", f["tflops"], "TFLOP/s", better="higher", note=note))
            if "step_ms" in f:
                out.append(Figure("gpu", f"{name}.step_ms", f["step_ms"], "ms", better="lower"))
                out.append(Figure("gpu", f"{name}.samples_per_s", f["samples_per_s"], "samples/s", better="higher"))
    return out


def scale_section(mode: Mode) -> list[Figure]:
    """benchmarks/bench_scale.py on a local 4-node Ray cluster (2 logical CPUs each: 8 trials at once, on however
    few cores the machine has); quick: concurrencies 1 and 8 only."""
    res, _ = child([sys.executable, str(HERE / "bench_scale.py"), *(["--quick"] if mode.quick else [])])
    top = int(res["logical_cpus"])
    where = f"{int(res['nodes'])} nodes, {top} logical CPUs on {int(res['cores'])} cores, TINY trials"
    out = []
    for c in sorted({int(k.split(".")[0][1:]) for k in res if k.startswith("c") and k.endswith(".overhead_median_s")}):
        target = at_most(0.5) if c == top else {"better": "lower"}
        out += [Figure("scale", f"trial_overhead.c{c}.median_s", res[f"c{c}.overhead_median_s"], "s", **target,
                       note=f"{int(res[f'c{c}.trials'])} trials, {c} at once, {where}: Tune's trial span − the pipeline's seconds"),
                Figure("scale", f"trial_overhead.c{c}.p95_s", res[f"c{c}.overhead_p95_s"], "s", better="lower")]
    out += [Figure("scale", f"optuna.suggest_ms.n{n}", res[f"optuna.suggest_ms.n{n}"], "ms", better="lower",
                   note=f"TPE ask with {n} trials seen (replicated from the search's)") for n in (10, 100, 1000)]
    out += [Figure("scale", "stage_lock.blocked", res["lock.blocked"], "locks", note=f"of {int(res['lock.locks_taken'])} taken, cold cache"),
            Figure("scale", "stage_lock.wait_median_s", res["lock.blocked_median"], "s", better="lower"),
            Figure("scale", "stage_lock.wait_max_s", res["lock.blocked_max"], "s", better="lower")]
    for n in (10, 100, 1000):
        out += [Figure("scale", f"publish.n{n}.s", res[f"publish.n{n}.s"], "s", **(at_most(30) if n == 1000 else {"better": "lower"}),
                       note="trials.parquet, frame_scores.parquet, all_trials.parquet, report, index; replicated trial folders"),
                Figure("scale", f"publish.n{n}.rss_growth_mb", res[f"publish.n{n}.rss_growth_mb"], "MB", better="lower"),
                Figure("scale", f"results.n{n}.kb_per_trial", res[f"publish.n{n}.kb_per_trial"], "KB", better="lower",
                       note=f"results folder {res[f'publish.n{n}.folder_mb']:.1f} MB, Ray's ray/ folder apart")]
    out += [Figure("scale", "publish.growth_100_to_1000", res["publish.growth_100_to_1000"], "×", **at_most(10),
                   note="publish s at 1,000 ÷ at 100: ≤ 10 is no faster than linear"),
            Figure("scale", "ray_folder.kb_per_trial", res["ray_folder_kb_per_trial"], "KB", better="lower")]
    return out


RUNNERS: dict[str, Callable[[Mode], list[Figure]]] = {
    "data": data_section, "compute": compute_section, "sweep": sweep_section,
    "memory": memory_section, "parallel": parallel_section, "gpu": gpu_section, "scale": scale_section,
}


# ---------------------------------------------------------------------------------------------- the table


def machine() -> dict[str, Any]:
    from vadcore.outputs import versions  # the same package versions every trial.json records

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    git = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "versions": json.dumps(versions(), sort_keys=True), "commit": git("rev-parse", "--short=12", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


SCHEMA = [  # bench.parquet's columns: one row per figure per run
    ("run", "string"), ("time", "string"), ("mode", "string"), ("section", "string"), ("name", "string"), ("value", "float64"),
    ("unit", "string"), ("target", "float64"), ("op", "string"), ("pass", "bool_"), ("better", "string"), ("note", "string"),
    ("cpu", "string"), ("cores", "int64"), ("torch_threads", "int64"), ("gpu", "string"), ("versions", "string"),
    ("commit", "string"), ("dirty", "bool_"),
]


def rows_of(figures: list[Figure], mode: str, run: str, when: str, host: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"run": run, "time": when, "mode": mode, "section": f.section, "name": f.name, "value": None if f.value is None else float(f.value),
             "unit": f.unit, "target": f.target, "op": f.op, "pass": f.passed, "better": f.better, "note": f.note, **host} for f in figures]


def previous(rows: list[dict[str, Any]], old: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per figure name: the latest earlier row of the same mode on the same machine (CPU model and cores)."""
    out: dict[str, dict[str, Any]] = {}
    if not rows:
        return out
    r0 = rows[0]
    for r in sorted(old, key=lambda r: r["time"]):
        if r["mode"] == r0["mode"] and r["cpu"] == r0["cpu"] and r["cores"] == r0["cores"] and r["run"] != r0["run"] and r["value"] is not None:
            out[r["name"]] = r
    return out


def regression(row: dict[str, Any], prev: dict[str, Any] | None) -> float | None:
    """The relative change against the previous value when it is worse by more than REGRESSION, else None."""
    if prev is None or row["value"] is None or row["better"] is None or not prev["value"]:
        return None
    change = row["value"] / prev["value"] - 1
    worse = change < -REGRESSION if row["better"] == "higher" else change > REGRESSION
    return change if worse else None


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def write(rows: list[dict[str, Any]], errors: dict[str, str], out: Path, seconds: float) -> tuple[Path, Path, list[str]]:
    """Append the rows to bench.parquet (atomically) and write report.md; return both paths and the flags."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vadcore import atomic

    table_path = out / "bench.parquet"
    old = pq.read_table(table_path).to_pylist() if table_path.is_file() else []
    prev = previous(rows, old)
    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in SCHEMA])
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k, _ in SCHEMA} for r in old + rows], schema=schema), buf)
    atomic.write_bytes(table_path, buf.getvalue().to_pybytes())

    r0 = rows[0] if rows else {}
    lines = [f"# `just bench` ({r0.get('mode', '?')}), {r0.get('time', '?')}", "",
             f"Machine: {r0.get('cpu')}, {r0.get('cores')} cores, torch threads {r0.get('torch_threads')}"
             + (f", GPU {r0['gpu']}" if r0.get("gpu") else "") + f"; versions {r0.get('versions')}; commit {r0.get('commit')}"
             + (" (uncommitted changes in the working tree; the sweep section runs HEAD)" if r0.get("dirty") else "")
             + f"; {seconds / 60:.1f} min in all.", "",
             "Compared with the previous run of the same mode on the same machine; ⚠ marks a figure more than "
             f"{REGRESSION:.0%} worse. Shared machines are noisy: rerun before believing a flag.", "",
             "| section | figure | value | unit | target | pass | previous | change | note |", "|---|---|---:|---|---|---|---:|---:|---|"]
    flags = []
    for r in rows:
        p = prev.get(r["name"])
        change = None if p is None or r["value"] is None or not p["value"] else r["value"] / p["value"] - 1
        bad = regression(r, p)
        if bad is not None:
            flags.append(f"{r['name']}: {_cell(p['value'])} → {_cell(r['value'])} {r['unit']} ({bad:+.0%})")
        target = "" if r["target"] is None else f"{'≥' if r['op'] == '>=' else '≤'} {r['target']:g}"
        ok = {True: "yes", False: "**no**", None: ""}[r["pass"]]
        lines.append(f"| {r['section']} | {r['name']} | {_cell(r['value'])} | {r['unit']} | {target} | {ok} | "
                     f"{_cell(p['value']) if p else ''} | {'' if change is None else f'{change:+.0%}'}{' ⚠' if bad is not None else ''} | {r['note']} |")
    if errors:
        lines += ["", "## Sections that failed", ""] + [f"- **{s}**: `{e.splitlines()[0] if e else ''}`" for s, e in errors.items()]
    lines += ["", "## Regressions", ""] + ([f"- {f}" for f in flags] or ["none"])
    lines += ["", "How each figure is measured: `benchmarks/bench.py` (its docstring) and `benchmarks/README.md`.", ""]
    report = out / "report.md"
    atomic.write_text(report, "\n".join(lines))
    return table_path, report, flags


def show(rows: list[dict[str, Any]], flags: list[str], errors: dict[str, str]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="just bench")
    for col in ("figure", "value", "unit", "target", "pass"):
        table.add_column(col, justify="right" if col == "value" else "left", no_wrap=col == "figure")
    for r in rows:
        target = "" if r["target"] is None else f"{'≥' if r['op'] == '>=' else '≤'} {r['target']:g}"
        ok = {True: "[green]yes[/]", False: "[red]no[/]", None: ""}[r["pass"]]
        table.add_row(f"{r['section']}.{r['name']}", _cell(r["value"]), r["unit"], target, ok)
    console.print(table)
    for s, e in errors.items():
        console.print(f"[red]section {s} failed:[/] {e}", highlight=False)
    for f in flags:
        console.print(f"[yellow]regression:[/] {f}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="training stages cut to 80 / 40 steps: every figure in about 6 minutes")
    p.add_argument("--only", help=f"comma-separated sections (default: all of {', '.join(SECTIONS)})")
    p.add_argument("--data-root", help="folder holding ped2/ (default: $VAD_DATA_ROOT, else ../shared/data)")
    p.add_argument("--out", default=str(OUT), help="where bench.parquet and report.md go (default: results/bench)")
    args = p.parse_args(argv)
    sections = args.only.split(",") if args.only else list(SECTIONS)
    if unknown := [s for s in sections if s not in RUNNERS]:
        p.error(f"--only: unknown section(s) {', '.join(unknown)}; allowed: {', '.join(SECTIONS)}")
    mode = Mode(args.quick, args.data_root)
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    host = machine()
    run = f"{when}-{host['commit']}"
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    t0 = time.perf_counter()
    for s in sections:
        t = time.perf_counter()
        print(f"bench: {s} ...", flush=True)
        try:
            figures += RUNNERS[s](mode)
        except Exception as e:  # one broken section must not hide the others' figures
            errors[s] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        print(f"bench: {s} done in {time.perf_counter() - t:.0f} s", flush=True)
    rows = rows_of(figures, "quick" if args.quick else "full", run, when, host)
    table, report, flags = write(rows, errors, Path(args.out), time.perf_counter() - t0)
    show(rows, flags, errors)
    print(f"wrote {table} and {report}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
