"""Composite benchmarks ("ped2+avenue": one benchmark whose scenes are its members') and scene subsets
(data.scenes): the members' videos, labels and scenes renamed, their shards reused (no frame decoded or stored
twice), the loader reading through the rename with its checks, clear errors, and a tiny trial end to end."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

import vadcore.data.shards as shards_module
from vadcore.config import resolve_config
from vadcore.data import get_benchmark, scene_holdout
from vadcore.data.loader import ClipDataset, load_manifest
from vadcore.data.shards import ShardSpec, ensure_shards
from vadcore.errors import ConfigError, DataError, ShardError
from vadcore.testing import TINY

SIZE = dict(height=16, width=24, channels=1)
ST_TRAIN = {"01_001": 14, "01_002": 12, "02_001": 13}  # ShanghaiTech fixture: video -> frames (scenes 01, 02)
ST_TEST = {"01_0014": (np.arange(15) >= 9), "02_0128": (np.arange(12) < 4)}  # video -> labels


def spec(name: str, split: str = "test", scenes: tuple[str, ...] = ()) -> ShardSpec:
    return ShardSpec(name, split, SIZE["height"], SIZE["width"], SIZE["channels"], scenes)


@pytest.fixture(scope="module")
def subset_root(tmp_path_factory, data_root) -> Path:
    """A data root of real files, few of them: Ped2 training clips 01-02 and test clips 01-02 (with UCSDped2.m's first
    two entries), Avenue training video 12 and test video 08 with its label file, and a ShanghaiTech fixture in its
    original layout (training/frames/SS_VVV/*.jpg, testing/frames/SS_VVVV/*.jpg, testing/test_frame_mask/*.npy)."""
    root = tmp_path_factory.mktemp("data")
    ped2 = root / "ped2"
    for split in ("training", "testing"):
        (ped2 / split / "frames").mkdir(parents=True)
        for clip in ("01", "02"):
            (ped2 / split / "frames" / clip).symlink_to(data_root / "ped2" / split / "frames" / clip)
    lines = (data_root / "ped2" / "UCSDped2.m").read_text().splitlines()
    (ped2 / "UCSDped2.m").write_text("\n".join([lines[0], *[x for x in lines if "gt_frame" in x][:2]]) + "\n")
    avenue = root / "avenue"
    for folder, name in (("training_videos", "12.avi"), ("testing_videos", "08.avi"), ("ground_truth_demo/testing_label_mask", "8_label.mat")):
        (avenue / folder).mkdir(parents=True)
        (avenue / folder / name).symlink_to(data_root / "avenue" / folder / name)
    st, rng = root / "shanghaitech", np.random.default_rng(0)
    for folder, videos in (("training/frames", ST_TRAIN), ("testing/frames", {v: len(lab) for v, lab in ST_TEST.items()})):
        for vid, n in videos.items():
            (st / folder / vid).mkdir(parents=True)
            for k in range(n):
                cv2.imwrite(str(st / folder / vid / f"{k:03d}.jpg"), rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    (st / "testing/test_frame_mask").mkdir(parents=True)
    for vid, labels in ST_TEST.items():
        np.save(st / "testing/test_frame_mask" / f"{vid}.npy", labels.astype(np.int64))
    return root


def tars(cache: Path) -> dict[Path, tuple[int, int]]:
    """Every shard tar under the cache, with its inode and mtime: a rewrite or a copy shows."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(cache.rglob("*.tar"))}


# ---------------------------------------------------------------------------------------------- listing


def test_ped2_avenue_lists_the_members_videos_labels_and_scenes(data_root):
    both, ped2, avenue = (get_benchmark(n, data_root) for n in ("ped2+avenue", "ped2", "avenue"))
    assert both.has_dev == (ped2.has_dev and avenue.has_dev)
    for split in ("train", "test", *(["dev"] if both.has_dev else [])):
        members = {f"{m.name}-{v.id}": v for m in (ped2, avenue) for v in m.videos(split)}
        videos = both.videos(split)
        assert [v.id for v in videos] == sorted(members) and len(videos) == len(ped2.videos(split)) + len(avenue.videos(split))
        for v in videos:
            assert v.scene == members[v.id].scene  # single self-named scenes keep their names: "ped2", "avenue"
            if split != "train":
                np.testing.assert_array_equal(v.labels, members[v.id].labels)
    assert {v.scene for v in both.videos("test")} == {"ped2", "avenue"}
    assert sum(int(v.labels.sum()) for v in both.videos("test")) == 1648 + sum(int(v.labels.sum()) for v in avenue.videos("test"))
    assert both.dev_holdout() == {f"ped2-{v}" for v in ped2.dev_holdout()} | {f"avenue-{v}" for v in avenue.dev_holdout()}


def test_shanghaitech_scenes_survive_beside_synthetic(subset_root):
    both, st, syn = (get_benchmark(n, subset_root) for n in ("synthetic+shanghaitech", "shanghaitech", "synthetic"))
    test = {v.id: v for v in both.videos("test")}
    assert len(test) == len(st.videos("test")) + len(syn.videos("test"))
    assert test["shanghaitech-01_0014"].scene == "shanghaitech-01" and test["shanghaitech-02_0128"].scene == "shanghaitech-02"
    np.testing.assert_array_equal(test["shanghaitech-01_0014"].labels, ST_TEST["01_0014"])
    assert test["synthetic-s1_test_000"].scene == "synthetic-s1"
    np.testing.assert_array_equal(test["synthetic-s1_test_000"].labels, syn.videos("test")[3].labels)
    scenes = {v.scene for v in both.videos("train")}
    assert scenes == {"shanghaitech-01", "shanghaitech-02", "synthetic-s0", "synthetic-s1", "synthetic-s2"}


@pytest.mark.parametrize("name, needle", [
    ("pedd2+avenue", "unknown benchmark 'pedd2' in 'pedd2+avenue'; allowed: synthetic, ped2, avenue, shanghaitech"),
    ("synthetic+synthetic", "names 'synthetic' twice: a composite's members must be distinct"),
    ("ped2+", "unknown benchmark '' in 'ped2+'"),
])
def test_unknown_or_repeated_member_is_one_clear_error_everywhere(name, needle, data_root):
    from sweeps.runner import check_data
    from sweeps.plans import expand
    from sweeps.spec import load_sweep

    for call, error, head in ((lambda: get_benchmark(name, data_root), DataError, ""),
                              (lambda: check_data([name], str(data_root)), DataError, ""),
                              (lambda: resolve_config(name, "smoke"), ConfigError, f"data.benchmark={name!r}"),
                              (lambda: expand(load_sweep("unified-prior"), [name]), ConfigError, f"--benchmarks={name!r}")):
        with pytest.raises(error) as e:
            call()
        assert str(e.value).startswith(head) and needle in str(e.value)


def test_missing_member_data_names_the_member(tmp_path, subset_root):
    from sweeps.runner import check_data

    check_data(["ped2+avenue", "synthetic+shanghaitech"], str(subset_root))  # a composite of present members passes
    with pytest.raises(DataError, match=r"benchmark folder .*ped2 not found"):
        check_data(["ped2+avenue"], str(tmp_path))  # no benchmark here: the first member is named
    (tmp_path / "ped2").symlink_to(subset_root / "ped2")
    with pytest.raises(DataError, match=r"benchmark folder .*avenue not found"):
        check_data(["ped2+avenue"], str(tmp_path))


# ---------------------------------------------------------------------------------------------- shards


@pytest.fixture(scope="module")
def composite_shards(subset_root, tmp_path_factory):
    """Members' shards written first (as a ped2 or avenue trial would), then the composite's, counting frames prepared."""
    cache = tmp_path_factory.mktemp("cache")
    members = {n: ensure_shards(get_benchmark(n, subset_root), spec(n), cache, show_progress=False)[0] for n in ("ped2", "avenue")}
    before = tars(cache)
    prepared = []
    original = shards_module.prepare_frame
    shards_module.prepare_frame = lambda *a: prepared.append(1) or original(*a)
    try:
        folder, written = ensure_shards(get_benchmark("ped2+avenue", subset_root), spec("ped2+avenue"), cache, show_progress=False)
    finally:
        shards_module.prepare_frame = original
    assert written
    return cache, members, folder, before, len(prepared)


def test_composite_shards_reuse_the_members_without_decoding_a_frame(composite_shards):
    cache, members, folder, before, prepared = composite_shards
    assert prepared == 0, "a member frame was decoded again"
    assert tars(cache) == before, "a member shard was rewritten, or a copy was made"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json"]
    m = load_manifest(folder)
    parts = {n: load_manifest(f) for n, f in members.items()}
    assert (m["videos"], m["frames"], m["anomalous"]) == tuple(sum(p[k] for p in parts.values()) for k in ("videos", "frames", "anomalous"))
    assert m["per_video"]["ped2-01"] == parts["ped2"]["per_video"]["01"]
    assert m["per_video"]["avenue-08"] == {**parts["avenue"]["per_video"]["08"], "scene": "avenue"}
    assert {Path(folder, e["path"]).resolve() for e in m["shards"]} == {p.resolve() for p in before}
    assert m["members"] == {n: f.name for n, f in members.items()}


def test_composite_from_a_cold_cache_writes_each_member_once(subset_root, tmp_path):
    folder, written = ensure_shards(get_benchmark("ped2+avenue", subset_root), spec("ped2+avenue", "train"), tmp_path, show_progress=False)
    assert written and {p.parent.parent.name for p in tars(tmp_path)} == {"ped2", "avenue"}
    n = len(tars(tmp_path))
    assert ensure_shards(get_benchmark("ped2", subset_root), spec("ped2", "train"), tmp_path, show_progress=False)[1] is False
    assert ensure_shards(get_benchmark("ped2+avenue", subset_root), spec("ped2+avenue", "train"), tmp_path, show_progress=False) == (folder, False)
    assert len(tars(tmp_path)) == n


def test_the_loader_reads_the_members_frames_under_the_composite_names(composite_shards):
    cache, members, folder, _, _ = composite_shards
    windows = {(w["video"], w["start"]): w for w in ClipDataset(folder, frames=8, stride=4, train=False)}
    assert {w["scene"] for w in windows.values()} == {"ped2", "avenue"}
    for name, member_folder in members.items():
        for w in ClipDataset(member_folder, frames=8, stride=4, train=False):
            mine = windows.pop((f"{name}-{w['video']}", w["start"]))
            assert mine["scene"] == name and mine["clip"].equal(w["clip"]) and mine["labels"].equal(w["labels"])
    assert not windows


def test_a_changed_member_shard_fails_the_composite_read_naming_both_folders(composite_shards, tmp_path):
    import shutil

    cache, members, folder, _, _ = composite_shards
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)  # the module's cache stays intact for the other tests
    shard = next((copy / "shards" / "avenue").rglob("*.tar"))
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF  # in the tar's zero padding: the archive still reads, only the checksum tells
    shard.write_bytes(bytes(data))
    composite = copy / folder.relative_to(cache)
    with pytest.raises(ShardError) as e:
        list(ClipDataset(composite, frames=8, stride=4, train=False))
    assert f"shard {shard} has sha256" in str(e.value) and f"delete {shard.parent} and {composite}, which lists it, to rebuild" in str(e.value)


def test_scene_subset_lists_one_scene_and_reuses_the_shards(composite_shards, subset_root):
    cache, members, folder, before, _ = composite_shards
    sub, written = ensure_shards(get_benchmark("ped2+avenue", subset_root), spec("ped2+avenue", scenes=("avenue",)), cache, show_progress=False)
    assert written and sub != folder and sorted(p.name for p in sub.iterdir()) == ["manifest.json"] and tars(cache) == before
    m, whole = load_manifest(sub), load_manifest(folder)
    assert m["per_video"] == {v: i for v, i in whole["per_video"].items() if i["scene"] == "avenue"}
    assert (m["videos"], m["frames"]) == (1, whole["per_video"]["avenue-08"]["frames"])
    assert [Path(sub, e["path"]).resolve() for e in m["shards"]] == [Path(members["avenue"], e["path"]).resolve() for e in load_manifest(members["avenue"])["shards"]]
    assert {w["video"] for w in ClipDataset(sub, frames=8, stride=4, train=False)} == {"avenue-08"}
    with pytest.raises(DataError, match=re.escape("data.scenes: ped2+avenue has no test videos of scene 'shanghaitech'; its test scenes: avenue, ped2")):
        ensure_shards(get_benchmark("ped2+avenue", subset_root), spec("ped2+avenue", scenes=("shanghaitech",)), cache, show_progress=False)


def test_scene_subset_of_one_benchmark_counts_its_scene(subset_root, tmp_path):
    st = get_benchmark("shanghaitech", subset_root)
    sub, _ = ensure_shards(st, spec("shanghaitech", "train", scenes=("01",)), tmp_path, show_progress=False)
    m = load_manifest(sub)
    assert m["per_video"].keys() == {"01_001", "01_002"} and m["frames"] == ST_TRAIN["01_001"] + ST_TRAIN["01_002"]
    assert {w["video"] for w in ClipDataset(sub, frames=8, stride=2, train=True)} == {"01_001", "01_002"}
    holdout = scene_holdout(st, ("01",))
    assert holdout <= m["per_video"].keys() and holdout == st.dev_holdout() & m["per_video"].keys()


def test_scene_subset_readers_see_only_its_scenes_where_shards_mix_scenes(tmp_path):
    """Synthetic's 9 test videos lie two to a shard, s0_test_002 beside s1_test_000: every reader of the subset's
    shards (the clip loader, and those that read shards directly: baselines, MOG2 masks) sees its scene alone."""
    from vadcore.data.loader import iter_shard

    syn = get_benchmark("synthetic")
    whole, _ = ensure_shards(syn, spec("synthetic"), tmp_path, show_progress=False)
    assert any(len({v[:2] for v in e["videos"]}) == 2 for e in load_manifest(whole)["shards"])  # the case under test
    sub, _ = ensure_shards(syn, spec("synthetic", scenes=("s1",)), tmp_path, show_progress=False)
    m = load_manifest(sub)
    assert sorted(m["per_video"]) == ["s1_test_000", "s1_test_001", "s1_test_002"]
    chunks = [c for e in m["shards"] for c in iter_shard(sub, e)]
    assert {c.video for c in chunks} == set(m["per_video"]) and sum(len(c.frames) for c in chunks) == m["frames"]
    assert {w["video"] for w in ClipDataset(sub, frames=8, stride=8, train=False)} == set(m["per_video"])


def test_data_scenes_is_validated_and_part_of_the_shard_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data.scenes\[1\]='s0' must be a scene name, distinct"):
        resolve_config("synthetic", "smoke", ['data.scenes=["s0", "s0"]'])
    assert resolve_config("synthetic", "smoke", ['data.scenes=["s1"]']).data.scenes == ("s1",)
    whole, one = (ShardSpec("synthetic", "train", 8, 8, 1, s).folder(tmp_path, "f") for s in ((), ("s1",)))
    assert whole != one and whole == ShardSpec("synthetic", "train", 8, 8, 1).folder(tmp_path, "f")


# ---------------------------------------------------------------------------------------------- a trial


def test_tiny_trial_on_a_composite_and_on_one_of_its_scenes(subset_root, tmp_path):
    from vadcore.pipeline import run_trial

    cache = tmp_path / "cache"
    sets = [*TINY, "data.test_stride=8", "data.train_stride=8", "flow.app=false"]
    trial = run_trial(resolve_config("ped2+avenue", "smoke", sets), subset_root, cache, tmp_path / "both", show=False)
    m = trial["metrics"]
    assert set(m["per_scene_auc"]) == {"ped2", "avenue"} and 0 <= m["auc_micro"] <= 1
    n = len(tars(cache))
    one = run_trial(resolve_config("ped2+avenue", "smoke", [*sets, 'data.scenes=["ped2"]']), subset_root, cache, tmp_path / "ped2", show=False)
    assert "per_scene_auc" not in one["metrics"] and len(tars(cache)) == n  # one scene: its shards are the composite's
    assert one["stages"]["itae"]["key"] != trial["stages"]["itae"]["key"]
    assert json.loads((tmp_path / "ped2" / "trial.json").read_text())["config"]["data"]["scenes"] == ["ped2"]
    assert set(pq.read_table(tmp_path / "ped2" / "frame_scores.parquet")["scene"].to_pylist()) == {"ped2"}
