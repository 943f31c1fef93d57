"""A search sweep's section: the objective's history, the best trials with their held-out AUC, whether the search beat
the profile's default, early stops, and Optuna's parameter importances."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from results.document import Doc
from results.rows import bench_key, fmt, num, pyplot, spearman


def importances(sweep_dir: Path) -> tuple[dict[str, dict[str, float]], str | None]:
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


BEST_TRIALS = 5  # the search trials whose held-out test AUC the report shows


def search_section(doc: Doc, sweep_dir: Path, rows: list[dict[str, Any]], objective: str) -> None:
    """History of the objective (a development-split AUC), the best trials with their held-out test AUC, the
    objective's rank correlation with that AUC, the profile's default against the search's best, early stops."""
    plt = pyplot()
    key = f"metrics.{objective}"
    done = [r for r in rows if r["status"] == "finished" and num(r.get(key)) is not None]
    varied = sorted(k for k in {k for r in done for k in r if k.startswith("config.")} if len({str(r.get(k)) for r in done}) > 1)
    doc.h("Optuna search: objective and held-out AUC")
    doc.p(f"objective: {objective}, on the development split (never the test videos); auc_micro / auc_micro_global: the "
          f"held-out test set, shown for the {BEST_TRIALS} best trials by the objective and never optimised")
    for b in sorted({r["benchmark"] for r in done}, key=bench_key):
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
                  [[r["variant"], fmt(r[key], 4), fmt(num(r.get("metrics.auc_micro")), 4), fmt(num(r.get("metrics.auc_micro_global")), 4),
                    *(str(r.get(k)) for k in varied)] for r in best[:BEST_TRIALS]])
        held = [num(r.get("metrics.auc_micro")) for r in rs]
        if len(rs) >= 3 and None not in held:
            doc.p(f"{b}: Spearman rank correlation of {objective} with the held-out auc_micro over the {len(rs)} finished trials: "
                  f"{spearman(list(vals), held):+.3f} (1: the objective ranks trials as the test set would)")
        default = next((r for r in rs if r["variant"] == "default"), None)
        if default is None:
            doc.p(f"{b}: no finished trial with the profile's default values to compare the search's best with")
        else:
            d, top = num(default.get("metrics.auc_micro")), num(best[0].get("metrics.auc_micro"))
            if best[0] is default:
                doc.p(f"{b}: the best trial by {objective} is the profile's default config itself ({fmt(d, 4)} held-out auc_micro): "
                      "the search did not beat the default")
            else:
                verdict = "did not beat" if (top or 0) <= (d or 0) else "beat"
                doc.p(f"{b}: the search's best by {objective} ({best[0]['variant']}: {fmt(best[0][key], 4)}) has held-out auc_micro "
                      f"{fmt(top, 4)}; the profile's default config ({fmt(default[key], 4)}) has {fmt(d, 4)}: the search {verdict} "
                      "the default on the held-out test set")
    stopped = [r for r in rows if r["status"] == "stopped"]
    if stopped:
        rungs: dict[str, int] = {}
        for r in stopped:
            label = f"ITAE epoch {r['rung']}" if r.get("rung") is not None else "no record (killed)"
            rungs[label] = rungs.get(label, 0) + 1
        doc.p(f"stopped early: {len(stopped)} of {len(rows)} trials (" + ", ".join(f"{n} at {k}" for k, n in sorted(rungs.items())) + ")")
    doc.h("Optuna search: parameter importances")
    imps, why = importances(sweep_dir)
    if imps:
        doc.p("optuna.importance.get_param_importances (fANOVA) on results/<sweep>/optuna.db")
        for study, imp in imps.items():
            doc.table([f"{study}: parameter", "importance"], [[k, f"{v:.3f}"] for k, v in imp.items()])
        return
    doc.p(f"optuna's importances unavailable ({why}); fallback: |Spearman rank correlation| of each varied config "
          f"field with {objective}, normalised to sum 1 — a correlation, not an importance")
    for b in sorted({r["benchmark"] for r in done}, key=bench_key):
        rs = [r for r in done if r["benchmark"] == b]
        y = [r[key] for r in rs]
        corr = {}
        for k in varied:
            x = [r.get(k) for r in rs]
            if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in x) or len(set(x)) < 2 or len(rs) < 3:
                continue
            c = spearman(x, y)
            corr[k.removeprefix("config.")] = abs(c) if np.isfinite(c) else 0.0
        total = sum(corr.values()) or 1.0
        doc.table([f"{b}: parameter", "|rank corr| share"], [[k, f"{v / total:.3f}"] for k, v in sorted(corr.items(), key=lambda kv: -kv[1])])
