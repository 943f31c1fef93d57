"""What a trial leaves in its folder: trial.json (config, metrics, stages, timings, versions) and
frame_scores.parquet (`vadcore.evaluate.trial_metrics`' frame columns), each written atomically."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from vadcore import atomic

TRAINING_FIELDS = ("world_size", "device", "precision", "deepspeed", "kept_epoch", "epochs_run", "stopped_early", "selected_by")  # trial.json's `training`


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "deepspeed", "ray", "vad-sweeps", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def write_outputs(out_dir: Path, trial: dict[str, Any], frames: dict[str, np.ndarray]) -> None:
    """frame_scores.parquet from the frame columns, then trial.json: its presence says the trial finished."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".frame_scores.parquet.tmp"
    pq.write_table(pa.table(frames), tmp)
    tmp.replace(out_dir / "frame_scores.parquet")
    atomic.write_json(out_dir / "trial.json", trial)
