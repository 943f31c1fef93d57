"""One trial: shards -> ITAE (step 1) -> flows on the frozen ITAE's latents (step 2) -> scores -> AUC.

Each stage is a function of its config slice and the keys of the stages it reads (`stage_slices`), cached by
`StageStore`, so trials that share a stage reuse it and a trial that only changes `score.lambda_L` re-scores
nothing but Eq. 8-9. The builds are in `vadcore.steps`; this is the unit every sweep trial runs, and the
reproduction command of any sweep trial (`python -m vadcore run`).
"""
from __future__ import annotations

import resource
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vadcore import baselines
from vadcore.config import TrialConfig
from vadcore.configtools import to_dict
from vadcore.data import DEV, SPLITS, Benchmark, get_benchmark, scene_holdout
from vadcore.data.loader import load_manifest
from vadcore.data.devsplit import kind_masks
from vadcore.data.shards import ShardSpec, ensure_shards
from vadcore.evaluate import group_reports, trial_metrics
from vadcore.outputs import TRAINING_FIELDS, versions, write_outputs
from vadcore.scoring import column_parts
from vadcore.stages import StageRecord, StageStore
from vadcore.steps.flow import build_flow
from vadcore.steps.itae import build_itae
from vadcore.steps.scores import build_scores
from vadcore.steps.windows import Report
from vadcore.train import Launch, autocast_dtype, in_process


def evaluate_stage(cfg: TrialConfig, bench, stage: StageRecord) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metrics, frame columns) of one scored split (a score stage's scores.npz)."""
    with np.load(stage.path / "scores.npz") as z:
        scores = {k: z[k] for k in z.files}
    kinds = None
    if hasattr(bench, "anomaly_kinds"):
        kinds = {v: bench.anomaly_kinds(v) for v in sorted(set(scores["video"]))}
    return trial_metrics(cfg.score, scores, kinds)


def stage_slices(cfg: TrialConfig, shard_keys: dict[str, str], store: StageStore, holdout: frozenset[str], bench: Benchmark) -> dict[str, dict[str, Any]]:
    """The config slice of every cached stage, upstream keys included: what a stage's output depends on.

    The single source of truth for stage identity: `run_trial` builds with it, `python -m sweeps show`
    plans with it (shard_keys: the shard folders' names, which hash the shard spec and the source files;
    holdout: the benchmark's `dev_holdout`, the ITAE's validation videos when not empty; bench: whose source
    files the native floors read). Fields added since the first stages were cached (crops, the ITAE's inference
    precision, the patch stride) enter a slice only when set, so those stages keep their keys.
    """
    c = to_dict(cfg)
    inference = {"inference": dtype} if (dtype := autocast_dtype(cfg.deepspeed)) else {}  # the ITAE's passes (run_itae)
    itae = {"shards": shard_keys["train"], "itae": cfg.itae.built_fields(), "loss": c["loss"], "train": _step(c["itae_train"]), "train_stride": cfg.data.train_stride, "seed": cfg.seed, "deepspeed": cfg.deepspeed,
            "holdout": sorted(holdout), **inference}
    slices = {"itae": itae}
    itae_key = store.key("itae", itae)
    flow_keys = {}
    for path in ("app", "mot"):
        if getattr(cfg.flow, path):
            flow = {"itae": itae_key, "glow": c["flow"]["glow"], "prior": c["flow"]["prior"], "train": _step(c["flow"]["train"]), "seed": cfg.seed, **inference}
            if path == "app":
                flow["extra_input"] = cfg.flow.extra_input
            slices[f"flow_{path}"] = flow
            flow_keys[path] = store.key(f"flow_{path}", flow)
    slices["score"] = {"itae": itae_key, "flows": flow_keys, "shards": shard_keys["test"], "patch": cfg.score.patch, "background": cfg.score.background, "test_stride": cfg.data.test_stride,
                       **({"patch_stride": cfg.score.patch_stride} if cfg.score.patch_stride else {}), **inference}
    if DEV in shard_keys:  # the development split, scored exactly as the test split
        slices["score_dev"] = {**slices["score"], "shards": shard_keys[DEV]}
    for name, split in (("baselines", "test"), ("baselines_dev", DEV)):  # model-free floors: the shard folder alone
        if split in shard_keys:
            slices[name] = {"shards": shard_keys[split]}
            slices[f"native_{name}"] = baselines.native_slice(bench, split)  # and at the benchmark's own size
    return slices


def _step(step: dict[str, Any]) -> dict[str, Any]:
    """A StepConfig's fields in a stage slice: `crop` only when set (see `stage_slices`)."""
    return {k: v for k, v in step.items() if k != "crop" or v}


def trial_splits(cfg: TrialConfig) -> tuple[str, ...]:
    """The shard sets a trial reads: training, test, and the development split when `data.dev` asks for it."""
    return (*SPLITS, DEV) if cfg.data.dev else SPLITS


def trial_floors(cfg: TrialConfig, bench: Benchmark, store: StageStore, slices: dict[str, dict[str, Any]], folders: dict[str, Path],
                 record: Callable[[StageRecord, float], None], show: bool) -> dict[str, Any]:
    """`vadcore.baselines`' AUCs to set beside the variants', smoothed as the trial's score is: {"baselines",
    "dev_baselines": {floor: {auc_micro, ...}}, "dev_kinds_baselines": {kind: {floor: ...}}}. The shard floors are
    one build per split and resolution, the native ones one per split, each reused by every trial; the native
    ones are read on the videos this trial scores (a scene subset's)."""
    floors: dict[str, Any] = {}
    for name, split, key in (("baselines", "test", "baselines"), ("baselines_dev", DEV, "dev_baselines")):
        if name not in slices:
            continue
        parts = []
        for stage, build in ((name, partial(baselines.build_stage, folders[split])),
                             (f"native_{name}", partial(baselines.build_native_stage, bench.videos(split), show=show))):
            t0 = time.perf_counter()
            rec = store.get_or_build(stage, slices[stage], build, files=(baselines.SCORES_FILE,))
            record(rec, time.perf_counter() - t0)
            with np.load(rec.path / baselines.SCORES_FILE) as z:
                parts.append({k: z[k] for k in z.files})
        shard, native = parts
        mine = np.isin(native["video"], list(load_manifest(folders[split])["per_video"]))
        native = {k: v[mine] for k, v in native.items()}
        floors[key] = {**baselines.baseline_aucs(shard, cfg.score.smooth), **baselines.baseline_aucs(native, cfg.score.smooth)}
        if split == DEV and (kinds := kind_masks(shard["video"])):  # how hard each kind's copies are without a model
            by_kind = [baselines.group_aucs(part, kind_masks(part["video"]), cfg.score.smooth) for part in (shard, native)]
            floors["dev_kinds_baselines"] = {kind: {**by_kind[0][kind], **by_kind[1].get(kind, {})} for kind in kinds}
    return floors


def run_trial(cfg: TrialConfig, data_root: str | Path | None, cache_root: Path, out_dir: Path, *, show: bool = True, report: Report | None = None,
              launch: Launch = in_process, stage_root: Path | None = None) -> dict[str, Any]:
    """Run (or reuse) every stage of one trial; write trial.json and frame_scores.parquet to out_dir.

    launch runs each stage's build: here (a world of one), or on the ranks a launcher starts (Ray Train in
    sweeps); training stages use all its ranks, scoring one. The stage lock and rename stay in this process.
    stage_root: where the stages live, if not in cache_root (shards always do): a folder of one's own trains everything.
    """
    t_start = time.perf_counter()
    bench = get_benchmark(cfg.data.benchmark, data_root)
    store = StageStore(stage_root or cache_root)
    stages: dict[str, dict[str, Any]] = {}

    def record(rec: StageRecord, own_seconds: float) -> None:
        stages[rec.name] = {"key": rec.key, "status": rec.status, "seconds": round(own_seconds, 3), "build_seconds": rec.seconds}
        if rec.rebuilt:
            stages[rec.name]["rebuilt_because"] = rec.rebuilt
        if rec.lock is not None:  # it was not built when this trial looked: how long it waited on another builder
            stages[rec.name]["lock_wait_seconds"] = round(rec.lock.waited, 3)
            if rec.lock.orphaned_by:  # and whose unfinished build it took over
                stages[rec.name]["took_over_from"] = rec.lock.orphaned_by
        if rec.status == "reused" and report is not None:  # the same per-epoch stream as if trained here, so a
            for epoch in rec.info.get("history", []):  # scheduler compares a reusing trial on the same numbers
                report({"stage": rec.name, "replayed": True, **epoch})

    folders = {}
    for split in trial_splits(cfg):
        t0 = time.perf_counter()
        spec = ShardSpec(cfg.data.benchmark, split, cfg.data.height, cfg.data.width, cfg.data.channels, cfg.data.scenes)
        folders[split], written = ensure_shards(bench, spec, cache_root, show_progress=show)
        stages[f"shards_{split}"] = {"key": folders[split].name, "status": "trained" if written else "reused", "seconds": round(time.perf_counter() - t0, 3)}

    holdout = scene_holdout(bench, cfg.data.scenes)
    slices = stage_slices(cfg, {split: f.name for split, f in folders.items()}, store, holdout, bench)
    t0 = time.perf_counter()
    itae_stage = store.get_or_build("itae", slices["itae"], lambda out: launch(partial(build_itae, cfg, folders["train"], out, show=show, holdout=holdout), report, out),
                                    files=("itae.pt",))
    record(itae_stage, time.perf_counter() - t0)

    flows: dict[str, StageRecord] = {}
    for path in ("app", "mot"):
        if f"flow_{path}" in slices:
            t0 = time.perf_counter()
            build = lambda out, p=path: launch(partial(build_flow, cfg, p, itae_stage, folders["train"], out, show=show), report, out)  # noqa: E731
            flows[path] = store.get_or_build(f"flow_{path}", slices[f"flow_{path}"], build, files=("flow.pt",), inputs=(itae_stage,))
            record(flows[path], time.perf_counter() - t0)

    scored = {}
    for name, split in (("score", "test"), ("score_dev", DEV)):
        if name in slices:
            t0 = time.perf_counter()
            build = lambda out, s=split: launch(lambda _report: build_scores(cfg, itae_stage, flows, folders[s], out, show), None, out, ranks=1)  # noqa: E731
            scored[name] = store.get_or_build(name, slices[name], build, files=("scores.npz",), inputs=(itae_stage, *flows.values()))
            record(scored[name], time.perf_counter() - t0)

    floors = trial_floors(cfg, bench, store, slices, folders, record, show)

    t0 = time.perf_counter()
    metrics, frames = evaluate_stage(cfg, bench, scored["score"])
    if "score_dev" in scored:  # dev_auc, dev_auc_micro, ...: the numbers a search may choose settings by
        dev_metrics, dev = evaluate_stage(cfg, bench, scored["score_dev"])
        metrics.update({f"dev_{k}": v for k, v in dev_metrics.items() if isinstance(v, (int, float))})
        if kinds := kind_masks(dev["video"]):  # a dev split made from training videos: each pseudo-anomaly kind alone
            parts = column_parts(dev)
            metrics["dev_kinds"] = group_reports(kinds, dev["label"].astype(int), dev["video"], parts["r"], parts["l"], cfg.score, parts["local"])
    metrics.update(floors)  # baselines, dev_baselines: {frame_difference, position, flow_magnitude, ...: {auc_micro, ...}}
    for prefix in ("", "dev_"):  # in words, for every table that shows the trial: "" when it beats every floor
        if f"{prefix}baselines" in floors:
            own = {p: metrics.get(f"{prefix}{p}") for p in baselines.AUCS}
            metrics[f"{prefix}below_floor"] = baselines.below_floor(own, floors[f"{prefix}baselines"])
    stages["evaluate"] = {"key": None, "status": "computed", "seconds": round(time.perf_counter() - t0, 3)}

    trial = {
        "config": to_dict(cfg),
        "metrics": metrics,
        "stages": stages,
        "seconds": round(time.perf_counter() - t_start, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "versions": versions(),
        "seed": cfg.seed,
        "history": {name: rec.info.get("history", []) for name, rec in [("itae", itae_stage), *((f"flow_{p}", s) for p, s in flows.items())]},
        "training": {name: {k: rec.info.get(k) for k in TRAINING_FIELDS}  # as each stage was trained, and which epoch it kept
                     for name, rec in [("itae", itae_stage), *((f"flow_{p}", s) for p, s in flows.items())]},
    }
    write_outputs(out_dir, trial, frames)
    return trial
