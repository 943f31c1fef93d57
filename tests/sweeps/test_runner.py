"""A 3-trial grid on Ray (local, 127.0.0.1, 2 concurrent): stage sharing, a failing trial recorded while the
others finish, show's stage keys equal the run's, and resume keeps finished trials."""
from __future__ import annotations

import json

import pytest

from sweeps.cluster import init_ray
from sweeps.options import RunOptions, load_run_options
from sweeps.runner import run_sweep, stage_keys
from sweeps.summary import stage_counts
from sweeps.trainable import epoch_line
from sweeps.plans import expand
from sweeps.spec import load_sweep
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
    # a failure of its own (no data) is not retried, though the sweep allows retries: Tune never saw it fail
    assert spec.retries > 0 and by["broken"]["retries"] == 0
    tune_dirs = list((root / "results/tiny/ray").glob(f"*/{by['broken']['tune_trial_id']}"))
    assert tune_dirs and not list(tune_dirs[0].glob("error.*"))
    assert by["mot"]["command"].startswith("OMP_NUM_THREADS=1 python -m vadcore run --benchmark synthetic --profile smoke --set flow.app=false")


def test_variants_run_only_those_and_resume_remembers_them(ray_local, tmp_path):
    (tmp_path / "tiny.toml").write_text(SWEEP)
    opts = RunOptions(results=str(tmp_path / "results"), cache=str(tmp_path / "cache"), sets=list(TINY), variants=["broken"], quiet=True)
    records = run_sweep(load_sweep(tmp_path / "tiny.toml"), opts)
    assert [(r["variant"], r["status"]) for r in records] == [("broken", "failed")]  # it fails fast: no data root
    assert load_run_options("tiny", opts.results)[1].variants == ["broken"]


def test_trials_report_each_epoch_they_train_and_mark_the_ones_they_replay(swept):
    """The two trials share one ITAE: one trains it and reports its epoch, the other reuses it and replays that
    epoch marked as such; the progress line shows the first only. Every row carries the stage's epoch count."""
    root, spec, opts, _ = swept
    rows = [json.loads(line) for f in (root / "results" / "tiny" / "ray").rglob("result.json") for line in f.read_text().splitlines()]
    itae = [r for r in rows if r.get("stage") == "itae"]
    assert sorted(r["replayed"] for r in itae) == [False, True] and {r["epochs"] for r in itae} == {1}
    trained = next(r for r in itae if not r["replayed"])
    assert epoch_line(trained) == f"itae epoch 1/1, val_loss {trained['val_loss']:.4g}"
    assert epoch_line(next(r for r in itae if r["replayed"])) is None
    assert epoch_line(next(r for r in rows if r.get("stage") == "done")) is None


def test_show_keys_match_the_keys_the_run_recorded(swept):
    root, spec, opts, records = swept
    plans = {p.trial_id: p for p in expand(spec, extra_sets=opts.sets)}
    for r in records:
        if r["status"] == "finished":
            keys = stage_keys(plans[r["id"]], root / "cache", None)
            assert keys == {k: v for k, v in r["stage_keys"].items() if k != "evaluate"}


def test_the_bill_written_before_the_run_is_reported_beside_the_build_times(swept):
    """bill.json holds each distinct stage once (the shared ITAE too) with show's keys; the trial that cannot be
    counted (no Ped2) is said so; the report sets every stage built in this sweep beside its measured time."""
    root, spec, opts, records = swept
    bill = json.loads((root / "results/tiny/bill.json").read_text())
    assert sorted(x["stage"] for x in bill["stages"]) == ["flow_mot", "itae", "score", "score"] and bill["source"] == "assumed"
    trained = {(n, r["stage_keys"][n]) for r in records if r["status"] == "finished" for n in ("itae", "flow_mot")
               if r["stages"].get(n) == "trained"}
    assert trained <= {(x["stage"], x["key"]) for x in bill["stages"]}
    assert len(bill["missing"]) == 1 and bill["missing"][0].startswith("broken-synthetic-s0:")
    md = (root / "results/tiny/report.md").read_text().split("## Compute: billed before the run, measured")[1]
    flow = next(line for line in md.splitlines() if line.startswith("| flow_mot |"))
    cells = [c.strip() for c in flow.strip("|").split("|")]
    assert cells[2] == "mot-synthetic-s0" and float(cells[6]) > 0 and float(cells[7]) > 0  # hours measured, TFLOP/s achieved


def test_resume_keeps_finished_trials(swept):
    root, spec, opts, records = swept
    before = {r["id"]: r["seconds"] for r in records if r["status"] == "finished"}
    tjson = root / "results/tiny/trials/mot-synthetic-s0/trial.json"
    mtime = tjson.stat().st_mtime
    again = run_sweep(spec, RunOptions(**{**opts.__dict__, "sets": [s for s in opts.sets if s != "x"]}))
    assert tjson.stat().st_mtime == mtime
    assert {r["id"]: r["seconds"] for r in again if r["status"] == "finished"} == before
    assert json.loads((root / "results/tiny/sweep.json").read_text())["sets"] == list(opts.sets)


SEARCH = """
name = "tiny-search"
benchmarks = ["synthetic"]
max_concurrent = 2
[search]
num_samples = 6
[search.space]
"itae_train.lr" = { low = 1e-4, high = 1e-2, log = true }
"score.lambda_L" = { low = 0.0, high = 2.0 }
[scheduler]
type = "asha"
grace_period = 1
max_t = 4
reduction_factor = 2
"""


@pytest.fixture(scope="module")
def searched(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    (root / "s.toml").write_text(SEARCH)
    spec = load_sweep(root / "s.toml")
    opts = RunOptions(results=str(root / "results"), cache=str(root / "cache"), sets=[*TINY, "itae_train.epochs=3"], quiet=True)
    return root, spec, run_sweep(spec, opts)


def test_search_records_every_trial_with_its_parameters_and_why_it_stopped(searched):
    import pyarrow.parquet as pq

    root, spec, records = searched
    rows = pq.read_table(root / "results/tiny-search/trials.parquet").to_pylist()
    assert len(rows) == 6 and {r["status"] for r in rows} <= {"finished", "stopped"}
    assert all(r["config.itae_train.lr"] is not None and r["config.score.lambda_L"] is not None and r["config.data.dev"] for r in rows)
    assert all(r["objective"] == "dev_auc" for r in rows)
    for r in rows:
        if r["status"] == "stopped":  # by ASHA, at an ITAE-epoch rung, with its last reported numbers
            assert r["stop_reason"] == f"stopped by ASHA at ITAE epoch {r['rung']}" and 1 <= r["rung"] <= 3 and r["last.itae_loss"] > 0
        else:
            assert 0 <= r["metrics.dev_auc"] <= 1 and r["metrics.dev_auc"] == r["metrics.dev_auc_micro"]
    default = next(r for r in rows if r["variant"] == "default")  # the profile's own values, tried first
    base = expand(spec, extra_sets=[*TINY, "itae_train.epochs=3"])[0].config
    assert default["config.itae_train.lr"] == base.itae_train.lr and default["config.score.lambda_L"] == base.score.lambda_L
    assert "Optuna search: objective and held-out AUC" in (root / "results/tiny-search/report.md").read_text()


def test_search_summary_fits_80_columns_and_keeps_names_whole(searched):
    import io

    from rich.console import Console

    from sweeps.summary import print_summary

    root, spec, records = searched
    out = io.StringIO()
    print_summary(spec, records, Console(file=out, width=80, color_system=None))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text
    for r in records:
        assert r["variant"] in text.replace("\n", "").replace("│", "").replace(" ", "") or r["variant"] in text
    finished = [r for r in records if r["status"] == "finished"]
    assert all(f"{r['metrics']['dev_auc']:.4f}" in text for r in finished)


def test_search_needs_a_development_split(tmp_path, monkeypatch):
    from vadcore.data.ped2 import Ped2
    from vadcore.errors import ConfigError

    monkeypatch.setattr(Ped2, "has_dev", False)  # every registered benchmark has one: take Ped2's away
    (tmp_path / "s.toml").write_text(SEARCH.replace('["synthetic"]', '["ped2"]'))
    with pytest.raises(ConfigError, match="benchmark 'ped2' has no development split yet.*; benchmarks with one: synthetic, avenue"):
        run_sweep(load_sweep(tmp_path / "s.toml"), RunOptions(results=str(tmp_path / "results"), quiet=True))


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

    from sweeps.cluster import _loopback_node

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


def test_workers_per_trial_train_each_stage_across_ranks(ray_local, tmp_path):
    """--workers-per-trial 2: each training stage runs on 2 Ray Train workers (rank 0 writes it, the trial keeps
    the lock and the rename), trial.json says so, and a second trial reuses the stages as usual."""
    (tmp_path / "dp.toml").write_text('name = "dp"\nmax_concurrent = 1\n[fixed.flow]\napp = false\n[[grid]]\nname = "r"\nset = { "flow.mot" = false }\n'
                                      '[[grid]]\nname = "rl"\nset = { "flow.mot" = true }\n')
    opts = RunOptions(results=str(tmp_path / "results"), cache=str(tmp_path / "cache"), sets=list(TINY), workers_per_trial=2, quiet=True)
    records = run_sweep(load_sweep(tmp_path / "dp.toml"), opts)
    assert [r["status"] for r in records] == ["finished", "finished"], [r.get("error") for r in records]
    assert stage_counts(records) == {"itae": 1, "flow": 1}
    trial = json.loads((tmp_path / "results/dp/trials/rl-synthetic-s0/trial.json").read_text())
    assert {k: (t["world_size"], t["device"]) for k, t in trial["training"].items()} == {"itae": (2, "cpu"), "flow_mot": (2, "cpu")}
    assert [e["epoch"] for e in trial["history"]["flow_mot"]] == [1]
    for stage in (tmp_path / "cache/stages").glob("*/*"):  # only what the stage declares: no rank's leftovers
        if stage.is_dir() and not stage.name.startswith("."):
            assert not [p.name for p in stage.iterdir() if p.name.startswith(".")], stage


def test_without_stage_sharing_every_trial_trains_its_own_stages(ray_local, tmp_path):
    """--no-stage-sharing (what `just bench` compares with): the two trials that share an ITAE each train one,
    in their own folder of the cache; the shards are still written once."""
    (tmp_path / "plain.toml").write_text('name = "plain"\nmax_concurrent = 1\n[fixed.flow]\napp = false\n[[grid]]\nname = "r"\n'
                                         'set = { "flow.mot" = false }\n[[grid]]\nname = "rl"\nset = { "flow.mot" = true }\n')
    opts = RunOptions(results=str(tmp_path / "results"), cache=str(tmp_path / "cache"), sets=list(TINY), share_stages=False, quiet=True)
    records = run_sweep(load_sweep(tmp_path / "plain.toml"), opts)
    assert [r["status"] for r in records] == ["finished", "finished"], [r.get("error") for r in records]
    assert stage_counts(records) == {"itae": 2, "flow": 1}
    assert sorted(p.parent.parent.name for p in (tmp_path / "cache/unshared/plain").glob("*/stages/itae")) == ["r-synthetic-s0", "rl-synthetic-s0"]
    assert not (tmp_path / "cache/stages").exists()
    assert len([p for p in (tmp_path / "cache/shards/synthetic").glob("train-*") if p.is_dir()]) == 1


def test_only_a_lost_process_or_node_is_retried():
    """`lost` tells Ray's word that a process or node died (retried) from a trial's own failure (never retried)."""
    import ray.exceptions as rx
    from ray.train.v2.api.exceptions import WorkerGroupError

    from sweeps.trainable import lost, lost_reason
    from vadcore.errors import DataError

    assert all(lost(e) for e in (rx.ActorDiedError(), rx.WorkerCrashedError(), rx.NodeDiedError("node 1 died"), rx.LocalRayletDiedError(),
                                 WorkerGroupError("a worker died", {1: rx.ActorDiedError()})))
    assert not any(lost(e) for e in (FloatingPointError("non-finite training loss"), DataError("no such file"), ValueError("bug"),
                                     WorkerGroupError("rank 0 raised", {0: ValueError("bug")})))
    assert lost_reason("ActorDiedError: The actor died unexpectedly before finishing this task.\n\tip: 10.0.0.7\n"
                       "The actor died because its node has died. Node Id: 01ab") == "node lost"
    assert lost_reason("The actor died unexpectedly before finishing this task.\n\tip: 127.0.0.2\nThe actor is dead because its worker process "
                       "has died. Worker exit type: SYSTEM_ERROR [...] consider enabling resource isolation via --enable-resource-isolation to "
                       "prevent node deaths by resource contention") == "trial process died"  # Ray's words when kill -9 ends a trial
    assert lost_reason("OutOfMemoryError: Task was killed due to the node running low on memory. [...] Ray's memory monitor") == \
        "out of memory (killed by Ray's memory monitor)"
