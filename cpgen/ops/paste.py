"""Simple Copy-Paste as pure ops: place a source image on a target frame and composite it.

Coordinates are continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``), the convention
of COCO polygons. A placement maps a source point ``x`` to ``scale * x' + offset_x`` where ``x'``
is ``x`` or, flipped, ``source_width - x``; ``y`` to ``scale * y + offset_y``; then, with an
``angle``, turns the result by ``angle`` degrees counter-clockwise (as seen on the image, y
down, like ``cv2.getRotationMatrix2D``) about the centre of the placed source rectangle. One
affine map serves pixels (``warp_matrix``), polygons (``polygon``) and masks (``warp_mask``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from cpgen.ops import opencv_own_kernels

Image = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Placement:
    """Where the source lands on the target: horizontal flip, scale, offset (pixels), and a
    turn by ``angle`` degrees about the placed source's centre (``source_height`` is needed
    only to find that centre)."""

    flip: bool
    scale: float
    offset_x: float
    offset_y: float
    source_width: float
    source_height: float = 0.0
    angle: float = 0.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    @functools.cached_property
    def _affine(self) -> npt.NDArray[np.float64]:
        return self.affine()

    def affine(self) -> npt.NDArray[np.float64]:
        """2x3 matrix of the whole map in continuous coordinates: ``target = A @ source + b``."""
        s = self.scale
        sign = -1.0 if self.flip else 1.0
        shift_x = s * self.source_width if self.flip else 0.0
        linear = np.array([[sign * s, 0.0], [0.0, s]])
        shift = np.array([shift_x + self.offset_x, self.offset_y])
        if self.angle:
            theta = np.deg2rad(self.angle)
            cos, sin = np.cos(theta), np.sin(theta)
            turn = np.array([[cos, sin], [-sin, cos]])
            centre = np.array(
                [
                    self.offset_x + s * self.source_width / 2,
                    self.offset_y + s * self.source_height / 2,
                ]
            )
            linear = turn @ linear
            shift = turn @ (shift - centre) + centre
        return np.hstack([linear, shift[:, None]])

    def polygon(self, part: Sequence[float]) -> list[float]:
        """Map one polygon part ``[x0, y0, x1, y1, ...]`` from source to target coordinates."""
        return self._place(np.asarray(part, dtype=np.float64).reshape(-1, 2)).reshape(-1).tolist()

    def polygons(self, parts: Sequence[Sequence[float]]) -> list[list[float]]:
        """:meth:`polygon` of each part, in one numpy pass where not turned (the same numbers;
        a turn's matrix product is kept per part, as :meth:`polygon` computes it)."""
        if self.angle or not parts:
            return [self.polygon(p) for p in parts]
        lengths = [len(p) for p in parts]
        xy = np.fromiter(itertools.chain.from_iterable(parts), np.float64, sum(lengths))
        flat = self._place(xy.reshape(-1, 2)).reshape(-1).tolist()
        ends = list(itertools.accumulate(lengths))
        return [flat[end - n : end] for n, end in zip(lengths, ends, strict=True)]

    def _place(self, xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Source points (n x 2) in target coordinates."""
        if self.angle:
            matrix = self._affine
            return xy @ matrix[:, :2].T + matrix[:, 2]
        x = self.source_width - xy[:, 0] if self.flip else xy[:, 0]
        out = np.empty_like(xy)
        out[:, 0] = self.scale * x + self.offset_x
        out[:, 1] = self.scale * xy[:, 1] + self.offset_y
        return out

    def reduced(self, reduction: int) -> Placement:
        """The same map for a source decoded ``reduction`` times smaller."""
        if reduction == 1:
            return self
        return Placement(
            self.flip,
            self.scale * reduction,
            self.offset_x,
            self.offset_y,
            self.source_width / reduction,
            self.source_height / reduction,
            self.angle,
        )

    def warp_matrix(self, rect_x: int = 0, rect_y: int = 0) -> npt.NDArray[np.float64]:
        """2x3 matrix from source pixel indices to indices of a target crop at (rect_x, rect_y).

        Pixel centres sit at ``i + 0.5`` in continuous coordinates, hence the half-pixel terms.
        """
        if self.angle:
            matrix = self.affine()
            # j = A (i + 0.5) + b - 0.5 for pixel indices i (source) and j (target)
            matrix[:, 2] += matrix[:, :2].sum(axis=1) * 0.5 - 0.5
            matrix[0, 2] -= rect_x
            matrix[1, 2] -= rect_y
            return matrix
        s = self.scale
        if self.flip:
            a, bx = -s, s * (self.source_width - 0.5) + self.offset_x - 0.5
        else:
            a, bx = s, s * 0.5 + self.offset_x - 0.5
        by = s * 0.5 + self.offset_y - 0.5
        return np.array([[a, 0.0, bx - rect_x], [0.0, s, by - rect_y]], dtype=np.float64)


def warp_crop(source: Image, placement: Placement, rect: tuple[int, int, int, int]) -> Image:
    """The placed source image, rendered only inside target ``rect`` = ``(x, y, w, h)``.

    Cost is proportional to the rect's area, not the frame's (bilinear, edges replicated).
    """
    x, y, w, h = rect
    opencv_own_kernels()
    return cv2.warpAffine(
        source,
        placement.warp_matrix(x, y),
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def warp_mask(mask: Mask, placement: Placement, height: int, width: int) -> Mask:
    """A source-frame binary mask placed on a ``height`` x ``width`` target frame (nearest)."""
    opencv_own_kernels()
    return cv2.warpAffine(
        np.ascontiguousarray(mask),
        placement.warp_matrix(),
        (width, height),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


#: Blended weights at or above this count as fully pasted (changes a value by under 0.25).
FULL_ALPHA = 1.0 - 2.0**-10


def composite(
    target: Image,
    pasted: Image,
    pasted_mask: Mask,
    rect: tuple[int, int, int, int],
    sigma: float = 0.0,
) -> None:
    """Composite ``pasted`` (the crop at ``rect``) onto ``target`` in place through its mask.

    With ``sigma`` > 0 the mask is softened by a Gaussian of that standard deviation (pixels),
    kept inside the mask: pasted pixels never land outside the pasted masks, and every target
    pixel outside them is left exactly as it was. A pixel under the mask becomes
    ``alpha * pasted + (1 - alpha) * target``, rounded, with ``alpha`` the blurred mask; only the
    thin band near the mask's edge has ``alpha`` < 1, so only that band is blended.
    """
    x, y, w, h = rect
    roi = target[y : y + h, x : x + w]
    if sigma <= 0:
        cv2.copyTo(pasted, pasted_mask, roi)
        return
    opencv_own_kernels()
    alpha = cv2.GaussianBlur(pasted_mask.astype(np.float32), (0, 0), sigmaX=sigma)
    band = np.flatnonzero((alpha < FULL_ALPHA) & (pasted_mask != 0))  # indices into the crop
    rows, cols = np.divmod(band, w)
    pixels = target.reshape(-1, target.shape[2])  # flat view of the whole (contiguous) frame
    in_frame = (rows + y) * target.shape[1] + (cols + x)
    under = pixels[in_frame].astype(np.float32)
    cv2.copyTo(pasted, pasted_mask, roi)
    if band.size:
        weight = alpha.reshape(-1)[band][:, None]
        over = pasted.reshape(-1, pasted.shape[2])[band].astype(np.float32)
        pixels[in_frame] = np.rint(over * weight + under * (1.0 - weight)).astype(np.uint8)


def blur_radius(sigma: float) -> int:
    """Pixels a Gaussian of ``sigma`` reaches in OpenCV's float blur (kernel of about 8 sigma)."""
    return 0 if sigma <= 0 else int(np.ceil(4 * sigma)) + 1


def padded_rect(
    box: tuple[int, ...], pad: int, width: int, height: int
) -> tuple[int, int, int, int]:
    """``box`` (x, y, w, h) grown by ``pad`` pixels on each side, clipped to the frame.

    Compositing in a crop padded by the blur radius gives the same soft edge as compositing the
    whole frame, at the cost of the crop only.
    """
    x0, y0 = max(box[0] - pad, 0), max(box[1] - pad, 0)
    x1, y1 = min(box[0] + box[2] + pad, width), min(box[1] + box[3] + pad, height)
    return x0, y0, x1 - x0, y1 - y0


def occlude(mask: Mask, pasted_union: Mask) -> Mask:
    """The part of ``mask`` still visible under the pasted union (array form of the RLE update)."""
    return (mask.astype(bool) & ~pasted_union.astype(bool)).astype(np.uint8)


def keep_occluded(
    original_px: int, visible_px: int, min_visible_px: int, min_visible_frac: float
) -> bool:
    """Whether a target object that lost pixels to a paste is kept.

    Dropped when nothing is left; otherwise dropped only when less than half of it is visible
    and either fewer than ``min_visible_px`` pixels or less than ``min_visible_frac`` of its
    original area remain. A mostly visible object (half or more) is never dropped.
    """
    if visible_px <= 0:
        return False
    if visible_px >= original_px:
        return True
    frac = visible_px / original_px
    if frac >= 0.5:
        return True
    return visible_px >= min_visible_px and frac >= min_visible_frac
