"""Image decode/encode, header-only size reads, and atomic file writes.

EXIF policy: COCO annotations refer to the pixels as stored, so images are decoded with
``IMREAD_IGNORE_ORIENTATION`` (no EXIF rotation) by default. Classification folders have no
annotations tied to the stored pixels, so ``cpgen cutmix`` asks for ``apply_orientation=True``:
a phone photo is turned upright like its class mates. Every image is decoded as
8-bit, 3-channel BGR (grayscale is expanded, alpha dropped, 16-bit scaled down).
"""

from __future__ import annotations

import errno
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from cpgen.files import file_mode, naming

Image = npt.NDArray[np.uint8]

#: Images whose header claims more pixels than this are refused before decoding (a
#: decompression bomb guard); 178,956,970 is the same limit Pillow warns at (about 13k x 13k).
MAX_PIXELS = 178_956_970

_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
_DECODE_ORIENTED_FLAGS = cv2.IMREAD_COLOR  # applies the EXIF orientation


class ImageError(ValueError):
    """An image that is missing, unreadable, too large or of the wrong size."""


#: Reading errors that make one image unusable (it is skipped, named and counted); any other
#: ``OSError`` (EIO, EMFILE, ENOMEM, ...) is a fault of the system and stops the run.
_ITEM_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EINVAL,
    }
)


def _unreadable(exc: OSError, path: Path) -> ImageError:
    """The ImageError for a per-image read failure; re-raises a system fault naming ``path``."""
    if exc.errno not in _ITEM_ERRNOS:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise exc
    return ImageError(f"cannot read: {exc.strerror or exc}")


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG, PNG, GIF, BMP or WebP header, or None if not recognised."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            width = int.from_bytes(data[24:27], "little") + 1
            height = int.from_bytes(data[27:30], "little") + 1
            return width, height
        return None
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(marker, offset, payload) of a JPEG's segments up to and including its first scan."""
    pos, end = 2, len(data)
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker == 0xD9:
            return
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        yield marker, pos, data[pos + 4 : pos + 2 + length]
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return
        pos += 2 + length


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    for marker, _, payload in jpeg_segments(data):
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): precision, height, width, ...
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if len(payload) < 5:
                return None
            height, width = struct.unpack(">HH", payload[1:5])
            return width, height
    return None


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as exc:
        raise _unreadable(exc, path) from None


def check_file(path: Path, expected_size: tuple[int, int] | None = None) -> None:
    """Check an image file cheaply: it exists, and its header gives the expected size.

    Only the first 256 KiB are read when the header (JPEG, PNG, GIF, BMP, WebP) can be parsed
    from them; other files are decoded in full. A body corrupted past the header is found only
    when the image is decoded for use.
    """
    try:
        with path.open("rb") as f:
            head = f.read(16 * 1024)  # a header is almost always within it
            size = header_size(head)
            if size is None and len(head) == 16 * 1024:  # large EXIF or ICC segments first
                head += f.read(240 * 1024)
                size = header_size(head)
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as exc:
        raise _unreadable(exc, path) from None
    if size is None:
        decode(read_bytes(path), expected_size)
    else:
        check_size(size, expected_size)


def decode(
    data: bytes, expected_size: tuple[int, int] | None = None, *, apply_orientation: bool = False
) -> Image:
    """Decode to HxWx3 uint8 BGR, checking the header first (size limit, expected size).

    ``expected_size`` is (width, height) as recorded in the dataset; a different stored size is
    an ImageError (annotations would not line up). ``apply_orientation`` turns the pixels as the
    EXIF orientation says (then leave ``expected_size`` out: it describes stored pixels).
    """
    if not data:
        raise ImageError("empty file")
    size = header_size(data)
    if size is not None:
        check_size(size, expected_size)
    flags = _DECODE_ORIENTED_FLAGS if apply_orientation else _DECODE_FLAGS
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None:
        raise ImageError("not a decodable image")
    if size is None:
        check_size((image.shape[1], image.shape[0]), expected_size)
    return image


_REDUCED_FLAGS = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def decode_reduced(data: bytes, expected_size: tuple[int, int], reduction: int) -> Image:
    """Decode a JPEG at 1/``reduction`` (2, 4 or 8) of its size, much faster (DCT scaling).

    The result is ``ceil(width / reduction)`` pixels wide; reduced pixel ``i`` covers full
    pixels ``[i * reduction, (i + 1) * reduction)``. Non-JPEG data raises ValueError: callers
    decode those in full.
    """
    if data[:2] != b"\xff\xd8":
        raise ValueError("reduced decoding is for JPEG only")
    size = header_size(data)
    if size is None:
        raise ImageError("unreadable JPEG header")
    check_size(size, expected_size)
    flags = _REDUCED_FLAGS[reduction] | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None:
        raise ImageError("not a decodable image")
    return image


def reduce(image: Image, reduction: int) -> Image:
    """``image`` at 1/``reduction`` (a power of two) of its size: halved ``log2(reduction)``
    times, each time every 2x2 block averaged (rounded half up; an odd side first gets its last
    row or column repeated). Reduced pixel ``i`` covers full pixels ``[i * reduction, (i + 1) *
    reduction)``; the size is ``ceil(size / reduction)``.

    From a decode already at hand this costs 0.1-0.2 ms for a 640x480 image, where decoding the
    JPEG again at the smaller size (libjpeg's DCT scaling) costs 70-85% of a full decode.
    """
    while reduction > 1:
        height, width = image.shape[:2]
        if height % 2 or width % 2:
            image = cv2.copyMakeBorder(image, 0, height % 2, 0, width % 2, cv2.BORDER_REPLICATE)
        size = (image.shape[1] // 2, image.shape[0] // 2)
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        reduction //= 2
    return image


def check_size(size: tuple[int, int], expected_size: tuple[int, int] | None) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"header gives an empty size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"header claims {width}x{height} pixels, over the limit of {MAX_PIXELS:,} "
            "(possible decompression bomb)"
        )
    if expected_size is not None and (width, height) != tuple(expected_size):
        raise ImageError(
            f"stored size {width}x{height} differs from the annotations' "
            f"{expected_size[0]}x{expected_size[1]}"
        )


def load(
    path: Path, expected_size: tuple[int, int] | None = None, *, apply_orientation: bool = False
) -> Image:
    return decode(read_bytes(path), expected_size, apply_orientation=apply_orientation)


def encode_jpeg(image: Image, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageError("JPEG encoding failed")
    return buf.tobytes()


def write_output_image(path: Path, data: bytes) -> None:
    """Write a generated image in place (no temp file: creating one costs ~0.3 ms an image).

    This is safe because of the shard protocol: a shard's marker is written after all its
    images, so an image cut short by a kill belongs to an unfinished shard, which ``--resume``
    writes again; and the dataset's index (``annotations.json``, ``labels.csv``) appears only
    once every shard is done.
    """
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            f.write(data)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, file_mode())  # as open() would, not mkstemp's 0600
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
