"""Frame decoding shared by the readers: JPEG folders and video files, with errors that name the file."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from vadcore.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".bmp")
_FRAME_NUMBER = re.compile(r"[0-9]+$")  # the digits a frame file's name ends in: 000.jpg, img_0001.png


def list_frames(folder: Path) -> list[Path]:
    """Image files of one video folder, in order of the frame number their names end in (000.jpg, 1.png).

    Labels are given per frame position, so the numbers must run from the first one without a gap or a
    repeat: one missing file would otherwise shift every later frame's label by one, silently.
    """
    by_number: dict[int, Path] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
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
        raise DataError(f"{path}: cannot decode image ({e}); expected a readable JPEG/PNG frame") from None


def iter_image_folder(folder: Path) -> Iterator[np.ndarray]:
    for path in list_frames(folder):
        yield read_image(path)


def iter_video_file(path: Path) -> Iterator[np.ndarray]:
    """Decode every frame of a video file with PyAV as RGB uint8 (H, W, 3).

    A file whose container announces more frames than decode (a truncated download) is an error,
    not a shorter video: silently fewer frames would shift every label after the cut.
    """
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(f"{path}: cannot open video ({e}); expected a readable .avi/.mp4 file") from None
    decoded = 0
    with container:
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
        raise DataError(f"{where}: {n} frames but {label_file} labels {n_labels}; they must match")
