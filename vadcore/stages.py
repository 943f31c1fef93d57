"""Content-addressed stage cache: a stage's output lives under a hash of exactly what it depends on.

A stage's key hashes its config slice, the keys of the stages it reads, and its code version. Trials that
share a slice share the folder: the first builds it (under an exclusive lock, in a temporary folder renamed
into place when complete), the others wait and reuse it. A killed build leaves only a temporary folder,
which no later trial trusts and the next build of that stage deletes.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vadcore import atomic
from vadcore.configtools import stable_hash

# Bump a stage's version when its code changes what it produces: old outputs then stop matching.
STAGE_VERSIONS = {"itae": 1, "flow_app": 2, "flow_mot": 2, "score": 2}


@dataclass
class StageRecord:
    name: str
    key: str
    path: Path
    status: str  # "trained" (built by this trial) or "reused"
    seconds: float  # build time (of the original build when reused)
    info: dict[str, Any]


class StageStore:
    def __init__(self, cache_root: Path):
        self.root = Path(cache_root) / "stages"

    def key(self, name: str, slice_: dict[str, Any]) -> str:
        return stable_hash({"stage": name, "version": STAGE_VERSIONS[name], "slice": slice_})

    def path(self, name: str, key: str) -> Path:
        return self.root / name / key

    def get_or_build(self, name: str, slice_: dict[str, Any], build: Callable[[Path], dict[str, Any]]) -> StageRecord:
        """Reuse the stage for `slice_` if complete, else build it: build(tmp_folder) -> info dict."""
        key = self.key(name, slice_)
        target = self.path(name, key)
        if not (target / "info.json").is_file():
            with atomic.build_lock(target):
                if not (target / "info.json").is_file():
                    t0 = time.perf_counter()
                    with atomic.staging_dir(target) as tmp:
                        info = build(tmp)
                        info["build_seconds"] = round(time.perf_counter() - t0, 3)
                        atomic.write_json(tmp / "slice.json", slice_)
                        atomic.write_json(tmp / "info.json", info)
                    return StageRecord(name, key, target, "trained", info["build_seconds"], info)
        info = json.loads((target / "info.json").read_text())
        return StageRecord(name, key, target, "reused", info.get("build_seconds", 0.0), info)
