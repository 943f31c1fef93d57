"""Where things are: every folder default, every environment variable the project reads for one, and the
package data (DeepSpeed configs, profiles) — one module, so a flag, its variable and its default agree in
every command (`python -m vadcore`, `python -m sweeps`, the justfile).

Working folders resolve to absolute paths: Ray workers and ranks run in other working directories.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

CACHE_ENV = "VAD_CACHE"  # shards and stages: --cache, else $VAD_CACHE, else DEFAULT_CACHE
RESULTS_ENV = "VAD_RESULTS"  # sweeps' results: --results, else $VAD_RESULTS, else DEFAULT_RESULTS
DATA_ROOT_ENV = "VAD_DATA_ROOT"  # the real benchmarks: --data-root, else $VAD_DATA_ROOT (vadcore.data.resolve_data_root)
RAY_ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own: a cluster to join (set by `ray job submit`), else Ray starts in-process
TRIAL_GATE_ENV = "VAD_TEST_GATE"  # tests only: the one seam that holds sweep trials (sweeps.trainable.test_gate)

DEFAULT_CACHE = ".cache/vad"
DEFAULT_RESULTS = "results"

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding vadcore/, sweeps/, results/ (a clone, or site-packages)
DEEPSPEED_DIR = Path(str(resources.files("vadcore") / "deepspeed"))  # <name>.json per `deepspeed = "NAME"` (package data)
PROFILE_DIR = Path(str(resources.files("vadcore") / "profiles"))  # <profile>.toml (package data)


def _folder(value: str | None, env: str, default: str) -> Path:
    return Path(value or os.environ.get(env) or default).expanduser().resolve()


def cache_root(value: str | None = None) -> Path:
    """The stage cache: --cache, else $VAD_CACHE, else .cache/vad under the working directory."""
    return _folder(value, CACHE_ENV, DEFAULT_CACHE)


def results_root(value: str | None = None) -> Path:
    """The results folder: --results, else $VAD_RESULTS, else results/ under the working directory."""
    return _folder(value, RESULTS_ENV, DEFAULT_RESULTS)


def data_root(value: str | None = None) -> Path | None:
    """The real benchmarks' folder: --data-root, else $VAD_DATA_ROOT, else None (only `synthetic` runs then)."""
    from vadcore.data import resolve_data_root  # the readers' own resolution: one rule for both

    return resolve_data_root(value)


def ray_address(value: str | None = None) -> str | None:
    """The Ray cluster to join: --address, else $RAY_ADDRESS; None starts Ray in-process."""
    return value or os.environ.get(RAY_ADDRESS_ENV) or None


def named_by(value: str | None, env: str) -> str | None:
    """What the user named for a folder (the flag, else the variable), before any default."""
    return value or os.environ.get(env) or None
