"""`just bench`'s table: targets judged, rows appended to bench.parquet, a figure 20% worse than the previous run of
the same mode on the same machine flagged, and one real section (compute) measured end to end."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench", None)


HOST = {"cpu": "test cpu", "cores": 2, "torch_threads": 2, "gpu": None, "versions": "{}", "commit": "abc", "dirty": False}


def figures(bench, ratio: float, wall: float):
    return [bench.Figure("data", "loader_over_training", ratio, "×", **bench.at_least(10)),
            bench.Figure("sweep", "reuse.shared_wall_s", wall, "s", better="lower"),
            bench.Figure("memory", "process.baseline_mb", 400.0, "MB")]


def test_targets_are_judged_in_their_direction(bench):
    assert bench.Figure("x", "a", 10.0, "", **bench.at_least(10)).passed is True
    assert bench.Figure("x", "a", 9.9, "", **bench.at_least(10)).passed is False
    assert bench.Figure("x", "b", 1.2, "", **bench.at_most(1.1)).passed is False
    assert bench.Figure("x", "c", 5.0, "").passed is None  # no target: informational
    assert bench.Figure("x", "d", None, "", **bench.at_most(1.5)).passed is False  # a figure that has a target but no value fails


def test_rows_append_and_a_worse_figure_is_flagged(bench, tmp_path):
    first = bench.rows_of(figures(bench, 40.0, 100.0), "quick", "run1", "2026-01-01T00:00:00", HOST)
    _, report, flags = bench.write(first, {}, tmp_path, 60.0)
    assert flags == [] and "| data | loader_over_training | 40 | × | ≥ 10 | yes |" in report.read_text()

    # the next run: the ratio halves (higher is better: flagged), the wall grows 10% (within 20%: not flagged)
    second = bench.rows_of(figures(bench, 20.0, 110.0), "quick", "run2", "2026-01-02T00:00:00", HOST)
    table, report, flags = bench.write(second, {"gpu": "RuntimeError: boom"}, tmp_path, 60.0)
    assert flags == ["loader_over_training: 40 → 20 × (-50%)"]
    text = report.read_text()
    assert "-50% ⚠" in text and "+10% |" in text and "**gpu**: `RuntimeError: boom`" in text
    rows = pq.read_table(table).to_pylist()
    assert [r["run"] for r in rows] == ["run1"] * 3 + ["run2"] * 3
    assert {r["name"]: r["pass"] for r in rows if r["run"] == "run2"} == {"loader_over_training": True, "reuse.shared_wall_s": None, "process.baseline_mb": None}

    # a full run, or another machine, is not compared with quick runs
    full = bench.rows_of(figures(bench, 5.0, 500.0), "full", "run3", "2026-01-03T00:00:00", HOST)
    assert bench.write(full, {}, tmp_path, 60.0)[2] == []
    other = bench.rows_of(figures(bench, 5.0, 500.0), "quick", "run4", "2026-01-04T00:00:00", {**HOST, "cores": 64})
    assert bench.write(other, {}, tmp_path, 60.0)[2] == []
    # the regression direction of a "lower is better" figure
    slower = bench.rows_of(figures(bench, 20.0, 140.0), "quick", "run5", "2026-01-05T00:00:00", HOST)
    assert bench.write(slower, {}, tmp_path, 60.0)[2] == ["reuse.shared_wall_s: 110 → 140 s (+27%)"]


def test_compute_section_end_to_end(bench, tmp_path, monkeypatch):
    """The real compute section, one timed step each: every figure present with its target, both files written."""
    monkeypatch.setattr(bench.Mode, "steps", property(lambda self: 1))
    assert bench.main(["--quick", "--only", "compute", "--out", str(tmp_path)]) == 0
    rows = pq.read_table(tmp_path / "bench.parquet").to_pylist()
    names = {r["name"] for r in rows}
    for model in ("itae", "glow"):
        assert f"{model}_step.over_matmul.1t" in names
    ratios = [r for r in rows if "over_matmul" in r["name"]]
    assert ratios and all(r["target"] == 0.5 and r["op"] == ">=" and 0 < r["value"] < 5 for r in ratios)
    assert all(r["mode"] == "quick" and r["commit"] for r in rows)
    assert "itae_step.over_matmul.1t" in (tmp_path / "report.md").read_text()


def test_an_unknown_section_is_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--only", "data,nope"])
    assert "unknown section(s) nope" in capsys.readouterr().err
