"""The stage cache: reuse, exclusive builds under concurrency, no trusted half-stage after SIGKILL, and a waiter
that takes over the build of a builder killed mid-stage (and not that of a live one)."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vadcore.stages import StageRecord, StageStore
from vadcore.testing import wait_until

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


def _weights_stage(store: StageStore, slice_=SLICE, inputs=()):
    def build(out: Path) -> dict:
        (out / "weights.pt").write_bytes(b"0123456789")
        (out / "maps").mkdir()
        (out / "maps" / "mean.npy").write_bytes(b"abc")
        return {"steps": 1}

    return store.get_or_build("itae", slice_, build, files=("weights.pt",), inputs=inputs)


def _flip_byte(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[0] ^= 0xFF
    f.write_bytes(bytes(data))


CORRUPTIONS = {
    "flipped byte": ("weights.pt", _flip_byte, "does not match the checksum"),
    "truncated": ("weights.pt", lambda f: f.write_bytes(b"01"), "has 2 bytes, 10 when built"),
    "deleted file in a subfolder": ("maps/mean.npy", Path.unlink, "mean.npy is missing"),
    "garbage info.json": ("info.json", lambda f: f.write_text("{not json"), "bookkeeping is unreadable"),
    "info.json without checksums": ("info.json", lambda f: f.write_text('{"steps": 1}'), "predates checksums"),
    "another slice.json": ("slice.json", lambda f: f.write_text('{"seed": 7}'), "is not the slice this key hashes"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_a_corrupt_stage_file_is_rebuilt_and_the_record_says_why(tmp_path, case):
    said: list[str] = []
    store = StageStore(tmp_path, say=said.append)
    first = _weights_stage(store)
    rel, corrupt, reason = CORRUPTIONS[case]
    corrupt(first.path / rel)
    again = _weights_stage(store)
    assert again.status == "trained" and reason in again.rebuilt
    assert len(said) == 1 and "stage itae" in said[0] and reason in said[0]
    assert (again.path / "weights.pt").read_bytes() == b"0123456789"
    assert _weights_stage(store).status == "reused"  # the rebuilt copy verifies


def test_a_stage_built_from_a_rebuilt_upstream_is_rebuilt_too(tmp_path):
    store = StageStore(tmp_path, say=lambda msg: None)
    up = _weights_stage(store)
    down = _weights_stage(store, {"flow": 1}, inputs=(up,))
    assert _weights_stage(store, {"flow": 1}, inputs=(up,)).status == "reused"
    changed = StageRecord(up.name, up.key, up.path, "trained", 0.0, {"files": {"weights.pt": {"bytes": 10, "sha256": "other"}}})
    again = _weights_stage(store, {"flow": 1}, inputs=(changed,))
    assert down.status == "trained" and again.status == "trained" and "another copy of stage itae" in again.rebuilt


def test_a_build_that_skips_a_declared_file_fails_and_leaves_nothing(tmp_path):
    store = StageStore(tmp_path)
    with pytest.raises(RuntimeError, match="did not write weights.pt"):
        store.get_or_build("itae", SLICE, lambda out: {}, files=("weights.pt",))
    assert not store.path("itae", store.key("itae", SLICE)).exists()


def test_a_users_error_inside_a_build_names_the_stage(tmp_path):
    def build(out: Path) -> dict:
        raise FloatingPointError("non-finite training loss nan at epoch 0, step 3")

    with pytest.raises(FloatingPointError, match=r"^stage itae: non-finite training loss"):
        StageStore(tmp_path).get_or_build("itae", SLICE, build)


# A stage's builder and a second process that needs the same stage, each a child process running get_or_build: the
# builder writes half its stage and waits for a file (`release`) before finishing; the waiter's build counts itself.
# Each child prints its record as JSON; the waiter's "waiting for the build under way by ..." line on stderr is the
# barrier that it waits on the builder's lock (it is said just before it blocks).
_CHILD = """
import json, sys
from pathlib import Path
from vadcore.stages import StageStore
from vadcore.testing import wait_until
cache, slice_, role, flag = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
def build(out):
    if role == "builder":
        (out / "weights.pt").write_text("half")
        (flag.parent / "building").touch()
        wait_until(flag.exists, None, "the release file")
    else:
        with open(flag, "a") as f:
            f.write("built\\n")
    (out / "weights.pt").write_text(role)
    return {"by": role}
rec = StageStore(cache).get_or_build("itae", slice_, build, files=("weights.pt",))
print(json.dumps({"status": rec.status, "by": rec.info["by"], "orphaned_by": rec.lock and rec.lock.orphaned_by,
                  "waited": rec.lock and rec.lock.waited}))
"""


def _stage_child(tmp_path: Path, role: str, flag: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "cache"), json.dumps(SLICE), role, str(flag)],
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}, text=True,
                            stdout=subprocess.PIPE, stderr=(tmp_path / f"{role}.err").open("w"))


def _builder_and_waiter(tmp_path: Path) -> tuple[subprocess.Popen, subprocess.Popen]:
    """The builder holding the stage's lock with half a stage written, and the waiter blocked on that lock."""
    builder = _stage_child(tmp_path, "builder", tmp_path / "release")
    wait_until(lambda: (tmp_path / "building").exists() or builder.poll() is not None, 120, "the builder mid-build")
    assert builder.poll() is None, (tmp_path / "builder.err").read_text()
    waiter = _stage_child(tmp_path, "waiter", tmp_path / "waiter-builds.txt")
    said = f"waiting for the build under way by host {socket.gethostname()} pid {builder.pid} since"
    wait_until(lambda: said in (tmp_path / "waiter.err").read_text() or waiter.poll() is not None, 120, "the waiter on the lock")
    assert waiter.poll() is None, (tmp_path / "waiter.err").read_text()
    return builder, waiter


def _verified(tmp_path: Path) -> None:
    """The stage is complete and checks out, and no temporary folder is left."""
    store = StageStore(tmp_path / "cache")
    key = store.key("itae", SLICE)
    assert store.problem("itae", key, SLICE, {}) is None
    assert not list(store.path("itae", key).parent.glob(".*.tmp-*"))


def test_a_waiter_takes_over_the_build_of_a_builder_killed_mid_stage_and_builds_it_once(tmp_path):
    builder, waiter = _builder_and_waiter(tmp_path)
    os.kill(builder.pid, signal.SIGKILL)  # kill -9: the lock goes with the process, its half stage stays behind
    builder.wait()
    out, _ = waiter.communicate(timeout=120)
    rec = json.loads(out)
    assert (rec["status"], rec["by"]) == ("trained", "waiter"), rec
    assert f"host {socket.gethostname()} pid {builder.pid} since" in rec["orphaned_by"]
    assert (tmp_path / "waiter-builds.txt").read_text() == "built\n"  # built once, by the one process left
    err = (tmp_path / "waiter.err").read_text()
    assert f"taking over the build left unfinished by host {socket.gethostname()} pid {builder.pid}" in err, err
    _verified(tmp_path)


def test_a_waiter_on_a_live_builder_takes_nothing_over_and_reuses_its_stage(tmp_path):
    """The negative case: the builder finishes (or fails) normally, so the waiter finds its stage and builds nothing."""
    builder, waiter = _builder_and_waiter(tmp_path)
    (tmp_path / "release").touch()
    assert json.loads(builder.communicate(timeout=120)[0])["status"] == "trained"
    rec = json.loads(waiter.communicate(timeout=120)[0])
    assert (rec["status"], rec["by"], rec["orphaned_by"]) == ("reused", "builder", None), rec
    assert rec["waited"] > 0 and not (tmp_path / "waiter-builds.txt").exists()
    assert "taking over" not in (tmp_path / "waiter.err").read_text()
    _verified(tmp_path)
