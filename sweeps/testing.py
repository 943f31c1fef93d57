"""A real Ray cluster of several nodes on this machine, for the cluster tests (`just cluster-test`) and the scale
benchmark (`just bench --only scale`), the process-tree kill both use to stop what they started, and the tables a
resumed sweep must reproduce (`comparable_tables`).

Each node is a `ray start --block` in a session of its own (its process group), with its own temp dir and free
ports, all sharing one generated token (token auth, $RAY_AUTH_TOKEN). The head listens on 127.0.0.1, the workers
on 127.0.0.2, 127.0.0.3, ...: inside the private network namespace of `just test` / `just bench` (unshare -rn),
where loopback is the only interface, nothing listens beyond this machine (the head needs Ray's
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, the switch `sweeps.cluster._loopback_node` turns off; a worker's 127.0.0.x is
an address Ray does not rewrite). A worker may run in a mount namespace of its own where a private tmpfs covers
the head's folder (`hide_head`): the nodes then share only `shared/`, as two machines share an NFS mount.

    with local_cluster(workers=3, num_cpus=2) as c:        # 4 nodes, 8 logical CPUs
        c.address, c.env["RAY_AUTH_TOKEN"], c.alive()
        c.kill_node(c.worker_ips[0])                        # its whole process tree, by id: the node is lost
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil

from vadcore.testing import wait_until

BIN = Path(sys.executable).parent  # the venv's bin: `ray`, and the `python` a job's entrypoint finds on PATH
HEAD_IP = "127.0.0.1"
START_S = 240  # generous: two cores, shared
START_TRIES = 3


def kill_group(proc: subprocess.Popen) -> list[str]:
    """SIGKILL the subprocess's process group (a node's raylet and agents, or a runner with its in-process Ray, all in
    its new session), then every other descendant: Ray's workers (default_worker.py) put themselves in process
    groups of their own, so the group kill alone leaves a running trial's worker alive (seen: > 10 s, still
    training). Returns the descendants that outlived the group kill (killed here too), for the record."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(tree, timeout=2)
    out = []
    for p in alive:  # only our own descendants, by pid
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            out.append(f"{p.pid} pgid {os.getpgid(p.pid)} {' '.join(p.cmdline())[:120]}")
            p.kill()
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    psutil.wait_procs(alive, timeout=10)
    return out


def comparable_tables(sweep: Path, reuse: bool = True) -> tuple[list[dict], dict[str, list]]:
    """A sweep's trials.parquet without what differs between two runs of the same trials (times, lock waits, Tune's
    ids, where a killed build was taken over, the results folder inside each command), and frame_scores.parquet's
    columns as text (NaN, a flow the trials lack, then equals NaN): a resumed sweep must give these exactly.
    reuse=False leaves out which trial trained a shared stage and which reused it (`stage.<name>.status`): with
    trials running at once, whichever takes the stage's lock first."""
    import pyarrow.parquet as pq

    t = pq.read_table(sweep / "trials.parquet")
    varying = (".seconds", ".build_seconds", ".lock_wait_seconds", ".took_over_from", *(() if reuse else (".status",)))
    keep = [c for c in t.column_names if c not in ("finished_at", "seconds", "peak_rss_mb", "tune_trial_id") and not c.endswith(varying)]
    rows = t.select(keep).sort_by("trial_id").to_pylist()
    for r in rows:
        r["command"] = r["command"].replace(str(sweep), "<sweep>")
    frames = pq.read_table(sweep / "frame_scores.parquet")
    return rows, {c: [repr(v) for v in frames[c].to_pylist()] for c in frames.column_names}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cannot_start(hide_head: bool) -> str | None:
    """Why a local cluster cannot start here, or None: it needs the private network namespace of `just test` (its
    nodes would listen on this machine's network otherwise) and, to hide the head's folder, `unshare -m`."""
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        return ("needs the private network namespace of `just test` / `just cluster-test` / `just bench` (unshare -rn): "
                "its nodes would listen on this machine's network")
    if hide_head and (not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode):
        return "needs `unshare -m` (a mount namespace) for the worker nodes"
    return None


@dataclass
class LocalCluster:
    root: Path
    shared: Path  # every node sees it
    head_only: Path  # with hide_head, the workers' tmpfs covers it
    env: dict[str, str]  # PATH with the venv's bin, the token: what a `ray` command or a joining driver needs
    dashboard: str  # http://127.0.0.1:PORT: the job server and the state API
    address: str  # 127.0.0.1:PORT: the head's GCS, for `ray.init(address=...)`
    num_cpus: int
    hide_head: bool
    nodes: dict[str, subprocess.Popen] = field(default_factory=dict)  # node IP -> its `ray start --block`

    @property
    def worker_ips(self) -> list[str]:
        return [ip for ip in self.nodes if ip != HEAD_IP]

    def api(self, path: str):
        req = urllib.request.Request(self.dashboard + path, headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def alive(self) -> dict[str, str]:
        """{node IP: node id} of the alive nodes, as the head's state API lists them."""
        rows = self.api("/api/v0/nodes?limit=100")["data"]["result"]["result"]
        return {n["node_ip"]: n["node_id"] for n in rows if n["state"] == "ALIVE"}

    def folder(self, ip: str) -> Path:
        """The node's own folder (its Ray temp dir, its log): n1 for 127.0.0.1, n2 for 127.0.0.2, ... (short: Ray's
        socket paths under it must fit 107 bytes)."""
        return self.root / f"n{ip.rsplit('.', 1)[1]}"

    def log(self, ip: str) -> Path:
        return self.folder(ip) / "node.log"

    def start_node(self, *ips: str) -> None:
        """Start the nodes at `ips` (the head at 127.0.0.1, else workers joining it) and wait until the head lists
        them alive (and, for the head, its job server answers). A `ray start` that gives up while the machine is
        too busy to answer it in Ray's own deadline ("The current node timed out during startup") is started again,
        up to START_TRIES times."""
        tries = dict.fromkeys(ips, 1)
        for ip in ips:
            self._launch(ip)

        def up():
            for ip in ips:
                p = self.nodes[ip]
                if p.poll() is not None:
                    if tries[ip] >= START_TRIES:
                        raise RuntimeError(f"`ray start` of node {ip} exited ({p.returncode}), {START_TRIES} times:\n{self.log(ip).read_text()[-3000:]}")
                    print(f"`ray start` of node {ip} exited ({p.returncode}): starting it again", file=sys.stderr)
                    tries[ip] += 1
                    self._launch(ip)
            try:
                alive = self.alive()
                return set(ips) <= set(alive) and (HEAD_IP not in ips or self.api("/api/jobs/") is not None)
            except OSError:  # the dashboard is not listening yet
                return False

        wait_until(up, START_S, f"node(s) {', '.join(ips)} alive", poll=0.5)

    def _launch(self, ip: str) -> None:
        folder = self.folder(ip)
        folder.mkdir(exist_ok=True)
        common = ["--node-ip-address", ip, "--dashboard-agent-listen-port", str(free_port()), "--temp-dir", str(folder / "ray")]
        if ip == HEAD_IP:
            gcs, dash = self.address.rsplit(":", 1)[1], self.dashboard.rsplit(":", 1)[1]
            args = ["--head", "--port", gcs, "--dashboard-host", HEAD_IP, "--dashboard-port", dash, "--ray-client-server-port", str(free_port())]
            env, hide = {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, None
        else:
            args, env, hide = ["--address", self.address], self.env, self.head_only if self.hide_head else None
        cmd = [str(BIN / "ray"), "start", "--block", "--num-cpus", str(self.num_cpus), "--object-store-memory", str(200 << 20),
               "--disable-usage-stats", *args, *common]
        if hide is not None:
            cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount -t tmpfs vad-private "$0" && exec "$@"', str(hide), *cmd]
        self.nodes[ip] = subprocess.Popen(cmd, cwd=folder, env=env, start_new_session=True, stdout=self.log(ip).open("a"), stderr=subprocess.STDOUT)

    def kill_node(self, ip: str) -> None:
        """The node is lost: SIGKILL its process group and every process under it (raylet, agents, the trials' worker
        processes), by id, as a machine that loses power; the head notices on its own."""
        kill_group(self.nodes.pop(ip))

    def stop(self) -> None:
        for ip in reversed(list(self.nodes)):
            self.kill_node(ip)


@contextlib.contextmanager
def local_cluster(workers: int = 1, num_cpus: int = 1, hide_head: bool = False) -> Iterator[LocalCluster]:
    """A head and `workers` worker nodes of `num_cpus` logical CPUs each (more than the machine has cores, if asked:
    Ray schedules by the number given), every one alive when this yields; all stopped, and their folders deleted,
    on exit. Raises RuntimeError where `cannot_start` says why."""
    if why := cannot_start(hide_head):
        raise RuntimeError(why)
    root = Path(tempfile.mkdtemp(prefix="vad-cluster-"))  # short: Ray's socket paths under it must fit 107 bytes
    shared = root / "shared"
    shared.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VAD_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    c = LocalCluster(root, shared, root / "n1", env, f"http://{HEAD_IP}:{free_port()}", f"{HEAD_IP}:{free_port()}", num_cpus, hide_head)
    try:
        t0 = time.monotonic()
        c.start_node(HEAD_IP)  # the workers join it
        c.start_node(*(f"127.0.0.{2 + i}" for i in range(workers)))
        print(f"cluster of {len(c.nodes)} nodes up in {time.monotonic() - t0:.0f} s")
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)
