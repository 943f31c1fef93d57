"""A sweep's Parquet tables -> report.md and a self-contained report.html; all sweeps -> index.md/index.html.

    python -m sweeps report ablation-paths                # re-aggregate trials/ (if present), rebuild the report
    python -m sweeps report search --results /tmp/results
    just report ablation-paths && just report-screenshot ablation-paths

Reads only results/<sweep>/trials.parquet and frame_scores.parquet (and, for a search, optuna.db for the
parameter importances): Ray's ray/ folder is never opened, so it may be deleted. report.md shows its figures
from report_files/*.png beside it; report.html embeds them as base64 PNGs (one file to mail or open).
"""
from __future__ import annotations

import base64
import html
import io
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from results.aggregate import FRAMES, TRIALS, aggregate, load_frame_scores
from results.paper import PAPER_TABLES, PaperTable
from vadcore import atomic
from vadcore.data.devsplit import KINDS

BENCH_ORDER = ("ped2", "avenue", "shanghaitech", "synthetic")
AUCS = ("auc_micro", "auc_micro_global", "auc_macro")
MAX_ROC_LINES = 10  # a search has many trials: the ROC plot keeps the best ones
TIMELINE_VIDEOS = 3  # test videos per benchmark in the Fig. 5-like timelines


# ---------------------------------------------------------------------------------------------- document


@dataclass
class Doc:
    """Blocks rendered twice: Markdown (figures as files beside it) and HTML (figures embedded)."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", (headers, rows)))

    def figure(self, name: str, fig, caption: str) -> None:
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        self.blocks.append(("figure", (name, buf.getvalue(), caption)))

    def to_markdown(self, figure_dir: str) -> str:
        out = [f"# {self.title}", ""]
        for kind, b in self.blocks:
            if kind == "h":
                out += ["#" * b[0] + " " + b[1], ""]
            elif kind == "p":
                out += [b, ""]
            elif kind == "table":
                headers, rows = b
                out.append("| " + " | ".join(headers) + " |")
                out.append("|" + "|".join("---" for _ in headers) + "|")
                out += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
                out.append("")
            elif kind == "figure":
                name, _, caption = b
                out += [f"![{caption}]({figure_dir}/{name}.png)", "", f"*{caption}*", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        e = html.escape
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(self.title)}</title><style>{CSS}</style></head><body>",
               f"<h1>{e(self.title)}</h1>"]
        for kind, b in self.blocks:
            if kind == "h":
                out.append(f"<h{b[0]}>{e(b[1])}</h{b[0]}>")
            elif kind == "p":
                out.append(f"<p>{e(b)}</p>")
            elif kind == "table":
                headers, rows = b
                out.append("<table><thead><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in headers) + "</tr></thead><tbody>")
                out += ["<tr>" + "".join(f"<td{_NUMERIC if _is_numeric(c) else ''}>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows]
                out.append("</tbody></table>")
            elif kind == "figure":
                _, png, caption = b
                out.append(f"<figure><img alt='{e(caption)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                           f"<figcaption>{e(caption)}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


_NUMERIC = " class='n'"


def _is_numeric(cell: Any) -> bool:
    """Numbers (and '.959', '0.9 ± 0.01', '—', '+.003') align right; words align left."""
    return bool(re.fullmatch(r"[-+.\d ±—,]+", str(cell)))


CSS = ("body{font-family:system-ui,sans-serif;max-width:1300px;margin:1em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}td.n{text-align:right}"
       "th{background:#f2f2f2}figure{margin:1em 0}img{max-width:100%}"
       "figcaption{font-size:13px;color:#555}h2{border-bottom:1px solid #ddd;padding-bottom:3px}")


# ---------------------------------------------------------------------------------------------- helpers


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _fmt(v: float | None, digits: int = 3) -> str:
    """.959-style, like the paper's tables; "—" for no value."""
    if v is None:
        return "—"
    s = f"{v:.{digits}f}"
    return s.replace("0.", ".", 1) if s.startswith("0.") else s.replace("-0.", "-.", 1)


def _mean_std(values: list[Any], digits: int = 4) -> str:
    vals = [x for x in map(_num, values) if x is not None]
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


def _mean(values: list[Any]) -> float | None:
    vals = [x for x in map(_num, values) if x is not None]
    return float(np.mean(vals)) if vals else None


def _bench_key(b: str) -> tuple[int, str]:
    return (BENCH_ORDER.index(b) if b in BENCH_ORDER else len(BENCH_ORDER), b)


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {s: sum(r["status"] == s for r in rows) for s in ("finished", "failed", "stopped")}


def _none_finished(n: dict[str, int]) -> str:
    """What a sweep without a finished trial shows instead of numbers: "no trial finished: 3 failed, 1 stopped"."""
    return "no trial finished: " + (", ".join(f"{n[s]} {s}" for s in ("failed", "stopped") if n[s]) or "no trials")


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["benchmark"], r["variant"]), []).append(r)
    return out


def _variant_order(rows: list[dict[str, Any]], paper: PaperTable | None) -> list[str]:
    names = sorted({r["variant"] for r in rows})
    first = [c for c in paper.columns if c in names] if paper else []
    return first + [n for n in names if n not in first]


def _minmax(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    lo, hi = np.nanmin(a), np.nanmax(a)
    return np.zeros_like(a) if not np.isfinite(hi - lo) or hi == lo else (a - lo) / (hi - lo)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end] index pairs of the True runs of a boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# vadcore.baselines' floors, as trial.json's metrics.baselines.<name> (test) and metrics.dev_baselines.<name>:
# their label in the tables and what they are. Kept here: importing vadcore.baselines would pull in torch.
FLOORS = {
    "frame_difference": ("frame difference", "mean |x_t − x_{t−1}| over the pixels of the trials' shard frames (at their "
                                             "resolution, not the originals); a video's first frame takes its successor's value"),
    "position": ("position in video", "the frame's index in its video / (n − 1); reads no pixel, so it rewards any "
                                      "trend of the labels within a video under per-video min-max"),
}


@dataclass(frozen=True)
class Floor:
    """A model-free baseline's AUCs on one benchmark at one shard resolution, evaluated as the variants' S is."""

    benchmark: str
    frames: str  # the shard frames it saw, "64x96 grey"
    name: str  # a key of FLOORS (or an unknown baseline's own name)
    aucs: dict[str, float | None]  # AUCS

    @property
    def label(self) -> str:
        return "baseline: " + FLOORS.get(self.name, (self.name.replace("_", " "),))[0]


def _frames(r: dict[str, Any]) -> str:
    h, w, c = (r.get(f"config.data.{k}") for k in ("height", "width", "channels"))
    return f"{h or '?'}x{w or '?'}" + {1: " grey", 3: " RGB"}.get(c, "")


def _floors(rows: list[dict[str, Any]], prefix: str = "") -> list[Floor]:
    """The floors of the finished trials, one per (benchmark, shard resolution, baseline), in benchmark order;
    prefix "dev_": the development split's. Trials of one benchmark at one resolution share one cached baselines
    stage, so the first trial's numbers stand for all; another resolution is another floor (frame difference
    depends on it)."""
    found = re.compile(rf"metrics\.{prefix}baselines\.(\w+)\.auc_micro")
    out: dict[tuple[str, str, str], Floor] = {}
    for r in rows:
        if r["status"] != "finished":
            continue
        for name in (m.group(1) for k, v in r.items() if (m := found.fullmatch(k)) and _num(v) is not None):
            key = (r["benchmark"], _frames(r), name)
            out.setdefault(key, Floor(*key, {a: _num(r.get(f"metrics.{prefix}baselines.{name}.{a}")) for a in AUCS}))
    known = list(FLOORS)
    return sorted(out.values(), key=lambda f: (_bench_key(f.benchmark), f.frames, known.index(f.name) if f.name in known else len(known), f.name))


# ---------------------------------------------------------------------------------------------- sections


def _paper_section(doc: Doc, paper: PaperTable, rows: list[dict[str, Any]]) -> None:
    doc.h(paper.title + ": ours beside the paper's")
    doc.p("ours = mean auc_micro over seeds (the paper's protocol, below); paper = the published number; "
          "Δ = ours − paper. Benchmarks the sweep did not run show —.")
    g = _groups([r for r in rows if r["status"] == "finished"])
    benches = sorted({*paper.rows, *(r["benchmark"] for r in rows)}, key=_bench_key)
    headers = ["benchmark"] + [f"{h} {w}" for h in paper.headers for w in ("ours", "paper", "Δ")]
    table = []
    for b in benches:
        cells: list[Any] = [b]
        for i, col in enumerate(paper.columns):
            ours = _mean([r.get("metrics.auc_micro") for r in g.get((b, col), [])])
            ref = paper.rows[b][i] if b in paper.rows else None
            cells += [_fmt(ours), _fmt(ref), "—" if ours is None or ref is None else f"{ours - ref:+.3f}".replace("0.", ".", 1)]
        table.append(cells)
    doc.table(headers, table)
    floors = _floors(rows)
    if floors:
        doc.p("Floors (no model) on the same test frames, by the same evaluator: each baseline is the only score, normalised "
              "as S is. A variant near a floor learned little beyond it; definitions under Protocol.")
        doc.table(["benchmark", "floor (no model)", "shard frames", *AUCS],
                  [[f.benchmark, f.label, f.frames, *(_fmt(f.aucs[k]) for k in AUCS)] for f in floors])


def _generic_section(doc: Doc, rows: list[dict[str, Any]], order: list[str], search: bool) -> None:
    """Every variant's AUCs and parts. A search's trials show their development-split AUCs only: the test AUC
    of a search is reported for its best trials (the search section), never for all of them to pick from."""
    prefix = "dev_" if search else ""
    doc.h("All variants: frame AUC" + (" on the development split" if search else "") + ", mean ± std over seeds")
    aucs = [prefix + k for k in AUCS]
    parts = [prefix + k for k in ("r_auc_micro", "l_auc_micro", "local_auc_micro")]
    headers = ["benchmark", "variant", "seeds", "status", *aucs, *parts]
    table = []
    floors = _floors(rows, prefix)
    groups = sorted(_groups(rows).items(), key=lambda kv: (_bench_key(kv[0][0]), order.index(kv[0][1])))
    for i, ((b, v), rs) in enumerate(groups):
        ok = [r for r in rs if r["status"] == "finished"]
        status = ", ".join(f"{n} {s}" for s in ("finished", "failed", "stopped") if (n := sum(r["status"] == s for r in rs)))
        table.append([b, v, ",".join(str(r["seed"]) for r in rs), status,
                      *(_mean_std([r.get(f"metrics.{k}") for r in ok]) for k in (*aucs, *parts))])
        if i + 1 == len(groups) or groups[i + 1][0][0] != b:  # the benchmark's floors under its variants
            table += [[b, f.label, "—", f"no model, {f.frames} frames", *(_mean_std([f.aucs[k]]) for k in AUCS), *("—" for _ in parts)]
                      for f in floors if f.benchmark == b]
    doc.table(headers, table)
    if floors:
        doc.p("baseline rows: floors that need no model (definitions under Protocol), evaluated as the variants' S")


DEV_CHECK = ("auc_micro", "auc_micro_global")  # the protocols the development-split check sets side by side


def _dev_section(doc: Doc, rows: list[dict[str, Any]], order: list[str]) -> None:
    """A grid sweep that scored the development split (`data.dev`): each variant's dev AUCs beside its test AUCs,
    the floors on both, and how the two rank the finished trials. It checks the split (does it order models as
    the test set does?); a setting chosen by its test columns would be chosen on test labels."""
    done = [r for r in rows if r["status"] == "finished" and _num(r.get("metrics.dev_auc_micro")) is not None]
    if not done:
        return
    doc.h("Development split beside the test set")
    doc.p("dev: the development split, which choices are made on (held-out training videos and pseudo-anomalous copies); "
          "test: the held-out test videos. Mean ± "
          "std over seeds. This checks the development split, it is not a way to choose: a choice read off the test "
          "columns is a choice on test labels.")
    table = [[b, v, ",".join(str(r["seed"]) for r in rs), *(_mean_std([r.get(f"metrics.{p}{k}") for r in rs]) for p in ("dev_", "") for k in DEV_CHECK)]
             for (b, v), rs in sorted(_groups(done).items(), key=lambda kv: (_bench_key(kv[0][0]), order.index(kv[0][1])))]
    dev_floors = {(f.benchmark, f.frames, f.name): f for f in _floors(done, "dev_")}
    table += [[f.benchmark, f"{f.label}, {f.frames}", "—", *(_mean_std([d.aucs[k]]) for k in DEV_CHECK), *(_mean_std([f.aucs[k]]) for k in DEV_CHECK)]
              for f in _floors(done) if (d := dev_floors.get((f.benchmark, f.frames, f.name)))]
    doc.table(["benchmark", "variant", "seeds", *(f"dev {k}" for k in DEV_CHECK), *(f"test {k}" for k in DEV_CHECK)], table)
    for b in sorted({r["benchmark"] for r in done}, key=_bench_key):
        pairs = {k: [(_num(r.get(f"metrics.dev_{k}")), _num(r.get(f"metrics.{k}"))) for r in done if r["benchmark"] == b] for k in DEV_CHECK}
        n = len(pairs[DEV_CHECK[0]])
        if n >= 3 and all(None not in pair for ps in pairs.values() for pair in ps):
            doc.p(f"{b}: Spearman rank correlation of dev with test over the {n} finished trials: "
                  + ", ".join(f"{k} {_spearman(*map(list, zip(*ps))):+.3f}" for k, ps in pairs.items())
                  + " (1: the development split orders the trials as the test set does; near 0: it cannot choose between them)")
    _dev_kinds_table(doc, done, order)


def _dev_kinds_table(doc: Doc, done: list[dict[str, Any]], order: list[str]) -> None:
    """Each pseudo-anomaly kind of the development split on its own (its copies only, metrics.dev_kinds.<kind>),
    beside the frame-difference floor on the same copies: a kind that the floor already finds, or that every
    variant finds, cannot rank the variants."""
    kinds = [kind for kind in KINDS if any(_num(r.get(f"metrics.dev_kinds.{kind}.auc_micro")) is not None for r in done)]
    if not kinds:
        return
    doc.p("Per pseudo-anomaly kind (the dev copies of that kind only; dev auc_micro / auc_micro_global of the "
          "whole score, mean over seeds). The floor is frame difference on the same copies, smoothed as the trials' scores.")

    def cell(rs: list[dict[str, Any]], prefix: str) -> str:  # "auc_micro / auc_micro_global", each the mean over rs
        return " / ".join(_fmt(_mean([r.get(f"{prefix}.{k}") for r in rs])) for k in DEV_CHECK)

    table = [[b, v, ",".join(str(r["seed"]) for r in rs), *(cell(rs, f"metrics.dev_kinds.{kind}") for kind in kinds)]
             for (b, v), rs in sorted(_groups(done).items(), key=lambda kv: (_bench_key(kv[0][0]), order.index(kv[0][1])))]
    floors = {}
    for r in done:  # one floor per benchmark and resolution, as _floors
        if _num(r.get(f"metrics.dev_kinds_baselines.{kinds[0]}.frame_difference.auc_micro")) is not None:
            floors.setdefault((r["benchmark"], _frames(r)), r)
    table += [[b, f"baseline: frame difference, {frames}", "—", *(cell([r], f"metrics.dev_kinds_baselines.{kind}.frame_difference") for kind in kinds)]
              for (b, frames), r in sorted(floors.items(), key=lambda kv: (_bench_key(kv[0][0]), kv[0][1]))]
    doc.table(["benchmark", "variant", "seeds", *(f"dev +{kind}" for kind in kinds)], table)


def _count_of(rows: list[dict[str, Any]], key: str, which: str) -> str:
    """'k of n finished trials (which)' for a per-trial flag: variants differ, so no one trial speaks for all."""
    done = [r for r in rows if r["status"] == "finished"]
    return f"{sum(bool(r.get(key)) for r in done)} of {len(done)} finished trials ({which})"


def _protocol_section(doc: Doc, rows: list[dict[str, Any]]) -> None:
    doc.h("Protocol")
    r = next(r for r in rows if r["status"] == "finished")
    prot = {k.removeprefix("metrics.protocol."): v for k, v in r.items() if k.startswith("metrics.protocol.") and v is not None}
    items = [["auc_micro", prot.get("auc_micro", "—")], ["auc_micro_global", prot.get("auc_micro_global", "—")],
             ["auc_macro", prot.get("auc_macro", "—")],
             ["per-video normalisation", f"score.normalise = {r.get('config.score.normalise', '—')} (Eq. 9 min-max within each test video "
                                         "for auc_micro; the reported `auc` follows this setting)"],
             ["lambda_i from test-set NLL ranges (Eq. 8)", _count_of(rows, "metrics.protocol.lambda_from_test_set", "with both flows")],
             ["local excess NLL in S (not in the paper)", f"score.lambda_local = {r.get('config.score.lambda_local', '—')} "
                                                          f"(paths {r.get('config.score.local_paths', '—')}, "
                                                          f"patch {r.get('config.score.local_patch', '—')}); 0 = the paper's Eq. 9"],
             ["temporal smoothing (not in the paper)", f"score.smooth = {r.get('config.score.smooth', '—')}: sigma in frames of a Gaussian over each "
                                                       "video's R, L and local L before the min-max, floors smoothed alike; 0 = the paper"],
             ["dropped frames", "none" if prot.get("dropped_frames") == 0 else prot.get("dropped_frames", "—")],
             ["test stride", r.get("config.data.test_stride", "—")]]
    items += [[f"{f.label} ({f.benchmark}, {f.frames} frames)",
               f"{FLOORS.get(f.name, ('', 'a model-free baseline'))[1]}; no model, scored by the same evaluator as S: "
               + ", ".join(f"{k} {_fmt(f.aucs[k])}" for k in AUCS)] for f in _floors(rows)]
    doc.table(["", "definition used"], items)


def _roc_section(doc: Doc, sweep_dir: Path, rows: list[dict[str, Any]], order: list[str], key: str, lines: int = MAX_ROC_LINES) -> None:
    from vadcore.evaluate import roc_points

    plt = _plt()
    doc.h("ROC curves (final score, per-video normalised)")
    ok = [r for r in rows if r["status"] == "finished"]
    for b in sorted({r["benchmark"] for r in ok}, key=_bench_key):
        firsts = {}
        for r in sorted((r for r in ok if r["benchmark"] == b), key=lambda r: r["seed"]):
            firsts.setdefault(r["variant"], r)
        picked = sorted(firsts.values(), key=lambda r: -(_num(r.get(f"metrics.{key}")) or 0))[:lines]
        picked.sort(key=lambda r: order.index(r["variant"]))
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        for r in picked:
            t = load_frame_scores(sweep_dir, r["trial_id"])
            labels = np.asarray(t["label"].to_numpy(), int)
            if labels.min() == labels.max():
                continue
            fpr, tpr = roc_points(labels, t["score"].to_numpy())
            ax.plot(fpr, tpr, label=f"{r['variant']} ({_fmt(_num(r.get('metrics.auc_micro')))})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{b}: frame-level ROC (seed {picked[0]['seed']})")
        ax.legend(fontsize=8, loc="lower right")
        doc.figure(f"roc-{b}", fig, f"ROC per variant on {b}; legend: auc_micro")


def _timeline_section(doc: Doc, sweep_dir: Path, rows: list[dict[str, Any]], key: str) -> None:
    plt = _plt()
    doc.h("Score timelines of the best variant (ground-truth anomalies shaded)")
    ok = [r for r in rows if r["status"] == "finished"]
    for b in sorted({r["benchmark"] for r in ok}, key=_bench_key):
        g = {v: rs for (bb, v), rs in _groups(ok).items() if bb == b}
        best = max(g, key=lambda v: _mean([r.get(f"metrics.{key}") for r in g[v]]) or -1)
        r = min(g[best], key=lambda r: r["seed"])
        t = load_frame_scores(sweep_dir, r["trial_id"]).to_pydict()
        videos, labels = np.asarray(t["video"]), np.asarray(t["label"], int)
        chosen = [v for v in sorted(set(videos.tolist())) if labels[videos == v].any()][:TIMELINE_VIDEOS]
        if not chosen:
            continue
        fig, axes = plt.subplots(len(chosen), 1, figsize=(11, 2.3 * len(chosen)), squeeze=False)
        for ax, v in zip(axes[:, 0], chosen):
            sel = videos == v
            idx = np.argsort(np.asarray(t["frame"])[sel])
            frame = np.asarray(t["frame"])[sel][idx]
            step = float(np.median(np.diff(frame))) if len(frame) > 1 else 1.0
            for s, e in _runs(labels[sel][idx] == 1):
                ax.axvspan(frame[s] - step / 2, frame[e] + step / 2, color="tab:red", alpha=0.15, lw=0)
            ax.plot(frame, np.asarray(t["score"], float)[sel][idx], color="black", lw=1.4, label="score S")
            ax.plot(frame, _minmax(np.asarray(t["score_r"], float)[sel][idx]), color="tab:blue", lw=0.9, alpha=0.8, label="R, normalised")
            for col, color, label in (("score_l", "tab:green", "L"), ("score_l_local", "tab:orange", "local L")):
                part = np.asarray([np.nan if x is None else x for x in t.get(col, [None] * len(labels))], float)[sel][idx]
                if np.isfinite(part).any():
                    ax.plot(frame, _minmax(part), color=color, lw=0.9, alpha=0.8, label=f"{label}, normalised")
            ax.set_ylabel(v, fontsize=8)
            ax.set_xlim(frame[0] - step, frame[-1] + step)
        axes[0, 0].legend(fontsize=8, loc="upper right", ncol=3)
        axes[0, 0].set_title(f"{b}: {best} ({r['trial_id']}), shaded = ground-truth anomalous frames")
        axes[-1, 0].set_xlabel("frame")
        doc.figure(f"timeline-{b}", fig, f"per-video scores on {b}, best variant {best} (like the ITAE paper's Fig. 5)")


def _importances(sweep_dir: Path) -> tuple[dict[str, dict[str, float]], str | None]:
    """{study name: {param: importance}} from optuna.db with optuna's get_param_importances; (…, reason) on failure."""
    db = sweep_dir / "optuna.db"
    if not db.is_file():
        return {}, f"{db.name} not found"
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        url = f"sqlite:///{db}"
        out = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in optuna.get_all_study_names(storage=url):
                out[name] = dict(optuna.importance.get_param_importances(optuna.load_study(study_name=name, storage=url)))
        return out, None
    except Exception as e:  # optuna missing, too few complete trials, a locked db: fall back, and say so
        return {}, f"{type(e).__name__}: {e}"


def _spearman(x: list[float], y: list[float]) -> float:
    rx, ry = (np.argsort(np.argsort(np.asarray(v, float))) for v in (x, y))
    c = np.corrcoef(rx, ry)[0, 1]
    return float(c) if np.isfinite(c) else float("nan")


BEST_TRIALS = 5  # the search trials whose held-out test AUC the report shows


def _search_section(doc: Doc, sweep_dir: Path, rows: list[dict[str, Any]], objective: str) -> None:
    """History of the objective (a development-split AUC), the best trials with their held-out test AUC, the
    objective's rank correlation with that AUC, the profile's default against the search's best, early stops."""
    plt = _plt()
    key = f"metrics.{objective}"
    done = [r for r in rows if r["status"] == "finished" and _num(r.get(key)) is not None]
    varied = sorted(k for k in {k for r in done for k in r if k.startswith("config.")} if len({str(r.get(k)) for r in done}) > 1)
    doc.h("Optuna search: objective and held-out AUC")
    doc.p(f"objective: {objective}, on the development split (never the test videos); auc_micro / auc_micro_global: the "
          f"held-out test set, shown for the {BEST_TRIALS} best trials by the objective and never optimised")
    for b in sorted({r["benchmark"] for r in done}, key=_bench_key):
        rs = sorted((r for r in done if r["benchmark"] == b), key=lambda r: (r["finished_at"] is None, r["finished_at"] or 0))
        vals = np.array([r[key] for r in rs], float)
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.plot(range(1, len(vals) + 1), vals, "o", label=objective)
        ax.step(range(1, len(vals) + 1), np.maximum.accumulate(vals), where="post", color="tab:red", label="running best")
        ax.set(xlabel="trial (completion order)", ylabel=objective, title=f"{b}: search history")
        ax.legend(fontsize=8)
        doc.figure(f"search-history-{b}", fig, f"{objective} per search trial on {b}, in completion order, with the running best")
        best = sorted(rs, key=lambda r: -r[key])
        doc.table([f"{b}: trial", objective, "auc_micro (test)", "auc_micro_global (test)", *(k.removeprefix("config.") for k in varied)],
                  [[r["variant"], _fmt(r[key], 4), _fmt(_num(r.get("metrics.auc_micro")), 4), _fmt(_num(r.get("metrics.auc_micro_global")), 4),
                    *(str(r.get(k)) for k in varied)] for r in best[:BEST_TRIALS]])
        held = [_num(r.get("metrics.auc_micro")) for r in rs]
        if len(rs) >= 3 and None not in held:
            doc.p(f"{b}: Spearman rank correlation of {objective} with the held-out auc_micro over the {len(rs)} finished trials: "
                  f"{_spearman(list(vals), held):+.3f} (1: the objective ranks trials as the test set would)")
        default = next((r for r in rs if r["variant"] == "default"), None)
        if default is None:
            doc.p(f"{b}: no finished trial with the profile's default values to compare the search's best with")
        else:
            d, top = _num(default.get("metrics.auc_micro")), _num(best[0].get("metrics.auc_micro"))
            if best[0] is default:
                doc.p(f"{b}: the best trial by {objective} is the profile's default config itself ({_fmt(d, 4)} held-out auc_micro): "
                      "the search did not beat the default")
            else:
                verdict = "did not beat" if (top or 0) <= (d or 0) else "beat"
                doc.p(f"{b}: the search's best by {objective} ({best[0]['variant']}: {_fmt(best[0][key], 4)}) has held-out auc_micro "
                      f"{_fmt(top, 4)}; the profile's default config ({_fmt(default[key], 4)}) has {_fmt(d, 4)}: the search {verdict} "
                      "the default on the held-out test set")
    stopped = [r for r in rows if r["status"] == "stopped"]
    if stopped:
        rungs: dict[str, int] = {}
        for r in stopped:
            label = f"ITAE epoch {r['rung']}" if r.get("rung") is not None else "no record (killed)"
            rungs[label] = rungs.get(label, 0) + 1
        doc.p(f"stopped early: {len(stopped)} of {len(rows)} trials (" + ", ".join(f"{n} at {k}" for k, n in sorted(rungs.items())) + ")")
    doc.h("Optuna search: parameter importances")
    imps, why = _importances(sweep_dir)
    if imps:
        doc.p("optuna.importance.get_param_importances (fANOVA) on results/<sweep>/optuna.db")
        for study, imp in imps.items():
            doc.table([f"{study}: parameter", "importance"], [[k, f"{v:.3f}"] for k, v in imp.items()])
        return
    doc.p(f"optuna's importances unavailable ({why}); fallback: |Spearman rank correlation| of each varied config "
          f"field with {objective}, normalised to sum 1 — a correlation, not an importance")
    for b in sorted({r["benchmark"] for r in done}, key=_bench_key):
        rs = [r for r in done if r["benchmark"] == b]
        y = [r[key] for r in rs]
        corr = {}
        for k in varied:
            x = [r.get(k) for r in rs]
            if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in x) or len(set(x)) < 2 or len(rs) < 3:
                continue
            c = _spearman(x, y)
            corr[k.removeprefix("config.")] = abs(c) if np.isfinite(c) else 0.0
        total = sum(corr.values()) or 1.0
        doc.table([f"{b}: parameter", "|rank corr| share"], [[k, f"{v / total:.3f}"] for k, v in sorted(corr.items(), key=lambda kv: -kv[1])])


@dataclass
class _ModelSet:
    """The trials of one scene-section row: a unified variant's trial per seed, or a per-scene grid entry's
    trials (separate models, `sweeps.spec.per_scene_name`) joined, per seed, into one set of models."""

    name: str  # the variant, or the per-scene grid entry's name
    separate: bool
    seeds: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def label(self) -> str:
        kinds = sorted({str(r.get("config.flow.prior.kind", "?")) for rs in self.seeds.values() for r in rs})
        return f"{self.name} (prior {', '.join(kinds)}" + (", a model per scene)" if self.separate else ")")


def _model_sets(rows: list[dict[str, Any]], order: list[str]) -> list[_ModelSet]:
    """One benchmark's finished trials as scene-section rows, in the variants' order."""
    from sweeps.spec import per_scene_parts

    sets: dict[str, _ModelSet] = {}
    for r in sorted(rows, key=lambda r: order.index(r["variant"])):
        parts = per_scene_parts(r["variant"])
        name = parts[0] if parts else r["variant"]
        sets.setdefault(name, _ModelSet(name, parts is not None)).seeds.setdefault(r["seed"], []).append(r)
    return list(sets.values())


def _protocol_aucs(labels: np.ndarray, videos: np.ndarray, s_video: np.ndarray, s_global: np.ndarray) -> dict[str, float | None]:
    """AUCS of frames whose score is normalised per video (s_video) and over the model's test set (s_global);
    None where the frames are all of one class."""
    from sklearn.metrics import roc_auc_score

    from vadcore.evaluate import per_video_auc

    if len(np.unique(labels)) < 2:
        return dict.fromkeys(AUCS)
    per_video = [a for a in per_video_auc(labels, videos, s_video).values() if a is not None]
    return {"auc_micro": float(roc_auc_score(labels, s_video)), "auc_micro_global": float(roc_auc_score(labels, s_global)),
            "auc_macro": float(np.mean(per_video)) if per_video else None}


ALL_SCENES = "all scenes"


def _scene_aucs(sweep_dir: Path, trials: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """{scene or ALL_SCENES: AUCS} of one set of models (one seed): each trial's Eq. 9 score S rebuilt from its
    frame scores as its evaluation builds it (per-video min-max; min-max over its own test set for micro_global),
    then the trials' frames pooled. One unified trial: ALL_SCENES is its own auc_*. Separate models: the AUCs
    over the union of the per-scene models' frames, each model's scores normalised by that model's protocol."""
    from vadcore.scoring import ScoreConfig, anomaly_score

    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("label", "video", "scene", "video_s", "global_s")}
    for r in trials:
        t = load_frame_scores(sweep_dir, r["trial_id"]).to_pydict()
        n = len(t["label"])
        parts = {k: np.asarray([np.nan if x is None else x for x in t.get(k, [None] * n)], float) for k in ("score_r", "score_l", "score_l_local")}
        l, local = (None if np.isnan(parts[k]).all() else parts[k] for k in ("score_l", "score_l_local"))
        weights = {k: float(r[f"config.score.{k}"]) for k in ("lambda_L", "lambda_local") if _num(r.get(f"config.score.{k}")) is not None}
        videos = np.asarray(t["video"])
        for key, normalise in (("video_s", "video"), ("global_s", "global")):
            cols[key].append(anomaly_score(parts["score_r"], l, videos, ScoreConfig(**weights, normalise=normalise), local).score)
        cols["label"].append(np.asarray(t["label"], int))
        cols["video"].append(np.char.add(f"{r['trial_id']}/", videos.astype(str)))  # a video id per trial
        cols["scene"].append(np.asarray(t["scene"]).astype(str))
    a = {k: np.concatenate(v) for k, v in cols.items()}
    out = {ALL_SCENES: _protocol_aucs(a["label"], a["video"], a["video_s"], a["global_s"])}
    for s in sorted(set(a["scene"].tolist())):
        sel = a["scene"] == s
        out[s] = _protocol_aucs(a["label"][sel], a["video"][sel], a["video_s"][sel], a["global_s"][sel])
    return out


def _scene_section(doc: Doc, sweep_dir: Path, rows: list[dict[str, Any]], order: list[str]) -> None:
    """Models over every scene (unified variants, one row each) beside separate models (a per_scene grid entry,
    its per-scene trials joined into one row), per scene and over all scenes, from the frame scores; then the
    homogeneous-mapping check of each."""
    plt = _plt()
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
    for b in sorted({r["benchmark"] for r in ok}, key=_bench_key):
        sets = _model_sets([r for r in ok if r["benchmark"] == b], order)
        cells = {m.name: [_scene_aucs(sweep_dir, trials) for trials in m.seeds.values()] for m in sets}
        scenes = sorted({s for per_seed in cells.values() for c in per_seed for s in c} - {ALL_SCENES})
        if len(scenes) < 2 and not any(m.separate for m in sets):
            doc.p(f"{b}: one scene only: no per-scene AUC")
            continue

        def mean(name: str, scene: str, auc: str) -> float | None:
            return _mean([c.get(scene, {}).get(auc) for c in cells[name]])

        doc.table([f"{b}: variant", "trials", ALL_SCENES, *scenes],
                  [[m.label(), sum(map(len, m.seeds.values())),
                    *(" / ".join(_fmt(mean(m.name, s, a)) for a in AUCS) for s in (ALL_SCENES, *scenes))] for m in sets])
        fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(scenes) * len(sets)), 3.6))
        w = 0.8 / len(sets)
        for j, m in enumerate(sets):
            ax.bar(np.arange(len(scenes)) + j * w, [np.nan if (v := mean(m.name, s, "auc_micro")) is None else v for s in scenes], w, label=m.label())
        ax.set_xticks(np.arange(len(scenes)) + 0.4 - w / 2, scenes)
        ax.set(ylabel="frame AUC (auc_micro)", title=f"{b}: per-scene AUC", ylim=(0, 1))
        ax.legend(fontsize=8)
        doc.figure(f"per-scene-{b}", fig, f"per-scene auc_micro on {b}, one bar per prior (and separate models)")
        _homogeneous_table(doc, b, sets, scenes)


HOMOGENEOUS_PATHS = ("app", "mot")


def _homogeneous_table(doc: Doc, bench: str, sets: list[_ModelSet], scenes: list[str]) -> None:
    """Per scene, the fraction of anomalous test windows each flow maps below the 95th percentile of the normal
    training NLL (metrics.homogeneous; HGAD's 'homogeneous mapping'; lower is better), per row of the AUC table."""
    from sweeps.spec import per_scene_parts

    def value(m: _ModelSet, trials: list[dict[str, Any]], path: str, scene: str | None) -> float | None:
        if scene is None:  # every test window: one unified model's pooled fraction; separate models have none
            return None if m.separate else _num(trials[0].get(f"metrics.homogeneous.{path}.all"))
        if m.separate:  # the scene's own model: its fraction over all its windows
            return next((_num(r.get(f"metrics.homogeneous.{path}.all")) for r in trials if per_scene_parts(r["variant"])[1] == scene), None)
        return _num(trials[0].get(f"metrics.homogeneous.{path}.per_scene.{scene}"))

    cols = [(m, p) for m in sets for p in HOMOGENEOUS_PATHS]
    grid = {(m.name, p, s): _mean([value(m, t, p, s) for t in m.seeds.values()]) for m, p in cols for s in (*scenes, None)}
    if all(v is None for v in grid.values()):
        doc.p(f"{bench}: no trial reports metrics.homogeneous: no homogeneous-mapping table")
        return
    doc.p(f"{bench}: homogeneous mapping (HGAD): the fraction of anomalous test windows whose flow NLL lies below the 95th "
          "percentile of the normal training windows' NLL, per flow (app, mot); lower is better: the flow keeps anomalies "
          "out of its normal region. Separate models: each scene's model on its own windows; 'mean over scenes' is the "
          "unweighted mean of the scene rows, 'all test windows' one unified model's pooled fraction (separate models: —), "
          "against the pooled percentile: where scenes' NLLs sit at different levels it counts the scene offset (on "
          "ped2+avenue it equals the share of Ped2's anomalous windows), so read the scene rows.")
    rows = [[s, *(_fmt(grid[(m.name, p, s)]) for m, p in cols)] for s in scenes]
    rows.append(["mean over scenes", *(_fmt(_mean([grid[(m.name, p, s)] for s in scenes])) for m, p in cols)])
    rows.append(["all test windows", *(_fmt(grid[(m.name, p, None)]) for m, p in cols)])
    doc.table([f"{bench}: scene", *(f"{m.name} {p}" for m, p in cols)], rows)


def _stages_section(doc: Doc, rows: list[dict[str, Any]]) -> None:
    names = sorted({k.split(".")[1] for r in rows for k in r if k.startswith("stage.") and k.endswith(".status")})
    if not names:
        return
    doc.h("Stages: trained vs reused")
    table = []
    for n in names:
        st = [r.get(f"stage.{n}.status") for r in rows if r.get(f"stage.{n}.status")]
        keys = {r.get(f"stage.{n}.key") for r in rows if r.get(f"stage.{n}.key")}
        table.append([n, len(keys), *(sum(s == x for s in st) for x in ("trained", "reused", "computed"))])
    doc.table(["stage", "distinct keys", "trained", "reused", "computed"], table)


def _failures_section(doc: Doc, rows: list[dict[str, Any]]) -> None:
    bad = [r for r in rows if r["status"] != "finished"]
    doc.h("Failed and stopped trials")
    if not bad:
        doc.p("none")
        return
    doc.table(["trial", "status", "error or reason"],
              [[r["trial_id"], r["status"], r.get("error") or r.get("stop_reason") or "(no record: killed with the sweep)"] for r in bad])


# ---------------------------------------------------------------------------------------------- entry points


def _load_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    from vadcore.errors import ConfigError

    f = sweep_dir / TRIALS
    if not f.is_file():
        raise ConfigError(f"{f} does not exist: aggregate the sweep first (`python -m sweeps report {sweep_dir.name}` does, from its trials/)")
    return pq.read_table(f).to_pylist()


def report(sweep_dir: str | Path) -> dict[str, Path]:
    """Write results/<sweep>/report.md (+ report_files/*.png) and report.html from the tables; then the index."""
    sweep_dir = Path(sweep_dir).resolve()
    rows = _load_rows(sweep_dir)
    name = rows[0]["sweep"] if rows else sweep_dir.name
    paper = PAPER_TABLES.get(name)
    objective = next((r["objective"] for r in rows if r.get("objective")), None)  # a search's metric (plan.json)
    search = objective is not None
    order = _variant_order(rows, paper)
    key = objective if search else "auc_micro"  # a search picks its best trials by its development-split objective
    doc = Doc(f"Sweep {name}")
    n = _counts(rows)
    dates = [r["finished_at"] for r in rows if r.get("finished_at")]
    doc.p(f"{len(rows)} trials: {n['finished']} finished, {n['failed']} failed, {n['stopped']} stopped; "
          f"last ended {max(dates):%Y-%m-%d %H:%M UTC}" if dates else f"{len(rows)} trials")
    if not n["finished"]:
        doc.p(_none_finished(n) + " (errors under 'Failed and stopped trials', below)")
    doc.p("profile(s): " + ", ".join(sorted({str(r.get("profile")) for r in rows})) + "; benchmarks: "
          + ", ".join(sorted({r["benchmark"] for r in rows}, key=_bench_key)) + "; git commit at aggregation: "
          + ", ".join(sorted({str(r.get("git_commit")) for r in rows})))
    if paper:
        _paper_section(doc, paper, rows)
    _generic_section(doc, rows, order, search)
    if not n["finished"]:  # the sections below draw finished trials' numbers and frames only
        doc.h("Protocol, ROC curves, timelines")
        doc.p(f"nothing to show: {_none_finished(n)}")
    else:
        _protocol_section(doc, rows)
        if (sweep_dir / FRAMES).is_file():
            _roc_section(doc, sweep_dir, rows, order, key, BEST_TRIALS if search else MAX_ROC_LINES)
            _timeline_section(doc, sweep_dir, rows, key)
        if search:
            _search_section(doc, sweep_dir, rows, objective)
        else:
            _dev_section(doc, rows, order)
        priors = {r.get("config.flow.prior.kind") for r in rows if r["status"] == "finished"}
        if name == "unified-prior" or len(priors - {None}) > 1:
            _scene_section(doc, sweep_dir, rows, order)
    _stages_section(doc, rows)
    _failures_section(doc, rows)
    doc.h("Reproduce a trial")
    doc.table(["trial", "command"], [[r["trial_id"], r.get("command") or "—"] for r in rows])

    fig_dir = sweep_dir / "report_files"
    for kind, b in doc.blocks:
        if kind == "figure":
            atomic.write_bytes(fig_dir / f"{b[0]}.png", b[1])
    atomic.write_text(sweep_dir / "report.md", doc.to_markdown(fig_dir.name))
    atomic.write_text(sweep_dir / "report.html", doc.to_html())
    return {"report_md": sweep_dir / "report.md", "report_html": sweep_dir / "report.html", **write_index(sweep_dir.parent)}


def _index_row(trials: Path) -> list[str]:
    """One sweep's row of the index: name, date, trial counts, best auc_micro, link to its report."""
    rows = pq.read_table(trials).to_pylist()
    dates = [r["finished_at"] for r in rows if r.get("finished_at")]
    n = _counts(rows)
    ok = [r for r in rows if _num(r.get("metrics.auc_micro")) is not None]
    best = max(ok, key=lambda r: r["metrics.auc_micro"]) if ok else None
    if best:
        best_cell = f"{best['metrics.auc_micro']:.4f} ({best['variant']}, {best['benchmark']})"
    else:
        best_cell = "—" if n["finished"] else _none_finished(n)
    sweep = trials.parent.name
    return [sweep, f"{max(dates):%Y-%m-%d %H:%M}" if dates else "—",
            f"{n['finished']} ok, {n['failed']} failed" + (f", {n['stopped']} stopped" if n["stopped"] else ""),
            best_cell, f"{sweep}/report.html" if (trials.parent / "report.html").is_file() else "—"]


def write_index(results_dir: str | Path) -> dict[str, Path]:
    """results/index.md and index.html: every sweep with a trials.parquet, its date, status and best auc_micro.

    Listed, read and written under one exclusive lock: two sweeps finishing together queue up, and the later
    one reads the earlier one's table (listing outside the lock lost a row when the earlier one wrote last).
    """
    results_dir = Path(results_dir)
    with atomic.build_lock(results_dir / "index.html"):
        table = [_index_row(f) for f in sorted(results_dir.glob(f"*/{TRIALS}"))]
        headers = ["sweep", "date (UTC)", "trials", "best auc_micro (variant, benchmark)", "report"]
        doc = Doc("Sweeps")
        doc.p("Every sweep under results/ with a trials.parquet. Cross-sweep table: all_trials.parquet "
              "(duckdb: select sweep, variant, benchmark, \"metrics.auc_micro\" from 'results/all_trials.parquet').")
        doc.table(headers, table)
        md, page = doc.to_markdown(""), doc.to_html()
        for row in table:  # links: relative to results/
            if row[-1] != "—":
                md = md.replace(f"| {row[-1]} |", f"| [report]({row[-1]}) |")
                page = page.replace(f"<td>{html.escape(row[-1])}</td>", f"<td><a href='{html.escape(row[-1])}'>report</a></td>")
        atomic.write_text(results_dir / "index.md", md)
        atomic.write_text(results_dir / "index.html", page)
    return {"index_md": results_dir / "index.md", "index_html": results_dir / "index.html"}


def publish(sweep_dir: str | Path) -> dict[str, Path]:
    """Aggregate trials/ into the tables (when the sweep folder still has them), then write the report and index."""
    sweep_dir = Path(sweep_dir).resolve()
    paths: dict[str, Path] = {}
    if (sweep_dir / "trials").is_dir():
        paths.update(aggregate(sweep_dir))
    paths.update(report(sweep_dir))
    return paths
