"""`just gpu-smoke` at TINY size on CPU: the paper profile's GPU path (gpu-bf16 autocast, its loader and
scoring) runs end to end and prints its figures, so a cluster job is not the first to find it broken."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vadcore.testing import TINY

REPO = Path(__file__).resolve().parents[1]


def test_gpu_smoke_runs_the_paper_profile_and_prints_its_figures(tmp_path):
    sets = [a for s in [*TINY, "data.loader_workers=0", "flow.glow.levels=1", "itae_train.max_steps=1", "flow.train.max_steps=2"] for a in ("--set", s)]
    run = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_smoke.py"), "--steps", "3", "--cache", str(tmp_path / "cache"), *sets],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result["stages"]) == {"itae", "flow_app", "flow_mot"}
    itae = result["stages"]["itae"]
    assert itae["precision"] == "bfloat16 autocast, fp32 weights" and itae["deepspeed"] == "gpu-bf16" and itae["world_size"] == 1
    assert result["stages"]["flow_mot"]["precision"] == "fp32"  # flows never autocast
    assert all(s["steps"] > 0 and s["samples_per_s"] > 0 for s in result["stages"].values())
    assert 0 <= result["auc_micro"] <= 1 and "ms/step" in run.stdout
