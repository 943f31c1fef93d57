"""A sweep's trial folders -> two Parquet tables, and the cross-sweep union.

    from results.aggregate import aggregate
    aggregate("results/ablation-paths")   # writes trials.parquet, frame_scores.parquet; updates ../all_trials.parquet

Reads results/<sweep>/trials/<id>/{plan.json, trial.json | error.json | stop.json, retries.json, frame_scores.parquet} (the
layout `results.layout` defines for the runner and this module) and never Ray's own folders. Writes, each atomically (temporary sibling + rename):

    results/<sweep>/trials.parquet        one row per trial (schema: results/README.md)
    results/<sweep>/frame_scores.parquet  every trial's frames, one row group per trial (`load_frame_scores`)
    results/all_trials.parquet            the union of every sweep's trials.parquet, rebuilt under a lock

A sweep's aggregation holds `build_lock(trials.parquet)`, the union holds `build_lock(all_trials.parquet)`:
two sweeps finishing at once queue up instead of interleaving writes.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import subprocess
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from results.layout import ERROR, PLAN, RETRIES, STOP, TRIAL, TRIALS_DIR, trial_status
from vadcore import atomic
from vadcore.configtools import flatten
from vadcore.paths import SOURCE_ROOT

TRIALS = "trials.parquet"
FRAMES = "frame_scores.parquet"
ALL_TRIALS = "all_trials.parquet"

# The schema of trials.parquet (results/README.md), as code: types never depend on the values a sweep happened
# to produce, so a sweep where no trial finished (every `seconds` null) still merges with the others.
# FIXED leads, in this order; config.*, metrics.*, stage.*, training.*, versions.* follow, sorted.
TIMESTAMP = pa.timestamp("ms", tz="UTC")  # Parquet has no seconds unit: timestamp[s] would be read back as ms anyway
FIXED_TYPES: dict[str, pa.DataType] = {
    "sweep": pa.string(), "trial_id": pa.string(), "variant": pa.string(), "benchmark": pa.string(), "profile": pa.string(),
    "seed": pa.int64(), "status": pa.string(), "error": pa.string(), "finished_at": TIMESTAMP,
    "seconds": pa.float64(), "peak_rss_mb": pa.float64(), "git_commit": pa.string(), "command": pa.string(),
    "tune_trial_id": pa.string(), "objective": pa.string(), "stop_reason": pa.string(), "rung": pa.int64(),
    "retries": pa.int64(), "retried_because": pa.string(), "report_sections": pa.string(),
}
FIXED = list(FIXED_TYPES)
STAGE_TYPES = {"key": pa.string(), "status": pa.string(), "rebuilt_because": pa.string(), "seconds": pa.float64(), "build_seconds": pa.float64(),
               "lock_wait_seconds": pa.float64(), "took_over_from": pa.string()}
TRAINING_TYPES = {  # trial.json's `training` per training stage (vadcore.outputs.TRAINING_FIELDS)
    "world_size": pa.int64(), "device": pa.string(), "precision": pa.string(), "deepspeed": pa.string(),
    "kept_epoch": pa.int64(), "epochs_run": pa.int64(), "stopped_early": pa.bool_(), "selected_by": pa.string(),
}
_PY_TYPES = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string(), tuple: pa.string(), list: pa.string()}


def git_commit(repo: Path = SOURCE_ROOT) -> str:
    """HEAD of the checkout at aggregation time ("+dirty" if it has uncommitted changes), or "unknown"."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _profile(command: str | None) -> str | None:
    m = re.search(r"--profile\s+(\S+)", command or "")
    return m.group(1) if m else None


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)


def trial_row(trial_dir: Path, sweep: str, commit: str) -> dict[str, Any]:
    """One flat record: plan fields, status, flattened config/metrics/stages/versions (dotted names)."""
    plan = json.loads((trial_dir / PLAN).read_text())
    row: dict[str, Any] = {
        "sweep": sweep, "trial_id": trial_dir.name, "variant": plan.get("variant"), "benchmark": plan.get("benchmark"),
        "profile": _profile(plan.get("command")), "seed": plan.get("seed"), "status": "stopped", "error": None,
        "finished_at": None, "seconds": None, "peak_rss_mb": None, "git_commit": commit, "command": plan.get("command"),
        "tune_trial_id": plan.get("tune_trial_id"), "objective": plan.get("objective"), "stop_reason": None, "rung": None,
        **retried(trial_dir), "report_sections": json.dumps(plan.get("report_sections", [])),
    }
    row.update(flatten(plan.get("config", {}), "config."))  # what a failed or stopped trial tried, too
    trial_file, err_file, status = trial_dir / TRIAL, trial_dir / ERROR, trial_status(trial_dir)
    if status == "finished":
        t = json.loads(trial_file.read_text())
        row.update(status="finished", finished_at=_mtime(trial_file), seconds=t.get("seconds"), peak_rss_mb=t.get("peak_rss_mb"))
        row.update(flatten(t.get("config", {}), "config."))
        row.update(flatten(t.get("metrics", {}), "metrics."))  # per_scene_auc.<scene>, protocol.<field> included
        for name, s in t.get("stages", {}).items():
            for field in STAGE_TYPES:
                if field in s:
                    row[f"stage.{name}.{field}"] = s[field]
        row.update(flatten(t.get("training", {}), "training."))  # training.itae.kept_epoch, training.flow_mot.world_size, ...
        row.update(flatten(t.get("versions", {}), "versions."))
    elif status == "failed":
        row.update(status="failed", finished_at=_mtime(err_file), error=json.loads(err_file.read_text()).get("error"))
    elif (stop_file := trial_dir / STOP).is_file():  # stopped early by the scheduler: why, where, its last numbers
        stop = json.loads(stop_file.read_text())
        row.update(finished_at=_mtime(stop_file), stop_reason=stop["reason"], rung=stop.get("rung"))
        row.update(flatten(stop.get("last", {}), "last."))
    return row


def retried(trial_dir: Path) -> dict[str, Any]:
    """{"retries": how many attempts of the trial were lost with their process or node and run again (0: none),
    "retried_because": each lost attempt's reason and node, "; "-joined, or None} (retries.json, `sweeps.trainable`)."""
    f = trial_dir / RETRIES
    lost = json.loads(f.read_text()) if f.is_file() else []
    because = "; ".join(f"attempt {r['attempt']}: {r['reason']}" + (f" ({r['node']})" if r.get("node") else "") for r in lost)
    return {"retries": len(lost), "retried_because": because or None}


@functools.cache
def _config_types() -> dict[str, pa.DataType]:
    """config.<dotted field> -> type, from TrialConfig's defaults (tuples are JSON strings). Imported lazily:
    vadcore.config pulls in torch."""
    from vadcore.config import TrialConfig

    defaults = flatten(dataclasses.asdict(TrialConfig()), "config.")
    return {k: _PY_TYPES[type(v)] for k, v in defaults.items() if type(v) in _PY_TYPES}


def column_type(name: str) -> pa.DataType | None:
    """The schema's type of a trials.parquet column, or None where no rule covers it (metrics.protocol.*, whose
    fields are str / bool / int, and any family the README does not name): those are typed from their values."""
    if name in FIXED_TYPES:
        return FIXED_TYPES[name]
    family, _, rest = name.partition(".")
    if family == "config":
        return _config_types().get(name)
    if family == "stage":
        return STAGE_TYPES.get(rest.rpartition(".")[2])
    if family == "training":
        return TRAINING_TYPES.get(rest.rpartition(".")[2])
    if family == "metrics" and rest.partition(".")[0] in ("below_floor", "dev_below_floor"):
        return pa.string()  # '' or the floor that beat the trial, in words (vadcore.baselines.below_floor)
    if family == "metrics" and not rest.startswith("protocol."):
        return pa.float64()
    if family == "versions":
        return pa.string()
    return None


def _infer_type(values: list[Any]) -> pa.DataType:
    """For columns without a rule: bool, int64, float64 (ints promoted when mixed), timestamp, string (lists and
    mixes as JSON), or null when every value is null (null merges with any type in all_trials.parquet)."""
    present = [v for v in values if v is not None]
    if not present:
        return pa.null()
    if all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    if all(isinstance(v, datetime) for v in present):
        return TIMESTAMP
    return pa.string()


def _array(values: list[Any], typ: pa.DataType) -> pa.Array:
    if typ == pa.string():  # lists (and mixes) as JSON strings
        values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
    return pa.array(values, typ)


def _column(name: str, values: list[Any]) -> pa.Array:
    """One column typed by the schema (`column_type`), else by its values. A value the schema's type cannot hold
    (a trial.json of another version) must not lose the sweep: that column is typed from its values, with a warning."""
    want = column_type(name)
    if want is not None:
        try:
            return _array(values, want)
        except (pa.ArrowInvalid, TypeError) as e:  # ArrowTypeError is a TypeError
            warnings.warn(f"trials.parquet column {name!r}: a value is not {want} ({e}); typed from its values instead")
    return _array(values, _infer_type(values))


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Records with differing keys -> one table; FIXED columns first, the rest sorted, missing values null."""
    keys = {k for r in rows for k in r} | set(FIXED)
    names = FIXED + sorted(keys - set(FIXED))
    return pa.table({k: _column(k, [r.get(k) for r in rows]) for k in names})


def _write_table(table: pa.Table, path: Path, **kw: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, **kw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_frame_scores(trial_dirs: list[Path], path: Path) -> int:
    """All trials' frame_scores.parquet into one file, one row group per trial, with a leading trial_id column.

    The file's metadata key b"trial_ids" is the JSON list of trial ids in row-group order. Returns the count.
    """
    files = [(d.name, d / FRAMES) for d in trial_dirs if (d / FRAMES).is_file() and (d / TRIAL).is_file()]
    schemas = [pq.read_schema(f) for _, f in files]
    base = pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive") if schemas else pa.schema([])
    schema = pa.schema([pa.field("trial_id", pa.string()), *base]).with_metadata({b"trial_ids": json.dumps([t for t, _ in files]).encode()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, schema) as w:
            for trial_id, f in files:
                t = pq.read_table(f)
                t = t.append_column("trial_id", pa.array([trial_id] * len(t), pa.string()))
                cols = [t[n].cast(schema.field(n).type) if n in t.column_names else pa.nulls(len(t), schema.field(n).type) for n in schema.names]
                t = pa.Table.from_arrays(cols, schema=schema)
                w.write_table(t, row_group_size=max(1, len(t)))  # exactly one row group per trial
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(files)


def load_frame_scores(sweep_dir: str | Path, trial_id: str) -> pa.Table:
    """One trial's frames from results/<sweep>/frame_scores.parquet, reading only its row group."""
    pf = pq.ParquetFile(Path(sweep_dir) / FRAMES)
    ids = json.loads((pf.schema_arrow.metadata or {}).get(b"trial_ids", b"[]"))
    if trial_id not in ids:
        raise KeyError(f"trial_id={trial_id!r} has no frame scores in {sweep_dir}; trials with scores: {', '.join(ids) or 'none'}")
    return pf.read_row_group(ids.index(trial_id))


def _cast(table: pa.Table, types: dict[str, pa.DataType], where: str) -> pa.Table:
    """`table` with the named columns cast (to null: all-null columns); one that cannot be cast stays as it is,
    with a warning."""
    for i, name in enumerate(table.column_names):
        typ, old = types.get(name), table.schema.field(i).type
        if typ is None or old == typ:
            continue
        try:
            table = table.set_column(i, name, pa.nulls(len(table)) if typ == pa.null() else table.column(i).cast(typ))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            warnings.warn(f"{where}: column {name!r} is {old}, cannot cast to {typ} ({e}); kept as {old}")
    return table


def _schema_types(table: pa.Table) -> dict[str, pa.DataType]:
    """The schema's type of each column of `table`; null for an all-null column no rule covers (it says nothing)."""
    types = {n: column_type(n) for n in table.column_names}
    return {n: typ or pa.null() for n, typ in types.items() if typ or table[n].null_count == len(table)}


def concat(tables: dict[str, pa.Table]) -> pa.Table:
    """Union of sweeps' tables ({sweep: table}) whose columns differ: each cast to the schema first (files of the
    older, value-inferred aggregator hold all-null string columns such as `seconds`), missing columns null,
    int/float mixes promoted. A column whose types still clash (uncastable values, differently inferred columns)
    becomes string in the union, with a warning naming the sweeps: one odd sweep must not stop every publish."""
    tables = {k: _cast(t, _schema_types(t), f"{k}/{TRIALS}") for k, t in tables.items()}
    seen: dict[str, dict[str, pa.DataType]] = {}
    for k, t in tables.items():
        for f in t.schema:
            seen.setdefault(f.name, {})[k] = f.type
    clash = {}
    for name, types in seen.items():
        try:
            pa.unify_schemas([pa.schema([(name, typ)]) for typ in types.values()], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            clash[name] = pa.string()
            warnings.warn(f"{ALL_TRIALS}: column {name!r} has clashing types ({', '.join(f'{typ} in {k}' for k, typ in types.items())}); "
                          "string in the union until those sweeps are re-aggregated")
    return pa.concat_tables([_cast(t, clash, k) for k, t in tables.items()], promote_options="permissive")


def update_all_trials(results_dir: str | Path) -> Path:
    """Rebuild results/all_trials.parquet from every results/*/trials.parquet, under an exclusive lock."""
    results_dir = Path(results_dir)
    out = results_dir / ALL_TRIALS
    with atomic.build_lock(out):
        tables = {f.parent.name: pq.read_table(f) for f in sorted(results_dir.glob(f"*/{TRIALS}"))}
        tables = {k: t for k, t in tables.items() if t.num_rows}
        _write_table(concat(tables) if tables else rows_to_table([]), out)
    return out


def aggregate(sweep_dir: str | Path) -> dict[str, Path]:
    """Build results/<sweep>/trials.parquet and frame_scores.parquet from trials/*/, then all_trials.parquet.

    Returns {"trials": ..., "frame_scores": ..., "all_trials": ...}. A sweep with no trials/ folder is an
    error naming the folder.
    """
    from vadcore.errors import ConfigError

    sweep_dir = Path(sweep_dir).resolve()
    trials_dir = sweep_dir / TRIALS_DIR
    if not trials_dir.is_dir():
        raise ConfigError(f"{trials_dir} does not exist: nothing to aggregate (run `python -m sweeps run {sweep_dir.name}` first)")
    trial_dirs = sorted(p.parent for p in trials_dir.glob(f"*/{PLAN}"))
    commit = git_commit()
    with atomic.build_lock(sweep_dir / TRIALS):
        table = rows_to_table([trial_row(d, sweep_dir.name, commit) for d in trial_dirs])
        _write_table(table, sweep_dir / TRIALS)
        write_frame_scores(trial_dirs, sweep_dir / FRAMES)
    return {"trials": sweep_dir / TRIALS, "frame_scores": sweep_dir / FRAMES, "all_trials": update_all_trials(sweep_dir.parent)}
