"""The Tune side of a sweep: the trainable that runs one plan's pipeline trial (`vadcore.pipeline.run_trial`)
against the shared stage cache and reports its epochs (ASHA's rungs) and metrics, and the driver's callbacks that
print progress and record what happened to each trial that did not simply finish.

Failures come in two kinds, told apart in the trainable (`lost`). A trial that fails for its own reason (a
diverging loss, bad data, a bug) writes error.json and ends as a finished Tune trial whose last result says
"failed": Tune never retries it, since it would fail again. A trial whose process or node dies (a spot instance
reclaimed, the OOM killer, a Ray Train worker's node gone) reaches Tune as Ray's own error, and Tune runs it
again, up to the sweep's `retries` (`FailureConfig.max_failures`), on whatever node is left; the new attempt
reuses every stage the lost one completed in the shared cache and rebuilds the one it was in the middle of.
The driver writes each lost attempt into retries.json (`TrialRecorder`), and error.json once the retries are
spent, so the tables say which trial was retried and why.
"""
from __future__ import annotations

import json
import math
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from results.layout import ERROR, PLAN, RETRIES, STOP, TRIAL
from results.layout import trial_id as folder_name
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


def trial_name(config: dict[str, Any], ctx: TrialContext) -> str:
    """The folder under trials/ of a Tune config: a grid plan's id, or a search sample's ("default" for the
    profile's own point, else trial-<hash of the sampled values>), on the first seed."""
    if "plan" in config:
        return ctx.plans[config["plan"]].trial_id
    return folder_name(_sample_name(config, ctx), ctx.bench, ctx.spec.seeds[0])


def _sample_name(config: dict[str, Any], ctx: TrialContext) -> str:
    params = dict(config)
    return "default" if params == ctx.default_point else f"trial-{stable_hash(params, 8)}"


def plan_of(config: dict[str, Any], ctx: TrialContext) -> TrialPlan:
    """The plan a Tune config stands for: a grid's plan by index, or a search sample's dotted keys on the first seed."""
    if "plan" in config:
        return ctx.plans[config["plan"]]
    return make_plan(ctx.spec, _sample_name(config, ctx), dict(config), ctx.bench, ctx.spec.seeds[0], ctx.profile, list(ctx.sets),
                     out_root=str(ctx.trials), data_root=ctx.data_root)


def test_gate(point: str, held_only: bool = False) -> None:
    """The one test seam in a sweep's code path: with $VAD_TEST_GATE=DIR set (tests only), a trial writes
    DIR/<point>.waiting and goes on only once DIR/<point>.go exists, so a test knows which trials started,
    finished or wait whatever the machine's speed (tests/sweeps/test_resume.py interrupts a sweep with one trial
    done and one held). Every trial stops at <trial_id> as it starts; `held_only` points (<trial_id>@<stage>:
    after a training epoch of a stage the trial builds, its lock held and its folder half-written) stop only
    where the test asked, with DIR/<point>.hold, once (the hold is used up, so a retry passes). Unset, as
    everywhere else: nothing."""
    gate = os.environ.get(TRIAL_GATE_ENV)
    if not gate:
        return
    if held_only:
        try:
            (Path(gate) / f"{point}.hold").rename(Path(gate) / f"{point}.waiting")
        except FileNotFoundError:
            return
    else:
        (Path(gate) / f"{point}.waiting").touch()
    while not (Path(gate) / f"{point}.go").exists():
        time.sleep(0.05)


def lost(e: BaseException) -> bool:
    """Whether a trial's exception says that a process or node it ran on died (Ray's own errors: an actor or
    worker gone, a node dead, an object lost with it, the memory monitor's kill), rather than anything the trial
    itself did: the first is retried, the second would fail again. A Ray Train stage counts as lost when one of
    its workers was (`sweeps.distributed` raises its user errors as themselves)."""
    import ray.exceptions as rx
    from ray.train import TrainingFailedError

    gone = (rx.RayActorError, rx.WorkerCrashedError, rx.LocalRayletDiedError, rx.NodeDiedError, rx.ObjectLostError,
            rx.OutOfMemoryError, rx.RaySystemError)
    if isinstance(e, TrainingFailedError):
        return any(isinstance(getattr(f, "cause", f), gone) for f in getattr(e, "worker_failures", {}).values())
    return isinstance(e, gone)


def trainable(config: dict[str, Any], *, ctx: TrialContext) -> None:
    """One Tune trial: run the pipeline trial of a plan, report per-epoch losses (ASHA's rungs) and the final metrics.

    A failure of the trial's own ends it with error.json and a last result whose stage is "failed" (not retried);
    a lost process or node (`lost`) is raised to Tune, which retries the trial."""
    import ray
    import torch
    from ray import tune

    from sweeps.distributed import RayTrain
    from vadcore.pipeline import run_trial
    from vadcore.train import in_process

    spec, res = ctx.spec, ctx.spec.resources
    torch.set_num_threads(spec.threads)
    launch = RayTrain(res.workers, res.cpu, res.gpu) if res.workers else in_process  # data-parallel stages, or here
    out = ctx.trials / trial_name(config, ctx)
    out.mkdir(parents=True, exist_ok=True)
    reached: dict[str, Any] = {}  # the last rung: Tune wants the scheduler's metric in every result, so flow
    # epochs and the final result repeat it (ASHA records a trial once per rung, so a repeat changes nothing)

    def row(r: dict[str, Any]) -> dict[str, Any]:
        """A result as Tune wants every one: the rung (nan before the first) and a search's objective (nan until the end)."""
        out = {"itae_epoch": 0, "itae_loss": float("nan"), **reached, **r}
        if spec.search is not None:
            out.setdefault(spec.search.metric, float("nan"))
        return out

    try:
        plan = plan_of(config, ctx)
        info = {"variant": plan.variant, "benchmark": plan.benchmark, "seed": plan.seed, "overrides": plan.overrides,
                "command": plan.command, "tune_trial_id": tune.get_context().get_trial_id(),
                "config": to_dict(plan.config),  # what the trial tries, recorded even if it never finishes
                "objective": spec.search.metric if spec.search else None, "report_sections": list(spec.report),
                "node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),  # where it ran
                "hostname": socket.gethostname()}
        atomic.write_json(out / PLAN, info)
        test_gate(plan.trial_id)

        def report(r: dict[str, Any]) -> None:
            reached.update(rung(r))
            train = plan.config.itae_train if r["stage"] == "itae" else plan.config.flow.train
            tune.report(row({"stage": r["stage"], "epoch": r["epoch"], "epochs": train.epochs, "replayed": bool(r.get("replayed")),
                             **{k: float(r[k]) for k in ("train_loss", "val_loss") if k in r}}))
            if not r.get("replayed"):
                test_gate(f"{plan.trial_id}@{r['stage']}", held_only=True)

        stage_root = None if ctx.share_stages else ctx.cache / UNSHARED / spec.name / plan.trial_id
        trial = run_trial(plan.config, ctx.data_root, ctx.cache, out, show=False, report=report, launch=launch, stage_root=stage_root)
    except Exception as e:
        if lost(e):
            raise  # Tune retries it
        error = f"{type(e).__name__}: {e}"
        atomic.write_json(out / ERROR, {"error": error, "traceback": traceback.format_exc()})
        tune.report(row({"stage": "failed", "error": error[:1000]}))
        return
    metrics = {k: v for k, v in trial["metrics"].items() if isinstance(v, (int, float))}
    tune.report({**metrics, **reached, "stage": "done", "trial_seconds": trial["seconds"]})


# ---------------------------------------------------------------------------------------------- the driver's callbacks


def lost_reason(error: str) -> str:
    """Why Ray says a trial's process ended, in words, from its error's text. A node killed at once (power, a reclaimed
    spot instance) often reads as its processes dying first: `TrialRecorder` asks the cluster at the end of the run."""
    if "memory monitor" in error or "OutOfMemoryError" in error:
        return "out of memory (killed by Ray's memory monitor)"
    if "because its node has died" in error or "NodeDiedError" in error:  # the GCS's words for an actor on a dead node
        return NODE_LOST
    return "trial process died"


NODE_LOST = "node lost"


def _lost_node(error: str, trial) -> str | None:
    """The node the lost attempt ran on: the IP in Ray's error (`ip: ...`), else that of its last result."""
    for line in error.splitlines():
        if line.strip().startswith("ip:"):
            return line.split(":", 1)[1].strip()
    return (trial.last_result or {}).get("node_ip")


def _error_of(trial) -> str:
    """The text of Ray's error for the trial's latest failure."""
    try:
        exc = trial.get_pickled_error()
    except Exception:  # an unreadable pickle: the text file Tune writes beside it
        exc = None
    if exc is not None:
        return f"{type(exc).__name__}: {exc}"
    if trial.error_file and Path(trial.error_file).is_file():
        return Path(trial.error_file).read_text().rsplit("Failure # ", 1)[-1]
    return "unknown error"


def _dead(entry: dict[str, Any], nodes: list[dict[str, Any]]) -> bool:
    """Whether the cluster lists the node of a lost attempt as dead: by its id when the attempt recorded it, else by its
    IP (no node alive there)."""
    if entry.get("node_id"):
        return any(n["NodeID"] == entry["node_id"] and not n["Alive"] for n in nodes)
    at = [n for n in nodes if n["NodeManagerAddress"] == entry.get("node")]
    return bool(at) and not any(n["Alive"] for n in at)


def trial_recorder(ctx: TrialContext):
    from ray import tune

    class TrialRecorder(tune.Callback):
        """What happened to a trial that did not simply finish, written beside its plan.json for the tables:
        stopped by the scheduler (ASHA): stop.json with its rung, last numbers and the reason; lost (its process or
        node died) and run again: one entry per lost attempt in retries.json, with why, where and Ray's error;
        lost once more than the sweep's `retries` allow: error.json saying so. (A trial killed with the sweep
        leaves none of these: "stopped" without a reason.)

        A node that dies at once takes its processes with it, and Ray may report a process death before it
        declares the node dead (its health checks take seconds): at the end of the run, an attempt whose node the
        cluster then lists as dead is recorded as "node lost"."""

        def __init__(self):
            self.lost: set[Path] = set()  # trial folders with an attempt recorded as lost in this run

        def on_trial_complete(self, iteration, trials, trial, **info):
            d = ctx.trials / trial_name(trial.config, ctx)
            if (d / PLAN).is_file() and not (d / TRIAL).is_file() and not (d / ERROR).is_file():
                last = {k: v for k, v in (trial.last_result or {}).items() if k in ("stage", "epoch", "itae_epoch", "itae_loss", "train_loss", "val_loss")}
                atomic.write_json(d / STOP, {"reason": f"stopped by ASHA at ITAE epoch {last.get('itae_epoch', '?')}",
                                             "rung": last.get("itae_epoch"), "last": last})

        def on_trial_recover(self, iteration, trials, trial, **info):
            d = ctx.trials / trial_name(trial.config, ctx)
            error = _error_of(trial)
            node = _lost_node(error, trial)
            plan = json.loads((d / PLAN).read_text()) if (d / PLAN).is_file() else {}
            node_id = plan.get("node_id") if (plan.get("tune_trial_id"), plan.get("node_ip")) == (trial.trial_id, node) else None
            before = json.loads((d / RETRIES).read_text()) if (d / RETRIES).is_file() else []
            atomic.write_json(d / RETRIES, [*before, {
                "attempt": trial.num_failures, "reason": lost_reason(error), "node": node, "node_id": node_id, "tune_trial_id": trial.trial_id,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "error": error[:2000]}])
            self.lost.add(d)

        def on_trial_error(self, iteration, trials, trial, **info):
            d = ctx.trials / trial_name(trial.config, ctx)
            if (d / TRIAL).is_file() or (d / ERROR).is_file():
                return
            error = _error_of(trial)
            atomic.write_json(d / ERROR, {"error": f"{lost_reason(error)} on {_lost_node(error, trial) or 'an unknown node'}, attempt "
                                                   f"{trial.num_failures} of {ctx.spec.retries + 1} (retries = {ctx.spec.retries} spent): "
                                                   f"{error.splitlines()[0] if error else ''}", "traceback": error})

        def on_experiment_end(self, trials, **info):
            import ray

            if not self.lost:
                return
            nodes = ray.nodes()
            for d in self.lost:
                entries = json.loads((d / RETRIES).read_text())
                confirmed = [{**e, "reason": NODE_LOST} if e["reason"] == "trial process died" and _dead(e, nodes) else e for e in entries]
                if confirmed != entries:
                    atomic.write_json(d / RETRIES, confirmed)

    return TrialRecorder()


def epoch_line(result: dict[str, Any]) -> str | None:
    """"itae epoch 3/12, val_loss 0.0337" for a training epoch a trial just ran; None for any other report (an
    epoch replayed from a reused stage, the trial's final metrics): a trial that trains for minutes shows how
    far it is, one that reuses its stages stays quiet until it finishes."""
    if result.get("replayed") or not result.get("epoch"):  # the final report carries no epoch
        return None
    val = result.get("val_loss")
    return f"{result['stage']} epoch {result['epoch']}/{result.get('epochs', '?')}" + (f", val_loss {val:.4g}" if val is not None else "")


def progress_callback(total: int, metric: str | None, mode: str, names: list[str], retries: int):
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
            if (trial.last_result or {}).get("stage") == "failed":  # its own failure (`trainable`): not retried
                self.failed += 1
                self._line(f"[red]FAILED[/] {self.name(trial)}: {trial.last_result.get('error', '')[:200]}")
                return
            self.done += 1
            value = (trial.last_result or {}).get(metric) if metric else None
            if isinstance(value, float) and not math.isnan(value):
                if self.best is None or (value > self.best if mode == "max" else value < self.best):
                    self.best = value
            self._line(f"finished {self.name(trial)}")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._ended(trial)
            self.failed += 1
            self._line(f"[red]FAILED[/] {self.name(trial)}: lost {trial.num_failures} times, no retries left")

        def on_trial_recover(self, iteration, trials, trial, **info):
            self.running.discard(trial.trial_id)
            error = _error_of(trial)
            self._line(f"[yellow]LOST[/] {self.name(trial)} ({lost_reason(error)}, {_lost_node(error, trial) or 'node unknown'}): "
                       f"running it again, attempt {trial.num_failures + 1} of {retries + 1}")

        def name(self, trial) -> str:
            i = trial.config.get("plan")
            return names[i] if i is not None and i < len(names) else trial.trial_id

    return Progress()
