"""Resume after a SIGKILL: `python -m sweeps run` on a 3-variant grid (one trial at a time) is killed — its whole
process group, Ray included — once the first trial has finished and the second is held at the trial gate
(vadcore.testing.trial_gate), so the kill lands at the same point on a fast machine and a slow one;
`python -m sweeps resume` then finishes the others, keeps the first trial's record byte for byte, and trains
no ITAE twice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from vadcore.testing import GATE_ENV, TINY, wait_until

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


def _kill_group(proc: subprocess.Popen) -> list[str]:
    """SIGKILL the subprocess's process group (the runner, Ray's GCS and raylet, all in its new session), then
    every other descendant: Ray's workers (default_worker.py) put themselves in process groups of their own, so
    the group kill alone leaves a running trial's worker alive (seen: > 10 s, still training). Returns the
    descendants that outlived the group kill (killed here too), for the record."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(tree, timeout=2)
    out = []
    for p in alive:  # only our own descendants, by pid
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            out.append(f"{p.pid} pgid {os.getpgid(p.pid)} {' '.join(p.cmdline())[:120]}")
            p.kill()
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    psutil.wait_procs(alive, timeout=10)
    return out


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:  # even on failure: no runner and no Ray of ours outlives the test
        _kill_group(p)


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


def test_resume_after_sigkill_keeps_finished_trials_and_stages(tmp_path, procs):
    sweep = tmp_path / "resume.toml"
    sweep.write_text(SWEEP)
    results, cache, gate = tmp_path / "results", tmp_path / "cache", tmp_path / "gate"
    gate.mkdir()
    sets = [a for s in TINY for a in ("--set", s)]
    trials = results / "resume" / "trials"
    run_log = tmp_path / "run.log"

    run = _sweeps(["run", str(sweep), "--results", str(results), "--cache", str(cache), *sets], run_log, procs, gate)

    def waiting(exclude: set[str]):
        if run.poll() is not None:
            pytest.fail(f"`sweeps run` exited ({run.returncode}) early:\n{run_log.read_text()[-3000:]}")
        return sorted({f.name.removesuffix(".waiting") for f in gate.glob("*.waiting")} - exclude)

    first = wait_until(lambda: waiting(set()), 240, "a first trial at the gate")[0]
    (gate / f"{first}.go").touch()
    record = wait_until(lambda: (trials / first / "trial.json").is_file() and trials / first / "trial.json", 240, f"{first} finished")
    kept = record.read_bytes()
    held = wait_until(lambda: waiting({first}), 240, "a second trial at the gate")
    assert len(held) == 1, held  # one trial at a time: the second waits at the gate, the third has not started
    tree = [p.pid for p in psutil.Process(run.pid).children(recursive=True)]
    _kill_group(run)
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
