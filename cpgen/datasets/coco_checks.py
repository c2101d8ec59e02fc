"""Check each annotation's segmentation: the part of loading that can run in worker processes.

``check_annotations`` takes a batch of annotations (a picklable ``CheckJob``) and says which are
usable and what is wrong with the others, in exactly the words and order of the one-by-one
check (``clean_annotation``). Polygons kept as JSON text (``lazy_json``) are parsed here, the
whole batch in one call. The common polygon (every part a list of 6 or more numbers, an even
count, all in reach) needs no cleaning and no message; ``polygon_batch`` finds those with numpy
and proves most of them non-empty without rasterising; the rest of them are rasterised in one
pycocotools call per image size. Anything else takes the one-by-one path, so its verdict and
message are the same. ``usable_record`` turns an index record into the cleaned record the
copy-paste code works on (in the worker that uses it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cpgen import masks
from cpgen.datasets import lazy_json, paused_gc, polygon_batch

Problem = tuple[str, str]


@dataclass(frozen=True)
class CheckJob:
    """Annotations to check: (position in the file's list, record, image width, height)."""

    items: list[tuple[int, dict[str, Any], int, int]]


@dataclass
class CheckResult:
    """Positions of the usable annotations, problems as (position, problem, where), and
    whether a polygon kept as text was not JSON (then the file is not, either)."""

    done: int  # annotations checked
    usable: list[int] = field(default_factory=list)
    problems: list[tuple[int, str, str]] = field(default_factory=list)
    not_json: bool = False


def check_annotations(job: CheckJob) -> CheckResult:
    """The verdicts of a batch of annotations (see the module docstring), with the garbage
    collector paused (``paused_gc``: 7% of the time went to collections finding nothing)."""
    with paused_gc():
        return _check_batch(job)


def _check_batch(job: CheckJob) -> CheckResult:
    result = CheckResult(len(job.items))
    texts = [ann.get("segmentation") for _, ann, _, _ in job.items]
    texts = [t for t in texts if isinstance(t, bytes)]
    try:  # one parse for the batch's polygons kept as text
        parsed = iter(lazy_json.parse_polygons(texts))
    except ValueError:
        result.not_json = True
        return result
    segs: dict[int, Any] = {}  # item -> parsed polygon
    for k, (_, ann, _, _) in enumerate(job.items):
        if isinstance(ann.get("segmentation"), bytes):
            segs[k] = next(parsed)
    plain = [k for k, seg in segs.items() if _plain_parts(seg)]
    ok, nonempty = _in_reach(plain, segs, job)
    rasterise: list[tuple[int, list[list[float]]]] = []  # in reach, maybe empty
    found: list[tuple[int, str, str]] = []
    for k, (position, ann, width, height) in enumerate(job.items):
        if k in ok:
            if k in nonempty:
                result.usable.append(position)
            else:
                rasterise.append((k, segs[k]))
            continue
        if k in segs:
            ann = {**ann, "segmentation": segs[k]}
        problems: list[Problem] = []
        if clean_annotation(ann, {"width": width, "height": height}, problems) is not None:
            result.usable.append(position)
        found += [(position, problem, where) for problem, where in problems]
    empty = set(_empty(rasterise, job))
    for k, _ in rasterise:
        position, ann = job.items[k][:2]
        if k in empty:
            where = f"annotation {ann['id']} (image {ann['image_id']})"
            found.append((position, "annotation with an empty mask", where))
        else:
            result.usable.append(position)
    result.usable.sort()
    found.sort(key=lambda p: p[0])  # stable: one annotation's problems keep their order
    result.problems = found
    return result


def _plain_parts(seg: Any) -> bool:
    """Whether a parsed polygon's parts are all lists of at least 6 values, an even count."""
    return (
        type(seg) is list
        and bool(seg)
        and all(type(part) is list and len(part) >= 6 and not len(part) % 2 for part in seg)
    )


def _in_reach(plain: list[int], segs: dict[int, Any], job: CheckJob) -> tuple[set[int], set[int]]:
    """Of the items ``plain``: those whose vertices are all in reach (nothing to clean or
    refuse), and of them those whose mask is surely non-empty (``polygon_batch``)."""
    if not plain:
        return set(), set()
    sizes = [(job.items[k][2], job.items[k][3]) for k in plain]
    try:
        ok, nonempty = polygon_batch.plain_polygons([segs[k] for k in plain], sizes)
    except (ValueError, TypeError, OverflowError):  # a value that is not a number
        return set(), set()
    in_reach = {k for k, good in zip(plain, ok, strict=True) if good}
    sure = {k for k, good, full in zip(plain, ok, nonempty, strict=True) if good and full}
    return in_reach, sure


def _empty(fast: list[tuple[int, list[list[float]]]], job: CheckJob) -> list[int]:
    """The items of ``fast`` whose mask is empty, rasterised in one call per image size.

    An annotation's mask is the union of its parts' masks: empty when every part's is.
    """
    by_size: dict[tuple[int, int], list[tuple[int, list[list[float]]]]] = {}
    for k, parts in fast:
        _, _, width, height = job.items[k]
        by_size.setdefault((height, width), []).append((k, parts))
    empty: list[int] = []
    for (height, width), group in by_size.items():
        # pycocotools turns each part into float64 as the one-by-one path's float() does
        flat = [part for _, parts in group for part in parts]
        rles = masks.cocomask.frPyObjects(flat, height, width)
        nonzero = [area > 0 for area in masks.areas(rles)]
        start = 0
        for k, parts in group:
            if not any(nonzero[start : start + len(parts)]):
                empty.append(k)
            start += len(parts)
    return sorted(empty)


def usable_record(ann: dict[str, Any]) -> dict[str, Any]:
    """An index record as the copy-paste code takes it: polygon parts parsed and cleaned
    (floats, bad parts dropped), as the check found them usable. Other records as they are."""
    seg = ann.get("segmentation")
    if isinstance(seg, bytes):
        seg = lazy_json.parse_polygon(seg)
    elif not isinstance(seg, list) or masks.is_box_only(ann):
        return ann
    record = dict(ann)
    record["segmentation"] = masks.clean_polygons(seg)[0]
    return record


def clean_annotation(
    ann: dict[str, Any], image: dict[str, Any], problems: list[Problem]
) -> dict[str, Any] | None:
    """A copy of ``ann`` with a decodable segmentation, or None (reported) if it has none."""
    where = f"annotation {ann['id']} (image {ann['image_id']})"
    seg = ann.get("segmentation")
    if masks.is_box_only(ann):  # a detection (box-only) annotation: its box is its mask
        return _clean_box(ann, image, where, problems)
    if isinstance(seg, list):
        hostile = masks.polygon_problem(seg, image["width"], image["height"])
        if hostile:
            problems.append(
                ("annotation with a polygon that cannot be rasterised", f"{where}: {hostile}")
            )
            return None
        parts, dropped = masks.clean_polygons(seg)
        if dropped:
            problems.append(("polygon parts dropped (fewer than 6 numbers or odd)", where))
        if not parts:
            problems.append(("annotation with an empty segmentation", where))
            return None
        seg = parts
    try:
        rle = masks.segmentation_to_rle(seg, image["height"], image["width"])
    except masks.MaskError as exc:
        problems.append(("segmentation that does not decode", f"{where}: {exc}"))
        return None
    if masks.area(rle) == 0:
        problems.append(("annotation with an empty mask", where))
        return None
    cleaned = dict(ann)
    cleaned["segmentation"] = seg
    cleaned["iscrowd"] = 1 if ann.get("iscrowd") else 0
    return cleaned


def _clean_box(
    ann: dict[str, Any], image: dict[str, Any], where: str, problems: list[Problem]
) -> dict[str, Any] | None:
    """A copy of a box-only annotation whose ``bbox`` covers a pixel, or None (reported)."""
    box = ann.get("bbox")
    numbers = isinstance(box, list) and len(box) == 4
    numbers = numbers and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box
    )
    if not numbers or box[2] <= 0 or box[3] <= 0:
        problems.append(("box-only annotation without a valid bbox", where))
        return None
    x0, y0, x1, _, _, y1, _, _ = masks.box_polygon(box, image["height"], image["width"])
    if x1 <= x0 or y1 <= y0:
        problems.append(("annotation with an empty mask", where))
        return None
    cleaned = dict(ann)
    cleaned["iscrowd"] = 1 if ann.get("iscrowd") else 0
    return cleaned
