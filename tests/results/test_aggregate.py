"""Aggregation of a fake sweep folder (no Ray, no training): the tables' schema and row counts read with
pyarrow and duckdb, one row group per trial, and the cross-sweep union."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from results.aggregate import ALL_TRIALS, aggregate, column_type, load_frame_scores, rows_to_table, update_all_trials
from sweeps.plans import command
from sweeps.spec import available, load_sweep

TABLE3_VARIANTS = ("app-itae", "app-mot-itae", "app-flow", "mot-flow", "both-flows")
PROTOCOL = {
    "auc_micro": "all test frames concatenated, Eq. 9 min-max within each video (the paper's protocol)",
    "auc_micro_global": "min-max over the whole test set: no per-video test statistics",
    "auc_macro": "mean of per-video AUCs, one-class videos excluded",
    "lambda_from_test_set": True,
    "dropped_frames": 0,
}


def _frames(rng: np.random.Generator, n_videos: int = 3, n_frames: int = 40) -> pa.Table:
    """Frame scores like `pipeline.write_outputs`: one anomalous run per video, scores higher inside it."""
    cols: dict[str, list] = {k: [] for k in ("video", "frame", "label", "scene", "score_r", "score_nll_app", "score_nll_mot", "score_l", "score")}
    for v in range(n_videos):
        label = np.zeros(n_frames, np.int8)
        label[10 + 5 * v: 25 + 5 * v] = 1
        r = rng.normal(size=n_frames) + 1.5 * label
        l = rng.normal(size=n_frames) + label
        s = (r - r.min()) / (r.max() - r.min()) + (l - l.min()) / (l.max() - l.min())
        cols["video"] += [f"v{v:02d}"] * n_frames
        cols["frame"] += list(range(0, 4 * n_frames, 4))
        cols["label"] += label.tolist()
        cols["scene"] += [f"s{v % 2}"] * n_frames
        for k, a in (("score_r", r), ("score_nll_app", l), ("score_nll_mot", l), ("score_l", l), ("score", s)):
            cols[k] += a.tolist()
    return pa.table({"video": cols["video"], "frame": pa.array(cols["frame"], pa.int32()), "label": pa.array(cols["label"], pa.int8()),
                     "scene": cols["scene"], **{k: pa.array(cols[k], pa.float64()) for k in ("score_r", "score_nll_app", "score_nll_mot", "score_l", "score")}})


def make_fake_sweep(results: Path, name: str = "ablation-paths", variants=TABLE3_VARIANTS, benchmarks=("ped2",), seeds=(0,),
                    failed: str | None = None, search: bool = False, report: tuple[str, ...] | None = None) -> Path:
    """results/<name>/ laid out as `results.layout` says and the runner leaves it: sweep.json, ray/, trials/<id>/{plan,trial}.json and
    frame_scores.parquet (error.json instead for the variant named `failed`). Synthetic numbers, seeded. The plans record
    the report sections `report` (None: those of the shipped sweep file of that name, if there is one)."""
    sections = list(load_sweep(name).report if report is None and name in available() else report or ())
    root = results / name
    (root / "ray" / "experiment").mkdir(parents=True, exist_ok=True)
    (root / "ray" / "experiment" / "result.json").write_text("{}")
    (root / "sweep.json").write_text(json.dumps({"file": f"sweeps/{name}.toml", "profile": None}))
    rng = np.random.default_rng(0)
    for b_i, bench in enumerate(benchmarks):
        for v_i, variant in enumerate(variants):
            for seed in seeds:
                tid = f"{variant}-{bench}-s{seed}"
                d = root / "trials" / tid
                d.mkdir(parents=True)
                overrides = {"itae.tau": 2 ** (v_i % 3), "score.lambda_L": 0.5 + 0.1 * v_i, "seed": seed}
                plan = {"variant": variant, "benchmark": bench, "seed": seed, "overrides": overrides,
                        "command": command(bench, "smoke", overrides, f"{root}/trials/{tid}"), "tune_trial_id": f"t{v_i}{seed}",
                        "report_sections": sections}
                if search:
                    plan["objective"] = "dev_auc"
                (d / "plan.json").write_text(json.dumps(plan))
                if variant == failed:
                    (d / "error.json").write_text(json.dumps({"error": "RuntimeError: boom", "traceback": "..."}))
                    continue
                auc = 0.9 + 0.01 * v_i - 0.05 * b_i + 0.002 * seed
                metrics = {"auc_micro": auc, "auc_micro_global": auc - 0.02, "auc_macro": auc - 0.01, "r_auc_micro": auc - 0.03,
                           "r_auc_micro_global": auc - 0.04, "r_auc_macro": auc - 0.03, "macro_videos_used": 3, "macro_videos_excluded": 0,
                           "auc": auc, "per_scene_auc": {"s0": auc + 0.01, "s1": None if v_i == 0 else auc - 0.01}, "protocol": PROTOCOL,
                           "below_floor": {"auc_micro": "", "auc_micro_global": "flow_magnitude 0.930" if v_i == 0 else ""}}
                if v_i >= 2:
                    metrics.update(l_auc_micro=auc - 0.05, l_auc_micro_global=auc - 0.06, l_auc_macro=auc - 0.05)
                if search:  # the objective ranks trials unlike the test set: a search that finds noise
                    metrics.update(dev_auc=0.6 + 0.05 * v_i + 0.01 * seed, dev_auc_micro=0.6 + 0.05 * v_i)
                config = {"data": {"benchmark": bench, "height": 32}, "itae": {"tau": overrides["itae.tau"], "app_channels": [96, 128]},
                          "flow": {"app": v_i in (2, 4), "mot": v_i in (3, 4), "prior": {"kind": "hgad" if v_i % 2 else "gaussian"}},
                          "score": {"lambda_L": overrides["score.lambda_L"] if v_i else 1}, "seed": seed}
                stages = {"itae": {"key": f"itae{v_i > 0}", "status": "trained" if v_i < 2 else "reused", "seconds": 1.5, "build_seconds": 1.5},
                          "score": {"key": f"sc{v_i}", "status": "trained", "seconds": 0.2, "build_seconds": 0.2},
                          "evaluate": {"key": None, "status": "computed", "seconds": 0.1}}
                trial = {"config": config, "metrics": metrics, "stages": stages, "seconds": 3.0 + v_i, "peak_rss_mb": 600.0,
                         "versions": {"python": "3.11.7", "torch": "2.13.0+cpu"}, "seed": seed, "history": {"itae": []}}
                pq.write_table(_frames(rng), d / "frame_scores.parquet")
                (d / "trial.json").write_text(json.dumps(trial))
    return root


def test_trials_table_schema_and_rows_with_pyarrow_and_duckdb(tmp_path):
    import duckdb
    root = make_fake_sweep(tmp_path / "results", failed="mot-flow")
    paths = aggregate(root)
    t = pq.read_table(paths["trials"])
    assert t.num_rows == 5
    for col in ("sweep", "trial_id", "variant", "benchmark", "profile", "seed", "status", "error", "seconds", "peak_rss_mb",
                "git_commit", "command", "config.itae.tau", "config.flow.prior.kind", "config.itae.app_channels",
                "metrics.auc_micro", "metrics.auc_micro_global", "metrics.auc_macro", "metrics.r_auc_micro", "metrics.l_auc_micro",
                "metrics.per_scene_auc.s0", "metrics.per_scene_auc.s1", "metrics.protocol.auc_micro",
                "stage.itae.key", "stage.itae.status", "stage.itae.seconds", "versions.torch"):
        assert col in t.column_names, col
    assert t.schema.field("metrics.auc_micro").type == pa.float64()
    assert t.schema.field("config.score.lambda_L").type == pa.float64()  # 1 and 0.6 in one column: promoted
    rows = {r["variant"]: r for r in t.to_pylist()}
    assert rows["mot-flow"]["status"] == "failed" and rows["mot-flow"]["error"] == "RuntimeError: boom"
    assert rows["both-flows"]["profile"] == "smoke" and rows["both-flows"]["status"] == "finished"
    assert rows["app-itae"]["metrics.per_scene_auc.s1"] is None
    assert "python -m vadcore run" in rows["app-flow"]["command"]

    q = duckdb.sql(f"select variant, \"metrics.auc_micro\" as auc from '{paths['trials']}' where status = 'finished' order by auc").fetchall()
    assert [v for v, _ in q] == ["app-itae", "app-mot-itae", "app-flow", "both-flows"]
    n = duckdb.sql(f"select count(*) from '{paths['frame_scores']}'").fetchall()[0][0]
    assert n == 4 * 120


def test_frame_scores_one_row_group_per_trial(tmp_path):
    root = make_fake_sweep(tmp_path / "results", failed="mot-flow")
    aggregate(root)
    pf = pq.ParquetFile(root / "frame_scores.parquet")
    assert pf.metadata.num_row_groups == 4  # the failed trial has no scores
    first = pf.read_row_group(0)
    assert first.num_rows == 120 and set(first["trial_id"].to_pylist()) == {"app-flow-ped2-s0"}
    one = load_frame_scores(root, "both-flows-ped2-s0")
    assert one.num_rows == 120 and set(one["trial_id"].to_pylist()) == {"both-flows-ped2-s0"}
    assert one.column_names[:3] == ["trial_id", "video", "frame"]
    with pytest.raises(KeyError, match="mot-flow"):
        load_frame_scores(root, "mot-flow-ped2-s0")


def test_all_trials_spans_sweeps_and_rewrites_atomically(tmp_path):
    results = tmp_path / "results"
    aggregate(make_fake_sweep(results, "ablation-paths"))
    aggregate(make_fake_sweep(results, "search", variants=("trial-a", "trial-b"), search=True))
    t = pq.read_table(results / ALL_TRIALS)
    assert t.num_rows == 7
    assert sorted(set(t["sweep"].to_pylist())) == ["ablation-paths", "search"]
    assert "metrics.dev_auc" in t.column_names and "objective" in t.column_names  # only the search sweep has them: null elsewhere
    aggregate(results / "ablation-paths")  # re-aggregating replaces, never duplicates
    assert pq.read_table(results / ALL_TRIALS).num_rows == 7
    assert not list(results.glob(".*.tmp")) and not list((results / "search").glob(".*.tmp"))


def test_column_types_come_from_the_schema_not_the_values(tmp_path):
    """A sweep where no trial finished has every `seconds` null: typed float64 anyway, so it merges."""
    results = tmp_path / "results"
    aggregate(make_fake_sweep(results, "ablation-paths", failed="mot-flow"))
    aggregate(make_fake_sweep(results, "broken", variants=("x",), seeds=(0, 1), failed="x"))
    broken = pq.read_table(results / "broken" / "trials.parquet").schema
    for name, typ in (("seconds", pa.float64()), ("peak_rss_mb", pa.float64()), ("finished_at", pa.timestamp("ms", tz="UTC")),
                      ("seed", pa.int64()), ("error", pa.string()), ("tune_trial_id", pa.string())):
        assert broken.field(name).type == typ, name
    t = pq.read_table(results / ALL_TRIALS)
    assert t.num_rows == 7 and t.schema.field("seconds").type == pa.float64()
    for name, typ in (("config.itae.tau", pa.int64()), ("config.itae.app_channels", pa.string()), ("config.flow.app", pa.bool_()),
                      ("metrics.macro_videos_used", pa.float64()), ("stage.itae.build_seconds", pa.float64()), ("stage.evaluate.key", pa.string()),
                      ("versions.torch", pa.string()),
                      ("metrics.below_floor.auc_micro", pa.string()), ("metrics.below_floor.auc_micro_global", pa.string()),
                      ("metrics.protocol.lambda_from_test_set", pa.bool_()), ("metrics.protocol.dropped_frames", pa.int64())):  # no rule: inferred
        assert t.schema.field(name).type == typ, name
    assert column_type("metrics.dev_below_floor.auc_micro") == pa.string()  # words, not numbers: never cast (nor warned about)
    rows = {r["trial_id"]: r for r in t.to_pylist()}
    assert json.loads(rows["both-flows-ped2-s0"]["config.itae.app_channels"]) == [96, 128]
    assert rows["app-itae-ped2-s0"]["metrics.below_floor.auc_micro_global"] == "flow_magnitude 0.930"
    assert rows_to_table([{"sweep": "s", "extra.note": None}]).schema.field("extra.note").type == pa.null()  # no rule, no value


def test_all_trials_casts_old_files_and_survives_a_clash(tmp_path):
    """Files of the value-inferring aggregator (an all-null `seconds` typed string) merge after a cast; a column
    that cannot be cast warns and keeps every sweep's rows instead of breaking every later publish."""
    results = tmp_path / "results"

    def write_old(name: str, seconds: str | None) -> None:
        (results / name).mkdir(parents=True)
        pq.write_table(pa.table({"sweep": [name], "trial_id": ["x-ped2-s0"], "status": ["failed"], "error": ["RuntimeError: boom"],
                                 "seconds": pa.array([seconds], pa.string()), "finished_at": pa.array([None], pa.string()),
                                 "metrics.protocol.dropped_frames": pa.array([None], pa.string())}), results / name / "trials.parquet")

    write_old("old", None)
    aggregate(make_fake_sweep(results, "ablation-paths"))
    t = pq.read_table(results / ALL_TRIALS)
    assert t.num_rows == 6 and sorted(set(t["sweep"].to_pylist())) == ["ablation-paths", "old"]
    assert t.schema.field("seconds").type == pa.float64() and t.schema.field("metrics.protocol.dropped_frames").type == pa.int64()

    write_old("odd", "slow")
    with pytest.warns(UserWarning) as caught:
        update_all_trials(results)
    said = [str(w.message) for w in caught]
    assert any("odd/trials.parquet: column 'seconds' is string, cannot cast to double" in m for m in said), said
    assert any("column 'seconds' has clashing types" in m and "string in odd" in m for m in said), said
    t = pq.read_table(results / ALL_TRIALS)
    assert t.num_rows == 7 and t.schema.field("seconds").type == pa.string() and "slow" in t["seconds"].to_pylist()


def test_a_stopped_or_failed_trial_keeps_the_config_it_tried(tmp_path):
    """The runner writes the resolved config into plan.json before the trial runs: a trial ASHA stopped (or
    that failed) is still a row saying what was tried."""
    d = tmp_path / "results" / "search" / "trials" / "trial-abc"
    d.mkdir(parents=True)
    (d / "plan.json").write_text(json.dumps({"variant": "trial-abc", "benchmark": "synthetic", "seed": 0, "command": "python -m vadcore run",
                                             "config": {"itae": {"tau": 8}, "score": {"lambda_L": 0.25}}}))
    t = pq.read_table(aggregate(tmp_path / "results" / "search")["trials"]).to_pylist()
    assert t[0]["status"] == "stopped" and t[0]["config.itae.tau"] == 8 and t[0]["config.score.lambda_L"] == 0.25
