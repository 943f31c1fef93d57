"""The model-free floors (`vadcore.baselines`) as the report and the terminal summary show them: trial.json's
metrics.baselines.<name> (test) and metrics.dev_baselines.<name>, a label and a definition each. Kept apart from
vadcore.baselines, which pulls in torch, so that a summary or a report reads these names alone."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from results.rows import AUCS, bench_key, num

FLOORS = {
    "frame_difference": ("frame difference", "mean |x_t − x_{t−1}| over the pixels of the trials' shard frames (at their "
                                             "resolution, not the originals); a video's first frame takes its successor's value"),
    "position": ("position in video", "the frame's index in its video / (n − 1); reads no pixel, so it rewards any "
                                      "trend of the labels within a video under per-video min-max"),
    "flow_magnitude": ("optical flow magnitude", "OpenCV Farneback flow between consecutive grey frames at half the benchmark's "
                                                 "native size (pyramid 0.5, 3 levels, window 15, 3 iterations, poly 5 / 1.2), "
                                                 "magnitude in native pixels per frame, the largest mean over 32×32 native patches "
                                                 "every 16 pixels; motion energy, the strongest floor on Ped2"),
    "difference_patch": ("frame difference, native patch max", "|x_t − x_{t−1}| averaged over channels at the benchmark's native "
                                                               "size, the largest mean over 32×32 patches every 16 pixels"),
}
NATIVE = ("flow_magnitude", "difference_patch")  # computed on the benchmark's own frames, whatever the trials' size


def verdict(below: list[dict[str, Any]], short: bool = False) -> str:
    """In words, whether the seeds of one variant beat every floor: `below` holds each seed's metrics.below_floor
    ({protocol: "" or "flow_magnitude 0.916"}). "above every floor", or "BELOW optical flow magnitude: auc_micro
    (3 of 3 seeds), auc_micro_global (2 of 3 seeds)" (short, for a terminal: "BELOW optical flow magnitude: micro
    3/3, global 2/3"); "" when no seed was checked (trials older than the check)."""
    checked = [b for b in below if b]
    if not checked:
        return ""
    under: dict[str, int] = {}
    names: list[str] = []
    for b in checked:
        for protocol, floor in b.items():
            if floor:
                under[protocol] = under.get(protocol, 0) + 1
                if (name := label(floor.split()[0]).removeprefix("baseline: ")) not in names:
                    names.append(name)
    if not under:
        return "above every floor"
    if short:
        return f"BELOW {' / '.join(names)}: " + ", ".join(f"{p.removeprefix('auc_').removeprefix('micro_')} {n}/{len(checked)}" for p, n in under.items())
    return f"BELOW {' / '.join(names)}: " + ", ".join(f"{p} ({n} of {len(checked)} seeds)" for p, n in under.items())


def label(name: str) -> str:
    """A floor's row label: "baseline: frame difference"."""
    return "baseline: " + FLOORS.get(name, (name.replace("_", " "),))[0]


@dataclass(frozen=True)
class Floor:
    """A model-free baseline's AUCs on one benchmark at one shard resolution, evaluated as the variants' S is."""

    benchmark: str
    frames: str  # the shard frames it saw, "64x96 grey"
    name: str  # a key of FLOORS (or an unknown baseline's own name)
    aucs: dict[str, float | None]  # AUCS

    @property
    def label(self) -> str:
        return label(self.name)


def frames(r: dict[str, Any], name: str | None = None) -> str:
    """The frames a floor saw: the trial's shard size ("64x96 grey"), or "native" for the NATIVE floors."""
    if name in NATIVE:
        return "native"
    h, w, c = (r.get(f"config.data.{k}") for k in ("height", "width", "channels"))
    return f"{h or '?'}x{w or '?'}" + {1: " grey", 3: " RGB"}.get(c, "")


def floors_of(rows: list[dict[str, Any]], prefix: str = "") -> list[Floor]:
    """The floors of the finished trials, one per (benchmark, shard resolution, baseline), in benchmark order;
    prefix "dev_": the development split's. Trials of one benchmark at one resolution share one cached baselines
    stage, so the first trial's numbers stand for all; another resolution is another floor (frame difference
    depends on it), while the NATIVE floors are one per benchmark whatever the trials' resolution (the first
    trial's smoothing stands for all)."""
    found = re.compile(rf"metrics\.{prefix}baselines\.(\w+)\.auc_micro")
    out: dict[tuple[str, str, str], Floor] = {}
    for r in rows:
        if r["status"] != "finished":
            continue
        for name in (m.group(1) for k, v in r.items() if (m := found.fullmatch(k)) and num(v) is not None):
            key = (r["benchmark"], frames(r, name), name)
            out.setdefault(key, Floor(*key, {a: num(r.get(f"metrics.{prefix}baselines.{name}.{a}")) for a in AUCS}))
    known = list(FLOORS)
    return sorted(out.values(), key=lambda f: (bench_key(f.benchmark), f.frames, known.index(f.name) if f.name in known else len(known), f.name))
