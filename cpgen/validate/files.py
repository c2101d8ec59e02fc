"""Checks of image files: present, decodable, under the pixel limit, of the recorded size."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2

from cpgen import images
from cpgen.datasets import coco
from cpgen.validate.records import _short, image_size, name_record
from cpgen.validate.report import Problem

JPEG_EXIF_TRANSPOSED = (5, 6, 7, 8)


# --------------------------------------------------------------------------------------------
# Image files
# --------------------------------------------------------------------------------------------


def jpeg_truncated(data: bytes) -> bool:
    """True for a JPEG with no end-of-image marker after its first scan (cut off)."""
    if data[:2] != b"\xff\xd8":
        return False
    for marker, offset, _ in images.jpeg_segments(data):
        if marker == 0xDA:
            return data.find(b"\xff\xd9", offset) < 0
    return False


def exif_orientation(data: bytes) -> int | None:
    """The EXIF orientation (1-8) of a JPEG, or None when it has none."""
    if data[:2] != b"\xff\xd8":
        return None
    for marker, _, payload in images.jpeg_segments(data):
        if marker == 0xE1 and payload[:6] == b"Exif\x00\x00":
            return _tiff_orientation(payload[6:])
    return None


def _tiff_orientation(tiff: bytes) -> int | None:
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None
    ifd = struct.unpack(order + "I", tiff[4:8])[0]
    if ifd + 2 > len(tiff):
        return None
    (entries,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for i in range(entries):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(tiff):
            return None
        tag, kind = struct.unpack(order + "HH", tiff[entry : entry + 4])
        if tag == 0x0112:
            (value,) = struct.unpack(order + "H", tiff[entry + 8 : entry + 10])
            return value if kind == 3 and 1 <= value <= 8 else None
    return None


def size_mismatch(
    stored: tuple[int, int], recorded: tuple[int, int], orientation: int | None, where: str
) -> Problem | None:
    """A problem when the stored (width, height) is not the recorded one, naming EXIF rotation."""
    if stored == recorded:
        return None
    message = f"{where}: stored {stored[0]}x{stored[1]}, recorded {recorded[0]}x{recorded[1]}"
    if stored == recorded[::-1] and orientation in JPEG_EXIF_TRANSPOSED:
        message += (
            f"; the file's EXIF orientation is {orientation} (rotated by 90 degrees), so the "
            "JSON likely describes the EXIF-rotated view while cpgen reads the stored pixels"
        )
    return Problem("image_size_mismatch", message)


def check_image_file(images_dir: Path, record: dict[str, Any], position: int) -> list[Problem]:
    """Checks one image record's file: name, presence, header, full decode, size."""
    file_name = record["file_name"]
    where = f"{name_record('image', record, position)} {_short(file_name)}"
    rel = coco.safe_relative(file_name)
    if rel is None:
        return [Problem("file_name_unsafe", where)]
    path = images_dir / rel
    if not path.is_file():
        return [Problem("image_missing", f"{where}: no file {path}")]
    try:
        data = images.read_bytes(path)
    except images.ImageError as exc:
        return [Problem("image_undecodable", f"{where}: {exc}")]
    header = images.header_size(data)
    if header is not None:
        width, height = header
        if width <= 0 or height <= 0:
            return [Problem("image_undecodable", f"{where}: header gives a size {width}x{height}")]
        if width * height > images.MAX_PIXELS:
            return [
                Problem(
                    "image_too_large",
                    f"{where}: header claims {width}x{height}, over {images.MAX_PIXELS:,} pixels",
                )
            ]
    if jpeg_truncated(data):
        return [Problem("image_undecodable", f"{where}: JPEG data ends early (truncated)")]
    try:
        pixels = images.decode(data)
    except images.ImageError as exc:
        return [Problem("image_undecodable", f"{where}: {exc}")]
    recorded = image_size(record)
    if recorded is None:
        return []
    stored = (int(pixels.shape[1]), int(pixels.shape[0]))
    mismatch = size_mismatch(stored, recorded, exif_orientation(data), where)
    return [mismatch] if mismatch else []


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own warnings about broken files while we report them ourselves."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(level)
