"""Shared fixtures: the real benchmark files (read-only, in ../shared/data) and a fresh cache folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real benchmark files: $VAD_DATA_ROOT, else ../shared/data beside the checkout. Missing = failure."""
    root = Path(os.environ.get("VAD_DATA_ROOT") or REPO.parent / "shared" / "data")
    if not (root / "ped2").is_dir():
        pytest.fail(f"real benchmark files not found at {root}; set VAD_DATA_ROOT to the folder holding ped2/")
    return root


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"
