"""One real two-node Ray cluster for the tests of tests/cluster (`just cluster-test`), started once for the package
and stopped after its last test (`sweeps.testing.local_cluster`: the head on 127.0.0.1, a worker on 127.0.0.2 in a
mount namespace where a private tmpfs hides the head's folder, 1 CPU each), and `ray job submit` against it as the
README gives it."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sweeps.plans import expand
from sweeps.spec import load_sweep
from sweeps.testing import BIN, HEAD_IP, LocalCluster, cannot_start, local_cluster
from vadcore.paths import TRIAL_GATE_ENV as GATE_ENV
from vadcore.testing import TINY, wait_until

REPO = Path(__file__).resolve().parents[2]
WORKER_IP = "127.0.0.2"
JOB_S = 480  # generous: two cores, shared


@pytest.fixture(scope="package")  # stopped after the last test of tests/cluster: the suite's later tests check that
def two_nodes():  # their own process tree (this cluster's nodes are children of pytest too) holds only what they started
    if why := cannot_start(hide_head=True):
        pytest.skip(why)
    with local_cluster(workers=1, num_cpus=1, hide_head=True) as c:
        yield c


def _both_alive(c: LocalCluster) -> LocalCluster:
    """The cluster with both nodes alive: a test that lost the worker (tests/cluster/test_faults.py) leaves it dead,
    and the next test that needs two nodes starts a new one in its place."""
    if WORKER_IP not in c.nodes or set(c.alive()) != {HEAD_IP, WORKER_IP}:
        if WORKER_IP in c.nodes:
            c.kill_node(WORKER_IP)
        c.start_node(WORKER_IP)
    return c


@pytest.fixture
def cluster(two_nodes: LocalCluster) -> LocalCluster:
    return _both_alive(two_nodes)


@pytest.fixture(scope="package")
def ablation_paths_job(two_nodes: LocalCluster) -> tuple[dict, str, Path]:
    """ablation-paths as the README submits it, run once for the package, with two trials held at the gate at once (a
    folder both nodes see) until both wait, then all let go: with one CPU per node and a trial needing one, two
    trials held together are on both nodes, however fast either node is. (job record, its log, results folder)."""
    c = _both_alive(two_nodes)
    results, gate = c.shared / "results", c.shared / "gate-vad-ok"
    gate.mkdir()
    p = start_job(c, "vad-ok", "ablation-paths", "--results", str(results), "--cache", str(c.shared / "cache"), gate=gate)
    wait_until(lambda: len(list(gate.glob("*.waiting"))) >= 2 or p.poll() is not None, JOB_S, "2 trials held at once")
    for plan in expand(load_sweep("ablation-paths"), extra_sets=list(TINY)):  # every trial's gate, open before it arrives
        (gate / f"{plan.trial_id}.go").touch()
    return (*end_job(c, "vad-ok", p), results)


def start_job(c: LocalCluster, job: str, sweep: str, *args: str, gate: Path | None = None, command: str = "run") -> subprocess.Popen:
    """`ray job submit --working-dir . -- python -m sweeps COMMAND SWEEP --set <TINY> ARGS` against the cluster (resume
    takes no --set): the command follows the job's log until it ends. gate: the job's trials stop at
    `sweeps.trainable.test_gate` in that folder (given to this job alone, through its runtime env)."""
    sets = [a for s in TINY for a in ("--set", s)] if command == "run" else []
    runtime = ["--runtime-env-json", json.dumps({"env_vars": {GATE_ENV: str(gate)}})] if gate else []
    return subprocess.Popen([str(BIN / "ray"), "job", "submit", "--address", c.dashboard, "--submission-id", job, "--working-dir", ".",
                             *runtime, "--", "python", "-m", "sweeps", command, sweep, *sets, *args],
                            cwd=REPO, env=c.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def end_job(c: LocalCluster, job: str, proc: subprocess.Popen) -> tuple[dict, str]:
    """Wait for the submitted job (the barrier); the job server's record of it (status, driver_exit_code, message) and
    the command's output (the job's log)."""
    out = proc.communicate(timeout=JOB_S)[0]
    return c.api(f"/api/jobs/{job}"), out
