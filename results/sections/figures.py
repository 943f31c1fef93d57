"""The report's figures from the frame scores: ROC curves per benchmark and the best variant's score timelines (the
ITAE paper's Fig. 5), every score taken through the trial's own score config (`results.rows.trial_score`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from results.document import Doc
from results.rows import by_variant, bench_key, fmt, mean, num, pyplot, runs, trial_frames, trial_score

MAX_ROC_LINES = 10  # a search has many trials: the ROC plot keeps the best ones
TIMELINE_VIDEOS = 3  # test videos per benchmark in the Fig. 5-like timelines


def roc_section(doc: Doc, sweep_dir: Path, rows: list[dict[str, Any]], order: list[str], key: str, lines: int = MAX_ROC_LINES) -> None:
    from vadcore.evaluate import roc_points

    plt = pyplot()
    doc.h("ROC curves (final score, per-video normalised)")
    ok = [r for r in rows if r["status"] == "finished"]
    for b in sorted({r["benchmark"] for r in ok}, key=bench_key):
        firsts = {}
        for r in sorted((r for r in ok if r["benchmark"] == b), key=lambda r: r["seed"]):
            firsts.setdefault(r["variant"], r)
        picked = sorted(firsts.values(), key=lambda r: -(num(r.get(f"metrics.{key}")) or 0))[:lines]
        picked.sort(key=lambda r: order.index(r["variant"]))
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        for r in picked:
            frames = trial_frames(sweep_dir, r)
            labels = frames["label"].astype(int)
            if labels.min() == labels.max():
                continue
            fpr, tpr = roc_points(labels, trial_score(r, frames, "video").score)  # the curve whose area is auc_micro
            ax.plot(fpr, tpr, label=f"{r['variant']} ({fmt(num(r.get('metrics.auc_micro')))})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{b}: frame-level ROC (seed {picked[0]['seed']})")
        ax.legend(fontsize=8, loc="lower right")
        doc.figure(f"roc-{b}", fig, f"ROC per variant on {b}; legend: auc_micro")


def timeline_section(doc: Doc, sweep_dir: Path, rows: list[dict[str, Any]], key: str) -> None:
    """S and its parts as S sums them (smoothed and normalised as the trial's score config says) over a few
    anomalous test videos of the best variant."""
    plt = pyplot()
    doc.h("Score timelines of the best variant (ground-truth anomalies shaded)")
    ok = [r for r in rows if r["status"] == "finished"]
    for b in sorted({r["benchmark"] for r in ok}, key=bench_key):
        g = {v: rs for (bb, v), rs in by_variant(ok).items() if bb == b}
        best = max(g, key=lambda v: mean([r.get(f"metrics.{key}") for r in g[v]]) or -1)
        r = min(g[best], key=lambda r: r["seed"])
        frames = trial_frames(sweep_dir, r)
        scores = trial_score(r, frames)
        videos, labels = frames["video"].astype(str), frames["label"].astype(int)
        chosen = [v for v in sorted(set(videos.tolist())) if labels[videos == v].any()][:TIMELINE_VIDEOS]
        if not chosen:
            continue
        fig, axes = plt.subplots(len(chosen), 1, figsize=(11, 2.3 * len(chosen)), squeeze=False)
        for ax, v in zip(axes[:, 0], chosen):
            sel = np.flatnonzero(videos == v)
            sel = sel[np.argsort(frames["frame"][sel])]
            frame = frames["frame"][sel]
            step = float(np.median(np.diff(frame))) if len(frame) > 1 else 1.0
            for s, e in runs(labels[sel] == 1):
                ax.axvspan(frame[s] - step / 2, frame[e] + step / 2, color="tab:red", alpha=0.15, lw=0)
            ax.plot(frame, scores.score[sel], color="black", lw=1.4, label="score S")
            for part, color, label in ((scores.r, "tab:blue", "R"), (scores.l, "tab:green", "L"), (scores.local, "tab:orange", "local L")):
                if part is not None:
                    ax.plot(frame, part[sel], color=color, lw=0.9, alpha=0.8, label=f"{label}, as in S")
            ax.set_ylabel(v, fontsize=8)
            ax.set_xlim(frame[0] - step, frame[-1] + step)
        axes[0, 0].legend(fontsize=8, loc="upper right", ncol=4)
        axes[0, 0].set_title(f"{b}: {best} ({r['trial_id']}), shaded = ground-truth anomalous frames")
        axes[-1, 0].set_xlabel("frame")
        doc.figure(f"timeline-{b}", fig, f"per-video scores on {b}, best variant {best} (like the ITAE paper's Fig. 5); "
                   "each part smoothed and normalised as it enters S")
