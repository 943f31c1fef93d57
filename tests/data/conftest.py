"""Fixtures of the data tests: published-layout archives made once per session, a fresh stage cache per test
(`data check`, also called by the sweeps' data check, remembers what passed under $VAD_CACHE)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.data import archives_fixture as fx


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAD_CACHE", str(tmp_path / "vad-cache"))


@pytest.fixture(scope="session")
def ped2_archive(data_root) -> bytes:
    return fx.ped2_archive(data_root)


@pytest.fixture(scope="session")
def avenue_archives(data_root) -> dict[str, bytes]:
    return fx.avenue_archives(data_root)


@pytest.fixture(scope="session")
def shanghaitech_archive(tmp_path_factory) -> bytes:
    return fx.shanghaitech_archive(tmp_path_factory.mktemp("shanghaitech"))


@pytest.fixture
def served(ped2_archive, avenue_archives, shanghaitech_archive):
    """Every fixture archive under its published name on a loopback server, for the test's duration."""
    with fx.ArchiveServer({"UCSD_Anomaly_Dataset.tar.gz": ped2_archive, **avenue_archives,
                           "shanghaitech.tar.gz": shanghaitech_archive}) as server:
        yield server


@pytest.fixture
def fetch_cli(capsys, monkeypatch):
    """`python -m vadcore ARGS...` in-process: (exit code, stdout + stderr). Reconnections do not wait."""
    from vadcore.__main__ import main
    from vadcore.data import download

    monkeypatch.setattr(download, "RETRY_WAIT_S", 0.0)

    def run(*argv: str | Path) -> tuple[int, str]:
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out + out.err

    return run
