"""A 3-trial grid on Ray (local, 127.0.0.1, 2 concurrent): stage sharing, a failing trial recorded while the
others finish, show's stage keys equal the run's, and resume keeps finished trials."""
from __future__ import annotations

import json

import pytest

from sweeps.runner import RunOptions, collect, init_ray, run_sweep, stage_counts, stage_keys, subset_aucs
from sweeps.spec import expand, load_sweep
from vadcore.testing import TINY

SWEEP = """
name = "tiny"
benchmarks = ["synthetic"]
max_concurrent = 2
[fixed.flow]
app = false
[[grid]]
name = "no-mot"
set = { "flow.mot" = false }
[[grid]]
name = "mot"
set = { "flow.mot" = true }
[[grid]]
name = "broken"
set = { "data.benchmark" = "ped2" }  # valid config, but no data root: fails at run time
"""


@pytest.fixture(scope="module")
def ray_local(monkeypatch_module):
    import ray

    # before Ray starts: its workers inherit the environment, and the broken trial must find no data root
    monkeypatch_module.delenv("VAD_DATA_ROOT", raising=False)
    assert init_ray(None, num_cpus=2), "a Ray instance was already running"
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def swept(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    (root / "tiny.toml").write_text(SWEEP)
    spec = load_sweep(root / "tiny.toml")
    opts = RunOptions(results=str(root / "results"), cache=str(root / "cache"), sets=list(TINY), quiet=True)
    return root, spec, opts, run_sweep(spec, opts)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as m:
        yield m


def test_grid_trials_share_the_itae_and_a_failure_is_recorded(swept):
    root, spec, opts, records = swept
    by = {r["variant"]: r for r in records}
    assert by["no-mot"]["status"] == by["mot"]["status"] == "finished"
    for v in ("no-mot", "mot"):
        assert (root / "results/tiny/trials" / f"{v}-synthetic-s0" / "trial.json").is_file()
    assert sorted([by["no-mot"]["stages"]["itae"], by["mot"]["stages"]["itae"]]) == ["reused", "trained"]
    assert stage_counts(records) == {"itae": 1, "flow": 1}
    assert by["broken"]["status"] == "failed" and "ped2" in by["broken"]["error"]
    assert by["mot"]["command"].startswith("python -m vadcore run --benchmark synthetic --profile smoke --set flow.app=false")


def test_show_keys_match_the_keys_the_run_recorded(swept):
    root, spec, opts, records = swept
    plans = {p.trial_id: p for p in expand(spec, extra_sets=opts.sets)}
    for r in records:
        if r["status"] == "finished":
            keys = stage_keys(plans[r["id"]], root / "cache", None)
            assert keys == {k: v for k, v in r["stage_keys"].items() if k != "evaluate"}


def test_resume_keeps_finished_trials(swept):
    root, spec, opts, records = swept
    before = {r["id"]: r["seconds"] for r in records if r["status"] == "finished"}
    tjson = root / "results/tiny/trials/mot-synthetic-s0/trial.json"
    mtime = tjson.stat().st_mtime
    again = run_sweep(spec, RunOptions(**{**opts.__dict__, "sets": [s for s in opts.sets if s != "x"]}))
    assert tjson.stat().st_mtime == mtime
    assert {r["id"]: r["seconds"] for r in again if r["status"] == "finished"} == before
    assert json.loads((root / "results/tiny/sweep.json").read_text())["sets"] == list(opts.sets)


def test_search_objective_scores_like_the_trial(tmp_path):
    """val_auc / test_auc re-score each half of the test videos from frame_scores.parquet with the trial's
    whole Eq. 9 score, local term included: here L ranks every video perfectly and local L perfectly wrong."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vadcore.scoring import ScoreConfig

    n = 4  # videos, each [normal, anomalous]
    pq.write_table(pa.table({
        "video": [v for v in "ABCD" for _ in range(2)], "label": [0, 1] * n, "score_r": [1.0] * 2 * n,
        "score_l": [0.0, 1.0] * n, "score_l_local": [1.0, 0.0] * n,
    }), tmp_path / "frame_scores.parquet")
    paper = subset_aucs(tmp_path, ScoreConfig(lambda_L=1.0), 0.5, 0)
    assert (paper["val_auc"], paper["test_auc"]) == (1.0, 1.0)
    assert len(paper["val_videos"]) == len(paper["test_videos"]) == 2
    local = subset_aucs(tmp_path, ScoreConfig(lambda_L=1.0, lambda_local=2.0), 0.5, 0)  # S = [2, 1] per video
    assert (local["val_auc"], local["test_auc"]) == (0.0, 0.0)


def test_local_ray_listens_on_loopback_only(ray_local):
    """Every TCP listener of this process tree (driver, GCS, raylet, workers, agents) binds 127.0.0.1 or ::1
    (or the IPv4-mapped ::ffff:127.0.0.1): a laptop sweep exposes nothing to its network."""
    import ipaddress

    import psutil
    import ray

    assert ray.util.get_node_ip_address() == "127.0.0.1"
    listeners = set()
    for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            listeners |= {(c.laddr.ip, p.name()) for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            pass
    assert listeners, "no listener found: the check would prove nothing"

    def loopback(ip: str) -> bool:
        a = ipaddress.ip_address(ip.split("%")[0])
        return a.is_loopback or (a.version == 6 and a.ipv4_mapped is not None and a.ipv4_mapped.is_loopback)

    assert not {(ip, name) for ip, name in listeners if not loopback(ip)}


def test_loopback_node_keeps_ray_from_choosing_the_external_address(monkeypatch):
    """Ray 2.60 swaps 127.0.0.1 for the address it routes to the internet through (whatever _node_ip_address
    says); `_loopback_node` keeps 127.0.0.1. Checked on Ray's own function, with an external address faked."""
    import ray._private.services as services

    from sweeps.runner import _loopback_node

    monkeypatch.setattr(services, "node_ip_address_from_perspective", lambda address=None: "192.0.2.5")
    monkeypatch.setattr(services.ray._private.worker, "_global_node", None)
    assert services.resolve_ip_for_localhost("127.0.0.1") == "192.0.2.5"  # what ray.init would bind without it
    with _loopback_node():
        assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"


def test_a_missing_data_root_stops_the_sweep_before_ray_and_results(tmp_path):
    from vadcore.errors import DataError

    (tmp_path / "s.toml").write_text('name = "real"\nbenchmarks = ["ped2"]\n[[grid]]\nname = "a"\n')
    opts = RunOptions(data_root=str(tmp_path / "no-such-root"), results=str(tmp_path / "results"), cache=str(tmp_path / "cache"), quiet=True)
    with pytest.raises(DataError, match="no-such-root does not exist"):
        run_sweep(load_sweep(tmp_path / "s.toml"), opts)
    assert not (tmp_path / "results").exists()
