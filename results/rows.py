"""trials.parquet rows as the report reads them: numbers and their cells, grouping and order of trials, and each
trial's score config and frame scores (`trial_score`: its S through `vadcore.scoring.trial_scores`, as the
pipeline formed it)."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from results.aggregate import load_frame_scores

BENCH_ORDER = ("ped2", "avenue", "shanghaitech", "synthetic")
AUCS = ("auc_micro", "auc_micro_global", "auc_macro")


def num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def fmt(v: float | None, digits: int = 3) -> str:
    """.959-style, like the paper's tables; "—" for no value."""
    if v is None:
        return "—"
    s = f"{v:.{digits}f}"
    return s.replace("0.", ".", 1) if s.startswith("0.") else s.replace("-0.", "-.", 1)


def mean_std(values: list[Any], digits: int = 4) -> str:
    vals = [x for x in map(num, values) if x is not None]
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


def mean(values: list[Any]) -> float | None:
    vals = [x for x in map(num, values) if x is not None]
    return float(np.mean(vals)) if vals else None


def bench_key(b: str) -> tuple[int, str]:
    return (BENCH_ORDER.index(b) if b in BENCH_ORDER else len(BENCH_ORDER), b)


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {s: sum(r["status"] == s for r in rows) for s in ("finished", "failed", "stopped")}


def none_finished(n: dict[str, int]) -> str:
    """What a sweep without a finished trial shows instead of numbers: "no trial finished: 3 failed, 1 stopped"."""
    return "no trial finished: " + (", ".join(f"{n[s]} {s}" for s in ("failed", "stopped") if n[s]) or "no trials")


def by_variant(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["benchmark"], r["variant"]), []).append(r)
    return out


def variant_order(rows: list[dict[str, Any]], first: tuple[str, ...] = ()) -> list[str]:
    """The variants of `rows`: those named in `first` (a paper table's columns) in its order, then the rest sorted."""
    names = sorted({r["variant"] for r in rows})
    lead = [c for c in first if c in names]
    return lead + [n for n in names if n not in lead]


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end] index pairs of the True runs of a boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spearman(x: list[float], y: list[float]) -> float:
    rx, ry = (np.argsort(np.argsort(np.asarray(v, float))) for v in (x, y))
    c = np.corrcoef(rx, ry)[0, 1]
    return float(c) if np.isfinite(c) else float("nan")


def score_config(row: dict[str, Any]):
    """The trial's whole `score` config (`vadcore.scoring.ScoreConfig`) from its config.score.* columns (lists are
    JSON strings there). vadcore.scoring is imported here, not above: it pulls in torch, which only scores need."""
    from vadcore.configtools import from_dict
    from vadcore.scoring import ScoreConfig

    fields = {f.name for f in dataclasses.fields(ScoreConfig)}
    values = {k: row[f"config.score.{k}"] for k in fields if row.get(f"config.score.{k}") is not None}
    values = {k: json.loads(v) if isinstance(v, str) and v.startswith("[") else v for k, v in values.items()}
    return from_dict(ScoreConfig, values, source=f"trials.parquet, trial {row.get('trial_id')}")


def trial_frames(sweep_dir: Path, row: dict[str, Any]) -> dict[str, np.ndarray]:
    """The trial's frame_scores columns (its row group of frame_scores.parquet), as numpy arrays."""
    table = load_frame_scores(sweep_dir, row["trial_id"])
    return {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}


def trial_score(row: dict[str, Any], frames: dict[str, np.ndarray], normalise: str | None = None):
    """The trial's S and normalised parts (`vadcore.scoring.Scores`) from its frames, under its own score config
    (`normalise` in place of its own: the protocols need both): what its evaluation computed, by the same function."""
    from vadcore.scoring import trial_scores

    return trial_scores(score_config(row), frames, normalise)
