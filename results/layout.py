"""A sweep's results folder, as the runner writes it and the aggregator reads it (one definition for both):

    results/<sweep>/sweep.json               the options of the sweep's last run (`sweeps resume` reads them)
    results/<sweep>/bill.json                a grid's compute bill, written before its trials run (sweeps.bill)
    results/<sweep>/ray/                     Ray Tune's experiment storage (never read by the results layer)
    results/<sweep>/optuna.db                a search's Optuna study
    results/<sweep>/trials/<id>/plan.json    what the trial runs: variant, benchmark, seed, overrides, command, node
    results/<sweep>/trials/<id>/trial.json   finished: the pipeline's record; error.json: failed; stop.json:
                                             stopped by the scheduler (ASHA); none of the three: interrupted
    results/<sweep>/trials/<id>/retries.json each attempt lost with its process or node (why, where), after which
                                             Tune ran the trial again (sweeps.trainable)
"""
from __future__ import annotations

import re
from pathlib import Path

SWEEP_FILE = "sweep.json"
BILL = "bill.json"
TRIALS_DIR = "trials"
PLAN = "plan.json"
TRIAL = "trial.json"
ERROR = "error.json"
STOP = "stop.json"
RETRIES = "retries.json"

# Sections a sweep file may ask its report for (`report = [...]`), beside those every report has.
REPORT_SECTIONS = {
    "table3": "the paper's Table 3 beside ours (variants named as its columns)",
    "table4": "the paper's Table 4 beside ours (variants named as its columns)",
    "per-scene": "per-scene AUC of each model, unified and separate (also drawn when trials differ in prior)",
}


def trial_id(variant: str, benchmark: str, seed: int) -> str:
    """The folder of one trial under trials/."""
    return f"{variant}-{benchmark}-s{seed}"


def trial_status(trial_dir: Path) -> str:
    """"finished", "failed" or "stopped" (by the scheduler, or interrupted: no record at all)."""
    if (trial_dir / TRIAL).is_file():
        return "finished"
    return "failed" if (trial_dir / ERROR).is_file() else "stopped"


# A per-scene trial's variant name: name@scene. Not name[scene]: rich (every console line) reads [..] as markup
# and drops it, and a shell needs it quoted. Grid names hold no "@" (sweeps.spec.NAME_RULE): the split is unambiguous.
PER_SCENE = re.compile(r"(?P<variant>[^@]+)@(?P<scene>.+)")


def per_scene_name(variant: str, scene: str) -> str:
    """The variant name of a `per_scene` grid entry's trial on one scene."""
    return f"{variant}@{scene}"


def per_scene_parts(name: str) -> tuple[str, str] | None:
    """(grid entry name, scene) of a per-scene trial's variant name, None for any other variant."""
    m = PER_SCENE.fullmatch(name)
    return (m["variant"], m["scene"]) if m else None
