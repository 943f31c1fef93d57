"""`python -m vadcore data fetch` against a loopback server serving archives in the published layouts, made from
../shared/data: the data set unpacked is read as the same clips, frames and labels, a trial runs on it, and every
bad case (wrong sum, cut connection, unsafe member, full disk, interruption) is exit 2 (130 for Ctrl-C) with one
sentence, and never a partial data set."""
from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.data import archives_fixture as fx
from vadcore.data import archives, get_benchmark
from vadcore.data.fetch import DOWNLOADS, FETCHED
from vadcore.testing import TINY

UCSD = "UCSD_Anomaly_Dataset.tar.gz"
REPO = Path(__file__).resolve().parents[2]


def one_error(out: str) -> str:
    """The error line of a failed command: one line, starting "error:", no traceback."""
    assert "Traceback" not in out
    (line,) = [x for x in out.splitlines() if x.startswith("error:")]
    return line


def no_dataset(root: Path, name: str) -> None:
    """Nothing of benchmark `name` is there to be taken for a data set: no folder, no staging folder."""
    assert not (root / name).exists()
    assert not list(root.glob(f".{name}.tmp-*"))


def same_clips(root: Path, data_root: Path, name: str, ids: dict[str, tuple[str, ...]]) -> None:
    """Each clip under `root` has the frames and labels of the same clip in ../shared/data, exactly."""
    ours, theirs = get_benchmark(name, root), get_benchmark(name, data_root)
    for split, expected in ids.items():
        mine = {v.id: v for v in ours.videos(split)}
        assert sorted(mine) == sorted(expected)
        for ref in (v for v in theirs.videos(split) if v.id in expected):
            v = mine[ref.id]
            assert (v.labels is None and ref.labels is None) or np.array_equal(v.labels, ref.labels), (split, v.id)
            a, b = list(v.frames()), list(ref.frames())
            assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b)), (split, v.id)


def tiny_trial(fetch_cli, name: str, root: Path, tmp_path: Path) -> None:
    sets = [a for s in [*TINY, "data.test_stride=8", "data.train_stride=8"] for a in ("--set", s)]
    code, out = fetch_cli("run", "--benchmark", name, "--data-root", root, "--profile", "smoke", "--cache", tmp_path / "cache",
                          "--out", tmp_path / f"trial-{name}", "--no-progress", *sets)
    assert code == 0, out
    assert (tmp_path / f"trial-{name}" / "trial.json").is_file()


# ------------------------------------------------------------------------------------------ the acceptance runs


def test_ped2_from_a_mirror_in_ucsd_layout_checks_and_trains_on_the_same_clips(served, fetch_cli, ped2_archive, data_root, tmp_path):
    root = tmp_path / "data"
    code, out = fetch_cli("data", "fetch", "ped2", "--to", root, "--mirror", served.url, "--sha256", fx.sha256(ped2_archive))
    assert code == 0, out
    assert "WARNING" in out and fx.sha256(ped2_archive) in out  # an overridden sum is said loudly
    assert re.search(r"train +2 of 16 videos", out) and re.search(r"test +2 of 12 videos", out) and "ped2 ready" in out
    ped2 = root / "ped2" / fx.UCSD
    assert sorted(p.name for p in ped2.iterdir()) == ["README.txt", "UCSDped2"]  # Ped1 left in the archive
    assert (root / "ped2" / FETCHED).is_file() and not (root / DOWNLOADS / UCSD).exists()  # archive deleted once unpacked
    assert served.requests == [(UCSD, None)]
    same_clips(root, data_root, "ped2", {"train": fx.PED2_TRAIN, "test": fx.PED2_TEST})
    tiny_trial(fetch_cli, "ped2", root, tmp_path)


def test_avenue_from_both_zips_checks_and_trains_on_the_same_videos(served, fetch_cli, avenue_archives, data_root, tmp_path):
    root = tmp_path / "data"
    sums = [a for f, data in avenue_archives.items() for a in ("--sha256", f"{f}={fx.sha256(data)}")]
    code, out = fetch_cli("data", "fetch", "avenue", "--to", root, "--mirror", served.url, *sums)
    assert code == 0, out
    assert re.search(r"train +2 of 16 videos", out) and re.search(r"test +2 of 21 videos", out)
    assert sorted(p.name for p in (root / "avenue").iterdir()) == [FETCHED, "Avenue Dataset", "ground_truth_demo"]
    same_clips(root, data_root, "avenue", {"train": fx.AVENUE_TRAIN, "test": fx.AVENUE_TEST})
    tiny_trial(fetch_cli, "avenue", root, tmp_path)


def test_shanghaitech_unpacks_into_its_own_folder_and_reads(served, fetch_cli, shanghaitech_archive, tmp_path):
    root = tmp_path / "data"
    code, out = fetch_cli("data", "fetch", "shanghaitech", "--to", root, "--mirror", served.url,
                          "--sha256", fx.sha256(shanghaitech_archive), "--keep-archives")
    assert code == 0, out
    bench = get_benchmark("shanghaitech", root)
    assert [(v.id, v.scene) for v in bench.videos("train")] == [("01_001", "01"), ("02_001", "02")]
    assert [(v.id, len(v.labels), int(v.labels.sum())) for v in bench.videos("test")] == [("01_0014", 7, 4), ("02_0015", 9, 6)]
    assert (root / DOWNLOADS / "shanghaitech.tar.gz").read_bytes() == shanghaitech_archive  # --keep-archives


def test_from_a_local_file_needs_no_server_and_leaves_the_file_alone(fetch_cli, ped2_archive, tmp_path):
    local = tmp_path / "Downloads" / UCSD
    local.parent.mkdir()
    local.write_bytes(ped2_archive)
    before = local.stat()
    code, out = fetch_cli("data", "fetch", "ped2", "--to", tmp_path / "data", "--from", local,
                          "--mirror", "http://127.0.0.1:9/", "--sha256", fx.sha256(ped2_archive))  # port 9: nothing there
    assert code == 0, out
    assert local.read_bytes() == ped2_archive and local.stat().st_mtime_ns == before.st_mtime_ns
    assert len(get_benchmark("ped2", tmp_path / "data").videos("test")) == 2


def test_a_second_fetch_finds_the_data_set_and_downloads_nothing(served, fetch_cli, ped2_archive, tmp_path):
    args = ("data", "fetch", "ped2", "--to", tmp_path / "data", "--mirror", served.url, "--sha256", fx.sha256(ped2_archive))
    assert fetch_cli(*args)[0] == 0
    code, out = fetch_cli(*args)
    assert code == 0 and "already fetched" in out and "checked before" in out
    assert len(served.requests) == 1


# ------------------------------------------------------------------------------------------ checksums


def test_a_wrong_download_is_kept_unpacked_nowhere_and_a_corrected_sum_reuses_it(served, fetch_cli, ped2_archive, tmp_path):
    root = tmp_path / "data"
    code, out = fetch_cli("data", "fetch", "ped2", "--to", root, "--mirror", served.url)  # the published sum: no match
    assert code == 2
    line = one_error(out)
    assert f"SHA-256 {fx.sha256(ped2_archive)} is not the expected {archives.ARCHIVES['ped2'][0].sha256}" in line
    assert "nothing was unpacked" in line and f"pass --sha256 {fx.sha256(ped2_archive)}" in line
    no_dataset(root, "ped2")
    assert (root / DOWNLOADS / UCSD).read_bytes() == ped2_archive  # kept: to inspect, or vouch for
    code, out = fetch_cli("data", "fetch", "ped2", "--to", root, "--mirror", served.url, "--sha256", fx.sha256(ped2_archive))
    assert code == 0, out
    assert len(served.requests) == 1  # not downloaded again


def test_a_local_file_with_a_wrong_sum_is_refused_and_untouched(fetch_cli, ped2_archive, tmp_path):
    local = tmp_path / UCSD
    local.write_bytes(ped2_archive)
    code, out = fetch_cli("data", "fetch", "ped2", "--to", tmp_path / "data", "--from", local)
    assert code == 2 and "this is not the published file" in one_error(out)
    assert local.read_bytes() == ped2_archive
    no_dataset(tmp_path / "data", "ped2")


# ------------------------------------------------------------------------------------------ interruptions


def test_a_connection_cut_mid_file_is_resumed_with_a_range_request(served, fetch_cli, ped2_archive, tmp_path):
    served.cut[UCSD] = len(ped2_archive) // 3
    code, out = fetch_cli("data", "fetch", "ped2", "--to", tmp_path / "data", "--mirror", served.url,
                          "--sha256", fx.sha256(ped2_archive), "--no-progress")
    assert code == 0, out
    assert "resuming (try 2 of 4)" in out
    assert served.requests == [(UCSD, None), (UCSD, f"bytes={len(ped2_archive) // 3}-")]


def test_out_of_retries_the_rerun_resumes_and_nothing_is_taken_for_a_data_set(served, fetch_cli, ped2_archive, tmp_path, monkeypatch):
    from vadcore.data import download

    monkeypatch.setattr(download, "RETRIES", 0)
    root, cut = tmp_path / "data", len(ped2_archive) // 2
    args = ("data", "fetch", "ped2", "--to", root, "--mirror", served.url, "--sha256", fx.sha256(ped2_archive))
    served.cut[UCSD] = cut
    code, out = fetch_cli(*args)
    assert code == 2 and "rerun the same command to resume" in one_error(out)
    assert (root / DOWNLOADS / f"{UCSD}.part").stat().st_size == cut
    no_dataset(root, "ped2")
    code, out = fetch_cli(*args)
    assert code == 0, out
    assert served.requests[-1] == (UCSD, f"bytes={cut}-")


def test_a_server_that_ignores_ranges_gets_the_whole_file_again(served, fetch_cli, ped2_archive, tmp_path):
    served.cut[UCSD], served.ranges = 1000, False
    code, out = fetch_cli("data", "fetch", "ped2", "--to", tmp_path / "data", "--mirror", served.url,
                          "--sha256", fx.sha256(ped2_archive))
    assert code == 0, out
    assert served.requests == [(UCSD, None), (UCSD, "bytes=1000-")]


def test_ctrl_c_while_unpacking_leaves_no_data_set_and_the_rerun_finishes(served, fetch_cli, avenue_archives, tmp_path, monkeypatch):
    """Interrupted between Avenue's two zips: one is unpacked in the staging folder, which goes; the rerun downloads
    nothing. A staging folder a killed process left behind is removed by the rerun too."""
    from vadcore.data import fetch as fetch_module

    root = tmp_path / "data"
    sums = [a for f, data in avenue_archives.items() for a in ("--sha256", f"{f}={fx.sha256(data)}")]
    calls = []

    def unpack_then_interrupt(path, spec, dest, advance):
        calls.append(spec.file)
        if len(calls) == 2:
            raise KeyboardInterrupt
        archives.unpack(path, spec, dest, advance)

    monkeypatch.setattr(fetch_module, "unpack", unpack_then_interrupt)
    code, out = fetch_cli("data", "fetch", "avenue", "--to", root, "--mirror", served.url, *sums)
    assert code == 130
    no_dataset(root, "avenue")
    monkeypatch.setattr(fetch_module, "unpack", archives.unpack)
    (root / ".avenue.tmp-killed" / "Avenue Dataset").mkdir(parents=True)  # as a SIGKILLed run leaves it
    code, out = fetch_cli("data", "fetch", "avenue", "--to", root, "--mirror", served.url, *sums)
    assert code == 0, out
    assert len(served.requests) == 2 and not list(root.glob(".avenue.tmp-*"))


# ------------------------------------------------------------------------------------------ unsafe archives


def _member(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


PED2 = f"{fx.UCSD}/UCSDped2"


@pytest.mark.parametrize("extra, files, needle", [
    ([], {f"{PED2}/../../../escaped.txt": b"x"}, "would be written outside the folder it unpacks into"),
    ([], {"/tmp/absolute.txt": b"x"}, "would be written outside the folder it unpacks into"),
    ([_member(f"{PED2}/Train/Train001/001.tif", tarfile.SYMTYPE, "../../../../../escaped.txt")], {}, "safe-extraction rules"),
    ([_member(f"{PED2}/Train/Train001/001.tif", tarfile.SYMTYPE, "/etc/passwd")], {}, "safe-extraction rules"),
    ([_member(f"{PED2}/Train/Train001/002.tif", tarfile.LNKTYPE, "../escaped.txt")], {}, "would be written outside"),
    ([_member(f"{PED2}/Train/Train001/003.tif", tarfile.CHRTYPE)], {}, "safe-extraction rules"),
], ids=["dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out", "device"])
def test_unsafe_tar_members_are_refused(fetch_cli, tmp_path, extra, files, needle):
    local = tmp_path / UCSD
    local.write_bytes(fx.tar_gz({f"{PED2}/Test/UCSDped2.m": b"", **files}, extra))
    code, out = fetch_cli("data", "fetch", "ped2", "--to", tmp_path / "data", "--from", local, "--sha256", fx.sha256(local.read_bytes()))
    assert code == 2
    line = one_error(out)
    assert needle in line and "the archive is refused" in line
    no_dataset(tmp_path / "data", "ped2")
    assert not list(tmp_path.rglob("escaped.txt")) and not Path("/tmp/absolute.txt").exists()


@pytest.mark.parametrize("members, links", [
    ({"Avenue Dataset/../../escaped.txt": b"x"}, {}),
    ({}, {"Avenue Dataset/testing_videos/01.avi": "../../../escaped.txt"}),
], ids=["dotdot", "symlink"])
def test_unsafe_zip_members_are_refused_before_anything_is_written(fetch_cli, tmp_path, avenue_archives, members, links):
    bad = tmp_path / "Avenue_Dataset.zip"
    bad.write_bytes(fx.zip_bytes({"Avenue Dataset/training_videos/12.avi": b"x", **members}, links))
    labels = tmp_path / "ground_truth_demo.zip"
    labels.write_bytes(avenue_archives["ground_truth_demo.zip"])
    code, out = fetch_cli("data", "fetch", "avenue", "--to", tmp_path / "data", "--from", bad, "--from", labels,
                          "--sha256", f"Avenue_Dataset.zip={fx.sha256(bad.read_bytes())}",
                          "--sha256", f"ground_truth_demo.zip={fx.sha256(labels.read_bytes())}")
    assert code == 2 and "the archive is refused" in one_error(out)
    no_dataset(tmp_path / "data", "avenue")
    assert not list(tmp_path.rglob("escaped.txt"))


# ------------------------------------------------------------------------------------------ a full disk


def _limited(limit: int, *argv) -> subprocess.CompletedProcess:
    """`python -m vadcore ARGS` in a process that cannot write a file past `limit` bytes (RLIMIT_FSIZE; its signal
    ignored, so the write fails with EFBIG as a full disk fails with ENOSPC)."""
    def limit_writes():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "vadcore", *map(str, argv), "--no-progress"], cwd=REPO, env=env,
                          preexec_fn=limit_writes, capture_output=True, text=True, timeout=300)


def test_a_write_error_while_unpacking_is_one_sentence_and_no_data_set(fetch_cli, avenue_archives, tmp_path):
    """Avenue_Dataset.zip holds videos of 0.7 to 3.2 MB: with writes capped at 1 MB the second cannot be written."""
    local = []
    for name, data in avenue_archives.items():
        (tmp_path / name).write_bytes(data)
        local += ["--from", tmp_path / name]
    root = tmp_path / "data"
    sums = [a for f, data in avenue_archives.items() for a in ("--sha256", f"{f}={fx.sha256(data)}")]
    done = _limited(1 << 20, "data", "fetch", "avenue", "--to", root, *local, *sums)
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_error(done.stdout + done.stderr)
    assert "cannot unpack into" in line and "File too large" in line and "rerun" in line
    no_dataset(root, "avenue")
    code, out = fetch_cli("data", "fetch", "avenue", "--to", root, *local, *sums)
    assert code == 0, out


def test_a_write_error_while_downloading_keeps_what_was_written_for_the_rerun(served, fetch_cli, ped2_archive, tmp_path):
    root, limit = tmp_path / "data", len(ped2_archive) // 4
    args = ("data", "fetch", "ped2", "--to", root, "--mirror", served.url, "--sha256", fx.sha256(ped2_archive))
    done = _limited(limit, *args)
    assert done.returncode == 2
    line = one_error(done.stdout + done.stderr)
    assert f"{UCSD}.part: File too large" in line and "resumes" in line
    no_dataset(root, "ped2")
    assert 0 < (root / DOWNLOADS / f"{UCSD}.part").stat().st_size <= limit
    code, out = fetch_cli(*args)
    assert code == 0, out
    assert served.requests[-1][1].startswith("bytes=")


# ------------------------------------------------------------------------------------------ user errors


def test_a_folder_fetch_did_not_write_is_left_alone(fetch_cli, ped2_archive, tmp_path):
    (tmp_path / "data/ped2/training").mkdir(parents=True)
    local = tmp_path / UCSD
    local.write_bytes(ped2_archive)
    code, out = fetch_cli("data", "fetch", "ped2", "--to", tmp_path / "data", "--from", local, "--sha256", fx.sha256(ped2_archive))
    assert code == 2 and "was not written by `data fetch`: it is left as it is" in one_error(out)
    assert [p.name for p in (tmp_path / "data/ped2").iterdir()] == ["training"]


@pytest.mark.parametrize("argv, needle", [
    (("ped3",), "unknown benchmark; allowed: ped2, avenue, shanghaitech"),
    (("ped2", "--sha256", "abc"), "expected 64 hexadecimal digits"),
    (("avenue", "--sha256", "0" * 64), "name one of Avenue_Dataset.zip, ground_truth_demo.zip as FILE=HEX"),
    (("avenue", "--from", "/nowhere/Avenue.zip"), "name one of Avenue_Dataset.zip, ground_truth_demo.zip"),
    (("ped2", "--from", "/nowhere/UCSD_Anomaly_Dataset.tar.gz"), "no such file"),
])
def test_bad_options_are_one_sentence(fetch_cli, tmp_path, argv, needle):
    code, out = fetch_cli("data", "fetch", *argv, "--to", tmp_path / "data")
    assert code == 2 and needle in one_error(out)
    assert not (tmp_path / "data").exists()


def test_a_mirror_without_the_file_is_named(served, fetch_cli, tmp_path):
    code, out = fetch_cli("data", "fetch", "ped2", "--to", tmp_path / "data", "--mirror", served.url + "elsewhere/")
    assert code == 2 and "HTTP 404" in one_error(out) and "published name" in one_error(out)
    no_dataset(tmp_path / "data", "ped2")


def test_a_full_disk_while_unpacking_leaves_nothing_behind(avenue_archives, tmp_path):
    """A real full disk: a 5 MB tmpfs (mounted in a private mount namespace) as --to, Avenue_Dataset.zip (7.1 MB)
    unpacked from --from files elsewhere. The listing of --to is taken inside the namespace, before it goes."""
    local = []
    for name, data in avenue_archives.items():
        (tmp_path / name).write_bytes(data)
        local += ["--from", str(tmp_path / name)]
    sums = [a for f, data in avenue_archives.items() for a in ("--sha256", f"{f}={fx.sha256(data)}")]
    disk = tmp_path / "disk"
    disk.mkdir()
    fetch = " ".join(["exec", sys.executable, "-m", "vadcore", "data", "fetch", "avenue", "--to", str(disk / "data"), *local, *sums,
                      "--no-progress"])
    script = f"mount -t tmpfs -o size=5m tmpfs {disk} || exit 99; ({fetch}); echo rc=$?; ls -A {disk / 'data'}"
    try:
        done = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        pytest.skip("no unshare here to mount a small filesystem (the write-error tests above still run)")
    if done.returncode == 99 or "rc=" not in done.stdout:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.strip()}")
    line = one_error(done.stdout + done.stderr)
    assert "rc=2" in done.stdout and "No space left on device" in line and "Avenue Dataset" in line
    assert done.stdout.split("rc=2")[1].split() == [DOWNLOADS]  # no avenue/, no .avenue.tmp-*
