"""The development split made from training videos (vadcore.data.devsplit): hold-out, labels by construction,
pixels changed only where the labels say, determinism; on the real Ped2 and Avenue training files.

Pixel tests run on a real Ped2 training video cut to 24 frames (and a 24-frame donor), not whole videos."""
from __future__ import annotations

import hashlib
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from vadcore.baselines import baseline_aucs, baseline_scores
from vadcore.data import DEV, get_benchmark
from vadcore.data import devsplit
from vadcore.data.base import Video
from vadcore.data.decode import iter_image_folder
from vadcore.data.devsplit import WALK, DevCopy, copy_kind, dev_copies, holdout, kind_masks
from vadcore.errors import DataError

SHORT = 24  # frames of the cut-down real videos


def _fake(vid: str, scene: str) -> Video:
    return Video(vid, scene, "train", lambda: iter(()))


def _short(data_root: Path, vid: str) -> Video:
    """Real Ped2 training video `vid`, its first SHORT frames only (no source: its frames are counted)."""
    folder = data_root / "ped2/training/frames" / vid
    return Video(vid, "ped2", "train", lambda: islice(iter_image_folder(folder), SHORT))


@pytest.fixture(scope="module")
def short_copies(data_root) -> dict[str, DevCopy]:
    copies = dev_copies([_short(data_root, "01"), _short(data_root, "02")])
    return {c.kind: c for c in copies}


@pytest.fixture(scope="module")
def short_source(data_root) -> list[np.ndarray]:
    return list(_short(data_root, "01").frames())


def test_holdout_every_eighth_video_per_scene_never_the_last_one():
    videos = [_fake(f"{s}_{i:02d}", s) for s, n in (("a", 1), ("b", 2), ("c", 9), ("d", 16)) for i in range(n)]
    held = holdout(videos[::-1])  # order of listing does not matter
    assert held == {"b_00", "c_00", "c_08", "d_00", "d_08"}
    assert held == holdout(videos)


def test_ped2_holdout_is_fixed_and_leaves_training_videos(data_root):
    bench = get_benchmark("ped2", data_root)
    train = {v.id for v in bench.videos("train")}
    assert bench.has_dev and bench.dev_holdout() == {"01", "09"} == get_benchmark("ped2", data_root).dev_holdout()
    assert len(train - bench.dev_holdout()) == 14


def test_ped2_dev_videos_labels_by_construction(data_root):
    bench = get_benchmark("ped2", data_root)
    dev = bench.videos(DEV)
    ids = [v.id for v in dev]
    assert ids == sorted(ids) == ["01", "01+object", "01+patch", "01+skip", "09", "09+object", "09+patch", "09+skip"]
    for v in dev:
        source, _, kind = v.id.partition("+")
        n = {"01": 120, "09": 180}[source]
        assert v.split == DEV and v.scene == "ped2"
        if not kind:  # the held-out video itself: every frame, all normal
            assert len(v.labels) == n and not v.labels.any()
            continue
        assert len(v.labels) == n if kind != "skip" else len(v.labels) < n  # skipping drops frames
        ones = np.flatnonzero(v.labels)
        assert 0 < len(ones) < len(v.labels) and np.all(np.diff(ones) == 1), v.id  # both classes, one segment
        assert ones[0] >= n // 8 and ones[-1] < len(v.labels) - n // 8, v.id  # normal frames before and after


def test_fingerprint_follows_generator_version_and_training_files(data_root, monkeypatch):
    bench = get_benchmark("ped2", data_root)
    fp = bench.fingerprint(DEV)
    assert fp not in (bench.fingerprint("train"), bench.fingerprint("test"))
    monkeypatch.setattr(devsplit, "DEV_FORMAT", devsplit.DEV_FORMAT + 1)
    assert bench.fingerprint(DEV) != fp
    monkeypatch.undo()
    monkeypatch.setattr(devsplit, "CONTRAST", 1.0)  # a scratch contrast never reuses the shards of another
    assert bench.fingerprint(DEV) != fp
    monkeypatch.undo()
    monkeypatch.setattr(type(bench), "fingerprint", lambda self, split: "other" if split == "train" else fp)
    assert bench.dev_fingerprint() != fp


def test_normal_copy_is_the_source(short_copies, short_source):
    normal = short_copies["normal"]
    assert normal.id == "01" and not normal.labels.any()
    frames = list(normal.frames())
    assert len(frames) == SHORT and all(np.array_equal(a, b) for a, b in zip(frames, short_source))


def test_skip_copy_shows_source_frames_and_labels_exactly_the_jumps(short_copies, short_source):
    skip = short_copies["skip"]
    frames = list(skip.frames())
    assert len(frames) == len(skip.labels) == len(skip.shown) < SHORT
    for frame, k in zip(frames, skip.shown):  # every frame is a source frame, in order
        assert np.array_equal(frame, short_source[k])
    steps = np.diff(skip.shown, prepend=-1)
    assert set(steps[skip.labels == 1]) in ({2}, {3}) and set(steps[skip.labels == 0]) == {1}
    assert 0 < skip.labels.sum() < len(skip.labels)


@pytest.mark.parametrize("kind, speeds", [("object", devsplit.OBJECT_SPEED), ("patch", devsplit.PATCH_SPEED)])
def test_pasted_copies_change_pixels_only_in_their_box_on_labelled_frames(short_copies, short_source, kind, speeds):
    copy = short_copies[kind]
    out = list(copy.frames_and_boxes())
    assert len(out) == SHORT and 0 < copy.labels.sum() < SHORT
    lefts = []
    for t, ((frame, box), src, label) in enumerate(zip(out, short_source, copy.labels)):
        assert (box is not None) == bool(label), t  # pasted exactly on the labelled frames
        if box is None:
            assert np.array_equal(frame, src), t
            continue
        top, left, h, w = box
        inside = np.zeros(frame.shape[:2], bool)
        inside[top : top + h, left : left + w] = True
        changed = np.any(frame != src, axis=2)
        assert changed.any() and not (changed & ~inside).any(), t
        lefts.append(left)
    width = short_source[0].shape[1]
    speed = np.abs(np.diff(lefts)).mean() / (WALK * width)  # multiples of walking speed
    assert speeds[0] - 0.2 <= speed <= speeds[1] + 0.2


def test_pasted_things_keep_their_mean_colour_at_a_fraction_of_their_contrast(monkeypatch):
    rng = np.random.default_rng(0)
    sprite = rng.integers(0, 256, (9, 7, 3)).astype(np.uint8)
    mask = rng.random((9, 7)) < 0.6
    mean = sprite[mask].mean(axis=0)
    faded = devsplit._faded(sprite, mask)
    assert faded.dtype == np.uint8 and faded.shape == sprite.shape
    np.testing.assert_allclose(faded[mask] - mean, devsplit.CONTRAST * (sprite[mask] - mean), atol=0.5 + 1e-4)
    np.testing.assert_allclose(faded[mask].std(axis=0), devsplit.CONTRAST * sprite[mask].std(axis=0), rtol=0.05)
    monkeypatch.setattr(devsplit, "CONTRAST", 1.0)
    assert np.array_equal(devsplit._faded(sprite, mask), sprite)


def test_pasted_object_is_the_faded_donor_cut(short_copies, data_root):
    """Inside its mask the +object copy shows the object cut from the donor at CONTRAST, nothing else."""
    copy = short_copies["object"]
    sprite, mask, _ = devsplit.cut_object(copy.donors[0], 240, 360)
    frame, (top, left, h, w) = next((f, b) for f, b in copy.frames_and_boxes() if b is not None)
    assert np.array_equal(frame[top : top + h, left : left + w][mask], devsplit._faded(sprite, mask)[mask])


def test_frames_are_the_same_bytes_every_time(data_root, short_copies):
    def digest(copy: DevCopy) -> str:
        h = hashlib.sha256()
        for frame in copy.frames():
            h.update(frame.tobytes())
        return h.hexdigest()

    again = {c.kind: c for c in dev_copies([_short(data_root, "01"), _short(data_root, "02")])}
    for kind, copy in short_copies.items():
        assert digest(copy) == digest(copy) == digest(again[kind]), kind
        assert np.array_equal(copy.labels, again[kind].labels)


def test_real_ped2_patch_copy_streams_at_native_resolution(data_root):
    """The listed dev video (full length) pastes its patch where its labels start, on 240x360 source frames."""
    patch = next(v for v in get_benchmark("ped2", data_root).videos(DEV) if v.id == "01+patch")
    start = int(np.argmax(patch.labels))
    got = list(islice(patch.frames(), start + 1))
    source = list(islice(iter_image_folder(data_root / "ped2/training/frames/01"), start + 1))
    assert got[0].shape == (240, 360, 3)
    assert all(np.array_equal(a, b) for a, b in zip(got[:start], source[:start]))
    assert not np.array_equal(got[start], source[start])


def test_short_source_is_refused_and_miscounted_frames_fail(data_root):
    with pytest.raises(DataError, match="held-out training video 01 has 8 frames"):
        dev_copies([Video("01", "ped2", "train", lambda: iter([np.zeros((4, 4, 3), np.uint8)] * 8)), _fake("02", "ped2")])
    folder = data_root / "ped2/training/frames/01"
    lying = Video("01", "ped2", "train", partial(iter_image_folder, folder), None, folder)  # 120 files
    copy = DevCopy(lying, "normal", 100, np.arange(100), np.zeros(100, np.uint8))
    with pytest.raises(DataError, match="planned for the 100"):
        list(copy.frames())


def test_avenue_dev_split_from_its_real_training_videos(data_root):
    """The subset's training videos 10 (1,223 frames), 11 (781), 12 (145) and 16 (244): 10, the first by id, is
    held out, its object cut from one of the other three."""
    bench = get_benchmark("avenue", data_root)
    assert bench.has_dev and bench.dev_holdout() == {"10"}
    dev = bench.videos(DEV)
    assert [v.id for v in dev] == ["10", "10+object", "10+patch", "10+skip"]
    assert [len(v.labels) for v in dev][:3] == [1223, 1223, 1223]
    obj = next(c for c in dev_copies(bench.videos("train")) if c.kind == "object")
    assert [d.id for d in obj.donors] == ["11", "12", "16"]
    source = bench.videos("train")[0]
    n = 0
    for (frame, box), src, label in zip(obj.frames_and_boxes(), source.frames(), obj.labels):
        n += 1
        assert frame.shape == (360, 640, 3) and (box is not None) == bool(label)
        if box is None:
            assert np.array_equal(frame, src)
    assert n == 1223


def test_cli_shards_the_dev_split_and_draws_contact_sheets(tmp_path, capsys):
    """`shard --split dev` and `devsplit` on a tiny Ped2 layout: two 24-frame clips, a dark walker on grey."""
    from PIL import Image

    from vadcore.__main__ import main

    for clip in ("01", "02"):
        folder = tmp_path / "ped2/training/frames" / clip
        folder.mkdir(parents=True)
        for t in range(SHORT):
            frame = np.full((48, 72, 3), 150, np.uint8)
            frame[20:29, 2 + 2 * t : 6 + 2 * t] = 30
            Image.fromarray(frame).save(folder / f"{t:03d}.jpg")
    common = ["--data-root", str(tmp_path), "--cache", str(tmp_path / "cache"), "--set", "data.height=16", "--set", "data.width=24"]
    copies = dev_copies(get_benchmark("ped2", tmp_path).videos("train"))
    frames, anomalous = sum(len(c.labels) for c in copies), sum(int(c.labels.sum()) for c in copies)

    assert main(["shard", "ped2", "--split", "dev", *common]) == 0
    assert f"ped2/dev: 4 videos, {frames} frames, {anomalous} anomalous" in capsys.readouterr().out.replace("\n", " ")
    capsys.readouterr()
    assert main(["devsplit", "ped2", "--out", str(tmp_path / "sheets"), *common]) == 0
    out = capsys.readouterr().out
    # the floors of each kind's copies, as a trial reports them (smoke profile: no smoothing)
    folder = next(p for p in (tmp_path / "cache/shards/ped2").glob("dev-16x24-*") if p.is_dir())
    scores = baseline_scores(folder)
    skip = kind_masks(scores["video"])["skip"]
    fd = baseline_aucs({k: v[skip] for k, v in scores.items()})["frame_difference"]
    row = next(line for line in out.splitlines() if "+skip" in line and " / " in line)  # the table row, not the sheet
    assert f"{fd['auc_micro']:.3f} / {fd['auc_micro_global']:.3f}" in row and f"{int(skip.sum())}" in row
    assert "whole split" in out and "+object" in out and "+patch" in out
    sheets = sorted(p.name for p in (tmp_path / "sheets").glob("*.png"))
    assert sheets == ["01+object.png", "01+patch.png", "01+skip.png"]
    assert Image.open(tmp_path / "sheets/01+patch.png").height == 2 * (16 * 8 + 12)  # two rows of zoomed tiles


def test_kind_of_each_dev_video_and_its_frames():
    """Ids as dev_copies makes them (and as a composite prefixes them): a held-out video is "normal", a copy its
    kind; kind_masks marks each kind's copies' frames, in KINDS order, and never the held-out videos."""
    assert [copy_kind(v) for v in ("01", "01+skip", "ped2-09+object", "12+patch", "a+b")] == ["normal", "skip", "object", "patch", "normal"]
    videos = np.array(["01", "01", "01+patch", "01+skip", "01+skip", "09+skip", "09"])
    masks = kind_masks(videos)
    assert list(masks) == ["skip", "patch"]
    assert masks["skip"].tolist() == [False, False, False, True, True, True, False]
    assert masks["patch"].tolist() == [False, False, True, False, False, False, False]
