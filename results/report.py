"""A sweep's Parquet tables -> report.md and a self-contained report.html; all sweeps -> index.md/index.html.

    python -m sweeps report ablation-paths                # re-aggregate trials/ (if present), rebuild the report
    python -m sweeps report search --results /tmp/results
    just report ablation-paths && just report-screenshot ablation-paths

Reads only results/<sweep>/trials.parquet and frame_scores.parquet (and, for a search, optuna.db for the
parameter importances): Ray's ray/ folder is never opened, so it may be deleted. Which sections a report has
follows from its trials (a search, a scored development split, priors that differ) and from the sections its
sweep file asked for (`report = [...]`, results.layout.REPORT_SECTIONS); the sections live in results.sections.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from results.aggregate import FRAMES, TRIALS, aggregate
from results.document import Doc
from results.paper import PAPER_TABLES
from results.rows import bench_key, counts, none_finished, num, variant_order
from results.sections.compute import bill_section
from results.sections.dev import dev_section
from results.sections.figures import MAX_ROC_LINES, roc_section, timeline_section
from results.sections.scenes import scene_section
from results.sections.search import BEST_TRIALS, search_section
from results.sections.tables import (failures_section, paper_section, protocol_section, reproduce_section, retries_section, stages_section,
                                     variants_section)
from vadcore import atomic
from vadcore.errors import ConfigError


def load_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """The sweep's trial rows; a sweep without any is an error (a report of "0 trials" says nothing true)."""
    f = sweep_dir / TRIALS
    if not f.is_file():
        raise ConfigError(f"{f} does not exist: aggregate the sweep first (`python -m sweeps report {sweep_dir.name}` does, from its trials/)")
    rows = pq.read_table(f).to_pylist()
    if not rows:
        raise ConfigError(f"{f} holds no trial (none had started): no report to write")
    return rows


def requested_sections(rows: list[dict[str, Any]]) -> set[str]:
    """The optional sections the sweep file asked for, as each trial's plan recorded them."""
    return {s for r in rows for s in json.loads(r.get("report_sections") or "[]")}


def report(sweep_dir: str | Path) -> dict[str, Path]:
    """Write results/<sweep>/report.md (+ report_files/*.png) and report.html from the tables; then the index."""
    sweep_dir = Path(sweep_dir).resolve()
    rows = load_rows(sweep_dir)
    name = rows[0]["sweep"]
    wanted = requested_sections(rows)
    papers = [PAPER_TABLES[s] for s in PAPER_TABLES if s in wanted]
    objective = next((r["objective"] for r in rows if r.get("objective")), None)  # a search's metric (plan.json)
    search = objective is not None
    order = variant_order(rows, tuple(c for p in papers for c in p.columns))
    key = objective if search else "auc_micro"  # a search picks its best trials by its development-split objective
    doc = Doc(f"Sweep {name}")
    n = counts(rows)
    dates = [r["finished_at"] for r in rows if r.get("finished_at")]
    doc.p(f"{len(rows)} trials: {n['finished']} finished, {n['failed']} failed, {n['stopped']} stopped; "
          f"last ended {max(dates):%Y-%m-%d %H:%M UTC}" if dates else f"{len(rows)} trials")
    if not n["finished"]:
        doc.p(none_finished(n) + " (errors under 'Failed and stopped trials', below)")
    doc.p("profile(s): " + ", ".join(sorted({str(r.get("profile")) for r in rows})) + "; benchmarks: "
          + ", ".join(sorted({r["benchmark"] for r in rows}, key=bench_key)) + "; git commit at aggregation: "
          + ", ".join(sorted({str(r.get("git_commit")) for r in rows})))
    for paper in papers:
        paper_section(doc, paper, rows)
    variants_section(doc, rows, order, search)
    if not n["finished"]:  # the sections below draw finished trials' numbers and frames only
        doc.h("Protocol, ROC curves, timelines")
        doc.p(f"nothing to show: {none_finished(n)}")
    else:
        protocol_section(doc, rows)
        if (sweep_dir / FRAMES).is_file():
            roc_section(doc, sweep_dir, rows, order, key, BEST_TRIALS if search else MAX_ROC_LINES)
            timeline_section(doc, sweep_dir, rows, key)
        if search:
            search_section(doc, sweep_dir, rows, objective)
        else:
            dev_section(doc, rows, order)
        priors = {r.get("config.flow.prior.kind") for r in rows if r["status"] == "finished"}
        if "per-scene" in wanted or len(priors - {None}) > 1:
            scene_section(doc, sweep_dir, rows, order)
    stages_section(doc, rows)
    bill_section(doc, sweep_dir, rows)
    failures_section(doc, rows)
    retries_section(doc, rows)
    reproduce_section(doc, rows)

    fig_dir = sweep_dir / "report_files"
    for kind, b in doc.blocks:
        if kind == "figure":
            atomic.write_bytes(fig_dir / f"{b[0]}.png", b[1])
    atomic.write_text(sweep_dir / "report.md", doc.to_markdown(fig_dir.name))
    atomic.write_text(sweep_dir / "report.html", doc.to_html())
    return {"report_md": sweep_dir / "report.md", "report_html": sweep_dir / "report.html", **write_index(sweep_dir.parent)}


def index_row(trials: Path) -> list[str]:
    """One sweep's row of the index: name, date, trial counts, best auc_micro, link to its report."""
    rows = pq.read_table(trials).to_pylist()
    dates = [r["finished_at"] for r in rows if r.get("finished_at")]
    n = counts(rows)
    ok = [r for r in rows if num(r.get("metrics.auc_micro")) is not None]
    best = max(ok, key=lambda r: r["metrics.auc_micro"]) if ok else None
    if best:
        best_cell = f"{best['metrics.auc_micro']:.4f} ({best['variant']}, {best['benchmark']})"
    else:
        best_cell = "—" if n["finished"] else none_finished(n)
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
        table = [index_row(f) for f in sorted(results_dir.glob(f"*/{TRIALS}"))]
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
