"""A sweep's compute bill before it runs: per distinct stage (a stage shared by several trials is paid once), its
optimiser steps, its counted FLOPs (`vadcore.compute`), and the hours it should take on a named GPU; the same
figures go into the sweep's `bill.json`, which its report sets beside the times measured.

    python -m sweeps show ablation-paths --profile paper --benchmarks ped2 --data-root ../shared/data
    python -m sweeps show ablation-paths --profile paper --benchmarks ped2 --throughput runs/gpu-check/throughput.json

Hours = training FLOPs / the stage kind's training TFLOP/s + inference FLOPs / the inference TFLOP/s. The rates
come from a `throughput.json` that `benchmarks/gpu_check.py` wrote on the GPU (measured at Ped2's and Avenue's
paper geometry: a benchmark measured is used for itself, the mean of those measured for any other), or else
from ASSUMED below, which no GPU has confirmed. A stage that stops early (`patience`) costs less than billed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vadcore.errors import ConfigError

THROUGHPUT_ENV = "VAD_THROUGHPUT"
KINDS = ("itae", "flow", "forward")  # vadcore.compute.StageWork.kind: ITAE training, flow training, inference passes
# One H100 SXM (dense peaks: bf16 989, TF32 495, fp32 67 TFLOP/s), guessed, not measured: 3-D convolutions of
# these sizes reach a fraction of peak. The ITAE trains, and runs its inference passes (validation, features,
# scoring), under its config's autocast (gpu-bf16: bf16); the flows train and score in fp32 with TF32
# convolutions (runtime.tf32). "forward" prices all inference passes, the ITAE's and the flows'.
ASSUMED = {"gpu": "H100 (assumed rates, not measured: run benchmarks/gpu_check.py)", "tflops": {"itae": 150.0, "flow": 50.0, "forward": 100.0}}


@dataclass(frozen=True)
class Throughput:
    """TFLOP/s per stage kind, measured per benchmark geometry or assumed."""

    gpu: str
    tflops: dict[str, dict[str, float]]  # kind -> benchmark (or "*": any) -> TFLOP/s
    source: str

    def rate(self, kind: str, benchmark: str) -> tuple[float, str]:
        """(TFLOP/s, where it came from) for a stage of `kind` on `benchmark`."""
        rates = self.tflops.get(kind, {})
        if benchmark in rates:
            return rates[benchmark], f"{benchmark}"
        if not rates:
            return ASSUMED["tflops"][kind], "assumed"
        if "*" in rates:
            return rates["*"], "assumed" if self.source == "assumed" else "*"
        return sum(rates.values()) / len(rates), "mean of " + "/".join(sorted(rates))


def load_throughput(path: str | Path | None) -> Throughput:
    """The rates of a gpu-check `throughput.json` (`path`, else $VAD_THROUGHPUT), or ASSUMED when neither is given."""
    path = path or os.environ.get(THROUGHPUT_ENV)
    if not path:
        return Throughput(ASSUMED["gpu"], {k: {"*": v} for k, v in ASSUMED["tflops"].items()}, "assumed")
    try:
        data = json.loads(Path(path).read_text())
        tflops = {k: {b: float(v) for b, v in data["tflops"][k].items()} for k in KINDS if k in data["tflops"]}
        return Throughput(str(data["gpu"]), tflops, f"measured by gpu-check ({path}, {data.get('measured', 'undated')})")
    except FileNotFoundError:
        raise ConfigError(f"--throughput {path}: no such file; benchmarks/gpu_check.py writes one into its --out folder") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"--throughput {path}: not a gpu-check throughput.json ({type(e).__name__}: {e}); expected "
                          '{"gpu": NAME, "tflops": {"itae": {BENCHMARK: TFLOP/s}, "flow": {...}, "forward": {...}}}') from None


@dataclass
class Line:
    """One distinct stage of the bill."""

    stage: str
    key: str
    benchmark: str
    trials: list[str]
    steps: int
    train_flops: int
    forward_flops: int
    hours: float
    rates: dict[str, str]  # kind -> "TFLOP/s (where from)" used for this stage

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Bill:
    lines: list[Line] = field(default_factory=list)
    gpu: str = ""
    source: str = ""
    missing: list[str] = field(default_factory=list)  # trials whose stages could not be counted, and why

    @property
    def total(self) -> dict[str, float]:
        return {"steps": sum(x.steps for x in self.lines), "train_flops": sum(x.train_flops for x in self.lines),
                "forward_flops": sum(x.forward_flops for x in self.lines), "hours": sum(x.hours for x in self.lines)}

    def as_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "source": self.source, "stages": [x.as_dict() for x in self.lines], "total": self.total, "missing": self.missing}


def sweep_bill(plans: list, keys: list[dict[str, str]], throughput: Throughput, data_root: str | None, cache_root: Path | None) -> Bill:
    """The bill of `plans` (sweeps.spec.TrialPlan), whose stage keys (`sweeps.runner.stage_keys`) are `keys`."""
    from vadcore.compute import stage_work, trial_videos
    from vadcore.errors import VadError

    bill = Bill(gpu=throughput.gpu, source=throughput.source)
    seen: dict[tuple[str, str], Line] = {}
    videos: dict[Any, Any] = {}  # the split depends on these fields only
    for plan, k in zip(plans, keys):
        cfg = plan.config
        split_key = (cfg.data, cfg.itae_train.val_fraction, cfg.seed)
        try:
            if split_key not in videos:
                videos[split_key] = trial_videos(cfg, data_root, cache_root)
            work = stage_work(cfg, videos[split_key])
        except VadError as e:
            bill.missing.append(f"{plan.trial_id}: {e}")
            continue
        for name, w in work.items():
            ident = (name, k.get(name, f"? {plan.trial_id}"))
            if ident in seen:
                seen[ident].trials.append(plan.trial_id)
                continue
            used = {kind: throughput.rate(kind, plan.benchmark) for kind in ((w.kind, "forward") if w.train_flops else ("forward",))}
            seconds = sum(flops / (used[kind][0] * 1e12) for kind, flops in ((w.kind, w.train_flops), ("forward", w.forward_flops)) if flops)
            rates = {kind: f"{rate:g} ({origin})" for kind, (rate, origin) in used.items()}
            seen[ident] = Line(name, ident[1], plan.benchmark, [plan.trial_id], w.steps, w.train_flops, w.forward_flops, seconds / 3600, rates)
    bill.lines = list(seen.values())
    return bill


def _flops(n: float) -> str:
    return f"{n / 1e15:,.1f}" if n >= 1e14 else f"{n / 1e15:,.3g}"


def bill_table(bill: Bill, title: str):
    """A rich Table of the bill, one row per distinct stage and a total; the rates used in its caption."""
    from rich.table import Table

    rates = sorted({f"{kind} {rate}" + (f" on {x.benchmark}" if "(assumed)" not in rate else "") for x in bill.lines for kind, rate in x.rates.items()})
    source = "" if bill.source == "assumed" else f"; {bill.source}"
    table = Table(title=title, caption=f"on {bill.gpu}; TFLOP/s: {', '.join(rates)}{source}", caption_justify="left")
    for col in ("stage", "key", "trials", "steps", "train PFLOP", "infer PFLOP", "hours"):
        table.add_column(col, justify="left" if col in ("stage", "key", "trials") else "right")
    for x in bill.lines:
        trials = x.trials[0] + (f" +{len(x.trials) - 1}" if len(x.trials) > 1 else "")
        table.add_row(x.stage, x.key[:8], trials, f"{x.steps:,}", _flops(x.train_flops), _flops(x.forward_flops), f"{x.hours:.2f}")
    t = bill.total
    table.add_row("total", "", f"{len(bill.lines)} stages", f"{t['steps']:,}", _flops(t["train_flops"]), _flops(t["forward_flops"]), f"{t['hours']:.2f}", style="bold")
    return table
