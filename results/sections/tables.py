"""The report's tables of numbers: the paper's table beside ours, every variant's AUCs, the protocol, stages
trained and reused, failed, stopped and retried trials, and each trial's reproducing command."""
from __future__ import annotations

from typing import Any

from results.document import Doc
from results.floors import FLOORS, floors_of, verdict
from results.paper import PaperTable
from results.rows import AUCS, bench_key, by_variant, fmt, mean, mean_std


def paper_section(doc: Doc, paper: PaperTable, rows: list[dict[str, Any]]) -> None:
    """The paper's table in its shape (rows: benchmarks; columns: its columns), each cell ours / the paper's (Δ)."""
    doc.h(paper.title + ": ours beside the paper's")
    doc.p("Each cell: ours / the paper's (Δ = ours − paper); ours = mean auc_micro over seeds (the paper's protocol, "
          "below). Benchmarks the sweep did not run show — for ours.")
    g = by_variant([r for r in rows if r["status"] == "finished"])
    benches = sorted({*paper.rows, *(r["benchmark"] for r in rows)}, key=bench_key)
    table = []
    for b in benches:
        cells: list[Any] = [b]
        for i, col in enumerate(paper.columns):
            ours = mean([r.get("metrics.auc_micro") for r in g.get((b, col), [])])
            ref = paper.rows[b][i] if b in paper.rows else None
            delta = "" if ours is None or ref is None else f" ({ours - ref:+.3f})".replace("0.", ".", 1)
            cells.append(f"{fmt(ours)} / {fmt(ref)}{delta}")
        table.append(cells)
    doc.table(["benchmark", *paper.headers], table)
    floors = floors_of(rows)
    if floors:
        doc.p("Floors (no model) on the same test frames, by the same evaluator: each baseline is the only score, normalised "
              "as S is. A variant near a floor learned little beyond it; definitions under Protocol.")
        doc.table(["benchmark", "floor (no model)", "frames", *AUCS],
                  [[f.benchmark, f.label, f.frames, *(fmt(f.aucs[k]) for k in AUCS)] for f in floors])


def variants_section(doc: Doc, rows: list[dict[str, Any]], order: list[str], search: bool) -> None:
    """Every variant's AUCs and parts. A search's trials show their development-split AUCs only: the test AUC
    of a search is reported for its best trials (the search section), never for all of them to pick from."""
    prefix = "dev_" if search else ""
    doc.h("All variants: frame AUC" + (" on the development split" if search else "") + ", mean ± std over seeds")
    aucs = [prefix + k for k in AUCS]
    from vadcore.scoring import PARTS  # here: vadcore.scoring pulls in torch

    parts = [f"{prefix}{part}_auc_micro" for part in PARTS]
    headers = ["benchmark", "variant", "seeds", "status", *aucs, *parts, "vs the strongest floor"]
    table = []
    floors = floors_of(rows, prefix)
    groups = sorted(by_variant(rows).items(), key=lambda kv: (bench_key(kv[0][0]), order.index(kv[0][1])))
    for i, ((b, v), rs) in enumerate(groups):
        ok = [r for r in rs if r["status"] == "finished"]
        status = ", ".join(f"{n} {s}" for s in ("finished", "failed", "stopped") if (n := sum(r["status"] == s for r in rs)))
        table.append([b, v, ",".join(str(r["seed"]) for r in rs), status,
                      *(mean_std([r.get(f"metrics.{k}") for r in ok]) for k in (*aucs, *parts)), verdict([below_floor(r, prefix) for r in ok])])
        if i + 1 == len(groups) or groups[i + 1][0][0] != b:  # the benchmark's floors under its variants
            table += [[b, f.label, "—", f"no model, {f.frames} frames", *(mean_std([f.aucs[k]]) for k in AUCS), *("—" for _ in parts), ""]
                      for f in floors if f.benchmark == b]
    doc.table(headers, table)
    if floors:
        doc.p("baseline rows: floors that need no model (definitions under Protocol), evaluated as the variants' S. "
              "\"vs the strongest floor\": a variant BELOW it under a protocol has learned nothing that floor did not know.")


def below_floor(row: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A trial row's metrics.<prefix>below_floor as {protocol: "" or "floor auc"} (trials.parquet flattens it)."""
    head = f"metrics.{prefix}below_floor."
    return {k.removeprefix(head): v for k, v in row.items() if k.startswith(head) and v is not None}


def count_of(rows: list[dict[str, Any]], key: str, which: str) -> str:
    """'k of n finished trials (which)' for a per-trial flag: variants differ, so no one trial speaks for all."""
    done = [r for r in rows if r["status"] == "finished"]
    return f"{sum(bool(r.get(key)) for r in done)} of {len(done)} finished trials ({which})"


def protocol_section(doc: Doc, rows: list[dict[str, Any]]) -> None:
    doc.h("Protocol")
    r = next(r for r in rows if r["status"] == "finished")
    prot = {k.removeprefix("metrics.protocol."): v for k, v in r.items() if k.startswith("metrics.protocol.") and v is not None}
    items = [["auc_micro", prot.get("auc_micro", "—")], ["auc_micro_global", prot.get("auc_micro_global", "—")],
             ["auc_macro", prot.get("auc_macro", "—")],
             ["per-video normalisation", f"score.normalise = {r.get('config.score.normalise', '—')} (Eq. 9 min-max within each test video "
                                         "for auc_micro; the reported `auc` follows this setting)"],
             ["lambda_i from test-set NLL ranges (Eq. 8)", count_of(rows, "metrics.protocol.lambda_from_test_set", "with both flows")],
             ["local excess NLL in S (not in the paper)", f"score.lambda_local = {r.get('config.score.lambda_local', '—')} "
                                                          f"(paths {r.get('config.score.local_paths', '—')}, "
                                                          f"patch {r.get('config.score.local_patch', '—')}); 0 = the paper's Eq. 9"],
             ["temporal smoothing (not in the paper)", f"score.smooth = {r.get('config.score.smooth', '—')}: sigma in frames of a Gaussian over each "
                                                       "video's R, L and local L before the min-max, floors smoothed alike; 0 = the paper"],
             ["dropped frames", "none" if prot.get("dropped_frames") == 0 else prot.get("dropped_frames", "—")],
             ["test stride", r.get("config.data.test_stride", "—")]]
    items += [[f"{f.label} ({f.benchmark}, {f.frames} frames)",
               f"{FLOORS.get(f.name, ('', 'a model-free baseline'))[1]}; no model, scored by the same evaluator as S: "
               + ", ".join(f"{k} {fmt(f.aucs[k])}" for k in AUCS)] for f in floors_of(rows)]
    doc.table(["", "definition used"], items)


def stages_section(doc: Doc, rows: list[dict[str, Any]]) -> None:
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


def failures_section(doc: Doc, rows: list[dict[str, Any]]) -> None:
    bad = [r for r in rows if r["status"] != "finished"]
    doc.h("Failed and stopped trials")
    if not bad:
        doc.p("none")
        return
    doc.table(["trial", "status", "error or reason"],
              [[r["trial_id"], r["status"], r.get("error") or r.get("stop_reason") or "(no record: interrupted with the sweep)"] for r in bad])


def retries_section(doc: Doc, rows: list[dict[str, Any]]) -> None:
    """The trials Tune ran again after their process or node died (retries.json), and why; none: no section."""
    again = [r for r in rows if r.get("retries")]
    if not again:
        return
    doc.h("Retried trials")
    doc.p("Tune ran these trials again because an attempt lost its process or node, not because of their config "
          "(a trial that fails for its own reason is never retried); each new attempt reused the stages the lost "
          "one had completed.")
    doc.table(["trial", "status", "attempts lost", "why"], [[r["trial_id"], r["status"], r["retries"], r["retried_because"]] for r in again])


def reproduce_section(doc: Doc, rows: list[dict[str, Any]]) -> None:
    doc.h("Reproduce a trial")
    doc.p("Each command runs the trial alone, on the CPU threads it had in the sweep (OMP_NUM_THREADS): on as many "
          "threads it gives the same AUCs to the last digit.")
    doc.table(["trial", "command"], [[r["trial_id"], r.get("command") or "—"] for r in rows])
