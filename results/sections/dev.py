"""A grid that scored the development split: its AUCs beside the test set's, how the two rank the trials, and each
pseudo-anomaly kind on its own beside the frame-difference floor."""
from __future__ import annotations

from typing import Any

from results.document import Doc
from results.floors import floors_of, frames
from results.rows import bench_key, by_variant, fmt, mean, mean_std, num, spearman
from vadcore.data.devsplit import KINDS


DEV_CHECK = ("auc_micro", "auc_micro_global")  # the protocols the development-split check sets side by side


def dev_section(doc: Doc, rows: list[dict[str, Any]], order: list[str]) -> None:
    """A grid sweep that scored the development split (`data.dev`): each variant's dev AUCs beside its test AUCs,
    the floors on both, and how the two rank the finished trials. It checks the split (does it order models as
    the test set does?); a setting chosen by its test columns would be chosen on test labels."""
    done = [r for r in rows if r["status"] == "finished" and num(r.get("metrics.dev_auc_micro")) is not None]
    if not done:
        return
    doc.h("Development split beside the test set")
    doc.p("dev: the development split, which choices are made on (held-out training videos and pseudo-anomalous copies); "
          "test: the held-out test videos. Mean ± "
          "std over seeds. This checks the development split, it is not a way to choose: a choice read off the test "
          "columns is a choice on test labels.")
    table = [[b, v, ",".join(str(r["seed"]) for r in rs), *(mean_std([r.get(f"metrics.{p}{k}") for r in rs]) for p in ("dev_", "") for k in DEV_CHECK)]
             for (b, v), rs in sorted(by_variant(done).items(), key=lambda kv: (bench_key(kv[0][0]), order.index(kv[0][1])))]
    dev_floors = {(f.benchmark, f.frames, f.name): f for f in floors_of(done, "dev_")}
    table += [[f.benchmark, f"{f.label}, {f.frames}", "—", *(mean_std([d.aucs[k]]) for k in DEV_CHECK), *(mean_std([f.aucs[k]]) for k in DEV_CHECK)]
              for f in floors_of(done) if (d := dev_floors.get((f.benchmark, f.frames, f.name)))]
    doc.table(["benchmark", "variant", "seeds", *(f"dev {k}" for k in DEV_CHECK), *(f"test {k}" for k in DEV_CHECK)], table)
    for b in sorted({r["benchmark"] for r in done}, key=bench_key):
        pairs = {k: [(num(r.get(f"metrics.dev_{k}")), num(r.get(f"metrics.{k}"))) for r in done if r["benchmark"] == b] for k in DEV_CHECK}
        n = len(pairs[DEV_CHECK[0]])
        if n >= 3 and all(None not in pair for ps in pairs.values() for pair in ps):
            doc.p(f"{b}: Spearman rank correlation of dev with test over the {n} finished trials: "
                  + ", ".join(f"{k} {spearman(*map(list, zip(*ps))):+.3f}" for k, ps in pairs.items())
                  + " (1: the development split orders the trials as the test set does; near 0: it cannot choose between them)")
    dev_kinds_table(doc, done, order)


def dev_kinds_table(doc: Doc, done: list[dict[str, Any]], order: list[str]) -> None:
    """Each pseudo-anomaly kind of the development split on its own (its copies only, metrics.dev_kinds.<kind>),
    beside the frame-difference floor on the same copies: a kind that the floor already finds, or that every
    variant finds, cannot rank the variants."""
    kinds = [kind for kind in KINDS if any(num(r.get(f"metrics.dev_kinds.{kind}.auc_micro")) is not None for r in done)]
    if not kinds:
        return
    doc.p("Per pseudo-anomaly kind (the dev copies of that kind only; dev auc_micro / auc_micro_global of the "
          "whole score, mean over seeds). The floor is frame difference on the same copies, smoothed as the trials' scores.")

    def cell(rs: list[dict[str, Any]], prefix: str) -> str:  # "auc_micro / auc_micro_global", each the mean over rs
        return " / ".join(fmt(mean([r.get(f"{prefix}.{k}") for r in rs])) for k in DEV_CHECK)

    table = [[b, v, ",".join(str(r["seed"]) for r in rs), *(cell(rs, f"metrics.dev_kinds.{kind}") for kind in kinds)]
             for (b, v), rs in sorted(by_variant(done).items(), key=lambda kv: (bench_key(kv[0][0]), order.index(kv[0][1])))]
    floors = {}
    for r in done:  # one floor per benchmark and resolution, as floors_of
        if num(r.get(f"metrics.dev_kinds_baselines.{kinds[0]}.frame_difference.auc_micro")) is not None:
            floors.setdefault((r["benchmark"], frames(r)), r)
    table += [[b, f"baseline: frame difference, {frames}", "—", *(cell([r], f"metrics.dev_kinds_baselines.{kind}.frame_difference") for kind in kinds)]
              for (b, frames), r in sorted(floors.items(), key=lambda kv: (bench_key(kv[0][0]), kv[0][1]))]
    doc.table(["benchmark", "variant", "seeds", *(f"dev +{kind}" for kind in kinds)], table)
