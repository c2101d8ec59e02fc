"""The source coordinates OpenCV's ``warpAffine`` samples for a :class:`Placement`, bit for bit.

A placement has no rotation, so the map is separable: output column ``x`` reads source column
``sx(x)`` and output row ``y`` reads source row ``sy(y)``. These functions give both vectors as
OpenCV 5 computes them (``imgproc/src/warp_kernels.simd.hpp``), so that another implementation
(cpgen.functional's torch copy-paste) picks exactly the pixels that :func:`warp_mask` picks and
weighs them as :func:`warp_crop` does:

* the 2x3 matrix is inverted in double precision as ``cv::warpAffine`` does, then rounded to
  float32;
* columns handled by the SIMD loop get ``fma(m0, x, m2)`` in float32 (one rounding); the last
  ``width mod block`` columns of each row, done by the scalar tail loop, get ``x * m0 + m2``
  (two roundings), where ``block`` is twice the float32 lanes OpenCV's build uses on this CPU
  (16 with AVX2); rows always get ``y * m4 + m5`` (two roundings);
* nearest rounds half to even (``v_round``); bilinear takes ``floor`` and the fraction.

The block is found once per process by warping small probe rows with OpenCV and keeping the
candidate that reproduces them (:func:`opencv_vector_block`). Pure numpy; no torch.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from cpgen.ops import opencv_own_kernels
from cpgen.ops.paste import Placement

Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]

#: Block sizes to try: 128-bit (8), 256-bit (16), 512-bit (32) SIMD, wider, and no SIMD at all.
_CANDIDATE_BLOCKS = (16, 8, 32, 64, 128, 1 << 30)
#: Probe rows (scale, offset) whose fused and unfused coordinates round apart in columns that
#: together tell every candidate block apart on a 255-pixel row (found by a seeded search).
_PROBES = (
    (0.639089, -0.152911),
    (1.197963, -1.136205),
    (1.438428, -2.182962),
    (0.997101, 2.208794),
    (1.762736, 2.353045),
)
_PROBE_WIDTH = 255


def inverse_matrix(matrix: npt.NDArray[np.float64]) -> list[float]:
    """``cv::warpAffine``'s inverse of a 2x3 forward matrix, in double, as a flat list of six."""
    m = [float(v) for v in np.asarray(matrix, dtype=np.float64).reshape(-1)]
    det = m[0] * m[4] - m[1] * m[3]
    det = 1.0 / det if det != 0 else 0.0
    a11, a22 = m[4] * det, m[0] * det
    m[0], m[1], m[3], m[4] = a11, m[1] * -det, m[3] * -det, a22
    b1 = -m[0] * m[2] - m[1] * m[5]
    b2 = -m[3] * m[2] - m[4] * m[5]
    m[2], m[5] = b1, b2
    return m


def fma32(a: float, x: npt.ArrayLike, c: float) -> Floats:
    """``fma(a, x, c)`` in float32 with one rounding (``a``, ``x``, ``c`` rounded to float32 first).

    The product of two float32 values is exact in float64; the sum is rounded once in float64
    and then to float32, and the rare double rounding (a float64 result exactly halfway between
    two float32 values while the float64 sum was inexact) is corrected from the sum's error.
    """
    product = np.float64(np.float32(a)) * np.asarray(x, dtype=np.float32).astype(np.float64)
    addend = np.float64(np.float32(c))
    total = product + addend
    back = total - product
    error = (product - (total - back)) + (addend - back)  # exact: total + error = product + c
    rounded = total.astype(np.float32)
    as_double = rounded.astype(np.float64)
    toward = np.where(total > as_double, np.inf, -np.inf).astype(np.float32)
    neighbour = np.nextafter(rounded, toward).astype(np.float64)
    halfway = (as_double != total) & (as_double + neighbour == 2 * total) & (error != 0)
    corrected = np.where(
        error > 0, np.maximum(as_double, neighbour), np.minimum(as_double, neighbour)
    )
    return np.where(halfway, corrected.astype(np.float32), rounded)


def mul_add32(a: float, x: npt.ArrayLike, c: float) -> Floats:
    """``x * a + c`` in float32 with two roundings (OpenCV's scalar loop)."""
    return np.asarray(x, dtype=np.float32) * np.float32(a) + np.float32(c)


def column_coords(inverse: list[float], width: int, block: int) -> Floats:
    """Source x (float32) for each of ``width`` output columns of a separable inverse map."""
    x = np.arange(width, dtype=np.float32)
    vector_end = (width // block) * block
    fused = fma32(inverse[0], x[:vector_end], inverse[2])
    return np.concatenate([fused, mul_add32(inverse[0], x[vector_end:], inverse[2])])


def row_coords(inverse: list[float], height: int) -> Floats:
    """Source y (float32) for each of ``height`` output rows of a separable inverse map."""
    return mul_add32(inverse[4], np.arange(height, dtype=np.float32), inverse[5])


def nearest_index(coords: Floats, size: int) -> tuple[Ints, npt.NDArray[np.bool_]]:
    """Source index each coordinate reads (rounded half to even, clipped) and whether it is in
    ``range(size)`` (outside, OpenCV's constant border gives 0)."""
    index = np.rint(coords).astype(np.int64)
    inside = (index >= 0) & (index < size)
    return np.clip(index, 0, size - 1), inside


def linear_taps(coords: Floats, size: int) -> tuple[Ints, Ints, Floats]:
    """Bilinear taps ``(i0, i1, frac)``: indices clipped to the edge (replicated border) and the
    float32 weight of ``i1``."""
    floor = np.floor(coords)
    frac = (coords - floor).astype(np.float32)  # exact: a float's fractional part
    i0 = floor.astype(np.int64)
    return np.clip(i0, 0, size - 1), np.clip(i0 + 1, 0, size - 1), frac


def placement_inverse(placement: Placement, rect_x: int = 0, rect_y: int = 0) -> list[float]:
    """OpenCV's inverse of ``placement.warp_matrix(rect_x, rect_y)``; only for placements
    without a turn (``angle`` 0), whose map is separable (ValueError otherwise)."""
    matrix = placement.warp_matrix(rect_x, rect_y)
    if matrix[0, 1] != 0 or matrix[1, 0] != 0:
        raise ValueError(f"a turned placement (angle {placement.angle}) is not separable")
    return inverse_matrix(matrix)


def _probe_row(inverse: list[float], block: int) -> npt.NDArray[np.uint8]:
    index, inside = nearest_index(column_coords(inverse, _PROBE_WIDTH, block), _PROBE_WIDTH)
    return np.where(inside, index, 0).astype(np.uint8)


@lru_cache(maxsize=1)
def opencv_vector_block() -> int:
    """Columns per SIMD iteration of OpenCV's nearest ``warpAffine`` on this CPU (16 on AVX2).

    Found by warping a few 1-pixel-high probe rows with cv2 and keeping the first candidate that
    reproduces all of them. When none does (older OpenCV builds work in 1/32-pixel fixed point
    instead of float32), warns once and returns 16: coordinates then differ from that
    build's by up to 1/32 pixel, so masks can differ from ``warp_mask`` at their edges.
    """
    import cv2

    opencv_own_kernels()
    source = np.arange(_PROBE_WIDTH, dtype=np.uint8)[None, :]
    observed = []
    for scale, offset in _PROBES:
        matrix = np.array([[scale, 0.0, offset], [0.0, 1.0, 0.0]])
        warped = cv2.warpAffine(
            source,
            matrix,
            (_PROBE_WIDTH, 1),
            flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        observed.append((inverse_matrix(matrix), warped[0]))
    for block in _CANDIDATE_BLOCKS:
        if all(np.array_equal(_probe_row(inv, block), row) for inv, row in observed):
            return block
    warnings.warn(
        f"OpenCV {cv2.__version__} computes warpAffine coordinates in a way cpgen does not "
        "model: copypaste_batch's masks can differ from the CLI's by a pixel at their edges",
        RuntimeWarning,
        stacklevel=2,
    )
    return 16
