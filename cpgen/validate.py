"""`cpgen validate`: check a COCO dataset (annotations and images) and report every problem.

Unlike ``datasets.coco.load``, which stops at the first fatal problem, validation goes on and
reports everything it finds, grouped by kind (``KINDS``) with a count and the first few examples.
Only an annotation file that is not JSON, not an object, or lacks one of the ``images``,
``annotations`` and ``categories`` lists ends it early.

Tolerances (pixels; the mask is the segmentation rasterised by pycocotools for its image):

* ``area``: flagged when ``|area - mask pixels| > max(AREA_MIN_PX, AREA_OUTLINE_FRACTION *
  outline pixels)``, outline pixels being the mask's pixels with a 4-neighbour outside the mask
  or the image. Real COCO stores polygon areas (float, from the polygon, not a pixel count), and
  rasterising moves each outline pixel by less than half a pixel's area, so this is what
  rasterisation alone can explain; a box area written as the mask's area is far outside it.
  Crowd annotations are checked the same way.
* ``bbox`` (``[x, y, w, h]``): flagged when an edge lies more than ``BBOX_EDGE_PX`` from the
  mask's tight box and, for polygons, also more than ``BBOX_EDGE_PX`` from the polygon's vertex
  extent (which is how COCO computes it: thin polygon slivers may rasterise to no pixel).
* boxes outside the image: ``x < 0``, ``y < 0``, ``x + w > width`` or ``y + h > height`` by more
  than ``OUTSIDE_PX``.

Image files are read fully (truncated files are caught), with the header checked first: a file
whose header claims more than ``images.MAX_PIXELS`` pixels is never decoded, and a ``file_name``
that is absolute or escapes the image folder (``coco.safe_relative``) is never read. Sizes are
the stored pixels' (EXIF orientation is ignored, as everywhere in cpgen); a size that is the
recorded one transposed, in a JPEG whose EXIF orientation is 5-8, is said to be so.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cpgen import images, masks
from cpgen.datasets import coco
from cpgen.datasets.consumers import KINDS as CONSUMER_KINDS
from cpgen.datasets.consumers import ConsumerWarning, consumer_warnings
from cpgen.errors import DataError

AREA_MIN_PX = 4.0
AREA_OUTLINE_FRACTION = 0.5
BBOX_EDGE_PX = 1.0
OUTSIDE_PX = 0.01
MAX_EXAMPLES = 5
#: Above this many images, say that the (long) image check is running.
LARGE_IMAGE_COUNT = 2000

#: Problem kinds, in report order: key (as in ``--json``) -> what it means.
KINDS: dict[str, str] = {
    "json": "the annotation file cannot be read as JSON",
    "json_shape": "records or fields missing or of the wrong type",
    "duplicate_id": "ids used by more than one record",
    "duplicate_file_name": "image records sharing a file_name",
    "unknown_image": "annotations pointing at a missing image",
    "unknown_category": "annotations pointing at a missing category",
    "segmentation_undecodable": "segmentations that do not decode",
    "polygon_part_short": "polygon parts with fewer than 6 numbers or an odd count",
    "empty_mask": "annotations whose mask has no pixel",
    "area_mismatch": "area disagrees with the mask's pixel count",
    "bbox_mismatch": "bbox disagrees with the mask's tight box",
    "bbox_outside": "boxes reaching outside the image",
    "file_name_unsafe": "file names that are absolute or escape the image folder (not read)",
    "image_missing": "image files missing",
    "image_undecodable": "image files that cannot be read or decoded",
    "image_too_large": "image files whose header is over the pixel limit (not decoded)",
    "image_size_mismatch": "image files of another size than recorded",
    "polygon_unsafe": "polygons with a coordinate that is not finite or far outside the image "
    "(not rasterised)",
}

JPEG_EXIF_TRANSPOSED = (5, 6, 7, 8)


@dataclass(frozen=True)
class Problem:
    """One thing wrong: its kind (a key of ``KINDS``) and a line saying where and what."""

    kind: str
    example: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}")


@dataclass
class Finding:
    """All problems of one kind: how many, and the first ``MAX_EXAMPLES`` of them."""

    count: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class Report:
    """What validation found, with the sizes of the tables it read."""

    images: int = 0
    annotations: int = 0
    categories: int = 0
    findings: dict[str, Finding] = field(default_factory=dict)
    #: what trips common consumers (``datasets.consumers``): reported, never invalid
    warnings: list[ConsumerWarning] = field(default_factory=list)

    def add(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            finding = self.findings.setdefault(problem.kind, Finding())
            finding.count += 1
            if len(finding.examples) < MAX_EXAMPLES:
                finding.examples.append(problem.example)

    @property
    def valid(self) -> bool:
        return not self.findings

    @property
    def num_problems(self) -> int:
        return sum(f.count for f in self.findings.values())

    def ordered(self) -> list[tuple[str, Finding]]:
        return [(kind, self.findings[kind]) for kind in KINDS if kind in self.findings]

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
            "problems": {
                kind: {"count": f.count, "examples": list(f.examples)} for kind, f in self.ordered()
            },
            "warnings": {
                w.kind: {"count": w.count, "example": w.example, "why": CONSUMER_KINDS[w.kind]}
                for w in self.warnings
            },
        }

    def lines(self) -> list[str]:
        """The human report: a heading per kind with its count, examples indented, a total;
        then the warnings, one line each."""
        warnings = [f"warning: {w.line()}" for w in self.warnings]
        if self.valid:
            return [
                f"valid: {self.images} images, {self.annotations} annotations, "
                f"{self.categories} categories",
                *warnings,
            ]
        out: list[str] = []
        for kind, finding in self.ordered():
            out.append(f"{kind} ({finding.count}): {KINDS[kind]}")
            out.extend(f"  {example}" for example in finding.examples)
            if finding.count > len(finding.examples):
                out.append(f"  ... and {finding.count - len(finding.examples)} more")
        n, m = self.num_problems, len(self.findings)
        out.append(f"{n} problem{'s' if n != 1 else ''} in {m} kind{'s' if m != 1 else ''}")
        return out + warnings


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
    crop = np.pad(mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], 1).astype(np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    inner = cv2.erode(crop, cross, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return int(crop.sum()) - int(inner.sum())


def check_area(recorded: float, rle: masks.Rle, where: str) -> Problem | None:
    pixels = masks.area(rle)
    difference = abs(recorded - pixels)
    if difference <= AREA_MIN_PX:
        return None
    tolerance = max(AREA_MIN_PX, AREA_OUTLINE_FRACTION * outline_pixels(masks.decode(rle)))
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
    rle: masks.Rle,
    polygon_parts: Sequence[Sequence[float]],
    where: str,
) -> Problem | None:
    edges = _edges(recorded)
    mask_box = masks.bbox(rle)

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
    if masks.area(rle) == 0:
        problems.append(Problem("empty_mask", f"{where}: the segmentation covers no pixel"))
        return problems
    if _is_number(ann.get("area")):
        mismatch = check_area(float(ann["area"]), rle, where)
        if mismatch:
            problems.append(mismatch)
    if bbox is not None:
        mismatch = check_bbox(bbox, rle, parts, where)
        if mismatch:
            problems.append(mismatch)
    return problems


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


# --------------------------------------------------------------------------------------------
# The whole dataset
# --------------------------------------------------------------------------------------------


def check_top_level(data: Any) -> list[Problem]:
    """Problems that end validation: not an object, or a missing or non-list table."""
    if not isinstance(data, dict):
        return [Problem("json_shape", f"the top level is a {type(data).__name__}, not an object")]
    problems = []
    for key in ("images", "annotations", "categories"):
        if key not in data:
            problems.append(Problem("json_shape", f"no '{key}' list: not a COCO instances file"))
        elif not isinstance(data[key], list):
            problems.append(
                Problem("json_shape", f"'{key}' is a {type(data[key]).__name__}, not a list")
            )
    return problems


def validate(files: coco.CocoFiles, workers: int | None = None, report_line: Any = None) -> Report:
    """Check the annotation file and every image it names; never stops at the first problem.

    ``workers`` threads read and decode the images (default: up to 8, one per core).
    ``report_line(message)`` hears what a long step is doing (stderr in the CLI).
    """
    report = Report()
    try:
        data = coco.read_json(files.annotations, report_line)
    except DataError as exc:
        report.add([Problem("json", exc.message)])
        return report
    fatal = check_top_level(data)
    if isinstance(data, dict):
        for key in ("images", "annotations", "categories"):
            if isinstance(data.get(key), list):
                setattr(report, key, len(data[key]))
    if fatal:
        report.add(fatal)
        return report

    categories: list[Any] = data["categories"]
    image_records: list[Any] = data["images"]
    annotations: list[Any] = data["annotations"]

    for position, category in enumerate(categories):
        report.add(check_category(category, position))
    for position, record in enumerate(image_records):
        report.add(check_image_record(record, position))
    for position, ann in enumerate(annotations):
        report.add(check_annotation_record(ann, position))
    for table, records in (
        ("category", categories),
        ("image", image_records),
        ("annotation", annotations),
    ):
        report.add(duplicate_ids(table, records))
    report.add(duplicate_file_names(image_records))
    report.warnings = consumer_warnings(categories, annotations)

    category_ids = {c["id"] for c in categories if isinstance(c, dict) and _is_int(c.get("id"))}
    image_by_id: dict[int, dict[str, Any]] = {}
    for record in image_records:
        if isinstance(record, dict) and _is_int(record.get("id")):
            image_by_id.setdefault(record["id"], record)

    for position, ann in enumerate(annotations):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            continue
        where = name_record("annotation", ann, position)
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        if _is_int(category_id) and category_id not in category_ids:
            report.add([Problem("unknown_category", f"{where}: category_id {category_id}")])
        if not _is_int(image_id):
            continue
        image = image_by_id.get(image_id)
        if image is None:
            report.add([Problem("unknown_image", f"{where}: image_id {image_id}")])
            continue
        size = image_size(image)
        if size is not None:
            report.add(check_annotation_geometry(ann, *size))

    to_read = [
        (record, position)
        for position, record in enumerate(image_records)
        if isinstance(record, dict)
        and isinstance(record.get("file_name"), str)
        and record["file_name"]
    ]
    threads = workers or min(8, os.cpu_count() or 1)
    if report_line is not None and len(to_read) > LARGE_IMAGE_COUNT:
        report_line(f"checking {len(to_read)} image files...")
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        with _quiet_opencv():
            for problems in pool.map(lambda job: check_image_file(files.images, *job), to_read):
                report.add(problems)
    finally:  # on Ctrl-C or SIGTERM, drop the images not yet started instead of waiting
        pool.shutdown(wait=True, cancel_futures=True)
    return report
