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
    assert [v.id for v in bench.videos("train")] == ["10", "11", "12", "16"]  # 10, 11 re-encoded (shared/data/README.md)

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


# --- silent label shifts and bad label values (reliability issue) ---------------------------------------------


def _ped2_test_clip(data_root: Path, root: Path, frames: range) -> Path:
    """A Ped2 layout under root/ped2 with one test clip made of real frames `frames` of test clip 01."""
    clip = root / "ped2/testing/frames/01"
    clip.mkdir(parents=True)
    for k in frames:
        shutil.copy(data_root / f"ped2/testing/frames/01/{k:03d}.jpg", clip / f"{k:03d}.jpg")
    (root / "ped2/UCSDped2.m").write_text("TestVideoFile{end+1}.gt_frame = [3:8];\n")
    return clip


def test_ped2_missing_frame_names_the_folder_and_the_gap(data_root, tmp_path):
    clip = _ped2_test_clip(data_root, tmp_path, [k for k in range(12) if k != 5])
    bench = get_benchmark("ped2", tmp_path)
    with pytest.raises(DataError, match=rf"{clip}.*missing.*\b5\b"):
        bench.videos("test")
    with pytest.raises(DataError, match=r"missing.*\b5\b"):
        bench.fingerprint("test")


def test_shanghaitech_missing_test_frame_is_not_hidden_by_an_extra_one(shanghaitech_fixture):
    """004.jpg gone but 007.jpg added: the frame count still equals the label count, yet labels would shift."""
    clip = shanghaitech_fixture / "shanghaitech/testing/frames/01_0014"
    (clip / "004.jpg").rename(clip / "007.jpg")
    video = get_benchmark("shanghaitech", shanghaitech_fixture).videos("test")[0]
    with pytest.raises(DataError, match=r"01_0014.*missing.*\b4\b"):
        list(video.frames())


def test_list_frames_orders_by_frame_number_and_rejects_ambiguous_names(tmp_path):
    for k in range(12):  # unpadded: a name sort would put 10.jpg and 11.jpg before 2.jpg
        (tmp_path / f"{k}.jpg").touch()
    assert [p.stem for p in list_frames(tmp_path)] == [str(k) for k in range(12)]
    (tmp_path / "02.png").touch()
    with pytest.raises(DataError, match=r"02\.png and 2\.jpg both have frame number 2"):
        list_frames(tmp_path)
    (tmp_path / "02.png").unlink()
    (tmp_path / "cover.jpg").touch()
    with pytest.raises(DataError, match=r"cover\.jpg.*no frame number"):
        list_frames(tmp_path)


@pytest.mark.parametrize("bad", [255, 256, -1, 0.4, np.nan])
def test_shanghaitech_label_values_must_be_0_or_1(shanghaitech_fixture, bad):
    labels = (np.arange(9) >= 3).astype(np.float64)
    labels[5] = bad
    np.save(shanghaitech_fixture / "shanghaitech/testing/test_frame_mask/02_0015.npy", labels)
    with pytest.raises(DataError, match=rf"02_0015\.npy.*frame 5: {bad}"):
        get_benchmark("shanghaitech", shanghaitech_fixture).videos("test")


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int64, np.float32])
def test_exact_0_1_labels_of_any_numeric_dtype_are_accepted(shanghaitech_fixture, dtype):
    np.save(shanghaitech_fixture / "shanghaitech/testing/test_frame_mask/02_0015.npy", (np.arange(9) >= 3).astype(dtype))
    video = get_benchmark("shanghaitech", shanghaitech_fixture).videos("test")[1]
    assert video.labels.dtype == np.uint8 and video.labels.tolist() == [0, 0, 0] + [1] * 6


def test_every_video_s_labels_are_checked(tmp_path):
    """The check sits in Video itself, so no reader (present or future) can hand on labels that a cast would bend."""
    from vadcore.data.base import Video

    with pytest.raises(DataError, match=r"labels\.npy.*2 frame labels.*frame 1: 2.*frame 3: -1"):
        Video("v", "s", "test", iter, np.array([0, 2, 1, -1]), tmp_path, tmp_path / "labels.npy")
    with pytest.raises(DataError, match=r"video v.*1-D"):
        Video("v", "s", "test", iter, np.zeros((2, 3)))


def _avenue_test_video(data_root: Path, root: Path, name: str) -> None:
    (root / "avenue/testing_videos").mkdir(parents=True)
    shutil.copy(data_root / "avenue/testing_videos/08.avi", root / "avenue/testing_videos" / name)


def test_avenue_missing_label_file_names_it(data_root, tmp_path):
    _avenue_test_video(data_root, tmp_path, "08.avi")
    bench = get_benchmark("avenue", tmp_path)
    for listing in (bench.videos, bench.fingerprint):
        with pytest.raises(DataError, match=r"08\.avi.*testing_label_mask/8_label\.mat not found.*K_label\.mat"):
            listing("test")


@pytest.mark.parametrize("split", ["train", "test"])
def test_avenue_video_name_must_be_its_number(data_root, tmp_path, split):
    _avenue_test_video(data_root, tmp_path, "video08.avi")
    if split == "train":
        (tmp_path / "avenue/testing_videos").rename(tmp_path / "avenue/training_videos")
    bench = get_benchmark("avenue", tmp_path)
    for listing in (bench.videos, bench.fingerprint):
        with pytest.raises(DataError, match=r"video08\.avi.*NN\.avi"):
            listing(split)
