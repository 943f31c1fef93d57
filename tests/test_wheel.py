"""The project as a package: its wheel carries the DeepSpeed configs, profiles and sweep files, and, installed
into a fresh venv, runs a TINY synthetic trial and lists the sweeps from a folder outside the clone.

Offline (the suite runs without a network): the wheel is built with the project venv's setuptools, and the fresh
venv sees the project venv's third-party packages through a .pth line, not its editable install of this project
(a .pth line adds a folder to sys.path without running that folder's own .pth files)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ("vadcore/deepspeed/cpu.json", "vadcore/deepspeed/gpu-bf16.json", "vadcore/deepspeed/gpu-zero2.json",
                "vadcore/profiles/smoke.toml", "vadcore/profiles/laptop.toml", "vadcore/profiles/paper.toml", "sweeps/ablation-paths.toml")


def _run(args: list, cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_installed_in_a_fresh_venv_runs_a_trial_outside_the_clone(tmp_path):
    source = tmp_path / "source"  # the checkout's files (setuptools builds in the source folder: not in the clone)
    files = _run(["git", "-C", REPO, "ls-files", "--cached", "--others", "--exclude-standard"], tmp_path).splitlines()
    for f in files:
        if (REPO / f).is_file():
            (source / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, source / f)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp_path / "dist", source], tmp_path)
    (wheel,) = (tmp_path / "dist").glob("vad_sweeps-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [f for f in PACKAGE_DATA if f not in names] == []
    shipped = sorted(p.stem for p in (REPO / "sweeps").glob("*.toml"))
    assert [f"sweeps/{s}.toml" for s in shipped if f"sweeps/{s}.toml" not in names] == []

    fresh = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", fresh], tmp_path)
    python = fresh / "bin" / "python"
    fresh_site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path).strip())
    (fresh_site / "project-venv-deps.pth").write_text("".join(f"{p}\n" for p in dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))))
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], tmp_path)

    outside = tmp_path / "elsewhere"  # no clone here or above: only the installed package can be imported
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VAD_CACHE", "VAD_DATA_ROOT", "VAD_RESULTS")}
    env["OMP_NUM_THREADS"] = "1"
    where = _run([python, "-c", "import vadcore, sweeps, results; print(vadcore.__file__, sweeps.__file__, results.__file__)"], outside, env)
    assert all(p.startswith(str(fresh_site)) for p in where.split()), where

    from vadcore.testing import TINY

    _run([python, "-m", "vadcore", "run", "--benchmark", "synthetic", "--profile", "smoke", *(a for s in TINY for a in ("--set", s)),
          "--out", "trial", "--no-progress"], outside, env)
    trial = json.loads((outside / "trial" / "trial.json").read_text())
    assert trial["training"]["itae"]["deepspeed"] == "cpu" and 0 <= trial["metrics"]["auc_micro"] <= 1
    assert (outside / ".cache" / "vad" / "stages" / "itae").is_dir()  # the cache default is under the working folder
    listed = _run([python, "-m", "sweeps", "list"], outside, env)
    assert all(name in listed for name in shipped), listed
