"""`./dev gpu-check`: a first contact with a GPU in one bounded command. Does the paper profile run there, how
fast, in how much memory? Every phase runs in a process of its own under its own time limit (8 minutes in all
by default), so a hang or a crash costs that phase only and the others still report.

    ./dev gpu-check                                    # --out runs/gpu-check; real Ped2 from ../shared/data here
    python3 benchmarks/gpu_check.py --out "$OUT"       # a node with a CUDA torch and little else: installs the
                                                       # carry .gpu-pack/ (`./dev gpu-pack`), no pip, no network
    python benchmarks/gpu_check.py --steps 300 --timeout ped2=300
    python benchmarks/gpu_check.py --set itae.width=0.0625 ...   # any override; the test suite runs it reduced on CPU

Phases, in order:
  env      the device (name, memory, capability, CUDA, cuDNN, driver), /dev/shm, CPUs, memory, disk
  imports  every module the single-trial path imports: its version and whether the node or the carry gave it;
           a missing one is named with its pip package, and the geometries are skipped
  ped2     the paper's Ped2 geometry: 240x360 grey, strides 2,2,1,1, Glow L = 1, batch 2 / 20, MS-SSIM; real Ped2
           frames (the carry's data pack, else --data-root) with a bounded test set, else synthetic frames
  avenue   the paper's Avenue geometry: 256x256 RGB, L = 3, batch 4 / 32; synthetic frames
Each geometry trains --steps ITAE steps and --flow-steps steps of each flow (or a few more, to fill whole epochs; after the
vadcore.train.WARMUP_STEPS warm-up steps) through the paper profile's DeepSpeed engine (gpu-bf16: bf16 autocast, ZeRO-1), scores its test
set, and records per stage: ms/step and samples/s of the training steps alone (warm-up, validation and set-up
excluded), achieved TFLOP/s (FLOPs counted by vadcore.compute), peak memory (GPU; peak RSS on a machine without
CUDA); then the AUCs it reached and an errmaps sheet (vadcore.errmaps) of its test videos.

Writes into --out (default $OUT, else runs/gpu-check): gpu-check.json (one JSON line with all of it, also the last
line printed), throughput.json (the TFLOP/s `python -m sweeps show --throughput` bills with), errmaps-<geometry>.png,
<geometry>/trial.json and frame_scores.parquet, and each phase's log <phase>.log.

This file is the standard library alone until a phase imports what it measures.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the repo root: vadcore need not be installed
import gpu_carry  # noqa: E402
from vadcore import atomic  # noqa: E402  (the standard library alone, as vadcore's import)

GEOMETRIES = {  # geometry -> (the paper profile's benchmark table it takes, what its frames are when not real Ped2)
    "ped2": "synthetic frames at Ped2's geometry",
    "avenue": "synthetic frames at Avenue's geometry (no Avenue videos are carried)",
}
TIMEOUTS = {"env": 30, "imports": 90, "ped2": 180, "avenue": 180}  # seconds, 8 minutes in all
# (import name, pip package, what needs it): the single-trial path's modules; vadcore's own modules come last,
# so a module missing from this list still shows, as theirs
MODULES = [
    ("torch", "torch", "everything"), ("numpy", "numpy", "everything"),
    ("deepspeed", "deepspeed", "the training engine"), ("pydantic", "pydantic", "deepspeed's config"),
    ("pydantic_core", "pydantic-core", "pydantic"), ("einops", "einops", "deepspeed"), ("hjson", "hjson", "deepspeed"),
    ("msgpack", "msgpack", "deepspeed"), ("psutil", "psutil", "deepspeed"), ("cpuinfo", "py-cpuinfo", "deepspeed"),
    ("tqdm", "tqdm", "deepspeed"), ("packaging", "packaging", "deepspeed"), ("ninja", "ninja", "deepspeed's C++ ops (CPU accelerator)"),
    ("webdataset", "webdataset", "shard writing"), ("braceexpand", "braceexpand", "webdataset"), ("yaml", "pyyaml", "webdataset"),
    ("scipy", "scipy", "synthetic frames, scoring"), ("sklearn", "scikit-learn", "AUCs"), ("cv2", "opencv-python-headless", "resizing, scoring"),
    ("PIL", "pillow", "JPEG frames, errmaps"), ("pyarrow", "pyarrow", "frame_scores.parquet"), ("rich", "rich", "tables, progress"),
    ("vadcore.pipeline", None, "the trial"), ("vadcore.compute", None, "FLOP counts"), ("vadcore.errmaps", None, "errmaps"),
]
OPTIONAL = [("av", "av", "Avenue's .avi videos (not read here)"), ("ray", "ray", "sweeps (not this check)"), ("optuna", "optuna", "search sweeps (not this check)")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu-check", help="folder for the results (default: $OUT, else runs/gpu-check)")
    p.add_argument("--carry", default=str(gpu_carry.CARRY), help="the carry folder `./dev gpu-pack` built (default .gpu-pack/, used when "
                   "it exists); 'none': only what is installed")
    p.add_argument("--data-root", default=os.environ.get("VAD_DATA_ROOT"), help="where ped2/ is, when the carry has no data pack")
    p.add_argument("--steps", type=int, default=100, help="timed ITAE training steps per geometry, after the warm-up (default 100)")
    p.add_argument("--flow-steps", type=int, help="timed training steps of each flow (default: --steps)")
    p.add_argument("--geometry", dest="geometries", action="append", choices=tuple(GEOMETRIES), help="only this geometry, repeatable (default: both)")
    p.add_argument("--train-videos", type=int, default=0, help="real Ped2: its first N training videos (default 0: all)")
    p.add_argument("--test-videos", type=int, default=gpu_carry.PED2_TEST_VIDEOS, help=f"real Ped2: test videos scored (default {gpu_carry.PED2_TEST_VIDEOS})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="config override on both geometries, repeatable")
    p.add_argument("--timeout", dest="timeouts", action="append", default=[], metavar="PHASE=SECONDS", help=f"a phase's time limit (default {TIMEOUTS})")
    p.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase in this process
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        return run_phase_here(args)
    return orchestrate(args, sys.argv[1:] if argv is None else argv)


# ------------------------------------------------------------------------------------------------ parent


def orchestrate(args: argparse.Namespace, argv: list[str]) -> int:
    t0 = time.perf_counter()
    timeouts = dict(TIMEOUTS)
    for item in args.timeouts:
        phase, _, value = item.partition("=")
        if phase not in TIMEOUTS or not value.isdigit():
            print(f"error: --timeout {item!r}: expected PHASE=SECONDS, PHASE one of {', '.join(TIMEOUTS)}", file=sys.stderr)
            return 2
        timeouts[phase] = int(value)
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        carry = Path(args.carry) if args.carry != "none" else None
        carried = {"folder": None}
        env = dict(os.environ)
        if carry is not None and carry.is_dir():
            carried = {"folder": str(carry), **gpu_carry.install(carry, work / "site")}
            data = gpu_carry.extract_data(carry, work / "data")
            carried["data"] = (gpu_carry.manifest(carry).get("data") or {}).get("file") if data else None
            env["PYTHONPATH"] = os.pathsep.join([str(work / "site"), *filter(None, [env.get("PYTHONPATH")])])
            print(f"carry {carry}: {len(carried['installed'])} wheels unpacked" + (f", {len(carried['skipped'])} skipped: "
                  + "; ".join(f"{w} ({why})" for w, why in carried["skipped"].items()) if carried["skipped"] else "")
                  + (f"; data pack {carried['data']}" if carried["data"] else "; no data pack"), flush=True)
        elif carry is not None and args.carry != str(gpu_carry.CARRY):
            print(f"error: --carry {carry}: no such folder (build one with `./dev gpu-pack`, or --carry none)", file=sys.stderr)
            return 2
        result: dict = {"check": "gpu-check", "carry": carried}
        geometries = args.geometries or list(GEOMETRIES)
        for phase in ["env", "imports", *geometries]:
            missing = result.get("imports", {}).get("missing")
            if phase in GEOMETRIES and missing:
                result[phase] = {"status": "skipped", "why": f"missing imports: {', '.join(missing)}"}
                continue
            result[phase] = run_phase(phase, argv, work, out, timeouts[phase], env)
        result["status"] = "ok" if all(result[g].get("status") == "ok" for g in geometries) else (
            "partial" if any(result[g].get("status") == "ok" for g in geometries) else "failed")
        result["seconds"] = round(time.perf_counter() - t0, 1)
        summarise(result, geometries, out)
        return 0 if result["status"] == "ok" else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_phase(phase: str, argv: list[str], work: Path, out: Path, timeout: int, env: dict) -> dict:
    """Run one phase as `gpu_check.py --phase PHASE` in a process group of its own, killed whole at `timeout`."""
    result_file, log = work / f"{phase}.json", out / f"{phase}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--phase", phase, "--work", str(work), "--out", str(out)]
    t0 = time.perf_counter()
    print(f"[{phase}] up to {timeout} s ...", flush=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the phase and its DataLoader workers
            proc.wait()
            code = None
    seconds = round(time.perf_counter() - t0, 1)
    record = json.loads(result_file.read_text()) if result_file.is_file() else {}
    if code is None:
        record.update(status="timeout", why=f"killed after its {timeout} s (--timeout {phase}=SECONDS); see {log}")
    elif (code != 0 or not record) and record.get("status") != "failed":
        tail = log.read_text(errors="replace").strip().splitlines()[-12:]
        record.update(status="failed", why=f"exit code {code}; {log} ends:\n" + "\n".join(tail))
    record.setdefault("status", "ok")
    record["seconds"] = seconds
    print(f"[{phase}] {record['status']} in {seconds} s" + (f": {record['why']}" if record["status"] != "ok" else ""), flush=True)
    return record


def summarise(result: dict, geometries: list[str], out: Path) -> None:
    """Print the figures, write throughput.json (when a geometry ran) and gpu-check.json, and print its line last."""
    imports = result.get("imports", {})
    for name in imports.get("missing", []):
        need = imports["needs"][name]
        print(f"MISSING {name} (pip: {need['pip']}; needed for {need['for']}): not on this node"
              + (" and not in the carry" if result["carry"]["folder"] else ", and no carry used") + f": {imports['modules'][name]}")
    tflops: dict[str, dict[str, float]] = {"itae": {}, "flow": {}, "forward": {}}
    for g in geometries:
        r = result[g]
        if r.get("status") != "ok":
            continue
        print(f"{g}: {r['data']}; frames {r['geometry']['frames']}, strides {r['geometry']['strides']}, Glow L={r['geometry']['glow_levels']}")
        for stage, f in r["stages"].items():
            if "step_ms" in f:
                print(f"  {stage:9s} {f['timed_steps']:5d} steps {f['step_ms']:9.2f} ms/step {f['samples_per_s']:9.2f} samples/s "
                      f"{f['tflops']:8.3g} TFLOP/s  peak {f['peak_mb']:9.1f} MB  {f['precision']}")
            else:
                print(f"  {stage:9s} {f['windows']:5d} windows {f['seconds']:8.2f} s {f['tflops']:8.3g} TFLOP/s  peak {f['peak_mb']:9.1f} MB")
        print("  AUC " + ", ".join(f"{k} {v:.4f}" for k, v in r["aucs"].items()) + f"; errmaps {r['errmaps']}")
        tflops["itae"][g] = r["stages"]["itae"]["tflops"]
        flows = [f for s, f in r["stages"].items() if s.startswith("flow_")]
        tflops["flow"][g] = _sig(sum(f["flops"] for f in flows) / max(sum(f["train_seconds"] for f in flows), 1e-9) / 1e12)
        tflops["forward"][g] = r["stages"]["score"]["tflops"]
    device = result.get("env", {}).get("device") or {}
    if any(tflops["itae"].values()):
        throughput = {"gpu": device.get("name", "unknown"), "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "tflops": tflops,
                      "how": "benchmarks/gpu_check.py: counted training FLOPs per sample x samples/s of the timed steps; forward: a scoring pass"}
        atomic.write_text(out / "throughput.json", json.dumps(throughput, indent=1) + "\n")
        result["throughput"] = str(out / "throughput.json")
    line = json.dumps(result, separators=(",", ":"), default=str)
    atomic.write_text(out / "gpu-check.json", line + "\n")
    print(f"{result['status']} in {result['seconds']} s; wrote {out}/gpu-check.json" + (", throughput.json" if "throughput" in result else ""))
    print(line, flush=True)


# ------------------------------------------------------------------------------------------------ phases


def run_phase_here(args: argparse.Namespace) -> int:
    work = Path(args.work)
    if args.phase not in TIMEOUTS:
        raise SystemExit(f"--phase {args.phase!r}: one of {', '.join(TIMEOUTS)}")
    try:
        record = {"env": phase_env, "imports": phase_imports}.get(args.phase, phase_geometry)(args)
    except Exception as e:
        from vadcore.errors import VadError

        if not isinstance(e, VadError):
            raise
        record = {"status": "failed", "why": f"{type(e).__name__}: {e}"}  # the user's to fix (a config, the data): one line
    atomic.write_text(work / f"{args.phase}.json", json.dumps(record, default=str))  # whole, or absent if the phase is killed
    return 0 if record.get("status", "ok") == "ok" else 1


def phase_env(args: argparse.Namespace) -> dict:
    """The machine: device, /dev/shm, CPUs, memory, disk. Torch is imported last, so a broken one still leaves the rest."""
    shm = os.statvfs("/dev/shm") if os.path.isdir("/dev/shm") else None
    rec = {
        "python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(), "host": socket.gethostname(),
        "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "shm": {"total_mib": round(shm.f_blocks * shm.f_frsize / 2**20), "free_mib": round(shm.f_bavail * shm.f_frsize / 2**20)} if shm else None,
        "disk_free_gib": {"out": round(shutil.disk_usage(args.out).free / 2**30, 1), "tmp": round(shutil.disk_usage(tempfile.gettempdir()).free / 2**30, 1)},
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if shutil.which("nvidia-smi"):
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=15)
            rec["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except subprocess.TimeoutExpired:
            rec["nvidia_smi"] = "no answer in 15 s"
    try:
        import torch
    except Exception as e:  # noqa: BLE001 (whatever a broken install raises is the answer)
        rec["torch"] = f"cannot import torch: {type(e).__name__}: {e}"
        return rec
    rec["torch"] = torch.__version__
    rec["cuda_build"] = torch.version.cuda
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rec["device"] = {"name": props.name, "count": torch.cuda.device_count(), "memory_gib": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
                         "bf16": torch.cuda.is_bf16_supported(), "cudnn": torch.backends.cudnn.version()}
    else:
        rec["device"] = {"name": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)", "count": 0}
    print(json.dumps(rec, indent=1))
    return rec


def phase_imports(args: argparse.Namespace) -> dict:
    """Import every module of MODULES and OPTIONAL: version, and the carry or the node as its origin."""
    import importlib.metadata as md

    site = str(Path(args.work) / "site")
    modules, missing = {}, []
    for name, pip, why in MODULES + OPTIONAL:
        rec = {"pip": pip or "(this repository)", "for": why, "required": (name, pip, why) in MODULES}
        try:
            mod = importlib.import_module(name)
            rec["version"] = md.version(pip) if pip else "-"
            rec["from"] = "repo" if not pip else "carry" if str(getattr(mod, "__file__", "")).startswith(site) else "node"
        except Exception as e:  # noqa: BLE001 (an import can fail in any way: that is what is reported)
            rec["error"] = f"{type(e).__name__}: {e}"
            if rec["required"]:
                missing.append(name)
        modules[name] = rec
        print(f"{name:18s} {rec.get('version', '-'):12s} {rec.get('from', 'MISSING'):6s} {rec.get('error', '')}", flush=True)
    versions = {n: f"{m['version']} {m['from']}" if "version" in m else f"MISSING ({m['error']})" for n, m in modules.items()}
    rec = {"modules": versions, "missing": missing, "needs": {n: {"pip": modules[n]["pip"], "for": modules[n]["for"]} for n in missing}}
    if not missing:
        from vadcore.train import device

        rec["accelerator"] = str(device())  # DeepSpeed's accelerator: cuda:0, or cpu where there is no GPU
    return rec


class Measured:
    """A launcher (vadcore.train.Launch) that runs each stage here and records its wall time and peak memory:
    the GPU's allocated peak (reset before the stage), or without CUDA the process's peak RSS (VmHWM, reset
    through /proc/self/clear_refs). A stage builds in a staging folder beside stages/<name>/<key>, hence its name."""

    def __init__(self):
        self.stages: dict[str, dict] = {}

    def __call__(self, build, report, out, ranks=None):
        import torch

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")
        t0 = time.perf_counter()
        info = build(report)
        if cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = int(next(ln.split()[1] for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM"))) / 1024
        self.stages[Path(out).parent.name] = {"seconds": round(time.perf_counter() - t0, 3), "peak_mb": round(peak, 1),
                                              **{k: info[k] for k in ("precision", "runtime") if k in info}}
        return info


def _sig(x: float) -> float:
    """x to 4 significant figures: TFLOP/s on a CPU and on an H100 are 6 orders apart."""
    return float(f"{x:.4g}")


def ped2_data(args: argparse.Namespace, work: Path) -> tuple[Path | None, str]:
    """(data root of a bounded real Ped2, what it is), or (None, why synthetic) when neither the carry nor
    --data-root has Ped2. Bounded: links to --train-videos training and --test-videos test clips."""
    packed = work / "data"
    if (packed / "ped2" / "UCSDped2.m").is_file():
        source, what = packed, "real Ped2 frames from the carry (grey JPEG re-encode)"
    elif args.data_root and (Path(args.data_root) / "ped2").is_dir():
        source, what = Path(args.data_root), f"real Ped2 frames from {args.data_root}"
    else:
        return None, GEOMETRIES["ped2"] + " (no Ped2 in the carry or at --data-root)"
    sel = gpu_carry.ped2_selection(source, args.test_videos, args.train_videos)
    root = gpu_carry.write_ped2_links(sel, work / "ped2-bounded")
    return root, f"{what}: {len(sel['train'])} training videos, test videos {', '.join(v.id for v in sel['test'])}"


def phase_geometry(args: argparse.Namespace) -> dict:
    """Train, score and measure at one geometry of the paper profile (see the module docstring)."""
    import numpy as np

    from vadcore.compute import per_sample, stage_work, training_windows, trial_videos, window_count
    from vadcore.config import resolve_config
    from vadcore.errmaps import error_rows, sheet
    from vadcore.pipeline import run_trial
    from vadcore.train import WARMUP_STEPS, timing

    name, work, out = args.phase, Path(args.work), Path(args.out)
    data_root, data = ped2_data(args, work) if name == "ped2" else (None, GEOMETRIES[name])
    extra = {"data": {"benchmark": "ped2" if data_root else "synthetic"}}
    steps = {"itae_train": WARMUP_STEPS + args.steps, "flow.train": WARMUP_STEPS + (args.flow_steps or args.steps)}
    cfg = resolve_config(name, "paper", args.sets, extra)
    videos = trial_videos(cfg, data_root)
    windows = training_windows(cfg, videos)
    schedule = []
    for section, total in steps.items():  # enough epochs of at most max_steps steps for `total` steps
        batch = cfg.itae_train.batch_size if section == "itae_train" else cfg.flow.train.batch_size
        epochs = -(-total // -(-windows // batch))
        schedule += [f"{section}.epochs={epochs}", f"{section}.max_steps={-(-total // epochs)}"]
    cfg = resolve_config(name, "paper", schedule + args.sets, extra)
    print(f"{name}: {data}; {windows} training windows; " + " ".join(schedule), flush=True)
    measured = Measured()
    trial = run_trial(cfg, data_root, work / "cache", out / name, show=False, launch=measured)
    per, work_of = per_sample(cfg, videos.scenes), stage_work(cfg, videos)
    stages = {}
    for stage, history in trial["history"].items():
        t = timing(history)
        batch = cfg.itae_train.batch_size if stage == "itae" else cfg.flow.train.batch_size
        rate = batch * t["timed_steps"] / t["train_seconds"] if t["train_seconds"] else 0.0
        stages[stage] = {"steps": sum(e["steps"] for e in history), **t, "samples_per_s": round(rate, 3),
                         "gflop_per_sample": round(per[stage].train / 1e9, 3), "flops": per[stage].train * batch * t["timed_steps"],
                         "tflops": _sig(per[stage].train * rate / 1e12), **measured.stages[stage]}
    score, flops = measured.stages["score"], work_of["score"].forward_flops  # the ITAE and flows over every test window
    stages["score"] = {**score, "windows": sum(window_count(n, cfg.itae.frames, cfg.data.test_stride, True) for n in videos.test.values()),
                       "flops": flops, "tflops": _sig(flops / score["seconds"] / 1e12)}
    sheet_path = out / f"errmaps-{name}.png"
    atomic.write_png(sheet_path, sheet(error_rows(out / name, work / "cache", "test")))
    m = trial["metrics"]
    return {"status": "ok", "data": data, "benchmark": cfg.data.benchmark, "trial_seconds": trial["seconds"], "stages": stages,
            "geometry": {"frames": f"{cfg.data.height}x{cfg.data.width}x{cfg.data.channels}", "strides": list(cfg.itae.spatial_strides),
                         "glow_levels": cfg.flow.glow.levels, "batch": [cfg.itae_train.batch_size, cfg.flow.train.batch_size],
                         "ms_ssim": cfg.loss.ms_ssim, "deepspeed": cfg.deepspeed},
            "aucs": {k: round(float(v), 4) for k, v in m.items() if k.startswith("auc_") and isinstance(v, float) and np.isfinite(v)},
            "errmaps": str(sheet_path)}


if __name__ == "__main__":
    sys.exit(main())
