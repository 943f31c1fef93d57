"""The README's `ray job submit --working-dir .` of ablation-paths against a real two-node Ray cluster on this machine
(tests/cluster/conftest.py; `just cluster-test`).

Checks: the job succeeds, trials ran on both nodes (node ids in plan.json), the sweep trained exactly 2 ITAEs and
2 flows (the shared stage cache works across nodes), report.html is in the shared results folder, the uploaded
working dir holds no .venv/.cache/results; a results folder only the head sees fails the job (exit 2) with a
message naming the worker node and that folder, leaving no file behind; and a job given no --results is refused
rather than writing into its temporary working directory.
"""
from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from sweeps.summary import collect, stage_counts
from sweeps.testing import LocalCluster
from tests.cluster.conftest import WORKER_IP, end_job, start_job

pytestmark = pytest.mark.cluster


def submit(c: LocalCluster, job: str, *sweep_args: str) -> tuple[dict, str]:
    """ablation-paths as the README submits it; blocks until the job ends."""
    return end_job(c, job, start_job(c, job, "ablation-paths", *sweep_args))


def test_ray_job_submit_runs_the_sweep_on_both_nodes_into_shared_results(cluster, ablation_paths_job):
    with pytest.raises(urllib.error.HTTPError, match="401"):  # token auth is on: no token, no job server
        urllib.request.urlopen(cluster.dashboard + "/api/jobs/", timeout=30)
    job, log, results = ablation_paths_job
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
    job, log = submit(cluster, "vad-head-only", "--results", str(results), "--cache", str(cluster.shared / "cache"))
    assert (job["status"], job["driver_exit_code"]) == ("FAILED", 2), log[-5000:]
    print(next((line for line in log.splitlines() if "error:" in line), "no error line"))
    worker_id = cluster.alive()[WORKER_IP]
    assert f"node {worker_id} ({WORKER_IP}, host {socket.gethostname()}) does not see the results folder {results}" in log, log[-5000:]
    assert not [p for p in results.rglob("*") if p.is_file()]  # nothing half-published: no report, no table, no marker
    assert not list((cluster.shared / "cache").glob(".vad-shared-*"))  # the driver removed its markers


def test_a_job_without_results_is_refused_instead_of_writing_into_its_temporary_folder(cluster):
    job, log = submit(cluster, "vad-no-results", "--cache", str(cluster.shared / "cache"))
    assert (job["status"], job["driver_exit_code"]) == ("FAILED", 2), log[-5000:]
    assert "(its copy of --working-dir is deleted with the job): name the results folder with --results or $VAD_RESULTS" in log
    assert "(not given;" in log
