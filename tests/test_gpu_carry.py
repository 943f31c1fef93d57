"""The acceptance run of `./dev gpu-pack` + `gpu_check.py` (slow: it installs a Python and reaches PyPI): a fresh
clone of HEAD, the carry `gpu_pack.py` builds here, and a Python 3.11 with what a bare CUDA node is assumed to have
(torch, numpy, scipy, scikit-learn, Pillow, OpenCV, pyarrow) and nothing of this project's (no deepspeed, webdataset,
pydantic, rich, PyYAML, psutil...). gpu_check must install the carry by unpacking it, use its Ped2 data pack, and
run both geometries end to end at reduced sizes on this CPU.

    ./dev test-slow tests/test_gpu_carry.py
    VAD_BARE_PYTHON=/tmp/bare-node/bin/python ./dev test-slow tests/test_gpu_carry.py   # reuse such a Python
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_gpu_check import REDUCED

REPO = Path(__file__).resolve().parents[1]
NODE_PACKAGES = ["torch==2.13.0", "numpy", "scipy", "scikit-learn", "pillow", "opencv-python-headless", "pyarrow"]


def _bare_python(tmp_path: Path) -> str:
    if os.environ.get("VAD_BARE_PYTHON"):
        return os.environ["VAD_BARE_PYTHON"]
    venv = tmp_path / "node"
    subprocess.run([shutil.which("python3.11") or sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", *NODE_PACKAGES], check=True, timeout=1800)
    return str(venv / "bin/python")


@pytest.mark.slow
def test_gpu_check_from_a_fresh_clone_with_only_the_carry(tmp_path, data_root):
    python = _bare_python(tmp_path)
    absent = subprocess.run([python, "-c", "import importlib.util as u; print([m for m in ('deepspeed', 'webdataset', 'pydantic', 'rich', 'yaml') "
                             "if u.find_spec(m)])"], capture_output=True, text=True, check=True)
    assert absent.stdout.strip() == "[]", f"{python} is not bare: it has {absent.stdout}"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    pack = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_pack.py"), "--out", str(tmp_path / "carry"), "--data-root", str(data_root)],
                          capture_output=True, text=True, timeout=1800)
    assert pack.returncode == 0 and "fits" in pack.stdout, pack.stdout + pack.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "VAD_DATA_ROOT")}
    env.update(PATH=f"{Path(python).parent}:/usr/bin:/bin", PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1")
    sets = [a for s in REDUCED for a in ("--set", s)]
    run = subprocess.run([python, "benchmarks/gpu_check.py", "--carry", str(tmp_path / "carry"), "--out", str(tmp_path / "out"), "--steps", "2",
                          "--train-videos", "3", *sets, "--timeout", "imports=600", "--timeout", "ped2=1800", "--timeout", "avenue=900"],
                         capture_output=True, text=True, cwd=clone, env=env, timeout=3600)
    print(pack.stdout, run.stdout, sep="\n")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0 and result["status"] == "ok", run.stdout[-4000:]
    modules = result["imports"]["modules"]
    for carried in ("deepspeed", "webdataset", "pydantic", "rich", "yaml"):
        assert modules[carried].endswith(" carry"), (carried, modules[carried])
    assert modules["torch"].endswith(" node") and not result["carry"]["skipped"]
    assert result["ped2"]["data"].startswith("real Ped2 frames from the carry")
    assert set(result["ped2"]["stages"]) == set(result["avenue"]["stages"]) == {"itae", "flow_app", "flow_mot", "score"}
