"""The compute section: a grid's bill, written before it ran (results/<sweep>/bill.json, sweeps.bill), each distinct
stage beside the build time it took in the sweep."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from results.document import Doc
from results.layout import BILL


def bill_section(doc: Doc, sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    f = sweep_dir / BILL
    if not f.is_file():
        return
    bill = json.loads(f.read_text())
    names = {x["stage"] for x in bill["stages"]}
    took = {(n, r[f"stage.{n}.key"]): r.get(f"stage.{n}.build_seconds") for r in rows for n in names if r.get(f"stage.{n}.status") == "trained"}
    doc.h("Compute: billed before the run, measured")
    doc.p(f"FLOPs counted per distinct stage (vadcore/compute.py), hours at the TFLOP/s of {bill['gpu']} ({bill['source']}); "
          "measured: the stage's build in this sweep (training, validation, features, scoring), none where it was reused from an "
          "earlier run.")
    table, measured = [], 0.0
    for x in bill["stages"]:
        seconds = took.get((x["stage"], x["key"]))
        measured += seconds or 0.0
        flops = x["train_flops"] + x["forward_flops"]
        table.append([x["stage"], x["key"][:8], x["trials"][0] + (f" +{len(x['trials']) - 1}" if len(x["trials"]) > 1 else ""), f"{x['steps']:,}",
                      f"{flops / 1e15:.3g}", f"{x['hours']:.3g}", "—" if seconds is None else f"{seconds / 3600:.3g}",
                      "—" if not seconds else f"{flops / seconds / 1e12:.3g}"])
    t = bill["total"]
    table.append(["total", "", f"{len(bill['stages'])} stages", f"{t['steps']:,}", f"{(t['train_flops'] + t['forward_flops']) / 1e15:.3g}",
                  f"{t['hours']:.3g}", f"{measured / 3600:.3g}", ""])
    doc.table(["stage", "key", "trials", "steps", "PFLOP", "hours billed", "hours measured", "TFLOP/s achieved"], table)
