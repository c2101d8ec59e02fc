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

import os
from typing import Any

from cpgen.datasets import coco, paused_gc
from cpgen.datasets.consumers import consumer_warnings
from cpgen.errors import DataError
from cpgen.runner import thread_pool
from cpgen.validate.files import _quiet_opencv, check_image_file, exif_orientation, jpeg_truncated
from cpgen.validate.records import (
    AREA_MIN_PX,
    AREA_OUTLINE_FRACTION,
    BBOX_EDGE_PX,
    OUTSIDE_PX,
    _is_int,
    check_annotation_geometry,
    check_annotation_record,
    check_category,
    check_image_record,
    duplicate_file_names,
    duplicate_ids,
    image_size,
    name_record,
    outline_pixels,
)
from cpgen.validate.report import KINDS, MAX_EXAMPLES, Finding, Problem, Report

#: Above this many images, say that the (long) image check is running.
LARGE_IMAGE_COUNT = 2000

__all__ = [
    "AREA_MIN_PX",
    "AREA_OUTLINE_FRACTION",
    "BBOX_EDGE_PX",
    "KINDS",
    "MAX_EXAMPLES",
    "OUTSIDE_PX",
    "Finding",
    "Problem",
    "Report",
    "exif_orientation",
    "jpeg_truncated",
    "outline_pixels",
    "validate",
]


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
    ``report_line(message)`` hears what a long step is doing (stderr in the CLI). Runs with the
    garbage collector paused (``datasets.paused_gc``): the records it checks hold no cycles.
    """
    with paused_gc():
        return _validate(files, workers, report_line)


def _validate(files: coco.CocoFiles, workers: int | None, report_line: Any) -> Report:
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
    with _quiet_opencv(), thread_pool(threads) as pool:  # Ctrl-C, SIGTERM: no waiting
        for problems in pool.map(lambda job: check_image_file(files.images, *job), to_read):
            report.add(problems)
    return report
