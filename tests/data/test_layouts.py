"""Readers of the published layouts beside the re-packed ones: how a folder is recognised, what is skipped (Mac
twins, mask folders), how a subset of clips pairs with UCSDped2.m, clear errors; and the re-packed layout of
../shared/data read exactly as before (its fingerprints, hence every shard and stage key, unchanged)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vadcore.data import get_benchmark
from vadcore.data.decode import list_frames
from vadcore.data.ped2 import UCSD
from vadcore.errors import DataError

# Split fingerprints of ../shared/data as main computed them before the published layouts were read (424ff7b).
FINGERPRINTS = {"ped2": {"train": "471ce4dc2477f76c", "test": "98c0f3e839be3f40"},
                "avenue": {"train": "86cac93bf1493481", "test": "6213eeed29419c37"}}


@pytest.mark.parametrize("name", FINGERPRINTS)
def test_the_re_packed_layout_keeps_its_fingerprints(data_root, name):
    bench = get_benchmark(name, data_root)
    assert {s: bench.fingerprint(s) for s in FINGERPRINTS[name]} == FINGERPRINTS[name]


def _official_ped2(data_root: Path, root: Path, train=("02",), test=("03", "05")) -> Path:
    """Ped2 in UCSD's layout under root/ped2 from ../shared/data's clips (renamed 1-based, JPEG kept: the layout
    is under test here, not the encoding), with the Mac twins and a mask folder the archive has."""
    ped2 = root / "ped2" / UCSD
    for split, folder, clips in (("training", "Train", train), ("testing", "Test", test)):
        for clip in clips:
            out = ped2 / folder / f"{folder}{int(clip):03d}"
            out.mkdir(parents=True)
            for jpeg in list_frames(data_root / "ped2" / split / "frames" / clip):
                (out / f"{int(jpeg.stem) + 1:03d}.jpg").symlink_to(jpeg)
            (out / "._001.jpg").write_bytes(b"AppleDouble")
    (ped2 / "Test/Test003_gt").mkdir()
    shutil.copy(data_root / "ped2/UCSDped2.m", ped2 / "Test/UCSDped2.m")
    (ped2 / "Test/._UCSDped2.m").write_bytes(b"AppleDouble")
    (ped2 / ".DS_Store").write_bytes(b"Bud1")
    return root


def test_a_subset_of_ucsd_clips_pairs_with_its_own_entries_of_ucsdped2_m(data_root, tmp_path):
    ours, theirs = get_benchmark("ped2", _official_ped2(data_root, tmp_path)), get_benchmark("ped2", data_root)
    assert [v.id for v in ours.videos("train")] == ["02"]
    reference = {v.id: v for v in theirs.videos("test")}
    for v in ours.videos("test"):
        assert v.id in ("03", "05") and (v.labels == reference[v.id].labels).all()
        assert v.label_source.name == "UCSDped2.m" and v.source.name == f"Test0{v.id}"


def test_both_ped2_layouts_in_one_folder_is_an_error(data_root, tmp_path):
    _official_ped2(data_root, tmp_path)
    (tmp_path / "ped2/training/frames").mkdir(parents=True)
    with pytest.raises(DataError, match=r"two layouts.*keep one of them"):
        get_benchmark("ped2", tmp_path).videos("train")


def test_a_stray_folder_and_a_clip_without_labels_are_named(data_root, tmp_path):
    _official_ped2(data_root, tmp_path)
    test = tmp_path / "ped2" / UCSD / "Test"
    (test / "Test013").mkdir()
    (test / "Test013/001.jpg").symlink_to(data_root / "ped2/testing/frames/01/000.jpg")
    with pytest.raises(DataError, match=r"12 label entries, none for test clip .*Test013"):
        get_benchmark("ped2", tmp_path).videos("test")
    (test / "Test013").rename(test / "extra")
    with pytest.raises(DataError, match=r"extra: not a clip folder of the official .* layout"):
        get_benchmark("ped2", tmp_path).videos("test")


def test_a_missing_ped2_split_names_both_layouts(tmp_path):
    (tmp_path / "ped2" / UCSD / "Test").mkdir(parents=True)
    with pytest.raises(DataError, match=r"Train/TrainNNN/KKK\.tif .*training/frames/NN/KKK\.jpg"):
        get_benchmark("ped2", tmp_path).videos("train")


def test_avenue_videos_in_both_places_is_an_error_and_none_names_both(data_root, tmp_path):
    (tmp_path / "avenue/Avenue Dataset/training_videos").mkdir(parents=True)
    with pytest.raises(DataError, match=r"Avenue Dataset/training_videos/NN\.avi .* or .*avenue/training_videos/NN\.avi"):
        get_benchmark("avenue", tmp_path).videos("train")
    (tmp_path / "avenue/testing_videos").mkdir()
    with pytest.raises(DataError, match=r"Avenue's videos twice"):
        get_benchmark("avenue", tmp_path).videos("train")


def test_hidden_files_are_never_frames(tmp_path):
    for name in ("000.jpg", "001.jpg", "._000.jpg", ".DS_Store"):
        (tmp_path / name).touch()
    assert [p.name for p in list_frames(tmp_path)] == ["000.jpg", "001.jpg"]
