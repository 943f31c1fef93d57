"""A real trial in a sweep's results folder, aggregated and reported: the report's per-scene and overall AUCs are
the trial's own (one owner of the score, `vadcore.scoring.trial_scores`), under the laptop profile, whose S smooths
its parts over time and adds the local term; and results/README.md lists every column of its tables."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from results.aggregate import FIXED, STAGE_TYPES, TRAINING_TYPES
from results.report import publish
from results.rows import AUCS, fmt, trial_frames
from results.sections.scenes import ALL_SCENES, scene_aucs
from vadcore.config import resolve_config
from vadcore.configtools import to_dict
from vadcore.pipeline import run_trial
from vadcore.scoring import trial_scores
from vadcore.testing import TINY

README = Path(__file__).resolve().parents[2] / "results" / "README.md"


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """results/owner/: the laptop profile's trial (TINY sizes, the development split scored too), one the scheduler
    stopped and one that failed, aggregated and reported."""
    root = tmp_path_factory.mktemp("owner")
    cfg = resolve_config("synthetic", "laptop", [*TINY, "data.dev=true"])
    assert cfg.score.smooth > 0 and cfg.score.lambda_local > 0  # what this test is about
    sweep = root / "results" / "owner"
    out = sweep / "trials" / "recipe-synthetic-s0"
    trial = run_trial(cfg, None, root / "cache", out, show=False)
    plan = {"variant": "recipe", "benchmark": "synthetic", "seed": 0, "command": "python -m vadcore run --profile laptop", "config": to_dict(cfg),
            "report_sections": ["per-scene"]}
    for name, record in (("stopped", {"stop.json": {"reason": "stopped by ASHA at ITAE epoch 1", "rung": 1,
                                                    "last": {"stage": "itae", "epoch": 1, "itae_epoch": 1, "itae_loss": 0.5}}}),
                         ("failed", {"error.json": {"error": "RuntimeError: boom", "traceback": "..."}}), ("recipe", {})):
        d = sweep / "trials" / f"{name}-synthetic-s0"
        d.mkdir(parents=True, exist_ok=True)
        (d / "plan.json").write_text(json.dumps({**plan, "variant": name}))
        for file, content in record.items():
            (d / file).write_text(json.dumps(content))
    publish(sweep)
    rows = {r["variant"]: r for r in pq.read_table(sweep / "trials.parquet").to_pylist()}
    return sweep, cfg, trial, rows


def test_the_reports_scene_and_overall_aucs_are_the_trials(swept):
    sweep, _, trial, rows = swept
    m = trial["metrics"]
    cells = scene_aucs(sweep, [rows["recipe"]])
    assert cells[ALL_SCENES] == {k: m[k] for k in AUCS}
    assert len(m["per_scene_auc"]) > 1 and {s: c["auc_micro"] for s, c in cells.items() if s != ALL_SCENES} == m["per_scene_auc"]
    table = next(line for line in (sweep / "report.md").read_text().splitlines() if line.startswith("| recipe (prior"))
    assert table.split(" | ")[2] == " / ".join(fmt(m[k]) for k in AUCS)


def test_the_check_above_can_fail_the_old_way(swept):
    """Dropping score.smooth, as the report once did, changes the AUC: the equality above is not vacuous."""
    sweep, cfg, trial, rows = swept
    frames = trial_frames(sweep, rows["recipe"])
    unsmoothed = trial_scores(dataclasses.replace(cfg.score, smooth=0.0), frames, "video").score
    assert roc_auc_score(frames["label"].astype(int), unsmoothed) != trial["metrics"]["auc_micro"]


def _documented() -> list[re.Pattern]:
    """The column patterns of results/README.md's trials.parquet table: the backticked names of each row's first
    cell; `.x` after a name replaces its last segment, `<x>` is one dotted segment, `<dotted.x>` any number."""
    text = README.read_text()
    section = text[text.index("## trials.parquet"):text.index("## frame_scores.parquet")]
    out = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        prev = ""
        for name in re.findall(r"`([^`]+)`", line.split(" | ")[0]):
            name = prev.rsplit(".", 1)[0] + name if name.startswith(".") else name
            prev = name
            parts = re.split(r"(<[^>]+>)", name)
            out.append(re.compile("".join((".+" if "." in p else "[^.]+") if p.startswith("<") else re.escape(p) for p in parts)))
    return out


def test_the_readme_lists_every_column_of_a_real_sweeps_table(swept):
    sweep, *_ = swept
    documented = _documented()
    columns = pq.read_schema(sweep / "trials.parquet").names
    assert {"metrics.homogeneous.mot.all", "metrics.baselines.position.auc_micro", "stage.baselines.key", "stop_reason", "last.itae_loss",
            "metrics.dev_baselines.frame_difference.auc_macro", "training.flow_mot.kept_epoch", "report_sections"} <= set(columns)
    assert [c for c in columns if not any(p.fullmatch(c) for p in documented)] == []


def test_the_readme_lists_every_type_rule_of_the_schema():
    documented = _documented()
    rules = [*FIXED, *(f"stage.itae.{f}" for f in STAGE_TYPES), *(f"training.itae.{f}" for f in TRAINING_TYPES)]
    assert [c for c in rules if not any(p.fullmatch(c) for p in documented)] == []
    fixed_rows = {p.pattern for p in documented}
    assert [c for c in FIXED if re.escape(c) not in fixed_rows] == []  # each fixed column by its own name
