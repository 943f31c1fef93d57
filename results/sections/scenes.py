"""Per-scene AUCs of each model of a benchmark with several scenes: unified models (one over every scene) beside
separate ones (a per-scene grid entry's trials joined into one row), and HGAD's homogeneous-mapping check of each."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from results.aggregate import FRAMES
from results.document import Doc
from results.layout import per_scene_parts
from results.rows import AUCS, bench_key, fmt, mean, num, pyplot, trial_frames, trial_score


@dataclass
class ModelSet:
    """The trials of one scene-section row: a unified variant's trial per seed, or a per-scene grid entry's
    trials (separate models, `results.layout.per_scene_name`) joined, per seed, into one set of models."""

    name: str  # the variant, or the per-scene grid entry's name
    separate: bool
    seeds: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def label(self) -> str:
        kinds = sorted({str(r.get("config.flow.prior.kind", "?")) for rs in self.seeds.values() for r in rs})
        return f"{self.name} (prior {', '.join(kinds)}" + (", a model per scene)" if self.separate else ")")


def model_sets(rows: list[dict[str, Any]], order: list[str]) -> list[ModelSet]:
    """One benchmark's finished trials as scene-section rows, in the variants' order."""
    sets: dict[str, ModelSet] = {}
    for r in sorted(rows, key=lambda r: order.index(r["variant"])):
        parts = per_scene_parts(r["variant"])
        name = parts[0] if parts else r["variant"]
        sets.setdefault(name, ModelSet(name, parts is not None)).seeds.setdefault(r["seed"], []).append(r)
    return list(sets.values())


def protocol_aucs(labels: np.ndarray, videos: np.ndarray, s_video: np.ndarray, s_global: np.ndarray) -> dict[str, float | None]:
    """The evaluator's AUCS (`vadcore.evaluate.protocol_aucs`) of frames whose score is normalised per video
    (s_video) and over the model's test set (s_global); None where the frames are all of one class (a scene
    without anomalies) or, for auc_macro, where no video has both."""
    from vadcore.evaluate import protocol_aucs as evaluated

    if len(np.unique(labels)) < 2:
        return dict.fromkeys(AUCS)
    return {k: num(v) for k, v in evaluated(labels, videos, s_video, s_global).items()}


ALL_SCENES = "all scenes"


def scene_aucs(sweep_dir: Path, trials: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """{scene or ALL_SCENES: AUCS} of one set of models (one seed): each trial's S as its evaluation forms it
    (`results.rows.trial_score`: its whole score config, per-video min-max, or over its own test set for
    micro_global), then the trials' frames pooled. One unified trial: ALL_SCENES is its own auc_*, and a scene
    its per_scene_auc. Separate models: the AUCs over the union of the per-scene models' frames, each model's
    scores normalised by that model's protocol."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("label", "video", "scene", "video_s", "global_s")}
    for r in trials:
        frames = trial_frames(sweep_dir, r)
        for key, normalise in (("video_s", "video"), ("global_s", "global")):
            cols[key].append(trial_score(r, frames, normalise).score)
        cols["label"].append(frames["label"].astype(int))
        cols["video"].append(np.char.add(f"{r['trial_id']}/", frames["video"].astype(str)))  # a video id per trial
        cols["scene"].append(frames["scene"].astype(str))
    a = {k: np.concatenate(v) for k, v in cols.items()}
    out = {ALL_SCENES: protocol_aucs(a["label"], a["video"], a["video_s"], a["global_s"])}
    for s in sorted(set(a["scene"].tolist())):
        sel = a["scene"] == s
        out[s] = protocol_aucs(a["label"][sel], a["video"][sel], a["video_s"][sel], a["global_s"][sel])
    return out


def scene_section(doc: Doc, sweep_dir: Path, rows: list[dict[str, Any]], order: list[str]) -> None:
    """Models over every scene (unified variants, one row each) beside separate models (a per_scene grid entry,
    its per-scene trials joined into one row), per scene and over all scenes, from the frame scores; then the
    homogeneous-mapping check of each."""
    plt = pyplot()
    doc.h("Per-scene AUC by prior")
    ok = [r for r in rows if r["status"] == "finished"]
    if not (sweep_dir / FRAMES).is_file():
        doc.p(f"no {FRAMES}: the per-scene AUCs are computed from the frame scores")
        return
    doc.p("Each cell: auc_micro / auc_micro_global / auc_macro (mean over seeds) on the scene's test frames; "
          f"'{ALL_SCENES}': every test frame. Every model's S is formed as its trial's evaluation forms it (Eq. 9 min-max "
          "within each video; for auc_micro_global, over that model's whole test set). A row 'a model per scene' "
          "joins separate models, one ITAE and flows trained on each scene alone: its scene cells are those "
          f"models' own AUCs, and its '{ALL_SCENES}' AUCs are taken over the union of their frame scores, each "
          "model's scores normalised over its own scene's test set (auc_macro: the mean over every video of every scene).")
    for b in sorted({r["benchmark"] for r in ok}, key=bench_key):
        sets = model_sets([r for r in ok if r["benchmark"] == b], order)
        cells = {m.name: [scene_aucs(sweep_dir, trials) for trials in m.seeds.values()] for m in sets}
        scenes = sorted({s for per_seed in cells.values() for c in per_seed for s in c} - {ALL_SCENES})
        if len(scenes) < 2 and not any(m.separate for m in sets):
            doc.p(f"{b}: one scene only: no per-scene AUC")
            continue

        def cell(name: str, scene: str, auc: str) -> float | None:
            return mean([c.get(scene, {}).get(auc) for c in cells[name]])

        doc.table([f"{b}: variant", "trials", ALL_SCENES, *scenes],
                  [[m.label(), sum(map(len, m.seeds.values())),
                    *(" / ".join(fmt(cell(m.name, s, a)) for a in AUCS) for s in (ALL_SCENES, *scenes))] for m in sets])
        fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(scenes) * len(sets)), 3.6))
        w = 0.8 / len(sets)
        for j, m in enumerate(sets):
            ax.bar(np.arange(len(scenes)) + j * w, [np.nan if (v := cell(m.name, s, "auc_micro")) is None else v for s in scenes], w, label=m.label())
        ax.set_xticks(np.arange(len(scenes)) + 0.4 - w / 2, scenes)
        ax.set(ylabel="frame AUC (auc_micro)", title=f"{b}: per-scene AUC", ylim=(0, 1))
        ax.legend(fontsize=8)
        doc.figure(f"per-scene-{b}", fig, f"per-scene auc_micro on {b}, one bar per prior (and separate models)")
        homogeneous_table(doc, b, sets, scenes)


HOMOGENEOUS_PATHS = ("app", "mot")


def homogeneous_table(doc: Doc, bench: str, sets: list[ModelSet], scenes: list[str]) -> None:
    """Per scene, the fraction of anomalous test windows each flow maps below the 95th percentile of the normal
    training NLL (metrics.homogeneous; HGAD's 'homogeneous mapping'; lower is better), per row of the AUC table."""
    def value(m: ModelSet, trials: list[dict[str, Any]], path: str, scene: str | None) -> float | None:
        if scene is None:  # every test window: one unified model's pooled fraction; separate models have none
            return None if m.separate else num(trials[0].get(f"metrics.homogeneous.{path}.all"))
        if m.separate:  # the scene's own model: its fraction over all its windows
            return next((num(r.get(f"metrics.homogeneous.{path}.all")) for r in trials if per_scene_parts(r["variant"])[1] == scene), None)
        return num(trials[0].get(f"metrics.homogeneous.{path}.per_scene.{scene}"))

    cols = [(m, p) for m in sets for p in HOMOGENEOUS_PATHS]
    grid = {(m.name, p, s): mean([value(m, t, p, s) for t in m.seeds.values()]) for m, p in cols for s in (*scenes, None)}
    if all(v is None for v in grid.values()):
        doc.p(f"{bench}: no trial reports metrics.homogeneous: no homogeneous-mapping table")
        return
    doc.p(f"{bench}: homogeneous mapping (HGAD): the fraction of anomalous test windows whose flow NLL lies below the 95th "
          "percentile of the normal training windows' NLL, per flow (app, mot); lower is better: the flow keeps anomalies "
          "out of its normal region. Separate models: each scene's model on its own windows; 'mean over scenes' is the "
          "unweighted mean of the scene rows, 'all test windows' one unified model's pooled fraction (separate models: —), "
          "against the pooled percentile: where scenes' NLLs sit at different levels it counts the scene offset (on "
          "ped2+avenue it equals the share of Ped2's anomalous windows), so read the scene rows.")
    rows = [[s, *(fmt(grid[(m.name, p, s)]) for m, p in cols)] for s in scenes]
    rows.append(["mean over scenes", *(fmt(mean([grid[(m.name, p, s)] for s in scenes])) for m, p in cols)])
    rows.append(["all test windows", *(fmt(grid[(m.name, p, None)]) for m, p in cols)])
    doc.table([f"{bench}: scene", *(f"{m.name} {p}" for m, p in cols)], rows)
