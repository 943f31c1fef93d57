"""Every recipe the documentation names runs as `./dev RECIPE` on a fresh machine: the READMEs name recipes as
`./dev NAME` (never a bare `just NAME`: `just` lives in .venv/bin, which a fresh shell does not have on its PATH),
and each NAME is a recipe of the justfile."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_readmes_name_recipes_that_dev_runs():
    just = Path(sys.executable).parent / "just"
    recipes = set(subprocess.run([str(just), "--justfile", str(REPO / "justfile"), "--summary"], capture_output=True, text=True,
                                 check=True).stdout.split())
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "*.md"], capture_output=True, text=True, check=True).stdout.split()
    named, bare = {}, []
    for doc in tracked:
        text = (REPO / doc).read_text()
        bare += [f"{doc}: just {m}" for m in re.findall(r"(?:^|[\s`(])just ([a-z][\w-]*)", text, re.M)]
        named.update({m: doc for m in re.findall(r"\./dev ([a-z][\w-]*)", text)})
    assert bare == []
    assert {"sweep", "test", "bench", "cluster-test"} <= set(named)
    assert {name: doc for name, doc in named.items() if name not in recipes} == {}
