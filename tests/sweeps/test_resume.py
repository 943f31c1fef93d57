"""Resume after a SIGKILL and after a Ctrl-C: `python -m sweeps run` on a 3-variant grid (one trial at a time) is
stopped — its whole process group, Ray included — once the first trial has finished and the second is held at the
trial gate (sweeps.trainable.test_gate), so the stop lands at the same point on a fast machine and a slow one;
`python -m sweeps resume` then finishes the others, keeps the first trial's record byte for byte, trains no ITAE
twice, and ends with the tables of a run that was never stopped."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from sweeps.testing import comparable_tables, kill_group
from vadcore.paths import TRIAL_GATE_ENV as GATE_ENV
from vadcore.testing import TINY, wait_until

REPO = Path(__file__).resolve().parents[2]

# Two distinct ITAEs ("a" and "b" share the two-path one, "c" has one path; TINY's --set would override
# itae.tau, so the variants differ in keys it leaves alone), no flows: three short trials, one after the other.
SWEEP = """
name = "resume"
benchmarks = ["synthetic"]
max_concurrent = 1
[fixed.flow]
app = false
mot = false
[[grid]]
name = "a"
set = { "score.patch" = 0 }
[[grid]]
name = "b"
set = { "score.patch" = 8 }
[[grid]]
name = "c"
set = { "itae.paths" = "app" }
"""
DISTINCT_ITAE = 2


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:  # even on failure: no runner and no Ray of ours outlives the test
        kill_group(p)


def _sweeps(args: list[str], log: Path, started: list[subprocess.Popen], gate: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("VAD_DATA_ROOT", None)
    env.pop(GATE_ENV, None)
    if gate is not None:
        env[GATE_ENV] = str(gate)
    env.pop("RAY_ADDRESS", None)  # Ray must start in-process, inside the group we kill
    p = subprocess.Popen([sys.executable, "-m", "sweeps", *args], cwd=REPO, env=env, start_new_session=True,
                         stdout=log.open("w"), stderr=subprocess.STDOUT)
    started.append(p)
    return p


def _one_done_one_held(tmp_path: Path, procs: list[subprocess.Popen]) -> tuple[subprocess.Popen, Path, str, str]:
    """`sweeps run` of SWEEP into tmp_path/results, returned (run, trials folder, first, held) once its first trial
    has finished and the second waits at the gate."""
    sweep = tmp_path / "resume.toml"
    sweep.write_text(SWEEP)
    results, gate = tmp_path / "results", tmp_path / "gate"
    gate.mkdir()
    trials = results / "resume" / "trials"
    run_log = tmp_path / "run.log"
    run = _sweeps(["run", str(sweep), "--results", str(results), "--cache", str(tmp_path / "cache"), *(a for s in TINY for a in ("--set", s))],
                  run_log, procs, gate)

    def waiting(exclude: set[str]):
        if run.poll() is not None:
            pytest.fail(f"`sweeps run` exited ({run.returncode}) early:\n{run_log.read_text()[-3000:]}")
        return sorted({f.name.removesuffix(".waiting") for f in gate.glob("*.waiting")} - exclude)

    first = wait_until(lambda: waiting(set()), 240, "a first trial at the gate")[0]
    (gate / f"{first}.go").touch()
    wait_until(lambda: (trials / first / "trial.json").is_file(), 240, f"{first} finished")
    held = wait_until(lambda: waiting({first}), 240, "a second trial at the gate")
    assert len(held) == 1, held  # one trial at a time: the second waits at the gate, the third has not started
    return run, trials, first, held[0]


def test_resume_after_sigkill_keeps_finished_trials_and_stages(tmp_path, procs):
    run, trials, first, _ = _one_done_one_held(tmp_path, procs)
    results, cache = tmp_path / "results", tmp_path / "cache"
    record = trials / first / "trial.json"
    kept = record.read_bytes()
    tree = [p.pid for p in psutil.Process(run.pid).children(recursive=True)]
    kill_group(run)
    assert run.returncode == -signal.SIGKILL
    assert not [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE], "the killed sweep left processes"
    assert [f.parent.name for f in trials.glob("*/trial.json")] == [first]

    # by its name alone, though it was run from a file outside sweeps/
    resume = _sweeps(["resume", "resume", "--results", str(results)], tmp_path / "resume.log", procs)
    try:
        rc = resume.wait(timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"resume did not finish in 300 s:\n{(tmp_path / 'resume.log').read_text()[-3000:]}")
    log = (tmp_path / "resume.log").read_text()
    assert rc == 0, log[-3000:]
    assert "1 of 3 trials already finished: kept, not re-run" in log

    assert sorted(p.parent.name for p in trials.glob("*/trial.json")) == ["a-synthetic-s0", "b-synthetic-s0", "c-synthetic-s0"]
    assert record.read_bytes() == kept  # the finished trial was kept, not re-run
    itae = [d for d in (cache / "stages" / "itae").iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert len(itae) == DISTINCT_ITAE, sorted(d.name for d in itae)  # finished ITAE stages: one per distinct config
    records = [json.loads(f.read_text()) for f in trials.glob("*/trial.json")]
    assert sum(r["stages"]["itae"]["status"] == "trained" for r in records) == DISTINCT_ITAE  # none trained twice
    assert not [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE], "the resumed sweep left processes"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The same sweep run to its end without a stop, in folders of its own: the tables a resumed sweep must equal."""
    root = tmp_path_factory.mktemp("uninterrupted")
    sweep = root / "resume.toml"
    sweep.write_text(SWEEP)
    started: list[subprocess.Popen] = []
    try:
        run = _sweeps(["run", str(sweep), "--results", str(root / "results"), "--cache", str(root / "cache"), *(a for s in TINY for a in ("--set", s))],
                      root / "run.log", started)
        assert run.wait(timeout=600) == 0, (root / "run.log").read_text()[-3000:]
    finally:
        for p in started:
            kill_group(p)
    log = (root / "run.log").read_text()
    assert "Configuration for experiment" not in log and "tensorboard" not in log, log  # the sweep's lines only, not Tune's
    return root / "results" / "resume"


def test_ctrl_c_prints_what_to_resume_and_resume_gives_the_uninterrupted_tables(tmp_path, procs, uninterrupted):
    """Ctrl-C (SIGINT to the sweep's process group, as a terminal sends it) with one trial finished and one held at
    the gate: the sweep stops, says what finished, what was interrupted and the resume command, exits 130 and
    publishes the one finished trial; `sweeps resume` then ends with the tables of a run that was never stopped."""
    run, trials, first, held = _one_done_one_held(tmp_path, procs)
    results, run_log = tmp_path / "results", tmp_path / "run.log"
    os.killpg(run.pid, signal.SIGINT)
    try:
        rc = run.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the interrupted sweep did not exit in 120 s:\n{run_log.read_text()[-3000:]}")
    log = run_log.read_text()
    assert rc == 130, log[-3000:]
    assert f"interrupted: 1 trial(s) finished and kept, 1 interrupted ({held}); continue with: python -m sweeps resume resume --results {results}" in log
    assert "Tuner.restore" not in log and "0 trials" not in log
    assert [f.parent.name for f in trials.glob("*/trial.json")] == [first]
    assert "2 trials: 1 finished, 0 failed, 1 stopped" in (results / "resume" / "report.md").read_text()

    resume = _sweeps(["resume", "resume", "--results", str(results)], tmp_path / "resume.log", procs)
    assert resume.wait(timeout=600) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    assert comparable_tables(results / "resume") == comparable_tables(uninterrupted)
