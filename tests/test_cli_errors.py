"""The CLIs turn user errors into one literal sentence and exit code 2: no traceback, no work done first."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vadcore.__main__ import guarded
from vadcore.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m vadcore ARGS`; the timeout only guards against a run that trains instead of failing."""
    return subprocess.run([sys.executable, "-m", "vadcore", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "sets, field",
    [
        (["itae=3", "itae.tau=2"], "itae.FIELD"),
        (["data.loader_workers=-2"], "data.loader_workers=-2"),
        (["itae_train.lr=inf"], "itae_train.lr=inf"),
    ],
)
def test_run_with_a_bad_override_exits_2_without_traceback(tmp_path, sets, field):
    cache = tmp_path / "cache"
    sets_args = [a for s in sets for a in ("--set", s)]
    proc = run_cli("run", "--no-progress", "--out", str(tmp_path / "out"), "--cache", str(cache), *sets_args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and field in proc.stderr
    assert not cache.exists()


@pytest.mark.parametrize("out", ["trial.json", "trial.json/t1"])
def test_run_with_out_naming_a_file_fails_before_any_work(tmp_path, out):
    file, cache = tmp_path / "trial.json", tmp_path / "cache"
    file.write_text("{}")
    proc = run_cli("run", "--no-progress", "--out", str(tmp_path / out), "--cache", str(cache))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and f"{file} is not a folder; --out must be a folder" in proc.stderr
    assert not cache.exists(), "shards or stages were written before --out was checked"
    assert file.read_text() == "{}"


def test_error_message_keeps_its_brackets(capsys):
    def fail(args):
        raise ConfigError("search needs exactly one of [] or frames[a:b], not [bold]x[/bold]")

    assert guarded(fail, None) == 2
    assert capsys.readouterr().err.strip() == "error: search needs exactly one of [] or frames[a:b], not [bold]x[/bold]"
