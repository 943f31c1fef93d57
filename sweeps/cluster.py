"""Ray at the sweep's edge: start it in-process on loopback or join a cluster, and before any trial check that the
results folder and the stage cache are where every node can see them.

On a cluster the results folder and the stage cache must be folders every node mounts at the same path
(`check_shared_storage`), and under `ray job submit` both must be named by absolute paths (`check_job_storage`):
the job's working directory is a temporary copy, deleted with the job.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from vadcore.errors import ConfigError
from vadcore.paths import CACHE_ENV, RESULTS_ENV, SOURCE_ROOT, named_by, ray_address


def init_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to a cluster (--address, or $RAY_ADDRESS under `ray job submit`) or start Ray in-process.

    Returns True when this call started a local Ray (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = ray_address(address)
    if address:
        ray.init(address=address if address.startswith(("ray://", "auto")) or ":" in address else "auto", configure_logging=False)
        return False
    with _loopback_node():
        ray.init(
            address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1",
            configure_logging=False, log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))}},
        )
    node_ip = ray.util.get_node_ip_address()
    if node_ip != "127.0.0.1":  # a Ray whose private switch below stopped working: say so, do not hide it
        print(f"warning: the local Ray node took address {node_ip}, not 127.0.0.1: its servers listen beyond loopback", file=sys.stderr)
    return True


@contextlib.contextmanager
def _loopback_node():
    """Keep an in-process Ray node on 127.0.0.1, so every server it starts listens on loopback only.

    Ray 2.60 on Linux replaces _node_ip_address="127.0.0.1" by the machine's external address
    (ray._private.services.resolve_ip_for_localhost, when ray_constants.ENABLE_RAY_CLUSTER is on, its
    Linux default), and its gRPC servers then bind every interface; with a loopback node IP they bind
    127.0.0.1 and the agents bind the node IP. Ray has no bind-address setting, so the flag is turned off
    for the duration of ray.init only: a driver joining a cluster (--address) must keep its real address.
    """
    import ray._private.ray_constants as rc

    before = rc.ENABLE_RAY_CLUSTER
    rc.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        rc.ENABLE_RAY_CLUSTER = before


def job_working_dir() -> Path | None:
    """The working directory of a driver that `ray job submit` started (Ray's unpacked copy of --working-dir, or
    the job server's own folder), deleted with the job; None outside a submitted job. The job server gives its
    drivers $RAY_JOB_CONFIG_JSON_ENV_VAR; Ray unpacks a working_dir under runtime_resources/working_dir_files/."""
    cwd = Path.cwd()
    return cwd if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "working_dir_files" in cwd.parts else None


def check_job_storage(results: str | None, cache: str | None) -> None:
    """Under `ray job submit`, results and the stage cache must be named (flag or environment) by absolute paths:
    the defaults, and any relative path, would land in the job's working directory and vanish with the job."""
    job_dir = job_working_dir()
    if job_dir is None:
        return
    for what, flag, env, value in (("results folder", "--results", RESULTS_ENV, results), ("stage cache", "--cache", CACHE_ENV, cache)):
        named = named_by(value, env)
        if not named or not Path(named).expanduser().is_absolute():
            raise ConfigError(f"under `ray job submit` the sweep runs in {job_dir}, a folder of Ray's job server (its copy of "
                              f"--working-dir is deleted with the job): name the {what} with {flag} or ${env}, an absolute path "
                              f"on storage every node mounts ({f'{named!r} is relative' if named else 'not given'}; cluster/README.md)")


STORAGE_CHECK_S = 300  # a node that has not answered by then (a runtime env still installing, a hung mount) is named


def check_shared_storage(folders: dict[str, Path], always: bool) -> None:
    """Every alive node of the cluster sees `folders` ({what: path}): a task pinned to each node looks for a marker
    file the driver has just written in each folder. A node that does not see one would write its trials and
    train its stages on its own disk (the report misses them, resume reruns them, every node retrains the shared
    stages), so the sweep stops here, before any trial, naming the node and the folder. A cluster of one node is
    checked only when `always` (a driver reaching it through an address may run on another machine)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2 and not always:
        return
    token = f".vad-shared-{os.urandom(8).hex()}"
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / token).touch()
    try:
        probe = ray.remote(num_cpus=0)(_unseen)
        refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote({what: str(folder / token) for what, folder in folders.items()}): n for n in nodes}
        done, late = ray.wait(list(refs), num_returns=len(refs), timeout=STORAGE_CHECK_S)
        unseen = {ref: ray.get(ref) for ref in done}
    finally:
        for folder in folders.values():
            (folder / token).unlink(missing_ok=True)

    def node(n: dict[str, Any]) -> str:
        return f"node {n['NodeID']} ({n['NodeManagerAddress']}, host {n['NodeManagerHostname']})"

    problems = [f"{node(refs[ref])} does not see the {what} {folders[what]}" for ref, whats in unseen.items() for what in whats]
    problems += [f"{node(refs[ref])} did not answer in {STORAGE_CHECK_S} s" for ref in late]
    if problems:
        raise ConfigError("; ".join(problems) + ": results and the stage cache must be folders every node of the "
                          "cluster mounts at the same path (a shared filesystem; cluster/README.md). Nothing was run.")


def _unseen(markers: dict[str, str]) -> list[str]:
    """On one node: the folders ({what: marker path}) whose marker this node does not see."""
    return [what for what, path in markers.items() if not os.path.isfile(path)]
