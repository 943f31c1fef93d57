"""Frame decoding shared by the readers: image folders and video files, with errors that name the file.

Names starting with "." are never frames or videos: archives made on a Mac carry AppleDouble twins (`._001.tif`,
`._UCSDped2.m`) and `.DS_Store` files beside the real ones, and fetch writes its bookkeeping under dot-names.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from vadcore.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".bmp")
_FRAME_NUMBER = re.compile(r"[0-9]+$")  # the digits a frame file's name ends in: 000.jpg, img_0001.png


def visible(paths) -> list[Path]:
    """`paths` without hidden names (see the module docstring), sorted."""
    return sorted(p for p in paths if not p.name.startswith("."))


def list_frames(folder: Path) -> list[Path]:
    """Image files of one video folder, in order of the frame number their names end in (000.jpg, 1.png).

    Labels are given per frame position, so the numbers must run from the first one without a gap or a
    repeat: one missing file would otherwise shift every later frame's label by one, silently.
    """
    by_number: dict[int, Path] = {}
    for path in (p for p in visible(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES):
        m = _FRAME_NUMBER.search(path.stem)
        if m is None:
            raise DataError(
                f"{path}: no frame number in the file name; expected one file per frame named by its number "
                f"(000.jpg, 001.jpg, ...): rename or remove it"
            )
        if (k := int(m.group())) in by_number:
            raise DataError(f"{folder}: {by_number[k].name} and {path.name} both have frame number {k}; keep one of them")
        by_number[k] = path
    if not by_number:
        raise DataError(f"{folder}: no frame images ({', '.join(IMAGE_SUFFIXES)}) found; expected one file per frame")
    numbers = sorted(by_number)
    n_missing = numbers[-1] - numbers[0] + 1 - len(numbers)
    if n_missing:
        first_gaps = [k for a, b in zip(numbers, numbers[1:]) for k in range(a + 1, min(b, a + 6))][:5]
        shown = ", ".join(map(str, first_gaps)) + (", ..." if n_missing > len(first_gaps) else "")
        raise DataError(
            f"{folder}: missing frame number(s) {shown} ({n_missing} of {numbers[0]}..{numbers[-1]}); frame files "
            f"must be numbered without gaps, or every later frame's label shifts: restore the missing frames"
        )
    return [by_number[k] for k in numbers]


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); grey images are replicated to three channels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot decode image ({e}); expected a readable JPEG/PNG/TIFF frame") from None


def iter_image_folder(folder: Path) -> Iterator[np.ndarray]:
    for path in list_frames(folder):
        yield read_image(path)


def _open_video(path: Path):
    import av

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(f"{path}: cannot open video ({e}); expected a readable .avi/.mp4 file") from None


def iter_video_file(path: Path) -> Iterator[np.ndarray]:
    """Decode every frame of a video file with PyAV as RGB uint8 (H, W, 3).

    A file whose container announces more frames than decode (a truncated download) is an error,
    not a shorter video: silently fewer frames would shift every label after the cut.
    """
    import av

    decoded = 0
    with _open_video(path) as container:
        stream = container.streams.video[0]
        announced = stream.frames
        try:
            for frame in container.decode(stream):
                decoded += 1
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise DataError(f"{path}: decoding failed after {decoded} frames ({e}); the file looks truncated") from None
    if decoded == 0:
        raise DataError(f"{path}: no frames could be decoded; the file looks truncated or empty")
    if announced and decoded < announced:
        raise DataError(
            f"{path}: decoded {decoded} frames but the container announces {announced}; the file looks truncated"
        )


def probe(source: Path) -> tuple[int, np.ndarray, np.ndarray]:
    """(frame count, first frame, last frame) of a frame folder or a video file, decoding little more than those
    two frames: what `vadcore data check` asks of every video."""
    if source.is_dir():
        frames = list_frames(source)
        return len(frames), read_image(frames[0]), read_image(frames[-1])
    reader = iter_video_file(source)
    first = next(reader)
    reader.close()
    end = _video_end(source)
    if end is None:  # no count announced, no time stamps, or a seek that failed: count by decoding every frame
        n = 0
        for last in iter_video_file(source):
            n += 1
        end = n, last
    return end[0], first, end[1]


SEEK_BACK_S = 2  # _video_end decodes from the keyframe before the last 2 seconds: one group of pictures or two


def _video_end(path: Path) -> tuple[int, np.ndarray] | None:
    """(frame count, last frame) of a video file without decoding all of it: the count its container announces,
    confirmed by decoding from a keyframe near the end to the last frame, whose time stamp must say it is frame
    count - 1 (else the file is cut short: a DataError). None where the container cannot answer that way."""
    import av

    with _open_video(path) as container:
        stream = container.streams.video[0]
        n, rate, base, duration = stream.frames, stream.average_rate, stream.time_base, stream.duration
        if not (n and rate and base and duration):
            return None
        start = stream.start_time or 0
        last = None
        try:
            container.seek(max(start, start + duration - int(SEEK_BACK_S / base)), stream=stream)
            for last in container.decode(stream):
                pass
        except av.error.FFmpegError:
            return None
        if last is None or last.pts is None:
            return None
        index = round((last.pts - start) * base * rate)
        if index != n - 1:
            raise DataError(f"{path}: the container announces {n} frames but its last frame decodes as frame {index + 1}; "
                            f"the file is damaged or cut short")
        return n, last.to_ndarray(format="rgb24")


def frames_matching_labels(
    read: Callable[[], Iterator[np.ndarray]], n_labels: int, where: Path, label_file: Path
) -> Iterator[np.ndarray]:
    """Yield `read()`'s frames, failing (naming both files) when their count differs from the labels'."""
    n = 0
    for frame in read():
        n += 1
        if n > n_labels:
            raise DataError(f"{where}: more frames than the {n_labels} labels in {label_file}; they must match")
        yield frame
    if n != n_labels:
        raise count_mismatch(where, n, label_file, n_labels)


def count_mismatch(where: Path, n: int, label_file: Path, n_labels: int) -> DataError:
    return DataError(f"{where}: {n} frames but {label_file} labels {n_labels}; they must match")
