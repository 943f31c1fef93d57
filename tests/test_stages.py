"""The stage cache: reuse, exclusive builds under concurrency, and no trusted half-stage after SIGKILL."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vadcore.stages import StageStore

SLICE = {"itae": {"tau": 4}, "seed": 0}


def _build_counting(cache: str, counter: str) -> str:
    def build(out: Path) -> dict:
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(0.5)  # long enough for the other process to arrive while this one builds
        (out / "weights.pt").write_text("w")
        return {"steps": 1}

    return StageStore(Path(cache)).get_or_build("itae", SLICE, build).status


def test_second_call_reuses_and_changed_slice_rebuilds(tmp_path):
    store = StageStore(tmp_path)
    first = store.get_or_build("itae", SLICE, lambda out: {"n": 1})
    again = store.get_or_build("itae", SLICE, lambda out: {"n": 2})
    other = store.get_or_build("itae", {**SLICE, "seed": 1}, lambda out: {"n": 3})
    assert (first.status, again.status, other.status) == ("trained", "reused", "trained")
    assert again.key == first.key != other.key and again.info["n"] == 1


def test_two_processes_needing_one_stage_build_it_once(tmp_path):
    counter = tmp_path / "builds.txt"
    with mp.get_context("spawn").Pool(2) as pool:
        statuses = pool.starmap(_build_counting, [(str(tmp_path), str(counter))] * 2)
    assert sorted(statuses) == ["reused", "trained"]
    assert counter.read_text().count("built") == 1


def test_sigkill_mid_stage_leaves_nothing_a_rerun_would_trust(tmp_path):
    child = f"""
import time
from pathlib import Path
from vadcore.stages import StageStore
def build(out):
    (out / "half.pt").write_text("partial")
    time.sleep(60)
    return {{}}
StageStore(Path({str(tmp_path)!r})).get_or_build("itae", {SLICE!r}, build)
"""
    proc = subprocess.Popen([sys.executable, "-c", child], env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    deadline = time.time() + 30
    while not list((tmp_path / "stages/itae").glob(".*.tmp-*/half.pt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = StageStore(tmp_path)
    key = store.key("itae", SLICE)
    assert not store.path("itae", key).exists()
    rerun = store.get_or_build("itae", SLICE, lambda out: {"complete": True})
    assert rerun.status == "trained" and rerun.info["complete"]
    assert not list((tmp_path / "stages/itae").glob(".*.tmp-*")), "the killed build's temporary folder is cleaned up"
