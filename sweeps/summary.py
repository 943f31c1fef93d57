"""What a sweep did, from its trial folders alone: one flat record per trial (`collect`), the count of stages it
trained, and the terminal's summary table."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from results import floors as floor_rows
from results.aggregate import retried
from results.rows import mean_std
from results.layout import ERROR, PLAN, STOP, TRIAL, trial_status
from sweeps.spec import SweepSpec


def collect(trials_dir: Path) -> list[dict[str, Any]]:
    """One flat record per trial folder: plan fields, status, metrics, stage statuses, error, retries."""
    out = []
    for plan_file in sorted(Path(trials_dir).glob(f"*/{PLAN}")):
        rec = json.loads(plan_file.read_text())
        rec["id"] = plan_file.parent.name
        rec["status"] = status = trial_status(plan_file.parent)
        if status == "finished":
            t = json.loads(plan_file.with_name(TRIAL).read_text())
            rec.update(metrics=t["metrics"], stages={k: s["status"] for k, s in t["stages"].items()},
                       stage_keys={k: s["key"] for k, s in t["stages"].items()}, seconds=t["seconds"])
        elif status == "failed":
            rec["error"] = json.loads(plan_file.with_name(ERROR).read_text())["error"]
        elif (stop := plan_file.with_name(STOP)).is_file():  # stopped early by ASHA, at the rung it says; else interrupted
            rec["stop_reason"] = json.loads(stop.read_text())["reason"]
        rec.update(retried(plan_file.parent))  # attempts lost with their process or node, and why
        out.append(rec)
    return out


def stage_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """How many times each stage kind was trained across the sweep (each build is 'trained' in one record)."""
    counts = {"itae": 0, "flow": 0}
    for r in records:
        for name, status in r.get("stages", {}).items():
            if status == "trained" and name == "itae":
                counts["itae"] += 1
            elif status == "trained" and name.startswith("flow_"):
                counts["flow"] += 1
    return counts


BEST_SHOWN = 3  # a search's held-out test AUC is shown for its best trials by the objective only
WIDE = 120  # columns from which the table shows every column (seeds, stages, every AUC); below, the numbers only
NARROWEST = 4  # characters of a sentence column (status, vs floors) beside names that keep their longest word


def summary_table(spec: SweepSpec, records: list[dict[str, Any]], width: int | None = None):
    """One row per (variant, benchmark): seeds, status, AUCs (mean ± sd over seeds) and stage reuse; under them, dim,
    a grid sweep's floors (trial.json's metrics.baselines: one row per benchmark, shard resolution and baseline), and
    per variant, in words, whether it beats the strongest floor under each protocol (metrics.below_floor).

    A search's rows are its trials, ranked by the objective (a dev_ AUC); the test AUC appears for the best
    BEST_SHOWN only. Below 120 columns (CI logs, `ray job logs`) the table keeps variant, status (the floors'
    verdict after it) and the numbers, and wraps long names instead of cutting them; the report has every column.
    """
    from rich.table import Table

    narrow = width is not None and width < WIDE
    metrics = (spec.search.metric, "auc_micro") if spec.search else ("auc_micro", "auc_micro_global", "auc_macro")
    if narrow and not spec.search:
        metrics = metrics[:2]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["variant"], r["benchmark"]), []).append(r)
    benches = {b for _, b in groups}
    checked = not spec.search and any(r.get("metrics", {}).get("below_floor") for r in records)  # trials since the floor check
    cols = ["variant", *(["benchmark"] if len(benches) > 1 or not narrow else []), *([] if narrow else ["seeds"]), "status",
            *metrics, *(["vs floors"] if checked and not narrow else []), *([] if narrow else ["stages"])]
    table = Table(title=f"sweep {spec.name}: {spec.description}", title_justify="left")

    def value(r: dict[str, Any], k: str) -> float:
        return r.get("metrics", {}).get(k, float("nan"))

    rows: list[tuple[Any, str | None]] = []  # (cells, style)
    if spec.search:  # best objective first; unfinished trials after
        sign = -1 if spec.search.mode == "max" else 1
        def objective(rs: list[dict[str, Any]]) -> float:
            v = value(rs[0], spec.search.metric) if rs[0]["status"] == "finished" else float("nan")
            return math.inf if math.isnan(v) else sign * v

        ranked = sorted(groups.items(), key=lambda kv: (objective(kv[1]), kv[0]))
    else:
        order = [v.name for v in spec.grid]
        ranked = sorted(groups.items(), key=lambda kv: (kv[0][1], order.index(kv[0][0]) if kv[0][0] in order else len(order), kv[0][0]))
    for rank, ((variant, bench), rs) in enumerate(ranked):
        ok = [r for r in rs if r["status"] == "finished"]
        status = "ok" if len(ok) == len(rs) else ", ".join(f"{n} {s}" for s in ("finished", "failed", "stopped") if (n := sum(r["status"] == s for r in rs)))
        if any(r["status"] == "failed" for r in rs):
            status += ": " + next(r["error"] for r in rs if r["status"] == "failed")[:80]
        reasons = sorted({r.get("stop_reason", "interrupted, no record") for r in rs if r["status"] == "stopped"})
        if reasons:
            status = reasons[0] if len(rs) == 1 else status + " (" + "; ".join(reasons) + ")"
        if lost := [r["retried_because"] for r in rs if r.get("retries")]:
            status += "; retried: " + "; ".join(lost)
        verdict = floor_rows.verdict([r["metrics"].get("below_floor", {}) for r in ok], short=True)
        if narrow and verdict:  # no room for a column of its own: the verdict follows the status
            status = f"{status}; {verdict}"
        cells = {"variant": variant, "benchmark": bench, "seeds": ",".join(str(r["seed"]) for r in rs), "status": status,
                 "vs floors": verdict,
                 "stages": " ".join(f"{k.removeprefix('flow_')}:{'/'.join(sorted({r['stages'][k][0] for r in ok}))}"
                                    for k in ("itae", "flow_app", "flow_mot", "score") if ok and k in ok[0]["stages"])}
        for k in metrics:
            hidden = spec.search and k == "auc_micro" and rank >= BEST_SHOWN
            cells[k] = "·" if hidden else mean_std([value(r, k) for r in ok])
        rows.append(([cells[c] for c in cols], None))
    if not spec.search:  # the floors (vadcore.baselines), dim, in a block under the variants: a search ranks trials only
        floors: dict[tuple[str, str, str], dict[str, float]] = {}
        for r in (r for r in records if r["status"] == "finished"):
            data = r.get("config", {}).get("data", {})
            for name, aucs in r["metrics"].get("baselines", {}).items():
                size = "native" if name in floor_rows.NATIVE else f"{data.get('height', '?')}x{data.get('width', '?')}"
                floors.setdefault((r["benchmark"], size, name), aucs)
        for (bench, frames, name), aucs in sorted(floors.items()):
            cells = {"variant": floor_rows.label(name), "benchmark": bench, "seeds": "", "vs floors": "",
                     "status": f"no model, {frames}", "stages": "", **{k: mean_std([aucs.get(k, math.nan)]) for k in metrics}}
            rows.append(([cells[c] for c in cols], "dim"))
    # Numbers are never wrapped nor cut. A table wider than the terminal gets fixed column widths: the names
    # (variant, benchmark) their longest word, so a name is never folded, the sentences (status, vs floors, ...) a
    # fair share of the rest, wrapping between words (a word wider than its share is folded, never cut).
    headers = [col.replace("_", " ") if narrow and col in metrics else col for col in cols]
    widest = [max(len(h), *(len(str(c[i])) for c, _ in rows)) for i, h in enumerate(headers)]
    fixed: dict[int, int] = {}
    if width is not None and sum(widest) + 3 * len(cols) + 1 > width:
        fixed = {i: widest[i] for i in range(len(cols)) if cols[i] in metrics}
        longest = {i: max([len(w) for c, _ in rows for w in str(c[i]).split()] + [len(h)]) for i, h in enumerate(headers) if i not in fixed}
        room = width - 3 * len(cols) - 1 - sum(fixed.values())
        sentences = [i for i in longest if cols[i] not in ("variant", "benchmark")]
        names = {i: n for i, n in longest.items() if i not in sentences}
        if sum(names.values()) + NARROWEST * len(sentences) > room:  # too narrow for whole names: all share alike
            sentences, names = list(longest), {}
        fixed.update(names)
        left = room - sum(names.values())
        for k, i in enumerate(sorted(sentences, key=lambda i: widest[i])):  # a short column gives what it needs not
            fixed[i] = max(1, min(widest[i], left // (len(sentences) - k)))
            left -= fixed[i]
    for i, header in enumerate(headers):
        table.add_column(header, justify="right" if cols[i] in metrics else "left", overflow="fold", no_wrap=cols[i] in metrics,
                         width=fixed.get(i))
    for n, (cells, style) in enumerate(rows):
        if style == "dim" and (n == 0 or rows[n - 1][1] != "dim"):
            table.add_section()
        table.add_row(*cells, style=style)
    return table


def print_summary(spec: SweepSpec, records: list[dict[str, Any]], console) -> None:
    console.print(summary_table(spec, records, console.width))
    if spec.search:
        console.print(f"ranked by {spec.search.metric} (development split); auc_micro: the held-out test set, "
                      f"shown for the best {BEST_SHOWN} only and never optimised", highlight=False)
    c = stage_counts(records)
    legend = " (stages: t = trained, r = reused)" if console.width >= WIDE else ""
    console.print(f"stages trained in this sweep: {c['itae']} ITAE, {c['flow']} flow{legend}; {sum(r['status'] == 'failed' for r in records)} "
                  "failed trial(s); reproduce any trial with the command in trials/<id>/plan.json", highlight=False)
