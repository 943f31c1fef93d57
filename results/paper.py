"""The paper's published numbers that the ablation sweeps reproduce (frame-level AUC, micro protocol).

Table 3: the contribution of each ITAE path and each flow; Table 4: what F_app reads besides the appearance
latent (both flows on). Columns are keyed by variant names (sweeps/ablation-paths.toml and
sweeps/ablation-extra-input.toml name theirs so), rows by benchmark; a sweep file asks for a table by its report
section name (`report = ["table3"]`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperTable:
    title: str  # the caption as the report shows it
    columns: tuple[str, ...]  # the sweep's variant names, in the paper's column order
    headers: tuple[str, ...]  # the paper's column headers
    rows: dict[str, tuple[float, ...]]  # benchmark -> AUC per column


TABLE3 = PaperTable(
    title="Table 3: contribution of each path and each flow (frame AUC)",
    columns=("app-itae", "app-mot-itae", "app-flow", "mot-flow", "both-flows"),
    headers=("App ITAE", "App+Mot ITAE", "+ app flow", "+ mot flow", "+ both flows"),
    rows={
        "ped2": (0.959, 0.968, 0.974, 0.973, 0.973),
        "avenue": (0.820, 0.855, 0.864, 0.854, 0.860),
        "shanghaitech": (0.716, 0.718, 0.725, 0.723, 0.730),
    },
)

TABLE4 = PaperTable(
    title="Table 4: extra input of the appearance flow (frame AUC, both flows)",
    columns=("none", "intensity", "error-map"),
    headers=("none", "intensity", "error map"),
    rows={
        "ped2": (0.973, 0.974, 0.973),
        "avenue": (0.856, 0.864, 0.860),
        "shanghaitech": (0.724, 0.725, 0.727),
    },
)

# report section name (results.layout.REPORT_SECTIONS) -> the paper table it sets beside ours
PAPER_TABLES: dict[str, PaperTable] = {"table3": TABLE3, "table4": TABLE4}
