"""`vadcore.dist.stale_build_lock`: torch's build lock of DeepSpeed's comm op, said when a killed build left it
(old, and no process here works in its folder), not when a build is under way."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from vadcore.dist import STALE_LOCK_S, stale_build_lock


def _lock(build, age_s: float):
    build.mkdir(parents=True, exist_ok=True)
    lock = build / "lock"
    lock.touch()
    then = time.time() - age_s
    os.utime(lock, (then, then))
    return lock


def test_no_lock_or_a_fresh_one_says_nothing(tmp_path):
    build = tmp_path / "deepspeed_shm_comm"
    assert stale_build_lock(build) is None
    _lock(build, STALE_LOCK_S / 2)
    assert stale_build_lock(build) is None


def test_an_old_lock_nobody_builds_under_is_named_with_what_to_do(tmp_path):
    build = tmp_path / "deepspeed_shm_comm"
    lock = _lock(build, 10 * 60)
    said = stale_build_lock(build)
    assert said is not None and f"rm {lock}" in said and "10 min old" in said
    assert lock.exists()  # said, never deleted: another machine may be compiling on a shared home folder


def test_an_old_lock_with_a_compiler_working_in_its_folder_is_a_build_under_way(tmp_path):
    build = tmp_path / "deepspeed_shm_comm"
    _lock(build, 10 * 60)
    compiling = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], cwd=build, stdin=subprocess.PIPE)
    try:
        assert stale_build_lock(build) is None
    finally:
        compiling.stdin.close()
        compiling.wait(timeout=60)
    assert stale_build_lock(build) is not None
