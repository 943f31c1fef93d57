"""`python -m vadcore data check`: what a data root holds, per benchmark and split, the first problem as exit 2,
remembered once passed; and the sweeps' data check, which runs it before Ray starts."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from vadcore.data import check as check_module
from vadcore.data.avenue import load_volume_labels
from vadcore.data.decode import probe
from vadcore.errors import DataError

AVENUE_FRAMES = {"testing_videos": {"08": 36, "17": 426, "18": 294, "19": 248, "20": 273, "21": 76},
                 "training_videos": {"10": 1223, "11": 781, "12": 145, "16": 244}}  # ../shared/data/README.md


def one_error(out: str) -> str:
    assert "Traceback" not in out
    (line,) = [x for x in out.splitlines() if x.startswith("error:")]
    return line


def avenue_subset(data_root: Path, root: Path) -> Path:
    """Avenue training video 12, test video 08 and its labels under root/avenue, as links to ../shared/data."""
    for folder, name in (("training_videos", "12.avi"), ("testing_videos", "08.avi"), ("ground_truth_demo/testing_label_mask", "8_label.mat")):
        (root / "avenue" / folder).mkdir(parents=True, exist_ok=True)
        (root / "avenue" / folder / name).symlink_to(data_root / "avenue" / folder / name)
    return root


def test_real_benchmarks_counted_per_split_and_remembered(fetch_cli, data_root, monkeypatch):
    code, out = fetch_cli("data", "check", "ped2", "avenue", "--data-root", data_root)
    assert code == 0, out
    anomalous = sum(int(load_volume_labels(data_root / f"avenue/ground_truth_demo/testing_label_mask/{int(v)}_label.mat").sum())
                    for v in AVENUE_FRAMES["testing_videos"])
    for line in (r"train +16 of 16 videos +2,550 frames +240x360", r"test +12 of 12 videos +2,010 frames 1,648 anomalous +240x360",
                 r"train +4 of 16 videos +2,393 frames +360x640", rf"test +6 of 21 videos +1,353 frames {anomalous:,} anomalous +360x640"):
        assert re.search(line, out), (line, out)

    def no_decoding(source):
        raise AssertionError("a remembered check decodes nothing")

    monkeypatch.setattr(check_module, "probe", no_decoding)
    code, out = fetch_cli("data", "check", "ped2", "avenue", "--data-root", data_root)
    assert code == 0 and out.count("checked before, unchanged since") == 2


@pytest.mark.parametrize("folder", ["testing_videos", "training_videos"])
def test_probe_counts_every_video_as_decoding_it_would(data_root, folder):
    for video, n in AVENUE_FRAMES[folder].items():
        count, first, last = probe(data_root / "avenue" / folder / f"{video}.avi")
        assert count == n and first.shape == last.shape == (360, 640, 3)


def test_a_cut_short_video_is_the_first_problem_and_a_changed_file_is_checked_again(fetch_cli, data_root, tmp_path):
    root = avenue_subset(data_root, tmp_path)
    assert fetch_cli("data", "check", "--data-root", root)[0] == 0
    video = root / "avenue/training_videos/12.avi"
    data = video.read_bytes()
    video.unlink()
    video.write_bytes(data[: len(data) // 2])  # another size: another fingerprint, so checked again
    code, out = fetch_cli("data", "check", "--data-root", root)
    assert code == 2 and re.search(r"12\.avi: the container announces 145 frames .* cut short", one_error(out))


def test_labels_that_do_not_match_the_frames_name_both_files(fetch_cli, data_root, tmp_path):
    root = avenue_subset(data_root, tmp_path)
    mat = root / "avenue/ground_truth_demo/testing_label_mask/8_label.mat"
    mat.unlink()
    vol = np.empty((1, 30), dtype=object)
    for i in range(30):
        vol[0, i] = np.zeros((4, 4), np.uint8)
    scipy.io.savemat(mat, {"volLabel": vol})
    code, out = fetch_cli("data", "check", "avenue", "--data-root", root)
    assert code == 2 and re.search(r"08\.avi: 36 frames but .*8_label\.mat labels 30; they must match", one_error(out))


def test_an_undecodable_last_frame_is_named(fetch_cli, data_root, tmp_path):
    for split in ("training", "testing"):
        shutil.copytree(data_root / f"ped2/{split}/frames/01", tmp_path / f"ped2/{split}/frames/01")
    (tmp_path / "ped2/UCSDped2.m").write_text("TestVideoFile{end+1}.gt_frame = [61:180];\n")
    (tmp_path / "ped2/testing/frames/01/179.jpg").write_bytes(b"\xff\xd8 not all there")
    code, out = fetch_cli("data", "check", "--data-root", tmp_path)
    assert code == 2 and re.search(r"testing/frames/01/179\.jpg: cannot decode image", one_error(out))


@pytest.mark.parametrize("argv, needle", [
    (("shanghaitech",), "ShanghaiTech training data not found"),  # ../shared/data has its labels only
    (("--data-root", "EMPTY"), "no benchmark found under data root"),
    (("ped2", "--data-root", "EMPTY"), "benchmark folder .*ped2 not found"),
    ((), "no data root: pass --data-root DIR or set \\$VAD_DATA_ROOT"),
])
def test_nothing_to_check_is_one_sentence(fetch_cli, data_root, tmp_path, monkeypatch, argv, needle):
    monkeypatch.delenv("VAD_DATA_ROOT", raising=False)
    argv = [str(tmp_path) if a == "EMPTY" else a for a in argv]
    if argv and "--data-root" not in argv:
        argv += ["--data-root", str(data_root)]
    code, out = fetch_cli("data", "check", *argv)
    assert code == 2 and re.search(needle, one_error(out))


def test_the_sweep_checks_its_benchmarks_before_ray_once(data_root, tmp_path, monkeypatch, capsys):
    from sweeps.runner import check_data

    root = avenue_subset(data_root, tmp_path / "good")
    check_data(["synthetic", "avenue"], str(root))
    assert "avenue: every video's first and last frame decode" in capsys.readouterr().out
    monkeypatch.setattr(check_module, "probe", lambda source: pytest.fail("a remembered check decodes nothing"))
    check_data(["avenue"], str(root))
    monkeypatch.setattr(check_module, "probe", probe)
    bad = avenue_subset(data_root, tmp_path / "bad")
    video = bad / "avenue/testing_videos/08.avi"
    data = video.read_bytes()
    video.unlink()
    video.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"08\.avi: the container announces 36 frames"):
        check_data(["avenue"], str(bad))


def test_the_same_files_under_another_root_are_checked_there(fetch_cli, data_root, tmp_path):
    first, second = avenue_subset(data_root, tmp_path / "a"), avenue_subset(data_root, tmp_path / "b")
    assert fetch_cli("data", "check", "--data-root", first)[0] == 0
    code, out = fetch_cli("data", "check", "--data-root", second)
    assert code == 0 and "checked before" not in out and f"in {second}/avenue/testing_videos" in out
