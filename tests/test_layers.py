"""The packages form layers: vadcore (the library) imports neither sweeps nor results, results (tables and reports)
does not import sweeps, and no module imports a command-line module (`__main__`) of another. Read from the source,
every import statement, including those inside functions."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BELOW = {"vadcore": {"sweeps", "results"}, "results": {"sweeps"}, "sweeps": set()}


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


@pytest.mark.parametrize("package", sorted(BELOW))
def test_no_module_imports_upward_or_another_packages_command_line(package):
    wrong = []
    for path in sorted((REPO / package).rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in BELOW[package] or (name.endswith("__main__") and top != package):
                wrong.append(f"{path.relative_to(REPO)}: {name}")
    assert wrong == []
