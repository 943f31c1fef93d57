"""`python -m vadcore shard` on bad input: one paragraph naming the file, exit code 2, no traceback, no manifest."""
from __future__ import annotations

import numpy as np
import pytest

from vadcore.__main__ import main


def _ped2_layout(root, bad_jpeg: bool):
    from PIL import Image

    for split in ("training", "testing"):
        folder = root / "ped2" / split / "frames" / "01"
        folder.mkdir(parents=True)
        for i in range(20):
            Image.fromarray(np.full((24, 36, 3), 10 * i, np.uint8)).save(folder / f"{i:03d}.jpg")
    (root / "ped2/UCSDped2.m").write_text("TestVideoFile{end+1}.gt_frame = [5:12];\n")
    if bad_jpeg:
        (root / "ped2/training/frames/01/007.jpg").write_bytes(b"\xff\xd8 truncated")


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_unreadable_jpeg(tmp_path, capsys):
    _ped2_layout(tmp_path, bad_jpeg=True)
    code, out = _run(capsys, "shard", "ped2", "--data-root", str(tmp_path), "--cache", str(tmp_path / "cache"))
    assert code == 2 and "007.jpg" in out and "Traceback" not in out
    assert not list((tmp_path / "cache").rglob("manifest.json"))


def test_label_range_beyond_the_video(tmp_path, capsys):
    _ped2_layout(tmp_path, bad_jpeg=False)
    (tmp_path / "ped2/UCSDped2.m").write_text("TestVideoFile{end+1}.gt_frame = [5:40];\n")
    code, out = _run(capsys, "shard", "ped2", "--data-root", str(tmp_path), "--cache", str(tmp_path / "cache"))
    assert code == 2 and "UCSDped2.m" in out and "[5:40]" in out and "Traceback" not in out


def test_good_layout_shards_then_second_call_does_nothing(tmp_path, capsys):
    _ped2_layout(tmp_path, bad_jpeg=False)
    args = ("shard", "ped2", "--data-root", str(tmp_path), "--cache", str(tmp_path / "cache"), "--set", "data.height=16", "--set", "data.width=16")
    code, out = _run(capsys, *args)
    assert code == 0 and "ped2/test: 1 videos, 20 frames, 8 anomalous" in out.replace("\n", " ")
    code, out = _run(capsys, *args)
    assert code == 0 and "nothing to do" in out


def test_a_scene_subset_is_sharded_as_a_trial_would_and_an_unknown_scene_is_named(tmp_path, capsys):
    _ped2_layout(tmp_path, bad_jpeg=False)
    args = ("shard", "ped2", "--data-root", str(tmp_path), "--cache", str(tmp_path / "cache"), "--set", "data.height=16", "--set", "data.width=16")
    code, out = _run(capsys, *args, "--set", 'data.scenes=["ped2"]')
    assert code == 0 and "ped2/test: 1 videos, 20 frames" in out.replace("\n", " ")
    code, out = _run(capsys, *args, "--set", 'data.scenes=["plaza"]')
    assert code == 2 and "plaza" in out and "Traceback" not in out


@pytest.mark.parametrize("argv, needle", [
    (("shard", "ped2", "--data-root", "/nonexistent"), "does not exist"),
    (("shard", "ped2", "--profile", "fast"), "unknown profile 'fast'"),
    (("shard", "kitti"), "data.benchmark='kitti' unknown; allowed: synthetic, ped2"),
])
def test_missing_or_unknown_inputs(argv, needle, capsys, monkeypatch):
    monkeypatch.delenv("VAD_DATA_ROOT", raising=False)
    code, out = _run(capsys, *argv)
    assert code == 2 and needle in out and "Traceback" not in out


def test_missing_frame_file(tmp_path, capsys):
    _ped2_layout(tmp_path, bad_jpeg=False)
    (tmp_path / "ped2/training/frames/01/005.jpg").unlink()
    code, out = _run(capsys, "shard", "ped2", "--data-root", str(tmp_path), "--cache", str(tmp_path / "cache"))
    out = out.replace("\n", "")
    assert code == 2 and "training/frames/01" in out and "missing" in out and "Traceback" not in out


def test_corrupt_manifest(tmp_path, capsys):
    _ped2_layout(tmp_path, bad_jpeg=False)
    args = ("shard", "ped2", "--data-root", str(tmp_path), "--cache", str(tmp_path / "cache"), "--set", "data.height=16", "--set", "data.width=16")
    assert _run(capsys, *args)[0] == 0
    (manifest,) = (tmp_path / "cache").rglob("test-*/manifest.json")
    manifest.write_text('{"videos": 1, "fra')
    code, out = _run(capsys, *args)
    out = out.replace("\n", "")
    assert code == 2 and "manifest.json" in out and "delete" in out and "Traceback" not in out
