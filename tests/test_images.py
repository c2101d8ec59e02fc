"""Image codec helpers: header sizes, size checks, atomic writes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cpgen import images
from tests.copypaste_helpers import block_mean


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp"])
def test_header_size_reads_common_formats(ext):
    pixels = np.zeros((37, 53, 3), np.uint8)
    ok, buf = cv2.imencode(ext, pixels)
    assert ok
    assert images.header_size(buf.tobytes()) == (53, 37)


def test_grayscale_16bit_and_alpha_images_decode_as_8bit_bgr():
    for pixels, ext in (
        (np.full((10, 12), 7, np.uint8), ".png"),
        (np.full((10, 12), 65535, np.uint16), ".png"),
        (np.full((10, 12, 4), 9, np.uint8), ".png"),
    ):
        data = cv2.imencode(ext, pixels)[1].tobytes()
        decoded = images.decode(data, (12, 10))
        assert decoded.shape == (10, 12, 3) and decoded.dtype == np.uint8


def test_wrong_size_and_bomb_headers_are_refused_before_decoding():
    data = cv2.imencode(".png", np.zeros((10, 12, 3), np.uint8))[1].tobytes()
    with pytest.raises(images.ImageError, match="differs"):
        images.decode(data, (10, 12))
    bomb = bytearray(data)
    bomb[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")
    with pytest.raises(images.ImageError, match="decompression bomb"):
        images.decode(bytes(bomb))


def test_corrupt_bytes_are_an_image_error():
    with pytest.raises(images.ImageError):
        images.decode(b"not an image at all")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "b.jpg"
    images.atomic_write_bytes(target, b"xyz")
    images.atomic_write_bytes(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert [p.name for p in target.parent.iterdir()] == ["b.jpg"]


@pytest.mark.parametrize("reduction", [2, 4, 8])
@pytest.mark.parametrize("size", [(480, 640), (427, 641), (7, 5), (1, 1)])
def test_reduce_averages_blocks_rounding_half_up(reduction, size):
    """Halving repeatedly: each 2x2 block's mean rounded half up, an odd side's last row or
    column repeated first, so the size is ceil(size / reduction) (the blocks the placement's
    reduced map assumes)."""
    rng = np.random.default_rng(reduction * size[0])
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    reduced = images.reduce(image, reduction)
    assert reduced.shape == (-(-size[0] // reduction), -(-size[1] // reduction), 3)
    assert np.array_equal(reduced, block_mean(image, reduction))
    flat = np.full((*size, 3), 37, np.uint8)
    assert (images.reduce(flat, reduction) == 37).all()
