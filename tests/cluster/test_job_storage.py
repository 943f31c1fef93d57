"""Under `ray job submit` the driver runs in the job's temporary copy of the working dir: results and cache must be
named, and outside it (the real job server case is in test_two_nodes.py; these need no Ray)."""
from __future__ import annotations

import pytest

from sweeps.__main__ import main
from sweeps.cluster import check_job_storage
from vadcore.errors import ConfigError


@pytest.fixture(params=["working_dir", "job_env"])
def in_job(request, tmp_path, monkeypatch):
    """A driver as `ray job submit` starts it: in Ray's unpacked --working-dir, or (no --working-dir) anywhere with
    the job server's $RAY_JOB_CONFIG_JSON_ENV_VAR."""
    for var in ("VAD_RESULTS", "VAD_CACHE", "RAY_JOB_CONFIG_JSON_ENV_VAR"):
        monkeypatch.delenv(var, raising=False)
    if request.param == "working_dir":
        job_dir = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123"
        job_dir.mkdir(parents=True)
    else:
        job_dir = tmp_path
        monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {}}')
    monkeypatch.chdir(job_dir)
    return job_dir


def test_a_job_without_results_stops_before_ray_saying_so(in_job, capsys):
    assert main(["run", "ablation-paths", "--cache", "/shared/cache"]) == 2
    err = capsys.readouterr().err
    assert f"under `ray job submit` the sweep runs in {in_job}" in err
    assert "name the results folder with --results or $VAD_RESULTS" in err and "(not given;" in err
    assert not (in_job / "results").exists()


def test_a_relative_path_would_land_in_the_job_folder_and_is_refused(in_job):
    with pytest.raises(ConfigError, match=r"name the stage cache with --cache or \$VAD_CACHE, an absolute path .*\('cache' is relative;"):
        check_job_storage("/shared/results", "cache")


def test_named_folders_outside_the_job_pass(in_job, monkeypatch, tmp_path_factory):
    shared = tmp_path_factory.mktemp("shared")
    check_job_storage(str(shared / "results"), str(shared / "cache"))
    monkeypatch.setenv("VAD_RESULTS", str(shared / "results"))
    monkeypatch.setenv("VAD_CACHE", str(shared / "cache"))
    check_job_storage(None, None)


def test_outside_a_job_the_defaults_stand(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    check_job_storage(None, None)
