"""Archives in the benchmarks' published layouts, made from the real files in ../shared/data, and a loopback HTTP
server (Range requests, responses cut short on demand, every request recorded) that a test starts and stops.

Ped2's .tif frames are the JPEG frames of ../shared/data decoded (grey content: the three channels are equal) and
stored losslessly as 8-bit grey, as UCSD's own .tif files are, so a clip read from the archive equals the clip
read from ../shared/data exactly.
"""
from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

UCSD = "UCSD_Anomaly_Dataset.v1p2"
PED2_TRAIN = ("01", "08")  # the two shortest training clips (120 frames each)
PED2_TEST = ("03", "05")  # 150 frames each, both with normal and anomalous frames
AVENUE_TRAIN = ("12", "16")
AVENUE_TEST = ("08", "21")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_gz(members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:
    """A .tar.gz of {name: content} (folders implied), plus raw members (links, devices) for the unsafe cases."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes], links: dict[str, str] = {}) -> bytes:  # noqa: B006 (read only)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in links.items():
            info = zipfile.ZipInfo(name)
            info.create_system, info.external_attr = 3, (0o120777 << 16)  # a Unix symbolic link
            zf.writestr(info, target)
    return buf.getvalue()


def _tif(jpeg: Path) -> bytes:
    from PIL import Image

    rgb = np.asarray(Image.open(jpeg).convert("RGB"))
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all(), jpeg  # grey: "L" is lossless
    buf = io.BytesIO()
    Image.fromarray(rgb[..., 0]).save(buf, "TIFF")
    return buf.getvalue()


def ped2_archive(data_root: Path) -> bytes:
    """UCSD_Anomaly_Dataset.tar.gz as it is published, with PED2_TRAIN and PED2_TEST of Ped2's clips: 1-based .tif
    frames in TrainNNN/TestNNN, a TestNNN_gt mask folder, the dataset's own UCSDped2.m under Test/ with its Mac
    twins (._UCSDped2.m, .DS_Store, UCSDped2.m~), the README, and one Ped1 frame (fetch ped2 leaves Ped1 out)."""
    ped2 = f"{UCSD}/UCSDped2"
    members = {f"{UCSD}/README.txt": (data_root / "ped2/UCSD_README.txt").read_bytes(),
               f"{UCSD}/UCSDped1/Train/Train001/001.tif": _tif(data_root / "ped2/training/frames/01/000.jpg")}
    for split, folder, clips in (("training", "Train", PED2_TRAIN), ("testing", "Test", PED2_TEST)):
        for clip in clips:
            for jpeg in sorted((data_root / "ped2" / split / "frames" / clip).glob("*.jpg")):
                members[f"{ped2}/{folder}/{folder}{int(clip):03d}/{int(jpeg.stem) + 1:03d}.tif"] = _tif(jpeg)
    members[f"{ped2}/Test/Test{int(PED2_TEST[0]):03d}_gt/001.bmp"] = b"BM not read"
    label_file = (data_root / "ped2/UCSDped2.m").read_bytes()
    members |= {f"{ped2}/Test/UCSDped2.m": label_file, f"{ped2}/Test/UCSDped2.m~": label_file,
                f"{ped2}/Test/._UCSDped2.m": b"\x00\x05\x16\x07 AppleDouble", f"{ped2}/.DS_Store": b"\x00\x00\x00\x01Bud1",
                f"{ped2}/Train/Train{int(PED2_TRAIN[0]):03d}/._001.tif": b"\x00\x05\x16\x07 AppleDouble"}
    return tar_gz(members)


def avenue_archives(data_root: Path) -> dict[str, bytes]:
    """Avenue_Dataset.zip (AVENUE_TRAIN and AVENUE_TEST's videos under `Avenue Dataset/`) and ground_truth_demo.zip
    (every test video's label file, the readme and the demo script), as CUHK publishes them."""
    av = data_root / "avenue"
    videos = {f"Avenue Dataset/{folder}/{v}.avi": (av / folder / f"{v}.avi").read_bytes()
              for folder, ids in (("training_videos", AVENUE_TRAIN), ("testing_videos", AVENUE_TEST)) for v in ids}
    labels = {f"ground_truth_demo/{p.relative_to(av / 'ground_truth_demo')}": p.read_bytes()
              for p in sorted((av / "ground_truth_demo").rglob("*")) if p.is_file()}
    return {"Avenue_Dataset.zip": zip_bytes(videos), "ground_truth_demo.zip": zip_bytes(labels)}


def shanghaitech_archive(tmp: Path) -> bytes:
    """shanghaitech.tar.gz in the published layout (one top folder shanghaitech/): two scenes' training videos,
    two test videos as JPEG frames with their frame masks (and a pixel mask, not read). Made-up frames: no
    ShanghaiTech frame is in ../shared/data."""
    import av
    from PIL import Image

    rng = np.random.default_rng(0)
    members = {}
    for vid, n in (("01_001", 12), ("02_001", 9)):
        path = tmp / f"{vid}.avi"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("mpeg4", rate=25)
            stream.height, stream.width, stream.pix_fmt = 32, 48, "yuv420p"
            for f in rng.integers(0, 255, (n, 32, 48, 3), np.uint8):
                out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
            out.mux(stream.encode())
        members[f"shanghaitech/training/videos/{vid}.avi"] = path.read_bytes()
    for vid, n in (("01_0014", 7), ("02_0015", 9)):
        for k in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (32, 48, 3), np.uint8)).save(buf, "JPEG")
            members[f"shanghaitech/testing/frames/{vid}/{k:03d}.jpg"] = buf.getvalue()
        for kind in ("test_frame_mask", "test_pixel_mask"):
            buf = io.BytesIO()
            np.save(buf, (np.arange(n) >= 3).astype(np.int64) if kind == "test_frame_mask" else np.zeros((n, 4, 4), np.uint8))
            members[f"shanghaitech/testing/{kind}/{vid}.npy"] = buf.getvalue()
    return tar_gz(members)


class ArchiveServer:
    """Serves `files` ({name: bytes}) at http://127.0.0.1:PORT/NAME on a thread, stopped on exit.

    cut[name] = n: the next response for `name` sends n bytes of its body and closes the connection.
    ranges=False: Range headers are ignored (the whole file, status 200). requests: (name, Range header or None).
    """

    def __init__(self, files: dict[str, bytes]):
        self.files, self.cut, self.ranges, self.requests = dict(files), {}, True, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                asked = self.headers.get("Range")
                server.requests.append((name, asked))
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                m = re.fullmatch(r"bytes=(\d+)-", asked or "") if server.ranges else None
                start = int(m.group(1)) if m else 0
                if start >= len(data) and m:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206 if m else 200)
                if m:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                self.wfile.write(body[: server.cut.pop(name)] if name in server.cut else body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ArchiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
