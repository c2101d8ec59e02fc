"""Every pycocotools call lives here: COCO segmentation <-> RLE <-> mask, area and box.

RLEs handled here are pycocotools' compressed form (``{"size": [h, w], "counts": bytes}``);
``rle_to_json`` turns one into the JSON form with ``counts`` as a str.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from pycocotools import mask as cocomask

from cpgen.polygons import joined_runs_to_exact_polygons, mask_to_exact_polygons

Rle = dict[str, Any]
Mask = npt.NDArray[np.uint8]


class MaskError(ValueError):
    """A segmentation that cannot be decoded for its image."""


def clean_polygons(parts: Sequence[Any]) -> tuple[list[list[float]], int]:
    """Keep polygon parts with an even count of at least 6 finite numbers.

    pycocotools reads a 4-number list as a box, and odd counts are malformed. Returns the kept
    parts and how many were dropped.
    """
    kept: list[list[float]] = []
    dropped = 0
    for part in parts:
        if isinstance(part, list) and len(part) >= 6 and len(part) % 2 == 0:
            floats = _plain_floats(part)
            if floats is not None:  # the usual case, checked at C speed
                if all(map(math.isfinite, floats)):
                    kept.append(floats)
                else:
                    dropped += 1
                continue
        if (
            isinstance(part, list)
            and len(part) >= 6
            and len(part) % 2 == 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in part)
            and all(np.isfinite(part))
        ):
            kept.append([float(v) for v in part])
        else:
            dropped += 1
    return kept, dropped


def _plain_floats(part: list[Any]) -> list[float] | None:
    """``part`` as floats when it holds only Python ints and floats that fit a float, else
    None (the caller then checks it value by value)."""
    if not set(map(type, part)) <= {float, int}:
        return None
    try:
        return list(map(float, part))
    except OverflowError:
        return None


def is_box_only(ann: dict[str, Any]) -> bool:
    """Whether an annotation is a box instance: its ``segmentation`` is missing, null or []."""
    seg = ann.get("segmentation")
    return seg is None or (isinstance(seg, list) and not seg)


def box_polygon(box: Sequence[float], height: int, width: int) -> list[float]:
    """The pixel-grid rectangle of a ``[x, y, w, h]`` box as one polygon part.

    Edges are rounded half up (``x0 = floor(x + 0.5)``, ``x1 = floor(x + w + 0.5)``, the same
    for y) and clipped to the frame, so the mask holds pixels ``x0 .. x1 - 1`` and
    ``y0 .. y1 - 1``: pycocotools rasterises a rectangle with integer corners exactly so.
    """
    x, y, w, h = (float(v) for v in box)
    x0 = min(max(np.floor(x + 0.5), 0.0), width)
    y0 = min(max(np.floor(y + 0.5), 0.0), height)
    x1 = min(max(np.floor(x + w + 0.5), 0.0), width)
    y1 = min(max(np.floor(y + h + 0.5), 0.0), height)
    return [x0, y0, x1, y0, x1, y1, x0, y1]


#: How far (in image sizes) a polygon may reach beyond its image's frame. pycocotools allocates
#: in proportion to a polygon's extent, so one coordinate of 1e12 (a broken converter) would
#: exhaust memory or crash; a polygon slightly outside the frame is clipped when rasterised.
MAX_REACH = 1.0


def polygon_problem(parts: Sequence[Any], width: int, height: int) -> str | None:
    """Why polygon parts must not be rasterised for a ``width`` x ``height`` image, or None.

    Refused: any coordinate that is not a finite number, and any vertex more than the image's
    own size (``MAX_REACH``) beyond the frame. Parts of the wrong length are ``clean_polygons``'
    business.
    """
    lo_x, hi_x = -MAX_REACH * width, (1 + MAX_REACH) * width
    lo_y, hi_y = -MAX_REACH * height, (1 + MAX_REACH) * height
    for part in parts:
        if not isinstance(part, list):
            continue
        for i, value in enumerate(part):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            try:
                v = float(value)
            except OverflowError:
                return f"a polygon coordinate is not a finite number ({str(value)[:20]}...)"
            if not math.isfinite(v):
                return f"a polygon coordinate is not a finite number ({value})"
            lo, hi = (lo_x, hi_x) if i % 2 == 0 else (lo_y, hi_y)
            if not lo <= v <= hi:
                axis = "x" if i % 2 == 0 else "y"
                return (
                    f"a polygon reaches far outside its {width}x{height} image ({axis} = {value:g})"
                )
    return None


def polygons_to_rle(parts: Sequence[Sequence[float]], height: int, width: int) -> Rle:
    """Rasterise polygon parts (pixel coordinates, any may fall outside) as one RLE."""
    if not parts:
        return empty_rle(height, width)
    rles = cocomask.frPyObjects([list(p) for p in parts], height, width)
    return rles[0] if len(rles) == 1 else cocomask.merge(rles)


def _natural_numbers(values: list[Any]) -> bool:
    """Whether every value is an int (bools count, as ``isinstance`` says) and not negative;
    one numpy pass instead of a Python loop (crowd RLEs hold ~1,000 counts)."""
    if not values:
        return True
    try:
        array = np.array(values)
    except (ValueError, OverflowError):  # ragged or not numbers
        return False
    if array.ndim != 1:
        return False
    if array.dtype.kind == "b":
        return True
    if array.dtype.kind == "O":  # ints beyond 64 bits: the Python loop decides
        return all(isinstance(v, int) and v >= 0 for v in values)
    return array.dtype.kind in "iu" and int(array.min()) >= 0


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> Rle:
    """Decode any COCO segmentation (polygons, uncompressed or compressed RLE) for an image.

    Polygons must already be cleaned (``clean_polygons``). Raises MaskError when an RLE's size
    differs from the image's or its counts do not decode.
    """
    if isinstance(segmentation, list):
        return polygons_to_rle(segmentation, height, width)
    if not isinstance(segmentation, dict) or "counts" not in segmentation:
        raise MaskError("segmentation is neither a polygon list nor an RLE")
    size = segmentation.get("size")
    if not (
        isinstance(size, list) and len(size) == 2 and [int(v) for v in size] == [height, width]
    ):
        raise MaskError(f"RLE size {size} differs from the image's [{height}, {width}]")
    counts = segmentation["counts"]
    if isinstance(counts, list):
        if not _natural_numbers(counts) or sum(counts) != height * width:
            raise MaskError("uncompressed RLE counts do not add up to the image's pixel count")
        return cocomask.frPyObjects(segmentation, height, width)
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if not isinstance(counts, str):
        raise MaskError("RLE counts are neither a list nor a string")
    runs = rle_string_counts(counts)
    if runs is None or min(runs, default=0) < 0:
        raise MaskError("RLE counts string does not decode")
    if sum(runs) != height * width:
        raise MaskError("RLE counts do not add up to the image's pixel count")
    return {"size": [height, width], "counts": counts.encode("ascii")}


def rle_string_counts(counts: str) -> list[int] | None:
    """Run lengths of pycocotools' compressed RLE string, or None if it is malformed.

    The same decoding as pycocotools' ``rleFrString`` (5-bit groups with a continuation bit,
    offset by 48, each count from the fourth on stored as a difference to the one two before),
    done here so a string whose runs do not add up to the image is refused before any decode.
    """
    runs: list[int] = []
    pos, end = 0, len(counts)
    while pos < end:
        value, shift, more = 0, 0, True
        while more:
            if pos >= end:
                return None
            group = ord(counts[pos]) - 48
            if not 0 <= group < 64:
                return None
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def segmentations_to_rles(segmentations: Sequence[Any], height: int, width: int) -> list[Rle]:
    """``segmentation_to_rle`` of many segmentations of one image, polygons in one call."""
    parts: list[list[float]] = []
    owners: list[int] = []
    for k, seg in enumerate(segmentations):
        if isinstance(seg, list):
            parts.extend(seg)  # read, not kept: pycocotools copies each part into an array
            owners.extend([k] * len(seg))
    pieces: list[list[Rle]] = [[] for _ in segmentations]
    if parts:
        for k, rle in zip(owners, cocomask.frPyObjects(parts, height, width), strict=True):
            pieces[k].append(rle)
    rles = []
    for seg, own in zip(segmentations, pieces, strict=True):
        if not isinstance(seg, list):
            rles.append(segmentation_to_rle(seg, height, width))
        elif not own:
            rles.append(empty_rle(height, width))
        else:
            rles.append(own[0] if len(own) == 1 else cocomask.merge(own))
    return rles


def bboxes(rles: Sequence[Rle]) -> list[list[int]]:
    """``bbox`` of many RLEs in one call."""
    if not rles:
        return []
    return cocomask.toBbox(list(rles)).astype(int).tolist()


#: pycocotools' ``area`` of a list of RLEs sizes its result through a uint8 (numpy 2 raises
#: OverflowError past 255; older numpy wrapped around): at most this many per call.
AREA_BATCH = 255


def areas(rles: Sequence[Rle]) -> list[int]:
    """``area`` of many RLEs, in calls of at most ``AREA_BATCH``."""
    rles = list(rles)
    found: list[int] = []
    for start in range(0, len(rles), AREA_BATCH):
        found += cocomask.area(rles[start : start + AREA_BATCH]).tolist()
    return found


def empty_rle(height: int, width: int) -> Rle:
    return encode(np.zeros((height, width), dtype=np.uint8, order="F"))


def encode(mask: Mask) -> Rle:
    """Encode a binary HxW mask (any order; Fortran order avoids a copy)."""
    return cocomask.encode(np.asfortranarray(mask, dtype=np.uint8))


def decode(rle: Rle) -> Mask:
    """Decode to an HxW uint8 mask of 0/1 (Fortran-ordered)."""
    return cocomask.decode(rle)


def area(rle: Rle) -> int:
    """Pixel count of the mask."""
    return int(cocomask.area(rle))


def bbox(rle: Rle) -> list[int]:
    """Tight box of the mask as integer ``[x, y, w, h]`` (all zeros for an empty mask)."""
    return [int(v) for v in cocomask.toBbox(rle)]


def union(rles: Sequence[Rle]) -> Rle:
    return cocomask.merge(list(rles), intersect=False)


def intersect(a: Rle, b: Rle) -> Rle:
    return cocomask.merge([a, b], intersect=True)


def rle_to_json(rle: Rle) -> dict[str, Any]:
    """The JSON form of an RLE: ``{"size": [h, w], "counts": str}``."""
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def mask_to_polygons(mask: Mask) -> list[list[float]]:
    """COCO polygon parts that decode with pycocotools to exactly ``mask`` (binary HxW).

    Outlines run along pixel edges (vertices on pixel corners), one part per 8-connected
    component, holes joined by zero-width cuts (:mod:`cpgen.polygons`); ``[]`` when empty.
    """
    return mask_to_exact_polygons(mask)


def rle_to_polygons(rle: Rle) -> list[list[float]]:
    """``mask_to_polygons`` of an RLE's mask."""
    return rles_to_polygons([rle])[0]


def rles_to_polygons(rles: Sequence[Rle]) -> list[list[list[float]]]:
    """``rle_to_polygons`` of each RLE, traced in one pass from the runs (no mask is drawn)."""
    if not rles:
        return []
    return joined_runs_to_exact_polygons(*joined_column_runs(rles), bboxes(rles))


def joined_column_runs(rles: Sequence[Rle]) -> tuple[npt.NDArray[np.int64], ...]:
    """:func:`column_runs` of several RLEs decoded together, laid end to end: pixel columns,
    first rows, past rows, and which RLE each run belongs to."""
    values, owner, index = _joined_run_lengths([r["counts"] for r in rles])
    heights = np.array([int(r["size"][0]) for r in rles], dtype=np.int64)
    ends = _segment_cumsum(values, owner)
    fg = (index % 2 == 1) & (values > 0)  # odd runs are the set ones
    ends, lengths, owner = ends[fg], values[fg], owner[fg]
    height = heights[owner]
    first_column, last_column = (ends - lengths) // height, (ends - 1) // height
    spans = last_column - first_column + 1
    run = np.repeat(np.arange(spans.size), spans)
    columns = np.arange(run.size) - np.repeat(np.cumsum(spans) - spans, spans) + first_column[run]
    height = height[run]
    starts = np.where(columns == first_column[run], (ends - lengths)[run] % height, 0)
    stops = np.where(columns == last_column[run], (ends[run] - 1) % height + 1, height)
    return columns, starts, stops, owner[run]


def _segment_starts(owner: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Where each owner's segment of an ascending owner array starts (for owners 0 .. max)."""
    return np.searchsorted(owner, np.arange(int(owner[-1]) + 1 if owner.size else 0))


def _segment_cumsum(
    values: npt.NDArray[np.int64], owner: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """The running sum of ``values`` restarting at each owner's first element."""
    total = np.cumsum(values)
    before = total - values  # the sum before each element
    return total - before[_segment_starts(owner)][owner]


def _joined_run_lengths(counts: Sequence[bytes | str]) -> tuple[npt.NDArray[np.int64], ...]:
    """:func:`run_lengths` of several compressed strings decoded in one pass: the counts laid
    end to end, the string each came from and its place in that string (a count never spans
    two strings: each string ends with a count's last chunk)."""
    raw = [c.encode("ascii") if isinstance(c, str) else c for c in counts]
    values, last = _signed_counts(b"".join(raw))
    string_ends = np.cumsum([len(r) for r in raw])
    owner = np.searchsorted(string_ends, last, side="right")  # the string of each count
    index = np.arange(values.size) - _segment_starts(owner)[owner]
    for parity in (1, 0):  # from the fourth on, a count is stored as a difference
        chosen = np.flatnonzero((index % 2 == parity) & (index >= 2 - parity))
        values[chosen] = _segment_cumsum(values[chosen], owner[chosen])
    return values, owner, index


def column_runs(rle: Rle) -> tuple[npt.NDArray[np.int64], ...]:
    """The mask's foreground runs down its columns: pixel column, first row, past row of each
    (a run of the RLE that wraps past a column's end is split there)."""
    return joined_column_runs([rle])[:3]


def run_lengths(counts: bytes) -> npt.NDArray[np.int64]:
    """Run lengths of a well-formed compressed RLE string, as pycocotools writes them.

    ``rle_string_counts`` (which also checks the string) in a few numpy passes: each count is a
    group of 5-bit chunks (offset by 48; 0x20 continues the group, 0x10 in the last chunk is
    the sign), and from the fourth on it is stored as a difference to the count two before.
    """
    values, _ = _signed_counts(counts)
    np.cumsum(values[1::2], out=values[1::2])  # from the fourth on, differences to two before
    np.cumsum(values[2::2], out=values[2::2])
    return values


def _signed_counts(counts: bytes) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The numbers of compressed RLE text as stored (the later ones still differences), and
    where each one's last chunk is. Most are one chunk: the few longer groups are added up
    chunk by chunk."""
    chars = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    last = np.flatnonzero(chars < 0x20)  # each count's last chunk
    if last.size == chars.size:  # one chunk each: its low 5 bits, signed
        values = ((chars + 0x10) & 0x1F) - 0x10
    else:
        first = np.empty_like(last)
        first[:1] = 0
        first[1:] = last[:-1] + 1
        chunks = last - first + 1
        values = chars[first] & 0x1F
        longer, k = np.flatnonzero(chunks > 1), 1
        while longer.size:
            values[longer] |= (chars[first[longer] + k] & 0x1F) << (5 * k)
            k += 1
            longer = longer[chunks[longer] > k]
        values -= (chars[last] & 0x10) << (5 * chunks - 4)  # the sign: -2**(5 * chunks)
    return values, last


def decode_box(rle: Rle, box: Sequence[int], runs: npt.NDArray[np.int64] | None = None) -> Mask:
    """The mask inside ``box`` = (x, y, w, h) only, as an h x w array of 0/1: the cost is the
    box's columns, not the frame (``decode(rle)[y : y + h, x : x + w]``, without the frame).
    ``runs``: the RLE's :func:`run_lengths`, when the caller has them."""
    frame_height = int(rle["size"][0])
    x, y, w, h = (int(v) for v in box)
    if w == 0 or h == 0:
        return np.zeros((h, w), dtype=np.uint8)
    if runs is None:
        runs = run_lengths(rle["counts"])
    ends = np.cumsum(runs)
    low, high = x * frame_height, (x + w) * frame_height  # the box's columns, column-major
    lengths = np.clip(ends, low, high) - np.clip(ends - runs, low, high)
    values = (np.arange(runs.size) & 1).astype(np.uint8)  # runs alternate 0, 1, 0, ...
    columns = np.repeat(values, lengths).reshape(w, frame_height)
    return cv2.transpose(columns[:, y : y + h])  # ten times numpy's strided copy


def complement(rle: Rle, runs: npt.NDArray[np.int64] | None = None) -> Rle:
    """The mask's complement over its frame, from its runs alone (no frame-sized array);
    ``runs``: its :func:`run_lengths`, when the caller has them."""
    if runs is None:
        runs = run_lengths(rle["counts"])
    flipped = runs[1:] if runs[0] == 0 else np.concatenate(([0], runs))
    height, width = (int(v) for v in rle["size"])
    return cocomask.frPyObjects(
        {"size": [height, width], "counts": flipped.tolist()}, height, width
    )
