"""Readers against the real benchmark files in ../shared/data, and ShanghaiTech on a fixture in its layout."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from vadcore.data import get_benchmark
from vadcore.data.avenue import load_volume_labels
from vadcore.data.decode import list_frames
from vadcore.data.shanghaitech import load_test_labels
from vadcore.errors import DataError

PED2_TEST_FRAMES = [180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180]
AVENUE_TEST_FRAMES = {"08": 36, "17": 426, "18": 294, "19": 248, "20": 273, "21": 76}


def test_ped2_test_labels_agree_with_every_label_source(data_root):
    videos = get_benchmark("ped2", data_root).videos("test")
    assert [v.id for v in videos] == [f"{i:02d}" for i in range(1, 13)]
    assert [len(v.labels) for v in videos] == PED2_TEST_FRAMES
    labels = np.concatenate([v.labels for v in videos])
    assert (len(labels), int(labels.sum())) == (2010, 1648)

    npy = np.load(data_root / "ped2/frame_labels_ped2.npy").ravel()
    np.testing.assert_array_equal(labels, npy)

    gt = scipy.io.loadmat(data_root / "ped2/ped2.mat")["gt"].ravel()
    for v, ranges in zip(videos, gt):
        expected = np.zeros(len(v.labels), np.uint8)
        a, b = (int(x) for x in np.asarray(ranges).ravel())
        expected[a - 1 : b] = 1
        np.testing.assert_array_equal(v.labels, expected)

    from PIL import Image

    for v in videos:
        masks = list_frames(data_root / "ped2/testing/masks" / v.id)
        from_masks = np.array([int(np.asarray(Image.open(m)).any()) for m in masks], np.uint8)
        np.testing.assert_array_equal(v.labels, from_masks, err_msg=f"ped2 clip {v.id}")


def test_ped2_train_split_and_frames(data_root):
    videos = get_benchmark("ped2", data_root).videos("train")
    assert len(videos) == 16 and all(v.labels is None for v in videos)
    assert sum(len(list_frames(v.source)) for v in videos) == 2550
    first = next(videos[0].frames())
    assert first.shape == (240, 360, 3) and first.dtype == np.uint8


def test_avenue_labels_and_decoded_counts(data_root):
    bench = get_benchmark("avenue", data_root)
    test = bench.videos("test")
    assert {v.id: len(v.labels) for v in test} == AVENUE_TEST_FRAMES
    short = next(v for v in test if v.id == "08")
    frames = list(short.frames())
    assert len(frames) == 36 and frames[0].shape == (360, 640, 3)
    assert [v.id for v in bench.videos("train")] == ["12", "16"]

    all_labels = [load_volume_labels(p) for p in sorted((data_root / "avenue/ground_truth_demo/testing_label_mask").glob("*.mat"))]
    assert (sum(map(len, all_labels)), sum(int(x.sum()) for x in all_labels)) == (15324, 3712)


def test_avenue_label_count_mismatch_names_the_video(data_root, tmp_path):
    root = tmp_path / "data" / "avenue"
    (root / "testing_videos").mkdir(parents=True)
    (root / "ground_truth_demo/testing_label_mask").mkdir(parents=True)
    shutil.copy(data_root / "avenue/testing_videos/08.avi", root / "testing_videos/08.avi")
    vol = np.empty((1, 30), dtype=object)  # 30 masks for a 36-frame video
    for i in range(30):
        vol[0, i] = np.zeros((4, 4), np.uint8)
    scipy.io.savemat(root / "ground_truth_demo/testing_label_mask/8_label.mat", {"volLabel": vol})
    (video,) = get_benchmark("avenue", tmp_path / "data").videos("test")
    with pytest.raises(DataError, match=r"08\.avi.*8_label\.mat"):
        list(video.frames())


def test_avenue_truncated_video_is_an_error(data_root, tmp_path):
    root = tmp_path / "data" / "avenue" / "training_videos"
    root.mkdir(parents=True)
    data = (data_root / "avenue/training_videos/12.avi").read_bytes()
    (root / "12.avi").write_bytes(data[: len(data) // 2])
    (video,) = get_benchmark("avenue", tmp_path / "data").videos("train")
    with pytest.raises(DataError, match=r"12\.avi.*truncated"):
        list(video.frames())


def test_shanghaitech_real_labels_load(data_root):
    labels = load_test_labels(data_root / "shanghaitech")
    assert len(labels) == 107
    assert len({vid.split("_")[0] for vid in labels}) == 12  # 13 scenes in training; the test set has 12
    assert sum(map(len, labels.values())) == 40791
    assert sum(int(x.sum()) for x in labels.values()) == 17326


def test_shanghaitech_needs_frames_and_says_where(data_root):
    with pytest.raises(DataError, match="testing/frames"):
        get_benchmark("shanghaitech", data_root).videos("test")


def _write_avi(path: Path, frames: np.ndarray) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _write_jpegs(folder: Path, frames: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:03d}.jpg")


@pytest.fixture
def shanghaitech_fixture(tmp_path) -> Path:
    """Two scenes in ShanghaiTech's layout: one training .avi, one training frame folder, two test videos."""
    rng = np.random.default_rng(0)
    root = tmp_path / "shanghaitech"
    (root / "training/videos").mkdir(parents=True)
    _write_avi(root / "training/videos/01_001.avi", rng.integers(0, 255, (12, 32, 48, 3), np.uint8))
    _write_jpegs(root / "training/frames/02_001", rng.integers(0, 255, (5, 32, 48, 3), np.uint8))
    (root / "testing/test_frame_mask").mkdir(parents=True)
    for vid, n in (("01_0014", 7), ("02_0015", 9)):
        _write_jpegs(root / "testing/frames" / vid, rng.integers(0, 255, (n, 32, 48, 3), np.uint8))
        np.save(root / "testing/test_frame_mask" / f"{vid}.npy", (np.arange(n) >= 3).astype(np.int64))
    return tmp_path


def test_shanghaitech_reader_on_fixture(shanghaitech_fixture):
    bench = get_benchmark("shanghaitech", shanghaitech_fixture)
    train = bench.videos("train")  # .avi files take precedence over frame folders when both exist
    assert [(v.id, v.scene) for v in train] == [("01_001", "01")]
    assert len(list(train[0].frames())) == 12
    test = bench.videos("test")
    assert [(v.id, v.scene, len(v.labels), int(v.labels.sum())) for v in test] == [("01_0014", "01", 7, 4), ("02_0015", "02", 9, 6)]
    assert len(list(test[1].frames())) == 9

    shutil.rmtree(shanghaitech_fixture / "shanghaitech/training/videos")
    assert [v.id for v in bench.videos("train")] == ["02_001"]


def test_shanghaitech_label_length_mismatch(shanghaitech_fixture):
    np.save(shanghaitech_fixture / "shanghaitech/testing/test_frame_mask/02_0015.npy", np.zeros(4, np.int64))
    video = get_benchmark("shanghaitech", shanghaitech_fixture).videos("test")[1]
    with pytest.raises(DataError, match=r"02_0015.*02_0015\.npy"):
        list(video.frames())


def test_unreadable_jpeg_names_the_file(shanghaitech_fixture):
    bad = shanghaitech_fixture / "shanghaitech/testing/frames/01_0014/002.jpg"
    bad.write_bytes(b"not a jpeg")
    video = get_benchmark("shanghaitech", shanghaitech_fixture).videos("test")[0]
    with pytest.raises(DataError, match=r"002\.jpg.*cannot decode"):
        list(video.frames())


@pytest.mark.parametrize(
    "name, root, message",
    [
        ("ped2", None, "needs its files"),
        ("ped2", "/nonexistent/data", "does not exist"),
        ("avenue", "EMPTY", "benchmark folder .*avenue not found"),
        ("nope", None, "unknown benchmark 'nope'; allowed: synthetic, ped2"),
    ],
)
def test_missing_data_is_a_clear_error(name, root, message, tmp_path, monkeypatch):
    monkeypatch.delenv("VAD_DATA_ROOT", raising=False)
    with pytest.raises(DataError, match=message):
        get_benchmark(name, tmp_path if root == "EMPTY" else root)


def test_wrong_layout_names_the_expected_folder(tmp_path):
    (tmp_path / "ped2" / "frames").mkdir(parents=True)
    with pytest.raises(DataError, match=r"ped2/training/frames/NN/KKK\.jpg"):
        get_benchmark("ped2", tmp_path).videos("train")
