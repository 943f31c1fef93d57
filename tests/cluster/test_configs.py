"""cluster/ as a user launches it: the cluster launcher YAMLs pass Ray's own validation (what `ray up` runs before it
touches a cloud), and the KubeRay RayJob has the fields the ray.io/v1 CRD requires, with one ReadWriteMany volume
holding results and cache on every pod."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


@pytest.mark.parametrize("name", ["ray-local.yaml", "aws-gpu.yaml"])
def test_launcher_yaml_passes_rays_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((CLUSTER / name).read_text()))  # as `ray up` does, before the provider
    validate_config(config)
    assert config["file_mounts"]["~/vad-sweeps"] == "."
    assert "bash ~/vad-sweeps/cluster/setup-node.sh" in " ".join(config["setup_commands"])
    for cmd in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]:
        assert "RAY_AUTH_MODE=token" in cmd
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][-1]


def test_aws_yaml_has_a_gpu_worker_type():
    config = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    gpu = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"] and t["resources"].get("GPU", 0) >= 1]
    assert gpu and gpu[0]["max_workers"] >= 1


def test_setup_script_installs_cuda_torch_then_the_project():
    script = (CLUSTER / "setup-node.sh").read_text()
    assert subprocess.run(["bash", "-n", str(CLUSTER / "setup-node.sh")]).returncode == 0
    torch, project = script.index("torch --index-url"), script.index('-e "$repo"')
    assert torch < project and "download.pytorch.org/whl/cu" in script


# Fields the ray.io/v1 CRD (KubeRay's RayJob and RayCluster types) requires, and the ones an operator cannot run
# this job without; the strictest across KubeRay 1.x (rayStartParams was required before 1.2).
RAYJOB_REQUIRED = ["apiVersion", "kind", "metadata.name", "spec.entrypoint", "spec.rayClusterSpec.headGroupSpec.rayStartParams",
                   "spec.rayClusterSpec.headGroupSpec.template.spec.containers", "spec.rayClusterSpec.workerGroupSpecs"]
WORKER_GROUP_REQUIRED = ["groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template.spec.containers"]
CONTAINER_REQUIRED = ["name", "image"]


def _get(obj, dotted: str):
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _missing(obj, fields: list[str], where: str) -> list[str]:
    return [f"{where}{f}" for f in fields if _get(obj, f) in (None, "", [])]


def test_rayjob_has_the_fields_the_crd_requires_and_a_shared_rwx_volume():
    docs = {d["kind"]: d for d in yaml.safe_load_all((CLUSTER / "rayjob.yaml").read_text()) if d}
    job, pvc = docs["RayJob"], docs["PersistentVolumeClaim"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]["rayClusterSpec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"],
            **{f"workerGroupSpecs[{g.get('groupName')}]": g["template"]["spec"] for g in spec["workerGroupSpecs"]}}
    missing = _missing(job, RAYJOB_REQUIRED, "")
    for g in spec["workerGroupSpecs"]:
        missing += _missing(g, WORKER_GROUP_REQUIRED, f"workerGroupSpecs[{g.get('groupName')}].")
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    for name, pod in pods.items():
        for c in pod["containers"]:
            missing += _missing(c, CONTAINER_REQUIRED, f"{name}.containers[{c.get('name')}].")
    assert not missing, missing

    # every Ray pod mounts the ReadWriteMany claim at one path, and the entrypoint puts results and cache under it
    assert "ReadWriteMany" in pvc["spec"]["accessModes"] and pvc["metadata"]["name"]
    mounts = set()
    for pod in pods.values():
        vol = next(v["name"] for v in pod["volumes"] if _get(v, "persistentVolumeClaim.claimName") == pvc["metadata"]["name"])
        mounts |= {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"] if m["name"] == vol}
    assert len(mounts) == 1, mounts
    (shared,) = mounts
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:4] == ["python", "-m", "sweeps", "run"]
    for flag in ("--results", "--cache"):
        assert args[args.index(flag) + 1].startswith(shared + "/"), flag
    assert len({c["image"] for pod in pods.values() for c in pod["containers"]}) == 1  # one image: the code is in it
    assert (CLUSTER / "Dockerfile").is_file()
