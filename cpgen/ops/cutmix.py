"""CutMix as pure ops: the box Composer's ``_rand_bbox`` draws, its clipping, the base weight.

Conventions (Composer 0.32, ``composer/algorithms/cutmix/cutmix.py``):

* From lambda, a side's cut is ``int(dim * sqrt(1 - lambda))`` pixels; with a fixed relative
  ``length`` it is ``int(length * dim)`` (a box of ``length * H`` by ``length * W``, the size
  Composer's docs describe; Composer's code instead turns ``length`` into a lambda of
  ``length**2`` and takes ``sqrt(1 - length**2)``, a different size).
* The box's edges lie ``cut // 2`` pixels either side of the centre, then are clipped to the
  frame: rows ``[top, bottom)``, columns ``[left, right)``. An odd cut therefore gives a box one
  pixel smaller than the cut (lambda 0.75 on 7x7: cut 3, box 2x2), exactly as Composer.
* The centre is uniform over the frame, or, with uniform sampling, over the frame widened by
  ``cut // 2`` on each side (``(-cut) // 2 <= centre < dim + cut // 2``), so that every pixel is
  equally likely to be covered.
* The base class weight is ``1 - box_area / image_area`` after clipping.

No random numbers are drawn here: :func:`cpgen.sampling.sample_cutmix` draws the centre and
lambda from a task's generator.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

from cpgen.ops import opencv_own_kernels

Image = npt.NDArray[np.uint8]


class Box(NamedTuple):
    """A pixel box: rows ``[top, bottom)`` and columns ``[left, right)``, clipped to the frame.

    This is also the order of Composer's bbox tuple: its first pair indexes dim 2 (rows).
    """

    top: int
    left: int
    bottom: int
    right: int

    @property
    def area(self) -> int:
        """Pixels in the box."""
        return (self.bottom - self.top) * (self.right - self.left)


def cut_from_lambda(dim: int, lam: float) -> int:
    """The nominal cut along a side of ``dim`` pixels for lambda (the base's nominal share)."""
    return int(dim * math.sqrt(1.0 - lam))


def cut_from_length(dim: int, length: float) -> int:
    """The nominal cut along a side of ``dim`` pixels for a relative side ``length`` in (0, 1]."""
    return int(length * dim)


def centre_range(dim: int, cut: int, uniform_sampling: bool) -> tuple[int, int]:
    """Half-open range ``[low, high)`` the box centre is drawn from along one side."""
    if uniform_sampling:
        return (-cut) // 2, dim + cut // 2
    return 0, dim


def box_at(
    height: int, width: int, cut_rows: int, cut_cols: int, centre_row: int, centre_col: int
) -> Box:
    """The clipped box of nominal size ``cut_rows x cut_cols`` around a centre (pixels)."""
    half_rows, half_cols = cut_rows // 2, cut_cols // 2
    return Box(
        _clip(centre_row - half_rows, height),
        _clip(centre_col - half_cols, width),
        _clip(centre_row + half_rows, height),
        _clip(centre_col + half_cols, width),
    )


def _clip(value: int, dim: int) -> int:
    return min(max(int(value), 0), dim)


def base_weight(box: Box, height: int, width: int) -> float:
    """The base class's weight: ``1 - box_area / image_area`` (Composer's adjusted lambda)."""
    return 1 - ((box.bottom - box.top) * (box.right - box.left) / (width * height))


def paste_box(base: Image, patch: Image, box: Box) -> Image:
    """Copy the box's pixels from ``patch`` into ``base`` (same size), in place; returns base."""
    if base.shape != patch.shape:
        raise ValueError(f"base {base.shape} and patch {patch.shape} differ in shape")
    top, left, bottom, right = box
    if bottom > top and right > left:
        base[top:bottom, left:right] = patch[top:bottom, left:right]
    return base


def resize(image: Image, height: int, width: int) -> Image:
    """``image`` at ``height x width`` pixels: INTER_AREA when shrinking both sides (no aliasing
    from large photos), INTER_LINEAR otherwise; the image itself when the size already matches.
    """
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    shrinking = height <= h and width <= w
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    opencv_own_kernels()
    return cv2.resize(image, (width, height), interpolation=interpolation)
