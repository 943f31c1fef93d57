"""`./dev gpu-check` end to end on CPU at reduced sizes (the paper geometries' strides, Glow levels, batches and
DeepSpeed bf16 path, smaller frames and models), the carry it installs from (wheels unpacked, not pip-installed;
a missing module named with its pip package), and the Ped2 data pack `./dev gpu-pack` writes."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "benchmarks" / "gpu_check.py"
REDUCED = ["data.height=64", "data.width=64", "itae.frames=8", "itae.tau=2", "itae.width=0.0625", "flow.glow.steps=2",
           "flow.glow.hidden=16", "data.loader_workers=0", "data.train_stride=4", "data.test_stride=4", "score.local_patch=1"]


def _load(name: str):
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_carry, gpu_pack = _load("gpu_carry"), _load("gpu_pack")


def _check(out: Path, *args: str, timeout: int = 900) -> tuple[subprocess.CompletedProcess, dict]:
    sets = [a for s in REDUCED for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny convolutions: threads only spin-wait on a shared machine
    run = subprocess.run([sys.executable, str(CHECK), "--out", str(out), *sets, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    return run, json.loads(run.stdout.strip().splitlines()[-1])


def test_gpu_check_trains_and_scores_both_paper_geometries_and_writes_its_figures(tmp_path, data_root):
    run, result = _check(tmp_path / "out", "--carry", "none", "--data-root", str(data_root), "--train-videos", "3", "--test-videos", "2",
                         "--steps", "2", "--flow-steps", "2", "--timeout", "ped2=600", "--timeout", "avenue=600", "--timeout", "imports=300")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert result["status"] == "ok" and result["imports"]["missing"] == [] and result["env"]["shm"]["free_mib"] > 0
    ped2, avenue = result["ped2"], result["avenue"]
    assert ped2["data"].startswith("real Ped2 frames from") and "test videos 02, 12" in ped2["data"]
    assert avenue["data"].startswith("synthetic frames at Avenue's geometry")
    assert ped2["geometry"]["strides"] == [2, 2, 1, 1] and ped2["geometry"]["glow_levels"] == 1 and ped2["geometry"]["batch"] == [2, 20]
    assert ped2["geometry"]["ms_ssim"] == 1.0 and ped2["geometry"]["frames"] == "64x64x1"
    assert avenue["geometry"]["strides"] == [2, 2, 2, 1] and avenue["geometry"]["glow_levels"] == 3 and avenue["geometry"]["frames"] == "64x64x3"
    for g in (ped2, avenue):
        for stage in ("itae", "flow_app", "flow_mot"):
            f = g["stages"][stage]
            assert f["timed_steps"] >= 2 and f["steps"] == f["timed_steps"] + 3 and f["step_ms"] > 0 and f["tflops"] > 0 and f["peak_mb"] > 0, (stage, f)
        assert g["stages"]["itae"]["precision"] == "bfloat16 autocast, fp32 weights" and g["stages"]["flow_mot"]["precision"] == "fp32"
        assert g["stages"]["score"]["windows"] > 0 and g["stages"]["score"]["tflops"] > 0
        assert all(0 <= v <= 1 for v in g["aucs"].values()) and "auc_micro" in g["aucs"]
        assert Path(g["errmaps"]).stat().st_size > 0
    throughput = json.loads((tmp_path / "out" / "throughput.json").read_text())
    assert set(throughput["tflops"]["itae"]) == {"ped2", "avenue"} and throughput["gpu"].startswith("cpu")
    assert json.loads((tmp_path / "out" / "gpu-check.json").read_text()) == result
    assert "TFLOP/s" in run.stdout and (tmp_path / "out" / "ped2" / "trial.json").is_file()


def _wheel(folder: Path, name: str, tag: str, files: dict[str, str]) -> Path:
    """A minimal wheel (PEP 427): the files, and a dist-info with METADATA, WHEEL and RECORD."""
    path = folder / f"{name}-1.0-{tag}.whl"
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        for rel, text in files.items():
            z.writestr(rel, text)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def test_wheel_tags_decide_what_unpacks_here():
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert gpu_carry.wheel_fits("einops-0.8.2-py3-none-any.whl") is None
    assert gpu_carry.wheel_fits(f"msgpack-1.2.4-{here}-{here}-manylinux2014_x86_64.manylinux_2_17_x86_64.whl") is None
    assert gpu_carry.wheel_fits("psutil-7.2.2-cp36-abi3-manylinux2010_x86_64.manylinux_2_12_x86_64.whl") is None
    assert "built for cp27" in gpu_carry.wheel_fits("old-1.0-cp27-cp27mu-manylinux1_x86_64.whl")
    assert "built for macosx_11_0_arm64" in gpu_carry.wheel_fits(f"m-1.0-{here}-{here}-macosx_11_0_arm64.whl")
    assert gpu_carry.wheel_fits("readme.txt") == "not a wheel file name"


def test_the_carry_goes_first_on_the_path_and_a_module_that_will_not_import_is_named(tmp_path):
    """A carry whose `deepspeed` cannot be imported (it shadows the installed one): the imports phase names it with
    its pip package, says where it came from, the geometries are skipped and the check fails; a wheel for another
    Python is skipped and said so."""
    carry = tmp_path / "carry"
    (carry / "wheels").mkdir(parents=True)
    _wheel(carry / "wheels", "deepspeed", "py3-none-any", {"deepspeed/__init__.py": "raise ImportError('this carry is broken on purpose')\n"})
    _wheel(carry / "wheels", "old", "cp27-cp27mu-manylinux1_x86_64", {"old.py": ""})
    run, result = _check(tmp_path / "out", "--carry", str(carry), "--timeout", "imports=300")
    assert run.returncode == 1 and result["status"] == "failed"
    assert result["carry"]["installed"] == ["deepspeed-1.0-py3-none-any.whl"] and "built for cp27" in result["carry"]["skipped"]["old-1.0-cp27-cp27mu-manylinux1_x86_64.whl"]
    assert "deepspeed" in result["imports"]["missing"] and result["imports"]["needs"]["deepspeed"]["pip"] == "deepspeed"
    assert "this carry is broken on purpose" in result["imports"]["modules"]["deepspeed"]
    assert result["ped2"] == {"status": "skipped", "why": f"missing imports: {', '.join(result['imports']['missing'])}"}
    assert "MISSING deepspeed (pip: deepspeed; needed for the training engine)" in run.stdout
    assert result["imports"]["modules"]["numpy"].endswith(" node")


def test_the_ped2_data_pack_reads_back_as_ped2(tmp_path, data_root):
    """Grey JPEGs within ~1 grey level of the originals, the chosen test videos' labels as the full label file has
    them, read by the Ped2 reader from the unpacked carry."""
    from vadcore.data import get_benchmark

    record = gpu_pack.pack_ped2(data_root, tmp_path / "carry" / gpu_carry.PED2_TAR, 90, train_videos=1, test_videos=2)
    assert record["train_videos"] == ["01"] and record["test_videos"] == ["02", "12"] and record["mean_abs_grey_diff"] < 1.5
    root = gpu_carry.extract_data(tmp_path / "carry", tmp_path / "data")
    packed, full = get_benchmark("ped2", root), get_benchmark("ped2", data_root)
    originals = {v.id: v for v in full.videos("test")}
    tests = packed.videos("test")
    assert [v.id for v in tests] == ["02", "12"]
    for v in tests:
        assert np.array_equal(v.labels, originals[v.id].labels)
    a, b = next(tests[0].frames()), next(originals["02"].frames())
    assert a.shape == b.shape and np.abs(a.astype(int).mean(-1) - b.astype(int).mean(-1)).mean() < 1.5
    assert len(packed.videos("train")) == 1


def test_the_wheels_carried_are_the_requirements_not_assumed_on_the_node():
    """webdataset and its requirements, stopping at numpy (assumed on the node), at the versions installed here."""
    import importlib.metadata as md

    assert gpu_pack.closure(("webdataset",), gpu_pack.ASSUMED_ON_NODE) == {n: md.version(n) for n in ("braceexpand", "pyyaml", "webdataset")}
    carried = gpu_pack.closure(gpu_pack.ROOTS, gpu_pack.ASSUMED_ON_NODE)
    assert {"deepspeed", "pydantic", "pydantic-core", "hjson", "ninja", "rich"} <= set(carried) and "torch" not in carried
