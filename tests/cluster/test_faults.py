"""Faults injected into the two-node cluster of tests/cluster/conftest.py, each at a point the trial gate
(`sweeps.trainable.test_gate`) holds, so the fault lands in the same place on a fast machine and a slow one:

- node loss: the worker node's whole process tree is killed (by id) while a trial trains a stage there, its
  ITAE complete in the shared cache. The sweep finishes; Tune runs the lost trial again on the head, where it
  reuses that ITAE and takes over the flow it was building; retries.json, trials.parquet and the report say it
  was retried because its node was lost. A trial that diverges on its own is not retried (the negative case).
- orphaned stage lock: two trials need one ITAE; the one building it is killed (kill -9 of its process) while the
  other waits on its lock. The waiter takes the build over and builds the ITAE once; the killed trial is
  retried ("trial process died", not a node) and reuses it.
- head loss: the driver of a submitted sweep is killed (kill -9) with one trial finished, one half-way through
  its ITAE and one waiting on that ITAE's lock; `sweeps resume`, submitted as a job, keeps the finished trial and
  its stages, builds the half-built ITAE once (never trusting the half), and ends with the tables of the
  uninterrupted run of tests/cluster/test_two_nodes.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from sweeps.plans import expand
from sweeps.spec import load_sweep
from sweeps.summary import collect, stage_counts
from sweeps.testing import HEAD_IP, LocalCluster, comparable_tables
from tests.cluster.conftest import JOB_S, WORKER_IP, end_job, start_job
from vadcore.stages import StageStore
from vadcore.testing import TINY, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.faults]  # `just cluster-test` only: minutes each, beyond the default suite

# Two trials with an ITAE and an appearance flow each, every stage their own (so whichever of them the worker
# runs, the stage it is lost in is rebuilt by its own retry), and one whose ITAE diverges at once (Adam at lr 1e30).
NODE_LOSS = """
name = "node-loss"
benchmarks = ["synthetic"]
max_concurrent = 2
retries = 1
[fixed.flow]
mot = false
[[grid]]
name = "two-path"
set = { "itae.paths" = "app+mot" }
[[grid]]
name = "one-path"
set = { "itae.paths" = "app" }
[[grid]]
name = "diverges"
set = { "itae.paths" = "app+mot", "itae_train.lr" = 1e30 }
"""

# Two trials of one ITAE (different flows): they start together, one on each node, and meet at its lock.
ORPHANED_LOCK = """
name = "orphaned-lock"
benchmarks = ["synthetic"]
max_concurrent = 2
[[grid]]
name = "app-flow"
set = { "flow.app" = true, "flow.mot" = false }
[[grid]]
name = "mot-flow"
set = { "flow.app" = false, "flow.mot" = true }
"""


def _submit(c: LocalCluster, text: str, job: str) -> tuple[list[str], Path, Path, Path, subprocess.Popen]:
    """The sweep file written to the shared folder (the job's driver reads it there) and submitted as `job`, with
    results, cache and gate folders of its own there: (its trial ids, results, cache, gate, the submitting process)."""
    name = text.split('"')[1]
    f = c.shared / f"{name}.toml"
    f.write_text(text)
    results, cache, gate = c.shared / f"results-{job}", c.shared / f"cache-{job}", c.shared / f"gate-{job}"
    gate.mkdir()
    proc = start_job(c, job, str(f), "--results", str(results), "--cache", str(cache), gate=gate)
    return [p.trial_id for p in expand(load_sweep(f), extra_sets=list(TINY))], results, cache, gate, proc


def _waiting(gate: Path, n: int, job) -> list[str]:
    """Wait until `n` trials wait at their start gate; their ids."""
    def ids():
        if job.poll() is not None:
            pytest.fail(f"the job ended early:\n{job.communicate()[0][-5000:]}")
        found = sorted(f.name.removesuffix(".waiting") for f in gate.glob("*.waiting") if "@" not in f.name)
        return found if len(found) >= n else None

    return wait_until(ids, JOB_S, f"{n} trials at the gate")


def _node_of(trials: Path, trial: str) -> str:
    return json.loads((trials / trial / "plan.json").read_text())["node_id"]


def _no_half_stage(cache: Path) -> None:
    """Every stage folder in the cache is complete and verifies; no build's temporary folder is left."""
    store = StageStore(cache)
    built = [d for d in store.root.glob("*/*") if d.is_dir() and not d.name.startswith(".")]
    assert built and not list(store.root.glob("*/.*.tmp-*")), sorted(p.name for p in store.root.glob("*/.*.tmp-*"))
    for d in built:
        slice_ = json.loads((d / "slice.json").read_text())
        info = json.loads((d / "info.json").read_text())
        assert store.problem(d.parent.name, d.name, slice_, info.get("upstream", {})) is None, d


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _trial_json(trials: Path, trial: str) -> dict:
    return json.loads((trials / trial / "trial.json").read_text())


def test_a_trial_whose_node_is_lost_is_retried_on_the_other_node_reusing_its_finished_stages(cluster):
    ids, results, cache, gate, job = _submit(cluster, NODE_LOSS, "vad-node-loss")
    trials = results / "node-loss" / "trials"
    first = _waiting(gate, 2, job)  # one on each node (a trial takes a node's one CPU)
    nodes = cluster.alive()
    lost = next(t for t in first if _node_of(trials, t) == nodes[WORKER_IP])
    (gate / f"{lost}@flow_app.hold").touch()  # after its first flow epoch: ITAE complete, flow half-written, lock held
    for t in first:
        (gate / f"{t}.go").touch()
    wait_until(lambda: (gate / f"{lost}@flow_app.waiting").exists() or job.poll() is not None, JOB_S, f"{lost} training its flow")
    assert job.poll() is None, job.communicate()[0][-5000:]
    half = list((cache / "stages" / "flow_app").glob(".*.tmp-*"))
    assert half, "the flow being trained on the worker has its temporary folder"

    cluster.kill_node(WORKER_IP)  # the node is lost: raylet, agents, the trial's process
    (gate / f"{lost}@flow_app.go").touch()  # (nothing waits there any more)
    # the last trial goes once the head has declared the node dead, so the sweep ends knowing it (`TrialRecorder`)
    wait_until(lambda: WORKER_IP not in cluster.alive(), JOB_S, "the head declaring the worker node dead")
    (gate / "diverges-synthetic-s0.go").touch()
    status, log = end_job(cluster, "vad-node-loss", job)
    assert (status["status"], status["driver_exit_code"]) == ("FAILED", 1), log[-5000:]  # exit 1: "diverges" failed, on its own

    by = {r["id"]: r for r in collect(trials)}
    assert {t: by[t]["status"] for t in ids} == {**{t: "finished" for t in ids if t != "diverges-synthetic-s0"}, "diverges-synthetic-s0": "failed"}
    assert "non-finite training loss" in by["diverges-synthetic-s0"]["error"]
    assert by["diverges-synthetic-s0"]["retries"] == 0  # failed for its own reason: not retried (retries = 1 would allow it)
    assert not (trials / "diverges-synthetic-s0" / "retries.json").exists()

    retries = (trials / lost / "retries.json").read_text()
    assert by[lost]["retries"] == 1 and by[lost]["retried_because"] == f"attempt 1: node lost ({WORKER_IP})", retries
    assert _node_of(trials, lost) == nodes[HEAD_IP]  # run again on the node that was left
    stages = _trial_json(trials, lost)["stages"]
    assert stages["itae"]["status"] == "reused"  # completed by the lost attempt, in the shared cache
    assert stages["flow_app"]["status"] == "trained" and "pid " in stages["flow_app"]["took_over_from"]  # the half one: rebuilt
    other = next(t for t in first if t != lost)
    assert by[other]["retries"] == 0 and _trial_json(trials, other)["stages"]["itae"]["status"] == "trained"
    assert stage_counts(list(by.values())) == {"itae": 1, "flow": 2}  # the lost attempt's ITAE has no record of its own
    assert not half[0].exists()
    _no_half_stage(cache)
    assert f"LOST {lost} (" in log and f", {WORKER_IP}): running it again, attempt 2 of 2" in log, log[-5000:]

    table = {r["trial_id"]: r for r in pq.read_table(results / "node-loss" / "trials.parquet").to_pylist()}
    assert {t: (r["retries"], r["retried_because"]) for t, r in table.items()} == {
        t: (1, f"attempt 1: node lost ({WORKER_IP})") if t == lost else (0, None) for t in ids}
    report = (results / "node-loss" / "report.md").read_text()
    assert "## Retried trials" in report and f"| {lost} | finished | 1 | attempt 1: node lost ({WORKER_IP}) |" in report, report


def _lock_holder_and_waiters(lock: Path) -> tuple[int | None, list[int]]:
    """(pid holding the flock on `lock`, pids blocked waiting for it), from /proc/locks: the kernel's own view, so a
    test knows a process waits on the lock without guessing how long it takes to get there."""
    st = os.stat(lock)
    holder, waiters = None, []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        blocked = fields[1] == "->"
        pid, dev_ino = fields[5 if blocked else 4], fields[6 if blocked else 5]
        if int(dev_ino.rsplit(":", 1)[1]) != st.st_ino:
            continue
        if blocked:
            waiters.append(int(pid))
        else:
            holder = int(pid)
    return holder, waiters


def test_a_trial_waiting_on_a_killed_builders_stage_takes_it_over_and_builds_it_once(cluster):
    ids, results, cache, gate, job = _submit(cluster, ORPHANED_LOCK, "vad-orphan")
    trials = results / "orphaned-lock" / "trials"
    assert _waiting(gate, 2, job) == sorted(ids)  # both at once, one per node
    for t in ids:  # whichever takes the ITAE's lock stops after its first epoch, holding it
        (gate / f"{t}@itae.hold").touch()
        (gate / f"{t}.go").touch()
    builder = wait_until(lambda: next((t for t in ids if (gate / f"{t}@itae.waiting").exists()), None) or job.poll() is not None, JOB_S,
                         "the ITAE's builder")
    assert builder in ids, job.communicate()[0][-5000:]
    waiter = next(t for t in ids if t != builder)
    (gate / f"{waiter}@itae.hold").unlink()  # the waiter will build the ITAE itself: let it through
    lock = next((cache / "stages" / "itae").glob("*.lock"))
    holder, blocked = wait_until(lambda: (h := _lock_holder_and_waiters(lock))[1] and h, JOB_S, "the other trial waiting on the lock")
    assert len(blocked) == 1 and f"pid {holder} " in lock.read_text()  # the builder's process, as the lock file names it

    os.kill(holder, signal.SIGKILL)  # kill -9 of the builder, mid-ITAE
    status, log = end_job(cluster, "vad-orphan", job)
    assert status["status"] == "SUCCEEDED", log[-5000:]

    by = {r["id"]: r for r in collect(trials)}
    assert {r["status"] for r in by.values()} == {"finished"}
    took = _trial_json(trials, waiter)["stages"]["itae"]
    assert took["status"] == "trained" and f"pid {holder} " in took["took_over_from"]  # the waiter built it, once
    assert _trial_json(trials, builder)["stages"]["itae"]["status"] == "reused"  # the killed trial's retry found it built
    assert stage_counts(list(by.values())) == {"itae": 1, "flow": 2}
    retries = (trials / builder / "retries.json").read_text()
    assert by[builder]["retried_because"].startswith("attempt 1: trial process died"), retries  # its process, not its node
    assert by[waiter]["retries"] == 0
    _no_half_stage(cache)


def test_a_killed_driver_is_resumed_as_a_job_keeping_finished_trials_and_stages(cluster, ablation_paths_job):
    results, cache, gate = cluster.shared / "results-head", cluster.shared / "cache-head", cluster.shared / "gate-head"
    gate.mkdir()
    trials = results / "ablation-paths" / "trials"
    ids = [p.trial_id for p in expand(load_sweep("ablation-paths"), extra_sets=list(TINY))]
    job = start_job(cluster, "vad-head", "ablation-paths", "--results", str(results), "--cache", str(cache), gate=gate)
    first = _waiting(gate, 2, job)
    assert first == ["app-itae-synthetic-s0", "app-mot-itae-synthetic-s0"]  # the two distinct ITAEs go first (launch_order)
    (gate / "app-mot-itae-synthetic-s0@itae.hold").touch()  # the two-path ITAE stops half-built, its lock held
    for t in ids:
        (gate / f"{t}.go").touch()
    wait_until(lambda: ((trials / "app-itae-synthetic-s0" / "trial.json").exists() and (gate / "app-mot-itae-synthetic-s0@itae.waiting").exists())
               or job.poll() is not None, JOB_S, "one trial finished, one half-way through its ITAE")
    assert job.poll() is None, job.communicate()[0][-5000:]
    kept = (trials / "app-itae-synthetic-s0" / "trial.json").read_bytes()
    lock = next(f for f in (cache / "stages" / "itae").glob("*.lock") if f.read_text())
    builder = int(lock.read_text().split(" pid ")[1].split()[0])

    driver = cluster.api("/api/jobs/vad-head")["driver_info"]
    assert driver["node_ip_address"] == HEAD_IP
    os.kill(int(driver["pid"]), signal.SIGKILL)  # the head's driver is lost; its trials go with it
    status, log = end_job(cluster, "vad-head", job)
    assert status["status"] == "FAILED", log[-5000:]
    wait_until(lambda: _gone(builder), JOB_S, "the killed driver's trial processes gone")
    assert [f.parent.name for f in trials.glob("*/trial.json")] == ["app-itae-synthetic-s0"]

    resume = start_job(cluster, "vad-head-resume", "ablation-paths", "--results", str(results), command="resume")
    status, log = end_job(cluster, "vad-head-resume", resume)
    assert status["status"] == "SUCCEEDED", log[-5000:]
    assert "1 of 5 trials already finished: kept, not re-run" in log
    assert (trials / "app-itae-synthetic-s0" / "trial.json").read_bytes() == kept
    records = collect(trials)
    assert {r["status"] for r in records} == {"finished"} and len(records) == 5
    assert stage_counts(records) == {"itae": 2, "flow": 2}  # nothing trained twice; the half-built ITAE built once
    _no_half_stage(cache)
    # The tables of the run that was never stopped, but for which of two trials that ran at once trained a shared
    # stage and which reused it (whichever took its lock first): the counts above say each was trained once.
    uninterrupted = ablation_paths_job[2] / "ablation-paths"
    assert comparable_tables(results / "ablation-paths", reuse=False) == comparable_tables(uninterrupted, reuse=False)
