"""Declarative sweeps (grids of named variants, Optuna searches) over vadcore trials, run on Ray Tune.

    python -m sweeps list
    python -m sweeps run ablation-paths

Ray and Optuna are imported only by `sweeps.runner`, when a sweep runs.
"""
from sweeps.spec import SweepSpec, TrialPlan, expand, load_sweep

__all__ = ["SweepSpec", "TrialPlan", "expand", "load_sweep"]
