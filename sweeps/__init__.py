"""Declarative sweeps (grids of named variants, Optuna searches) over vadcore trials, run on Ray Tune.

    python -m sweeps list
    python -m sweeps run ablation-paths

Ray and Optuna are imported only when a sweep runs (`sweeps.runner`, `sweeps.cluster`, `sweeps.trainable`).
"""
from sweeps.plans import TrialPlan, expand
from sweeps.spec import SweepSpec, load_sweep

__all__ = ["SweepSpec", "TrialPlan", "expand", "load_sweep"]
