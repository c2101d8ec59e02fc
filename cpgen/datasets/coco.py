"""COCO datasets: find the files in common layouts, load and validate into a small index.

We never build ``pycocotools.coco.COCO`` (it prints to stdout and duplicates memory): the index
keeps the image records and the annotations grouped by image, plain dicts that pickle cheaply to
workers. Validation happens here, once: fatal problems raise DataError; a problem with a single
annotation drops that annotation and is reported in ``CocoIndex.problems``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cpgen.datasets import lazy_json, paused_gc
from cpgen.datasets.coco_checks import CheckJob, CheckResult, check_annotations
from cpgen.errors import DataError, UsageError


@dataclass(frozen=True)
class CocoFiles:
    """Where a dataset's annotation file and image folder are."""

    annotations: Path
    images: Path


def find_layout(src: Path, split: str | None = None) -> CocoFiles:
    """Find annotations and images under SRC in the layouts cpgen knows.

    Looks for, in order: ``annotations.json`` + ``images/``; COCO's
    ``annotations/instances_<split>.json`` + ``<split>/`` (or ``images/<split>/``); Roboflow's
    ``_annotations.coco.json`` beside the images (also in ``<split>/``); CVAT's
    ``annotations/instances_default.json`` + ``images/``.
    """
    if not src.is_dir():
        raise UsageError(f"--src {src} is not a folder")
    looked: list[str] = []

    def found(ann: Path, imgs: Path) -> CocoFiles | None:
        looked.append(f"{ann.relative_to(src)} + {imgs.relative_to(src) if imgs != src else '.'}/")
        if ann.is_file() and imgs.is_dir():
            return CocoFiles(ann, imgs)
        return None

    if split is None:
        hit = found(src / "annotations.json", src / "images")
        if hit:
            return hit
        coco_splits = sorted(
            p.name[len("instances_") : -len(".json")]
            for p in (src / "annotations").glob("instances_*.json")
            if p.name != "instances_default.json"
        )
        if len(coco_splits) > 1:
            raise UsageError(
                f"{src} holds several COCO splits ({', '.join(coco_splits)})",
                hint="choose one with --split",
            )
        if coco_splits:
            split = coco_splits[0]
        else:
            hit = found(src / "_annotations.coco.json", src) or found(
                src / "annotations" / "instances_default.json", src / "images"
            )
            if hit:
                return hit
    if split is not None:
        for ann, imgs in (
            (src / "annotations" / f"instances_{split}.json", src / split),
            (src / "annotations" / f"instances_{split}.json", src / "images" / split),
            (src / "annotations" / f"instances_{split}.json", src / "images"),
            (src / split / "_annotations.coco.json", src / split),
        ):
            hit = found(ann, imgs)
            if hit:
                return hit
    raise UsageError(
        f"no COCO dataset found in {src}; looked for: {'; '.join(dict.fromkeys(looked))}",
        hint="or name the files with --ann FILE --images DIR",
    )


@dataclass
class CocoIndex:
    """A loaded, validated COCO dataset.

    ``images`` are the image records as given (unknown keys kept); ``anns_by_image`` maps an
    image's position in ``images`` to its usable annotations, each a copy of the record with
    polygon parts cleaned. ``top`` holds the file's other top-level keys in order.
    """

    files: CocoFiles
    images: list[dict[str, Any]]
    anns_by_image: list[list[dict[str, Any]]]
    categories: list[dict[str, Any]]
    top: dict[str, Any]
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_annotations(self) -> int:
        return sum(len(a) for a in self.anns_by_image)

    def max_image_id(self) -> int:
        return max((int(r["id"]) for r in self.images), default=-1)

    def max_annotation_id(self) -> int:
        return max((int(a["id"]) for anns in self.anns_by_image for a in anns), default=-1)


#: Annotation files from this size on are announced before they are read (bytes).
LARGE_FILE = 32 * 1024 * 1024


def read_json(
    path: Path, report: Callable[[str], None] | None = None, keep_polygons: bool = False
) -> Any:
    """Parse a JSON file; DataError naming the line and column when it is not JSON.

    A large file is announced to ``report`` (with its size) before the parse starts. With
    ``keep_polygons``, annotations' polygon segmentations stay JSON text (``lazy_json``).
    """
    with paused_gc():
        return _read_json(path, report, keep_polygons)


def _read_json(path: Path, report: Callable[[str], None] | None, keep_polygons: bool) -> Any:
    try:
        if report is not None and path.stat().st_size >= LARGE_FILE:
            report(f"reading {path} ({path.stat().st_size / 2**20:,.0f} MiB)...")
        if keep_polygons:
            try:
                return lazy_json.load_keeping_polygons(path)
            except ValueError:  # not JSON: the plain parse below says where
                pass
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"annotation file {path} not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            hint="the file may be truncated; re-export or re-download it",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def as_int(value: Any) -> int | None:
    """``value`` as an int if it is one, or an integral float (``640.0``, as some converters
    write sizes and ids); else None. Booleans are not integers here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _is_id(value: Any) -> bool:
    return as_int(value) is not None


def _integral(record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``record`` with integral floats under ``keys`` turned into ints (a copy if any changed)."""
    changed = {
        k: as_int(record[k])
        for k in keys
        if isinstance(record.get(k), float) and as_int(record[k]) is not None
    }
    return {**record, **changed} if changed else record


def _has_float(ann: dict[str, Any]) -> bool:
    """Whether an annotation's id, image_id or category_id is a float."""
    return (
        type(ann.get("id")) is float
        or type(ann.get("image_id")) is float
        or type(ann.get("category_id")) is float
    )


def _duplicates(values: Iterable[Any]) -> list[Any]:
    seen: set[Any] = set()
    dups: list[Any] = []
    for v in values:
        if v in seen and v not in dups:
            dups.append(v)
        seen.add(v)
    return dups


#: Runs ``check_annotations`` on each job, results in job order (e.g. in worker processes);
#: the int is the number of annotations, for a progress bar.
MapJobs = Callable[[Callable[[CheckJob], CheckResult], Sequence[CheckJob], int], list[CheckResult]]

#: Annotations per check job; in workers (``map_jobs``) at most ``PARALLEL_CHECK_BATCH``, so
#: that the workers finish together (20,375 annotations in five jobs of 4,096 kept one of two
#: workers busy 0.04 s longer than the other).
CHECK_BATCH = 4096
PARALLEL_CHECK_BATCH = 1024

#: From this many annotations on, ``map_jobs`` (worker processes) checks them.
PARALLEL_CHECK = 20_000


def load(
    files: CocoFiles,
    report: Callable[[str], None] | None = None,
    progress: bool = False,
    map_jobs: MapJobs | None = None,
) -> CocoIndex:
    """Read and validate a COCO instance-segmentation file. Raises DataError when unusable.

    ``report(message)`` hears what a long step does (a large file is announced before it is
    read); ``progress`` shows a bar over the annotations (stderr) for a large file. Polygons
    stay JSON text in the index (``coco_checks.usable_record`` gives the cleaned record);
    their checks run in batches, through ``map_jobs`` when given (in workers), else here.
    """
    with paused_gc():  # the index is millions of objects and no cycles
        return _load(files, report, progress, map_jobs)


def _load(
    files: CocoFiles,
    report: Callable[[str], None] | None,
    progress: bool,
    map_jobs: MapJobs | None,
) -> CocoIndex:
    path = files.annotations
    data = read_json(path, report, keep_polygons=True)
    if not isinstance(data, dict):
        raise DataError(f"{path}: the top level is a {type(data).__name__}, not a JSON object")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{path}: no '{key}' list; this is not a COCO instances file")
        if not isinstance(data[key], list):
            raise DataError(f"{path}: '{key}' is a {type(data[key]).__name__}, not a list")
    problems: list[tuple[str, str]] = []

    categories = data["categories"]
    for cat in categories:
        if not isinstance(cat, dict) or not _is_id(cat.get("id")):
            raise DataError(f"{path}: a category without an integer 'id': {str(cat)[:80]}")
    categories = [_integral(c, ("id",)) for c in categories]
    dup = _duplicates(c["id"] for c in categories)
    if dup:
        raise DataError(f"{path}: duplicate category ids {dup[:5]}")
    category_ids = {c["id"] for c in categories}

    images: list[dict[str, Any]] = []
    for rec in data["images"]:
        if not isinstance(rec, dict) or not _is_id(rec.get("id")):
            raise DataError(f"{path}: an image record without an integer 'id': {str(rec)[:80]}")
        images.append(_integral(rec, ("id", "width", "height")))
    dup = _duplicates(r["id"] for r in images)
    if dup:
        raise DataError(f"{path}: duplicate image ids {dup[:5]}", hint="ids must be unique")
    position = {r["id"]: i for i, r in enumerate(images)}
    usable = [True] * len(images)
    for i, rec in enumerate(images):
        if not isinstance(rec.get("file_name"), str) or not rec["file_name"]:
            usable[i] = False
            problems.append(("image without file_name", f"image {rec['id']}"))
        elif not all(_is_id(rec.get(k)) and rec[k] > 0 for k in ("width", "height")):
            usable[i] = False
            problems.append(("image without a valid width/height", f"image {rec['id']}"))

    anns = data["annotations"]
    for ann in anns:
        plain_id = type(ann) is dict and type(ann.get("id")) is int
        if not plain_id and (not isinstance(ann, dict) or not _is_id(ann.get("id"))):
            shown = str(lazy_json.shown(ann))[:80]
            raise DataError(f"{path}: an annotation without an integer 'id': {shown}")
    keys = ("id", "image_id", "category_id")
    anns = [_integral(a, keys) if _has_float(a) else a for a in anns]
    ids = [a["id"] for a in anns]
    dup = _duplicates(ids) if len(set(ids)) != len(ids) else []
    if dup:
        raise DataError(f"{path}: duplicate annotation ids {dup[:5]}", hint="ids must be unique")

    found: list[tuple[int, str, str]] = []  # (position in the file, problem, where)
    image_of: dict[int, int] = {}
    for pos, ann in enumerate(anns):  # ids are ints here where they are integral at all
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        img = position.get(image_id) if type(image_id) is int else None
        if img is None:
            found.append((pos, "annotation on an unknown image", f"annotation {ann['id']}"))
            continue
        if type(category_id) is not int or category_id not in category_ids:
            found.append((pos, "annotation with an unknown category", f"annotation {ann['id']}"))
            continue
        if usable[img]:
            image_of[pos] = img
    results = _check(anns, image_of, images, report, progress, map_jobs)
    if any(r.not_json for r in results):
        read_json(path)  # raises with the plain parser's line and column
        raise DataError(f"{path} is not valid JSON")
    anns_by_image: list[list[dict[str, Any]]] = [[] for _ in images]
    for pos in sorted(p for r in results for p in r.usable):
        ann = anns[pos]  # the index's own copy (parsed here): cleaned in place
        ann["iscrowd"] = 1 if ann.get("iscrowd") else 0
        anns_by_image[image_of[pos]].append(ann)
    found += [p for r in results for p in r.problems]
    found.sort(key=lambda p: p[0])  # file order; one annotation's problems keep theirs
    problems += [(problem, where) for _, problem, where in found]

    # images that cannot be used keep no annotations and are left out of the index
    kept = [i for i in range(len(images)) if usable[i]]
    top = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
    return CocoIndex(
        files=files,
        images=[images[i] for i in kept],
        anns_by_image=[anns_by_image[i] for i in kept],
        categories=categories,
        top=top,
        problems=problems,
    )


#: From this many annotations on, checking them is announced (or gets a progress bar).
LARGE_ANNOTATIONS = 100_000


def _check(
    anns: list[dict[str, Any]],
    image_of: dict[int, int],
    images: list[dict[str, Any]],
    report: Callable[[str], None] | None,
    progress: bool,
    map_jobs: MapJobs | None,
) -> list[CheckResult]:
    """Check the annotations of usable images (positions in ``image_of``) in batches."""
    items = [
        (pos, anns[pos], images[img]["width"], images[img]["height"])
        for pos, img in image_of.items()
    ]
    parallel = map_jobs is not None and len(items) >= PARALLEL_CHECK
    batch = min(CHECK_BATCH, PARALLEL_CHECK_BATCH) if parallel else CHECK_BATCH
    jobs = [CheckJob(items[i : i + batch]) for i in range(0, len(items), batch)]
    large = len(anns) >= LARGE_ANNOTATIONS
    if large and not progress and report is not None:
        report(f"checking {len(anns):,} annotations...")
    if map_jobs is not None and parallel:
        return map_jobs(check_annotations, jobs, len(items))
    if not (large and progress):
        return [check_annotations(job) for job in jobs]
    import sys

    from tqdm import tqdm

    results = []
    with tqdm(
        total=len(items), desc="checking annotations", unit="ann", file=sys.stderr, leave=False
    ) as bar:
        for job in jobs:
            results.append(check_annotations(job))
            bar.update(len(job.items))
    return results


def safe_relative(file_name: str) -> PurePosixPath | None:
    """``file_name`` as a relative path inside the image folder, or None if it would escape.

    Absolute paths, drive letters and any ``..`` part are refused: cpgen never reads or writes
    outside the folders it was given.
    """
    normalized = file_name.replace("\\", "/")
    rel = PurePosixPath(normalized)
    if rel.is_absolute() or not rel.parts or ".." in rel.parts or ":" in rel.parts[0]:
        return None
    return rel


def write(
    path: Path,
    *,
    info: dict[str, Any],
    licenses: list[Any],
    categories: list[dict[str, Any]],
    images: Iterable[dict[str, Any] | str],
    annotations: Iterable[dict[str, Any] | str],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a COCO file record by record (flat memory), atomically (temp file + rename).

    The iterables are consumed in order: images first, then annotations. A record may be a dict
    or its JSON text (a str), written as is.
    """
    from cpgen.output import atomic_write_chunks, dumps

    def chunks() -> Iterable[str]:
        yield '{"info":' + dumps(info) + ',"licenses":' + dumps(licenses)
        for key, value in (extra or {}).items():
            yield "," + dumps(key) + ":" + dumps(value)
        yield ',"categories":' + dumps(categories)
        for key, records in (("images", images), ("annotations", annotations)):
            yield f',"{key}":['
            for i, record in enumerate(records):
                yield ("," if i else "") + (record if isinstance(record, str) else dumps(record))
            yield "]"
        yield "}\n"

    atomic_write_chunks(path, chunks())
