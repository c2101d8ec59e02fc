"""Check many polygon segmentations at once with numpy: in reach, and surely not empty.

For the common polygon (parts of 6 or more numbers, an even count) two questions decide whether
the one-by-one check (``coco_checks.clean_annotation``) would say anything: are all vertices
within ``masks.MAX_REACH`` image sizes of the frame, and is the rasterised mask non-empty.
``plain_polygons`` answers the first exactly and the second soundly: "surely non-empty" only
when a pixel centre lies inside the polygon (even-odd rule) at least ``CLEARANCE`` pixels from
every edge, inside the frame. pycocotools rasterises a polygon after rounding its vertices to
1/5 pixel and samples each pixel column at its centre; those roundings move an edge's crossing
of the column by less than ``0.9 + 0.3 * slope`` pixels, while an edge at ``CLEARANCE`` = 1.5
pixels from the centre crosses that column at least ``1.5 * sqrt(1 + slope^2)`` pixels away, so
that pixel is set. The other polygons are rasterised (``coco_checks``), as before.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from cpgen import masks

#: Pixels between a tested pixel centre and every edge (see the module docstring).
CLEARANCE = 1.5


def plain_polygons(
    segs: Sequence[list[list[Any]]], sizes: Sequence[tuple[int, int]]
) -> tuple[list[bool], list[bool]]:
    """For polygons whose parts are all lists of >= 6 numbers (even counts), of images of
    ``sizes`` (width, height): whether every vertex is in reach (then the one-by-one check
    finds nothing to clean or refuse), and whether the mask is surely non-empty.

    Raises ValueError or TypeError (the caller checks one by one) when a value is not a number.
    """
    counts = [len(seg) for seg in segs]
    parts = [part for seg in segs for part in seg]
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    # each value as float() takes it (a list raises ValueError); half the time of np.array
    flat = np.fromiter(
        itertools.chain.from_iterable(parts), dtype=np.float64, count=int(lengths.sum())
    )
    xs, ys = flat[0::2], flat[1::2]
    vertices = lengths // 2
    starts = np.concatenate(([0], np.cumsum(vertices)[:-1]))
    part_seg = np.repeat(np.arange(len(segs)), counts)
    size = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)[part_seg]
    width, height = size[:, 0], size[:, 1]
    reach = masks.MAX_REACH
    in_reach = (
        (np.minimum.reduceat(xs, starts) >= -reach * width)
        & (np.maximum.reduceat(xs, starts) <= (1 + reach) * width)
        & (np.minimum.reduceat(ys, starts) >= -reach * height)
        & (np.maximum.reduceat(ys, starts) <= (1 + reach) * height)
    )
    candidates = [  # points whose nearest pixel centre is tried: vertex mean, box centre, ...
        (np.add.reduceat(xs, starts) / vertices, np.add.reduceat(ys, starts) / vertices),
        (
            (np.minimum.reduceat(xs, starts) + np.maximum.reduceat(xs, starts)) / 2,
            (np.minimum.reduceat(ys, starts) + np.maximum.reduceat(ys, starts)) / 2,
        ),
        # ... and the middle of the chord from the first vertex to the opposite one
        (
            (xs[starts] + xs[starts + vertices // 2]) / 2,
            (ys[starts] + ys[starts + vertices // 2]) / 2,
        ),
    ]
    sure = np.zeros(len(starts), dtype=bool)
    for point_x, point_y in candidates:
        sure |= _clear_centre(xs, ys, starts, vertices, width, height, point_x, point_y)
    sure &= in_reach
    seg_starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    ok = np.logical_and.reduceat(in_reach, seg_starts)
    nonempty = np.logical_or.reduceat(sure, seg_starts)
    return ok.tolist(), nonempty.tolist()


def _clear_centre(
    xs: np.ndarray,
    ys: np.ndarray,
    starts: np.ndarray,
    vertices: np.ndarray,
    width: np.ndarray,
    height: np.ndarray,
    point_x: np.ndarray,
    point_y: np.ndarray,
) -> np.ndarray:
    """Per part: whether the centre of the pixel holding its point is inside it (even-odd), in
    the frame, and at least ``CLEARANCE`` from every edge."""
    n = len(xs)
    centre_x = np.floor(point_x) + 0.5
    centre_y = np.floor(point_y) + 0.5
    following = np.arange(1, n + 1)
    following[starts + vertices - 1] = starts  # each part's last vertex joins its first
    cx, cy = np.repeat(centre_x, vertices), np.repeat(centre_y, vertices)
    x0, y0 = xs - cx, ys - cy  # edges relative to the centre
    x1, y1 = x0[following], y0[following]
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.clip(-(x0 * dx + y0 * dy) / length2, 0.0, 1.0)
        t = np.where(length2 > 0, t, 0.0)
        near_x, near_y = x0 + t * dx, y0 + t * dy
        clearance2 = np.minimum.reduceat(near_x * near_x + near_y * near_y, starts)
        # even-odd rule: edges crossing the ray from the centre towards +x
        straddles = (y0 > 0) != (y1 > 0)
        crossing_x = x0 + (0 - y0) * dx / np.where(straddles, dy, 1.0)
        crossings = np.add.reduceat((straddles & (crossing_x > 0)).astype(np.int64), starts)
    inside = crossings % 2 == 1
    in_frame = (centre_x > 0) & (centre_x < width) & (centre_y > 0) & (centre_y < height)
    return inside & in_frame & (clearance2 >= CLEARANCE * CLEARANCE)
