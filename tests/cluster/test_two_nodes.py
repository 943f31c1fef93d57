"""A real two-node Ray cluster on this machine, and the README's `ray job submit --working-dir .` of ablation-paths
against it (`just cluster-test`).

Two `ray start --block` nodes, 1 CPU each, each with its own temp dir and free ports, one generated token for
both (token auth, $RAY_AUTH_TOKEN). The worker node runs in a mount namespace of its own where a private tmpfs
covers the head's folder (its Ray temp dir, and a results folder only the head sees): the nodes share only
shared/, as two machines share an NFS mount. Everything runs inside the private network namespace of
`just test` (unshare -rn), where loopback is the only interface: the head listens on 127.0.0.1 (Ray's
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, the switch `sweeps.cluster._loopback_node` turns off), the worker on 127.0.0.2
(an address Ray does not rewrite; `ray start --address` refuses to run with that switch off).

Checks: the job succeeds, trials ran on both nodes (node ids in plan.json), the sweep trained exactly 2 ITAEs and
2 flows (the shared stage cache works across nodes), report.html is in the shared results folder, the uploaded
working dir holds no .venv/.cache/results; a results folder only the head sees fails the job (exit 2) with a
message naming the worker node and that folder, leaving no file behind; and a job given no --results is refused
rather than writing into its temporary working directory.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from sweeps.summary import collect, stage_counts
from sweeps.plans import expand
from sweeps.spec import load_sweep
from tests.sweeps.test_resume import _kill_group
from vadcore.paths import TRIAL_GATE_ENV as GATE_ENV
from vadcore.testing import TINY, wait_until

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: `ray`, and the `python` a job's entrypoint finds on PATH
HEAD_IP, WORKER_IP = "127.0.0.1", "127.0.0.2"
START_S, JOB_S = 240, 480  # generous: two cores, shared


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    shared: Path  # both nodes see it
    head_only: Path  # the worker's tmpfs covers it
    env: dict[str, str]
    dashboard: str
    nodes: list[subprocess.Popen]

    def api(self, path: str):
        req = urllib.request.Request(self.dashboard + path, headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def alive(self) -> dict[str, str]:
        """{node IP: node id} of the alive nodes, as the head's state API lists them."""
        rows = self.api("/api/v0/nodes?limit=100")["data"]["result"]["result"]
        return {n["node_ip"]: n["node_id"] for n in rows if n["state"] == "ALIVE"}

    def submit(self, job: str, *sweep_args: str, hold: int = 0) -> tuple[dict, str]:
        """The README's command against this cluster; it blocks until the job ends (the barrier). Returns the job
        server's record of the job (status, driver_exit_code, message) and the command's output (the job's log).

        hold: the job's trials wait at `sweeps.trainable.test_gate` (a gate folder both nodes see, given to this job
        alone through its runtime env) until `hold` of them wait at once, then all go: with one CPU per node and a
        trial needing one, two trials held together are on both nodes, however fast either node is."""
        sets = [a for s in TINY for a in ("--set", s)]
        gate = self.shared / f"gate-{job}"
        runtime = ["--runtime-env-json", json.dumps({"env_vars": {GATE_ENV: str(gate)}})] if hold else []
        gate.mkdir()
        p = subprocess.Popen([str(BIN / "ray"), "job", "submit", "--address", self.dashboard, "--submission-id", job, "--working-dir", ".",
                              *runtime, "--", "python", "-m", "sweeps", "run", "ablation-paths", *sets, *sweep_args],
                             cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if hold:
            wait_until(lambda: len(list(gate.glob("*.waiting"))) >= hold or p.poll() is not None, JOB_S, f"{hold} trials held at once")
            for plan in expand(load_sweep("ablation-paths"), extra_sets=list(TINY)):  # every trial's gate, open before it arrives
                (gate / f"{plan.trial_id}.go").touch()
        out = p.communicate(timeout=JOB_S)[0]
        return self.api(f"/api/jobs/{job}"), out


def _node(args: list[str], log: Path, env: dict[str, str], hide: Path | None = None) -> subprocess.Popen:
    """`ray start --block` in a new session (its process group is how teardown finds it); with `hide`, in a mount
    namespace of its own where an empty tmpfs covers that folder."""
    cmd = [str(BIN / "ray"), "start", "--block", "--num-cpus", "1", "--object-store-memory", str(200 << 20), "--disable-usage-stats", *args]
    if hide is not None:
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount -t tmpfs vad-private "$0" && exec "$@"', str(hide), *cmd]
    return subprocess.Popen(cmd, cwd=log.parent, env=env, start_new_session=True, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _private_netns() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@pytest.fixture(scope="module")
def cluster():
    if not _private_netns():
        pytest.skip("needs the private network namespace of `just test` / `just cluster-test` (unshare -rn): "
                    "its nodes would listen on this machine's network")
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs `unshare -m` (a mount namespace) for the worker node")
    root = Path(tempfile.mkdtemp(prefix="vad-cluster-"))  # short: Ray's socket paths under it must fit 107 bytes
    shared, head_only, worker = root / "shared", root / "head", root / "worker"
    for d in (shared, head_only, worker):
        d.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VAD_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    gcs, dash = free_port(), free_port()
    c = Cluster(shared, head_only, env, f"http://{HEAD_IP}:{dash}", [])
    try:
        c.nodes.append(_node(["--head", "--node-ip-address", HEAD_IP, "--port", str(gcs), "--dashboard-host", HEAD_IP,
                              "--dashboard-port", str(dash), "--dashboard-agent-listen-port", str(free_port()),
                              "--ray-client-server-port", str(free_port()), "--temp-dir", str(head_only / "ray")],
                             head_only / "node.log", {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}))
        c.nodes.append(_node(["--address", f"{HEAD_IP}:{gcs}", "--node-ip-address", WORKER_IP,
                              "--dashboard-agent-listen-port", str(free_port()), "--temp-dir", str(worker / "ray")],
                             worker / "node.log", env, hide=head_only))

        def up():
            for p, d in zip(c.nodes, (head_only, worker)):
                if p.poll() is not None:
                    pytest.fail(f"`ray start` exited ({p.returncode}):\n{(d / 'node.log').read_text()[-3000:]}")
            try:
                return set(c.alive()) == {HEAD_IP, WORKER_IP} and c.api("/api/jobs/") is not None
            except OSError:  # the dashboard is not listening yet
                return False

        t0 = time.monotonic()
        wait_until(up, START_S, "both nodes alive and the job server up", poll=0.5)
        print(f"cluster up in {time.monotonic() - t0:.0f} s")
        yield c
    finally:
        for p in c.nodes:
            _kill_group(p)
        shutil.rmtree(root, ignore_errors=True)


def test_ray_job_submit_runs_the_sweep_on_both_nodes_into_shared_results(cluster):
    with pytest.raises(urllib.error.HTTPError, match="401"):  # token auth is on: no token, no job server
        urllib.request.urlopen(cluster.dashboard + "/api/jobs/", timeout=30)
    results = cluster.shared / "results"
    t0 = time.monotonic()
    job, log = cluster.submit("vad-ok", "--results", str(results), "--cache", str(cluster.shared / "cache"), hold=2)
    print(f"job vad-ok: {job['status']} in {time.monotonic() - t0:.0f} s")
    assert job["status"] == "SUCCEEDED", log[-5000:]

    records = collect(results / "ablation-paths" / "trials")
    assert len(records) == 5 and {r["status"] for r in records} == {"finished"}, records
    assert len(list((cluster.shared / "gate-vad-ok").glob("*.go"))) == 5  # every trial passed the gate: two were held at once
    assert {r["node_id"] for r in records} == set(cluster.alive().values())  # both nodes ran trials
    assert stage_counts(records) == {"itae": 2, "flow": 2}  # one stage cache for both nodes: nothing trained twice
    assert (results / "ablation-paths" / "report.html").is_file()

    uploaded = [p for p in (cluster.head_only / "ray").glob("session_*/runtime_resources/working_dir_files/_ray_pkg_*") if p.is_dir()]
    assert uploaded and all((p / "sweeps" / "runner.py").is_file() for p in uploaded)
    for p in uploaded:  # .gitignore keeps the venv, caches and sweep outputs out of the package
        assert not [d for d in (".venv", ".cache", "runs", "results/ablation-paths") if (p / d).exists()]


def test_results_only_the_head_sees_fail_the_job_naming_the_node(cluster):
    results = cluster.head_only / "results"
    job, log = cluster.submit("vad-head-only", "--results", str(results), "--cache", str(cluster.shared / "cache"))
    assert (job["status"], job["driver_exit_code"]) == ("FAILED", 2), log[-5000:]
    print(next((line for line in log.splitlines() if "error:" in line), "no error line"))
    worker_id = cluster.alive()[WORKER_IP]
    assert f"node {worker_id} ({WORKER_IP}, host {socket.gethostname()}) does not see the results folder {results}" in log, log[-5000:]
    assert not [p for p in results.rglob("*") if p.is_file()]  # nothing half-published: no report, no table, no marker
    assert not list((cluster.shared / "cache").glob(".vad-shared-*"))  # the driver removed its markers


def test_a_job_without_results_is_refused_instead_of_writing_into_its_temporary_folder(cluster):
    job, log = cluster.submit("vad-no-results", "--cache", str(cluster.shared / "cache"))
    assert (job["status"], job["driver_exit_code"]) == ("FAILED", 2), log[-5000:]
    assert "(its copy of --working-dir is deleted with the job): name the results folder with --results or $VAD_RESULTS" in log
    assert "(not given;" in log
