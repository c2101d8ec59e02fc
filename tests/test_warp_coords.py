"""cpgen.ops.warp_coords reproduces the pixels OpenCV's warpAffine reads (no torch needed)."""

from __future__ import annotations

import numpy as np

from cpgen.ops.paste import Placement, warp_crop, warp_mask
from cpgen.ops.warp_coords import (
    column_coords,
    fma32,
    linear_taps,
    mul_add32,
    nearest_index,
    opencv_vector_block,
    placement_inverse,
    row_coords,
)


def random_placement(rng: np.random.Generator, width: int, height: int) -> Placement:
    scale = float(rng.uniform(0.05, 4.0))
    if rng.random() < 0.3:  # simple ratios and quarter-pixel offsets: many exact ties
        scale = float(rng.integers(1, 9)) / float(rng.integers(1, 9))
        offset = float(rng.integers(-40, 40)) / 4, float(rng.integers(-40, 40)) / 4
    else:
        offset = (
            float(rng.uniform(-width * scale, width)),
            float(rng.uniform(-height * scale, height)),
        )
    return Placement(bool(rng.random() < 0.5), scale, offset[0], offset[1], width)


def test_nearest_index_picks_exactly_the_pixels_warp_mask_picks():
    rng = np.random.default_rng(3)
    block = opencv_vector_block()
    for _ in range(300):
        sw, sh = (int(v) for v in rng.integers(4, 260, 2))
        width, height = (int(v) for v in rng.integers(4, 260, 2))
        placement = random_placement(rng, sw, sh)
        mask = (rng.random((sh, sw)) < 0.5).astype(np.uint8)
        inverse = placement_inverse(placement)
        cols, cols_in = nearest_index(column_coords(inverse, width, block), sw)
        rows, rows_in = nearest_index(row_coords(inverse, height), sh)
        expected = mask[rows][:, cols] & (rows_in[:, None] & cols_in[None, :])
        assert np.array_equal(expected, warp_mask(mask, placement, height, width))


def test_linear_taps_give_warp_crops_pixels():
    rng = np.random.default_rng(4)
    block = opencv_vector_block()
    for _ in range(60):
        sw, sh = (int(v) for v in rng.integers(4, 200, 2))
        placement = random_placement(rng, sw, sh)
        source = rng.integers(0, 256, (sh, sw, 3), dtype=np.uint8)
        rect = tuple(int(v) for v in (*rng.integers(0, 50, 2), *rng.integers(1, 150, 2)))
        inverse = placement_inverse(placement, rect[0], rect[1])
        x0, x1, fx = linear_taps(column_coords(inverse, rect[2], block), sw)
        y0, y1, fy = linear_taps(row_coords(inverse, rect[3]), sh)
        s = source.astype(np.float32)
        top = s[y0][:, x0] + fx[None, :, None] * (s[y0][:, x1] - s[y0][:, x0])
        bottom = s[y1][:, x0] + fx[None, :, None] * (s[y1][:, x1] - s[y1][:, x0])
        value = top + fy[:, None, None] * (bottom - top)
        got = np.clip(np.rint(value), 0, 255)
        diff = np.abs(got - warp_crop(source, placement, rect).astype(np.float32))
        assert diff.max() <= 1


def test_fused_multiply_add_rounds_once():
    # 3 * (1 + 2**-23) = 3 + 3 * 2**-23 is not a float32; fused, adding -3 keeps it exactly
    a = np.float32(1 + 2**-23)
    assert fma32(a, [3.0], -3.0)[0] == np.float32(3 * 2**-23)
    assert mul_add32(a, [3.0], -3.0)[0] != np.float32(3 * 2**-23)
    # exhaustive agreement with exact rational arithmetic on random inputs
    rng = np.random.default_rng(0)
    a_values = rng.uniform(-4, 4, 2000).astype(np.float32)
    x_values = rng.integers(0, 5000, 2000).astype(np.float32)
    c_values = rng.uniform(-5000, 5000, 2000).astype(np.float32)
    from fractions import Fraction

    for a_, x_, c_ in zip(a_values, x_values, c_values, strict=True):
        exact = Fraction(float(a_)) * Fraction(float(x_)) + Fraction(float(c_))
        nearest = np.float32(float(exact))  # float() rounds the fraction correctly to double
        got = fma32(float(a_), [x_], float(c_))[0]
        assert abs(Fraction(float(got)) - exact) <= abs(Fraction(float(nearest)) - exact)


def test_the_vector_block_is_a_known_simd_width():
    assert opencv_vector_block() in (8, 16, 32, 64, 128, 1 << 30)


def test_warps_use_opencv_own_kernels_in_any_thread():
    """cpgen's ops switch Intel IPP off in the thread they run in (a per-thread switch):
    opencv-python hands warpAffine to IPP on AVX-512 CPUs, which rounds a coordinate halfway
    between two pixels up, not to even as OpenCV's own kernel (and this module's model) does."""
    import threading

    import cv2

    from cpgen.ops.paste import warp_mask

    mask = np.tile(np.arange(200) % 2, (40, 1)).astype(np.uint8)  # odd columns set
    placement = Placement(False, 0.5, 0.0, 0.0, 200, 40)  # column x reads 2x + 0.5
    seen: list[object] = []

    def run() -> None:
        cv2.ipp.setUseIPP(True)  # as a fresh thread may have it
        seen.append(warp_mask(mask, placement, 16, 72))
        seen.append(cv2.ipp.useIPP())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    warped, ipp_on = seen
    assert ipp_on is False
    coords = column_coords(placement_inverse(placement), 72, 16)
    assert np.array_equal(coords[:100], np.arange(100)[:72] * 2 + 0.5)  # all halfway
    assert not warped.any()  # each to the even column of its two: all unset (IPP: all set)
