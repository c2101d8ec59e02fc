"""Checks of single records: their shape, and an annotation's segmentation, area and box."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from cpgen import masks
from cpgen.datasets import coco
from cpgen.validate.report import Problem

AREA_MIN_PX = 4.0
AREA_OUTLINE_FRACTION = 0.5
BBOX_EDGE_PX = 1.0
OUTSIDE_PX = 0.01


# --------------------------------------------------------------------------------------------
# Record shape
# --------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    """An integer, or an integral float (``640.0``), which cpgen accepts as one."""
    return coco.as_int(value) is not None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def name_record(table: str, record: Any, position: int) -> str:
    """How a record is named in examples: ``image 5`` by id, else ``images[3]`` by position."""
    if isinstance(record, dict) and _is_int(record.get("id")):
        return f"{table} {record['id']}"
    return f"{table}s[{position}]"


def check_category(category: Any, position: int) -> list[Problem]:
    where = name_record("category", category, position)
    if not isinstance(category, dict):
        return [Problem("json_shape", f"{where} is a {type(category).__name__}, not an object")]
    problems = []
    if not _is_int(category.get("id")):
        problems.append(Problem("json_shape", f"{where}: 'id' is not an integer"))
    if not isinstance(category.get("name"), str):
        problems.append(Problem("json_shape", f"{where}: 'name' is missing or not a string"))
    return problems


def image_size(record: dict[str, Any]) -> tuple[int, int] | None:
    """The recorded (width, height), or None if either is not a positive integer."""
    width, height = coco.as_int(record.get("width")), coco.as_int(record.get("height"))
    if width is not None and height is not None and width > 0 and height > 0:
        return width, height
    return None


def check_image_record(record: Any, position: int) -> list[Problem]:
    where = name_record("image", record, position)
    if not isinstance(record, dict):
        return [Problem("json_shape", f"{where} is a {type(record).__name__}, not an object")]
    problems = []
    if not _is_int(record.get("id")):
        problems.append(Problem("json_shape", f"{where}: 'id' is not an integer"))
    if not isinstance(record.get("file_name"), str) or not record["file_name"]:
        problems.append(Problem("json_shape", f"{where}: 'file_name' is missing or empty"))
    for key in ("width", "height"):
        value = record.get(key)
        if not (_is_int(value) and value > 0):
            problems.append(
                Problem("json_shape", f"{where}: '{key}' {_short(value)} is not a positive integer")
            )
    return problems


def check_annotation_record(ann: Any, position: int) -> list[Problem]:
    """Required COCO fields and their types (references and geometry are checked elsewhere)."""
    where = name_record("annotation", ann, position)
    if not isinstance(ann, dict):
        return [Problem("json_shape", f"{where} is a {type(ann).__name__}, not an object")]
    problems = []

    def bad(what: str) -> None:
        problems.append(Problem("json_shape", f"{where}: {what}"))

    for key in ("id", "image_id", "category_id"):
        if not _is_int(ann.get(key)):
            bad(f"'{key}' {_short(ann.get(key))} is not an integer")
    area = ann.get("area")
    if not (_is_number(area) and area >= 0):
        bad(f"'area' {_short(area)} is not a number >= 0")
    if parse_bbox(ann.get("bbox")) is None:
        bad(f"'bbox' {_short(ann.get('bbox'))} is not [x, y, w, h] with w, h >= 0")
    if ann.get("iscrowd") not in (0, 1):
        bad(f"'iscrowd' {_short(ann.get('iscrowd'))} is not 0 or 1")
    return problems


def parse_bbox(value: Any) -> tuple[float, float, float, float] | None:
    """``[x, y, w, h]`` as floats, or None unless it is 4 finite numbers with w, h >= 0."""
    if not (isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)):
        return None
    x, y, w, h = (float(v) for v in value)
    if w < 0 or h < 0:
        return None
    return x, y, w, h


def duplicate_ids(table: str, records: Sequence[Any]) -> list[Problem]:
    """One problem per id value used by more than one record of a table."""
    counts: dict[int, int] = {}
    for record in records:
        if isinstance(record, dict) and _is_int(record.get("id")):
            counts[record["id"]] = counts.get(record["id"], 0) + 1
    return [
        Problem("duplicate_id", f"{table} id {rid} is used by {n} records")
        for rid, n in counts.items()
        if n > 1
    ]


def duplicate_file_names(records: Sequence[Any]) -> list[Problem]:
    """One problem per file_name (after normalising separators) used by several images."""
    users: dict[str, list[Any]] = {}
    for position, record in enumerate(records):
        if isinstance(record, dict) and isinstance(record.get("file_name"), str):
            rel = coco.safe_relative(record["file_name"])
            if rel is not None:
                users.setdefault(str(rel), []).append(name_record("image", record, position))
    return [
        Problem("duplicate_file_name", f"{_short(name)} is used by {', '.join(names[:3])}")
        for name, names in users.items()
        if len(names) > 1
    ]


# --------------------------------------------------------------------------------------------
# Segmentations, area and box
# --------------------------------------------------------------------------------------------


def check_polygon_parts(parts: list[Any], where: str) -> tuple[list[list[float]], list[Problem]]:
    """The usable polygon parts and a problem for each part that is not."""
    kept: list[list[float]] = []
    problems: list[Problem] = []
    for i, part in enumerate(parts):
        if not isinstance(part, list) or not all(_is_number(v) for v in part):
            problems.append(
                Problem(
                    "segmentation_undecodable",
                    f"{where}: polygon part {i} is not a list of finite numbers",
                )
            )
        elif len(part) < 6 or len(part) % 2:
            problems.append(
                Problem("polygon_part_short", f"{where}: polygon part {i} has {len(part)} numbers")
            )
        else:
            kept.append([float(v) for v in part])
    return kept, problems


def decode_segmentation(
    segmentation: Any, height: int, width: int, where: str
) -> tuple[masks.Rle | None, list[list[float]], list[Problem]]:
    """(RLE or None, the usable polygon parts, problems) for one annotation's segmentation."""
    if isinstance(segmentation, list):
        if not all(isinstance(part, list) for part in segmentation):
            message = f"{where}: a polygon segmentation is a list of parts, each a list of numbers"
            return None, [], [Problem("segmentation_undecodable", message)]
        unsafe = masks.polygon_problem(segmentation, width, height)
        if unsafe:
            return None, [], [Problem("polygon_unsafe", f"{where}: {unsafe}")]
        parts, problems = check_polygon_parts(segmentation, where)
        if not parts:
            problems.append(Problem("empty_mask", f"{where}: no usable polygon part"))
            return None, [], problems
        return masks.polygons_to_rle(parts, height, width), parts, problems
    try:
        rle = masks.segmentation_to_rle(segmentation, height, width)
    except (masks.MaskError, TypeError, ValueError) as exc:
        return None, [], [Problem("segmentation_undecodable", f"{where}: {exc}")]
    return rle, [], []


def outline_pixels(mask: masks.Mask) -> int:
    """Pixels of a 0/1 mask with a 4-neighbour outside the mask or outside the image."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return 0
    return _box_outline(mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


def rle_outline_pixels(rle: masks.Rle, box: Sequence[int] | None = None) -> int:
    """``outline_pixels`` of an RLE's mask, decoding only its box (``masks.bbox``, when the
    caller has not got it): a tenth of the time of the whole frame on COCO's images, which a
    COCO-sized file asks 500,000 times."""
    return _box_outline(masks.decode_box(rle, masks.bbox(rle) if box is None else box))


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _box_outline(box: masks.Mask) -> int:
    """Outline pixels of a 0/1 mask given as the part inside its tight box (the edge of the
    image is an edge too: a one-pixel border of 0 all round)."""
    if box.size == 0:
        return 0
    padded = cv2.copyMakeBorder(
        np.ascontiguousarray(box, dtype=np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0
    )
    inner = cv2.erode(padded, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.countNonZero(padded) - cv2.countNonZero(inner)


def check_area(
    recorded: float, rle: masks.Rle, pixels: int, box: Sequence[int], where: str
) -> Problem | None:
    """``recorded`` against the mask's ``pixels`` (``masks.area``), within a share of its
    outline; ``box`` is its ``masks.bbox``."""
    difference = abs(recorded - pixels)
    if difference <= AREA_MIN_PX:
        return None
    tolerance = max(AREA_MIN_PX, AREA_OUTLINE_FRACTION * rle_outline_pixels(rle, box))
    if difference <= tolerance:
        return None
    return Problem(
        "area_mismatch",
        f"{where}: area {recorded:g}, mask {pixels} pixels (tolerance {tolerance:g})",
    )


def _edges(box: Sequence[float]) -> tuple[float, float, float, float]:
    x, y, w, h = box
    return x, y, x + w, y + h


def polygon_extent(parts: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of all vertices."""
    xs = [v for part in parts for v in part[0::2]]
    ys = [v for part in parts for v in part[1::2]]
    return min(xs), min(ys), max(xs), max(ys)


def check_bbox(
    recorded: tuple[float, float, float, float],
    mask_box: Sequence[int],
    polygon_parts: Sequence[Sequence[float]],
    where: str,
) -> Problem | None:
    """``recorded`` against the mask's box (``masks.bbox``) or, for a polygon, its vertices'."""
    edges = _edges(recorded)

    def close(reference: Sequence[float]) -> bool:
        return all(abs(a - b) <= BBOX_EDGE_PX + 1e-6 for a, b in zip(edges, reference, strict=True))

    if close(_edges(mask_box)) or (polygon_parts and close(polygon_extent(polygon_parts))):
        return None
    return Problem(
        "bbox_mismatch",
        f"{where}: bbox {_short([round(v, 2) for v in recorded])}, mask's box {mask_box}",
    )


def check_bbox_inside(
    recorded: tuple[float, float, float, float], width: int, height: int, where: str
) -> Problem | None:
    x0, y0, x1, y1 = _edges(recorded)
    if x0 < -OUTSIDE_PX or y0 < -OUTSIDE_PX or x1 > width + OUTSIDE_PX or y1 > height + OUTSIDE_PX:
        return Problem(
            "bbox_outside",
            f"{where}: bbox {_short([round(v, 2) for v in recorded])} in a {width}x{height} image",
        )
    return None


def check_annotation_geometry(ann: dict[str, Any], width: int, height: int) -> list[Problem]:
    """Segmentation, area and box of an annotation whose image is known, for that image."""
    crowd = ", crowd" if ann.get("iscrowd") == 1 else ""
    where = f"annotation {ann['id']} (image {ann['image_id']}{crowd})"
    problems: list[Problem] = []
    bbox = parse_bbox(ann.get("bbox"))
    if bbox is not None:
        outside = check_bbox_inside(bbox, width, height, where)
        if outside:
            problems.append(outside)
    if masks.is_box_only(ann):  # a box-only (detection) annotation: its bbox is all there is
        return problems
    rle, parts, seg_problems = decode_segmentation(ann["segmentation"], height, width, where)
    problems += seg_problems
    if rle is None:
        return problems
    pixels = masks.area(rle)
    if pixels == 0:
        problems.append(Problem("empty_mask", f"{where}: the segmentation covers no pixel"))
        return problems
    box = masks.bbox(rle)  # measured once for both checks below
    if _is_number(ann.get("area")):
        mismatch = check_area(float(ann["area"]), rle, pixels, box, where)
        if mismatch:
            problems.append(mismatch)
    if bbox is not None:
        mismatch = check_bbox(bbox, box, parts, where)
        if mismatch:
            problems.append(mismatch)
    return problems
