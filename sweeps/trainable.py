"""The Tune side of a sweep: the trainable that runs one plan's pipeline trial (`vadcore.pipeline.run_trial`)
against the shared stage cache and reports its epochs (ASHA's rungs) and metrics, and the driver's callbacks that
print progress and record why the scheduler stopped a trial."""
from __future__ import annotations

import json
import math
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from results.layout import ERROR, PLAN, STOP, TRIAL
from sweeps.options import TrialContext
from sweeps.plans import TrialPlan, make_plan
from vadcore import atomic
from vadcore.configtools import stable_hash, to_dict
from vadcore.paths import TRIAL_GATE_ENV

UNSHARED = "unshared"  # in the cache: per-trial stage folders of a sweep run with share_stages off


def rung(r: dict[str, Any]) -> dict[str, Any]:
    """ASHA's rung fields of one per-epoch report: one rung per ITAE epoch, judged on the ITAE's loss on the
    held-out normal training videos (its training loss when none are held out).

    Every trial reports them for the same epochs, whether it trained its ITAE or reused it (the pipeline
    replays a reused stage's history). Flow epochs make no rung: a flow's bits/dim on one ITAE's latents
    says nothing about another trial's flow on another ITAE's latents."""
    if r["stage"] != "itae":
        return {}
    return {"itae_epoch": r["epoch"], "itae_loss": float(r.get("val_loss", r.get("train_loss", float("nan"))))}


def plan_of(config: dict[str, Any], ctx: TrialContext) -> TrialPlan:
    """The plan a Tune config stands for: a grid's plan by index, or a search sample's dotted keys on the first seed."""
    if "plan" in config:
        return ctx.plans[config["plan"]]
    params = dict(config)
    name = "default" if params == ctx.default_point else f"trial-{stable_hash(params, 8)}"
    return make_plan(ctx.spec, name, params, ctx.bench, ctx.spec.seeds[0], ctx.profile, list(ctx.sets), out_root=str(ctx.trials), data_root=ctx.data_root)


def test_gate(trial_id: str) -> None:
    """The one test seam in a sweep's code path: with $VAD_TEST_GATE=DIR set (tests only), a trial writes
    DIR/<trial_id>.waiting and starts only once DIR/<trial_id>.go exists, so a test knows which trials started,
    finished or wait whatever the machine's speed (tests/sweeps/test_resume.py interrupts a sweep with one trial
    done and one held). Unset, as everywhere else: nothing."""
    gate = os.environ.get(TRIAL_GATE_ENV)
    if not gate:
        return
    (Path(gate) / f"{trial_id}.waiting").touch()
    while not (Path(gate) / f"{trial_id}.go").exists():
        time.sleep(0.05)


def trainable(config: dict[str, Any], *, ctx: TrialContext) -> None:
    """One Tune trial: run the pipeline trial of a plan, report per-epoch losses (ASHA's rungs) and the final metrics."""
    import ray
    import torch
    from ray import tune

    from sweeps.distributed import RayTrain
    from vadcore.pipeline import run_trial
    from vadcore.train import in_process

    spec, res = ctx.spec, ctx.spec.resources
    torch.set_num_threads(spec.threads)
    launch = RayTrain(res.workers, res.cpu, res.gpu) if res.workers else in_process  # data-parallel stages, or here
    plan = plan_of(config, ctx)
    out = ctx.trials / plan.trial_id
    out.mkdir(parents=True, exist_ok=True)
    info = {"variant": plan.variant, "benchmark": plan.benchmark, "seed": plan.seed, "overrides": plan.overrides,
            "command": plan.command, "tune_trial_id": tune.get_context().get_trial_id(),
            "config": to_dict(plan.config),  # what the trial tries, recorded even if it never finishes
            "objective": spec.search.metric if spec.search else None, "report_sections": list(spec.report),
            "node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname()}  # where it ran
    atomic.write_json(out / PLAN, info)
    test_gate(plan.trial_id)

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
        stage_root = None if ctx.share_stages else ctx.cache / UNSHARED / spec.name / plan.trial_id
        trial = run_trial(plan.config, ctx.data_root, ctx.cache, out, show=False, report=report, launch=launch, stage_root=stage_root)
    except Exception as e:
        atomic.write_json(out / ERROR, {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        raise
    metrics = {k: v for k, v in trial["metrics"].items() if isinstance(v, (int, float))}
    tune.report({**metrics, **reached, "stage": "done", "trial_seconds": trial["seconds"]})


# ---------------------------------------------------------------------------------------------- the driver's callbacks


def stop_recorder(trials_dir: Path):
    from ray import tune

    class StopRecorder(tune.Callback):
        """A trial that ends without its trial.json was stopped by the scheduler (ASHA): write its rung, its last
        reported numbers and the reason beside its plan.json, so the results table says what happened to it.
        (A trial killed with the sweep leaves neither file: "stopped" without a reason.)"""

        def on_trial_complete(self, iteration, trials, trial, **info):
            for plan in Path(trials_dir).glob(f"*/{PLAN}"):
                if json.loads(plan.read_text()).get("tune_trial_id") == trial.trial_id and not plan.with_name(TRIAL).is_file():
                    last = {k: v for k, v in (trial.last_result or {}).items() if k in ("stage", "epoch", "itae_epoch", "itae_loss", "train_loss", "val_loss")}
                    atomic.write_json(plan.with_name(STOP), {"reason": f"stopped by ASHA at ITAE epoch {last.get('itae_epoch', '?')}",
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


def progress_callback(total: int, metric: str | None, mode: str, names: list[str]):
    from ray import tune

    class Progress(tune.Callback):
        """One line per started, finished or failed trial (done/running/failed, current best, ETA from the trials
        that trained something) and, indented, one per training epoch a trial runs (`epoch_line`)."""

        def __init__(self):
            self.t0 = time.perf_counter()
            self.done = self.failed = 0
            self.running: set[str] = set()
            self.training: set[str] = set()  # trials that ran a training epoch (not only replayed reused stages)
            self.trained = 0  # of those, how many ended
            self.best: float | None = None

        def setup(self, **info):
            from rich import get_console

            get_console().print(f"[0/{total}] launching trial processes: each imports torch and DeepSpeed, then says it started",
                                highlight=False, soft_wrap=True)

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.trial_id)
            self._line(f"started {self.name(trial)}")

        def _line(self, what: str) -> None:
            n = self.done + self.failed
            el = time.perf_counter() - self.t0
            eta = f", ETA {el / self.trained * (total - n):.0f} s" if self.trained and n < total else ""
            best = f", best {metric} {self.best:.4f}" if self.best is not None else ""
            from rich import get_console  # not held by the callback: Tune pickles its callbacks

            get_console().print(f"[{n}/{total}] {what} — {self.done} done, {len(self.running)} running, {self.failed} failed{best}, {el:.0f} s{eta}", highlight=False, soft_wrap=True)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if (line := epoch_line(result)) is not None:
                self.training.add(trial.trial_id)
                from rich import get_console

                get_console().print(f"      {self.name(trial)}: {line}, {time.perf_counter() - self.t0:.0f} s", highlight=False, soft_wrap=True)

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
