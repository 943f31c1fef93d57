"""Results layer: a sweep's trial folders -> Arrow tables (`aggregate`) -> Markdown/HTML reports (`report`).

    python -m sweeps report ablation-paths          # re-aggregate results/ablation-paths/trials/ and rebuild its report
    just report ablation-paths

Table schemas: results/README.md. Nothing here imports Ray; reports read only the Parquet tables (and a
search sweep's optuna.db for parameter importances).
"""
__all__ = ["aggregate", "report", "publish"]


def __getattr__(name):  # lazy: importing `results` stays cheap (no pyarrow/matplotlib until used)
    if name == "aggregate":
        from results.aggregate import aggregate

        return aggregate
    if name in ("report", "publish"):
        from results import report as _report

        return getattr(_report, name)
    raise AttributeError(name)
