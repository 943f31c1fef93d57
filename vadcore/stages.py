"""Content-addressed stage cache: a stage's output lives under a hash of exactly what it depends on.

A stage's key hashes its config slice, the keys of the stages it reads, and its code version. Trials that
share a slice share the folder: the first builds it (under an exclusive lock, in a temporary folder renamed
into place when complete), the others wait and reuse it. A killed build leaves only a temporary folder,
which no later trial trusts and the next build of that stage deletes; its lock goes with its process (or, on
shared storage, with its node's lease: `vadcore.atomic.build_lock`), and a waiting trial takes the build over.

Reuse is verified, not assumed: `info.json` records the size and sha256 of every file the build wrote, and
each stage declares the files it must produce. A stage folder whose `info.json` is unreadable, whose
`slice.json` is not its slice, or any of whose files is missing, resized or altered is rebuilt, and the
record says why (`StageRecord.rebuilt`), so a corrupt cache costs a retraining, never a wrong result. A stage
also records the checksums of the stages it was built from: when an upstream stage is rebuilt (say, after a
corrupt `itae.pt`), its dependants are rebuilt too instead of scoring against the wrong weights.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vadcore import atomic
from vadcore.configtools import stable_hash
from vadcore.errors import VadError

# Bump a stage's version when its code changes what it produces: old outputs then stop matching.
STAGE_VERSIONS = {"itae": 1, "flow_app": 3, "flow_mot": 3, "score": 3, "score_dev": 3, "baselines": 1, "baselines_dev": 1,
                  "native_baselines": 1, "native_baselines_dev": 1}
BOOKKEEPING = ("info.json", "slice.json")  # written by the store itself; info.json holds the others' checksums


@dataclass
class StageRecord:
    name: str
    key: str
    path: Path
    status: str  # "trained" (built by this trial) or "reused"
    seconds: float  # build time (of the original build when reused)
    info: dict[str, Any]
    rebuilt: str | None = None  # why a cached folder was not trusted and was built again, if it was
    lock: atomic.Held | None = None  # the build lock, when this trial took it (the stage was not built when it looked)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checksums(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"bytes", "sha256"}} of every file a build wrote (the store's bookkeeping excluded)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in BOOKKEEPING)
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files}


class StageStore:
    def __init__(self, cache_root: Path, say: Callable[[str], None] | None = None):
        self.root = Path(cache_root) / "stages"
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def key(self, name: str, slice_: dict[str, Any]) -> str:
        return stable_hash({"stage": name, "version": STAGE_VERSIONS[name], "slice": slice_})

    def path(self, name: str, key: str) -> Path:
        return self.root / name / key

    def problem(self, name: str, key: str, slice_: dict[str, Any], upstream: dict[str, str]) -> str | None:
        """Why the folder of stage `name`/`key` cannot be reused as it is, or None when every check passes.

        "not built" for a folder with no info.json (never built, or a build still under way elsewhere).
        """
        target = self.path(name, key)
        info_file = target / "info.json"
        if not info_file.is_file():
            return "not built"
        try:
            info = json.loads(info_file.read_text())
            recorded = info["files"]
            slice_ok = stable_hash(json.loads((target / "slice.json").read_text())) == stable_hash(slice_)
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"its bookkeeping is unreadable or predates checksums ({type(e).__name__}: {e})"
        if not slice_ok:
            return f"{target / 'slice.json'} is not the slice this key hashes"
        changed = sorted(k for k in upstream if info.get("upstream", {}).get(k) != upstream[k])
        if changed:
            return f"it was built from another copy of stage {', '.join(changed)} (rebuilt since)"
        for rel, want in recorded.items():
            f = target / rel
            if not f.is_file():
                return f"{f} is missing"
            if f.stat().st_size != want["bytes"]:
                return f"{f} has {f.stat().st_size} bytes, {want['bytes']} when built"
            if sha256_file(f) != want["sha256"]:
                return f"{f} does not match the checksum recorded when it was built"
        return None

    def get_or_build(self, name: str, slice_: dict[str, Any], build: Callable[[Path], dict[str, Any]], files: tuple[str, ...] = (),
                     inputs: tuple[StageRecord, ...] = ()) -> StageRecord:
        """Reuse the verified stage for `slice_`, else build it: build(tmp_folder) -> info dict.

        files: what the build must write (e.g. "itae.pt"); a build that does not is a bug, caught here rather
        than by the next stage. Every file it wrote, declared or not, is checksummed for later reuse.
        inputs: the stages the build reads; the stage is reused only if they are the copies it was built from.
        """
        key = self.key(name, slice_)
        target = self.path(name, key)
        upstream = {rec.name: stable_hash(rec.info["files"]) for rec in inputs}
        problem = self.problem(name, key, slice_, upstream)
        lock = None
        if problem is not None:
            def waiting(who: str) -> None:
                self.say(f"stage {name} ({key}): waiting for the build under way by {who}")

            with atomic.build_lock(target, waiting) as lock:
                problem = self.problem(name, key, slice_, upstream)  # another process may have built it meanwhile
                if problem is not None:
                    rebuilt = None if problem == "not built" else problem
                    if lock.orphaned_by:
                        self.say(f"stage {name} ({key}): taking over the build left unfinished by {lock.orphaned_by} (its process or node is gone)")
                    if rebuilt:
                        self.say(f"stage {name} ({key}): cached copy not trusted, rebuilding it: {rebuilt}")
                    return self._build(name, key, slice_, build, files, upstream, rebuilt, lock)
        info = json.loads((target / "info.json").read_text())
        return StageRecord(name, key, target, "reused", info.get("build_seconds", 0.0), info, lock=lock)

    def _build(self, name: str, key: str, slice_: dict[str, Any], build: Callable[[Path], dict[str, Any]], files: tuple[str, ...],
               upstream: dict[str, str], rebuilt: str | None, lock: atomic.Held) -> StageRecord:
        target = self.path(name, key)
        t0 = time.perf_counter()
        with atomic.staging_dir(target) as tmp:
            try:
                info = build(tmp)
            except (VadError, FloatingPointError) as e:  # the user's to fix (data, a diverging lr): say which stage
                raise type(e)(f"stage {name}: {e}") from e
            missing = [f for f in files if not (tmp / f).is_file()]
            if missing:
                raise RuntimeError(f"stage {name}'s build did not write {', '.join(missing)}")
            info["build_seconds"] = round(time.perf_counter() - t0, 3)
            info["files"] = checksums(tmp)
            info["upstream"] = upstream
            atomic.write_json(tmp / "slice.json", slice_)
            atomic.write_json(tmp / "info.json", info)
        return StageRecord(name, key, target, "trained", info["build_seconds"], info, rebuilt, lock)
