"""`python -m vadcore errmaps`: the window it picks, the error it draws (Eq. 7 of what it shows), its errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vadcore.__main__ import main
from vadcore.config import resolve_config
from vadcore.errmaps import CAPTION, centre_start, error_rows
from vadcore.errors import ConfigError
from vadcore.pipeline import run_trial
from vadcore.testing import TINY


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    root = tmp_path_factory.mktemp("errmaps")
    run_trial(resolve_config("synthetic", "smoke", [*TINY, "data.dev=true"]), None, root / "cache", root / "out", show=False)
    return root


def test_the_window_is_centred_on_the_anomaly_or_the_video():
    labels = np.zeros(40, np.uint8)
    assert centre_start(labels, 8) == 16  # no anomaly: the video's middle
    labels[10:21] = 1
    assert centre_start(labels, 8) == 11  # middle frame 15 -> window 11..18
    labels[:] = 0
    labels[1] = labels[38] = 1  # near the ends: clipped to the video
    assert centre_start(labels, 8) == 15 and centre_start(labels[:5], 8) == 0
    labels[:] = 0
    labels[0] = 1
    assert centre_start(labels, 8) == 0


def test_rows_show_the_reconstruction_and_its_eq7_error(trial):
    rows = error_rows(trial / "out", trial / "cache")
    captions = [c for c, *_ in rows]
    assert captions == sorted(captions) and len(rows) > 1
    for caption, x, recon, err in rows:
        assert x.shape == recon.shape == err.shape == (32, 48)
        np.testing.assert_allclose(err, -np.log10(1 - np.abs(x - recon)), rtol=1e-5, atol=1e-6)  # grey: one channel
        assert " label 1 " in caption  # synthetic dev videos each hold one anomaly: the window sits on it
    test = [c.split()[0] for c, *_ in error_rows(trial / "out", trial / "cache", "test")]
    assert test and not set(test) & {c.split()[0] for c in captions}  # the test split's own videos


def test_cli_writes_one_row_per_video(trial, capsys):
    out = trial / "sheet.png"
    assert main(["errmaps", str(trial / "out"), "--out", str(out), "--cache", str(trial / "cache")]) == 0
    lines = capsys.readouterr().out.splitlines()
    n = len(lines) - 1
    assert lines[-1] == f"{n} rows -> {out}"
    assert Image.open(out).size == (3 * (48 * 2 + 2), n * (32 * 2 + CAPTION))
    video = lines[0].split()[0]
    assert main(["errmaps", str(trial / "out"), "--out", str(out), "--cache", str(trial / "cache"), "--video", video]) == 0
    assert Image.open(out).size[1] == 32 * 2 + CAPTION


def test_what_it_cannot_draw_is_a_clear_error(trial, tmp_path, capsys):
    with pytest.raises(ConfigError, match="no trial.json"):
        error_rows(tmp_path, trial / "cache")
    with pytest.raises(ConfigError, match=r"video\(s\) nope are not in the dev split"):
        error_rows(trial / "out", trial / "cache", "dev", ["nope"])
    with pytest.raises(ConfigError, match="is missing from the cache"):
        error_rows(trial / "out", tmp_path / "empty-cache")
    assert main(["errmaps", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "no trial.json" in capsys.readouterr().err
    record = json.loads((trial / "out" / "trial.json").read_text())
    del record["stages"]["shards_dev"]  # a trial without the development split: the split it has is suggested
    (tmp_path / "no-dev").mkdir()
    (tmp_path / "no-dev" / "trial.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"has no dev split; it scored test: pass --split test \(a trial scores the dev split with data.dev=true\)"):
        error_rows(tmp_path / "no-dev", trial / "cache")
