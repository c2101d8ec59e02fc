"""Read a COCO file without parsing all of it, and read cutmix outputs; for the read-only
commands (``preview``, ``stats``).

A COCO file's cost is its annotations: a 252 MB file of 509k polygons takes ~9 s and 1.6 GB to
``json.load``, nearly all of it building the floats of polygons. :class:`LazyCoco` parses the
top-level members other than ``annotations`` (images, categories, info, ...) with the standard
decoder, member by member, and skips the annotations: when images and categories come before
them the rest of the file is not needed; when they come after (COCO's own order) they are found
from the end of the file and checked to run exactly to its end; failing both, :func:`scan`
indexes the file's structure with numpy (quotes and brackets outside strings, ~2 s per 250 MB).
:meth:`LazyCoco.annotations_of` then parses only the records of the images asked for, found by
a regular expression on ``"image_id"``; :meth:`LazyCoco.annotations` parses every annotation
but leaves polygon coordinates out, for counting.

Offsets into ``LazyCoco.text`` are character offsets; :func:`scan` works on bytes.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cpgen.datasets.coco import CocoFiles, find_layout
from cpgen.errors import DataError, UsageError

CUTMIX_LABELS = "labels.csv"  # the names cpgen.cutmix writes (not imported: it pulls in the job)
CUTMIX_CLASSES = "classes.json"
CUTMIX_SOFT_LABELS = "soft_labels.npy"

_CHUNK = 1 << 25  # bytes scanned per numpy step (bounds the temporary arrays)
_QUOTE, _OPEN, _CLOSE = 1, 2, 3
_KINDS = np.zeros(256, dtype=np.uint8)
_KINDS[ord('"')] = _QUOTE
_KINDS[[ord("{"), ord("[")]] = _OPEN
_KINDS[[ord("}"), ord("]")]] = _CLOSE
_SPACE = re.compile(rb"[ \t\r\n]*")
_KEY = re.compile(rb'"((?:[^"\\]|\\.)*)"[ \t\r\n]*:[ \t\r\n]*', re.DOTALL)
_SCALAR = re.compile(rb'"(?:[^"\\]|\\.)*"|[-+0-9.eE]+|true|false|null', re.DOTALL)


@dataclass
class Structure:
    """Where a JSON object's top-level values are: key -> ``[start, end)`` in bytes."""

    top: dict[str, tuple[int, int]]


def scan(data: bytes, where: str = "JSON") -> Structure:
    """Find a JSON object's top-level members by a numpy pass over its bytes (~2 s per 250 MB;
    memory ~16 bytes per quote or bracket)."""
    array = np.frombuffer(data, dtype=np.uint8)
    positions = []
    for lo in range(0, len(array), _CHUNK):
        kinds = _KINDS[array[lo : lo + _CHUNK]]
        positions.append(np.flatnonzero(kinds).astype(np.int64) + lo)
    pos = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
    kind = _KINDS[array[pos]]
    # a quote preceded by an odd run of backslashes is escaped: not a string boundary
    quotes = np.flatnonzero(kind == _QUOTE)
    after_backslash = quotes[(pos[quotes] > 0) & (array[np.maximum(pos[quotes] - 1, 0)] == 92)]
    for k in after_backslash:
        p, run = int(pos[k]) - 1, 0
        while p >= 0 and data[p] == 92:
            run, p = run + 1, p - 1
        if run % 2:
            kind[k] = 0
    is_quote = kind == _QUOTE
    in_string = (np.cumsum(is_quote) - is_quote) % 2 == 1
    keep = (~in_string) & ~is_quote & (kind != 0)
    pos, kind = pos[keep], kind[keep]
    depth = np.cumsum(np.where(kind == _OPEN, 1, -1))
    if not len(pos) or data[pos[0]] != ord("{") or depth[-1] != 0 or depth.min() < 0:
        raise DataError(f"{where} is not one well-formed JSON object")
    opens = kind == _OPEN
    top_starts, top_ends = pos[opens & (depth == 2)], pos[~opens & (depth == 1)] + 1
    if len(top_starts) != len(top_ends):
        raise DataError(f"{where} is not one well-formed JSON object")
    container_end = dict(zip(top_starts.tolist(), top_ends.tolist(), strict=True))
    return Structure(_top_keys(data, int(pos[0]), container_end, where))


def _top_keys(
    data: bytes, start: int, container_end: dict[int, int], where: str
) -> dict[str, tuple[int, int]]:
    """Walk the top-level object's keys; containers are skipped with the scanned index."""
    top: dict[str, tuple[int, int]] = {}
    p = _SPACE.match(data, start + 1).end()
    if data[p : p + 1] == b"}":
        return top
    while True:
        key = _KEY.match(data, p)
        if key is None:
            raise DataError(f"{where}: malformed top-level key at byte {p}")
        name = json.loads(b'"' + key.group(1) + b'"')
        p = key.end()
        if p in container_end:
            end = container_end[p]
        else:
            scalar = _SCALAR.match(data, p)
            if scalar is None:
                raise DataError(f"{where}: malformed value of {name!r} at byte {p}")
            end = scalar.end()
        top[name] = (p, end)
        p = _SPACE.match(data, end).end()
        if data[p : p + 1] == b"}":
            return top
        if data[p : p + 1] != b",":
            raise DataError(f"{where}: expected ',' or '}}' at byte {p}")
        p = _SPACE.match(data, p + 1).end()


_DECODER = json.JSONDecoder()
_TEXT_SPACE = re.compile(r"[ \t\r\n]*")
_TEXT_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"[ \t\r\n]*:[ \t\r\n]*', re.DOTALL)
# polygon parts (a list of number lists) and uncompressed RLE counts: what counting never needs
_TEXT_POLYGONS = re.compile(r"\[[ \t\r\n]*\[[-+0-9.eE, \t\r\n\[\]]*\][ \t\r\n]*\]")
_TEXT_COUNTS = re.compile(r'"counts"[ \t\r\n]*:[ \t\r\n]*\[[0-9, \t\r\n]*\]')


@dataclass
class LazyCoco:
    """A COCO file's small parts parsed; annotations parsed on request (see module doc).

    ``annotations_span`` is where the annotation array starts and an upper bound of where it
    ends (character offsets into ``text``).
    """

    files: CocoFiles
    text: str
    annotations_span: tuple[int, int]
    images: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, files: CocoFiles) -> LazyCoco:
        """Read the file and parse everything but the annotations: for a 250 MB COCO file
        ~0.5 s when the annotations come after images and categories or are followed only by
        them (cpgen, COCO, Roboflow, CVAT), else ~2 s more for a structural scan."""
        path = files.annotations
        try:
            data = path.read_bytes()
            text = data.decode("utf-8-sig")
        except FileNotFoundError:
            raise DataError(f"annotation file {path} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from None
        del data
        values: dict[str, Any] = {}
        span = _top_level(text, values, str(path))
        for key in ("images", "categories"):
            if key not in values:
                raise DataError(f"{path}: no '{key}' list; this is not a COCO instances file")
            if not isinstance(values[key], list):
                raise DataError(f"{path}: '{key}' is a {type(values[key]).__name__}, not a list")
        if span is None:
            raise DataError(f"{path}: no 'annotations' list; this is not a COCO instances file")
        info = values.get("info")
        return cls(
            files,
            text,
            span,
            [r for r in values["images"] if isinstance(r, dict) and "id" in r],
            [c for c in values["categories"] if isinstance(c, dict) and "id" in c],
            info if isinstance(info, dict) else {},
        )

    @property
    def is_cpgen_output(self) -> bool:
        """True when some image records carry cpgen's provenance (a copy-paste output)."""
        return any("cpgen" in r for r in self.images)

    def annotations_of(self, image_ids: Collection[int]) -> dict[int, list[dict[str, Any]]]:
        """The annotation records of the given images, in file order, parsing only those.

        One regular-expression pass over the annotations (~0.3 s per 250 MB) finds their
        ``"image_id"`` keys; each hit's innermost enclosing object is parsed and kept when its
        own ``image_id`` is wanted (a nested hit, e.g. cpgen's provenance, is not).
        """
        found: dict[int, list[dict[str, Any]]] = {int(i): [] for i in image_ids}
        if not found:
            return found
        alternatives = "|".join(str(i) for i in sorted(found))
        pattern = re.compile(r'"image_id"[ \t\r\n]*:[ \t\r\n]*(' + alternatives + r")(?![0-9.eE])")
        lo, hi = self.annotations_span
        seen: set[int] = set()
        for hit in pattern.finditer(self.text, lo, hi):
            start, record = _enclosing_object(self.text, hit.start(), lo)
            if start in seen or not isinstance(record, dict) or "category_id" not in record:
                continue
            if record.get("image_id") in found:
                seen.add(start)
                found[record["image_id"]].append(record)
        return found

    def annotations(self) -> list[dict[str, Any]]:
        """Every annotation record, with polygon coordinates and uncompressed RLE counts
        replaced by ``[]`` (not parsed).

        For counting: ``segmentation`` is ``[]`` for polygons; compressed RLEs are kept. About
        twice as fast as parsing the whole file for polygon-heavy files.
        """
        lo, hi = self.annotations_span
        light = _TEXT_COUNTS.sub('"counts":[]', _TEXT_POLYGONS.sub("[]", self.text[lo:hi]))
        try:
            records, _ = _DECODER.raw_decode(light, 0)
        except json.JSONDecodeError as exc:
            where = self.files.annotations
            raise DataError(f"{where}: the annotations are not valid JSON: {exc}") from None
        if not isinstance(records, list):
            raise DataError(f"{self.files.annotations}: 'annotations' is not a list")
        return [a for a in records if isinstance(a, dict)]


def _enclosing_object(text: str, position: int, lo: int) -> tuple[int, Any]:
    """The innermost JSON object (start, value) that contains ``position``, looking back no
    further than ``lo``; (-1, None) when there is none."""
    start = position
    while True:
        start = text.rfind("{", lo, start)
        if start < 0:
            return -1, None
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            continue  # a brace inside a string
        if end > position:
            return start, value


def _members(
    text: str, p: int, values: dict[str, Any], where: str, lazy_key: str | None = None
) -> tuple[int, str | None]:
    """Parse an object's ``"key": value`` members from ``p`` (after ``{`` or ``,``) into
    ``values``, up to its ``}``: returns (position after ``}``, None), or, on reaching
    ``lazy_key``, (start of its value, lazy_key) without parsing that value."""
    p = _TEXT_SPACE.match(text, p).end()
    if text.startswith("}", p):
        return p + 1, None
    while True:
        key = _TEXT_KEY.match(text, p)
        if key is None:
            raise DataError(f"{where}: malformed JSON at character {p}")
        name = json.loads('"' + key.group(1) + '"')
        p = key.end()
        if name == lazy_key:
            return p, name
        try:
            values[name], p = _DECODER.raw_decode(text, p)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where} is not valid JSON: {exc}") from None
        p = _TEXT_SPACE.match(text, p).end()
        if text.startswith("}", p):
            return p + 1, None
        if not text.startswith(",", p):
            raise DataError(f"{where}: expected ',' or '}}' at character {p}")
        p = _TEXT_SPACE.match(text, p + 1).end()


def _top_level(text: str, values: dict[str, Any], where: str) -> tuple[int, int] | None:
    """Parse the top-level members other than ``annotations`` into ``values``; return the
    annotations' (start, upper bound of end), or None when there are none."""
    start = _TEXT_SPACE.match(text).end()
    if not text.startswith("{", start):
        raise DataError(f"{where}: the top level is not a JSON object")
    end, lazy = _members(text, start + 1, values, where, "annotations")
    if lazy is None:
        return None
    ann_start = end
    if not text.startswith("[", ann_start):
        raise DataError(f"{where}: 'annotations' is not a list")
    missing = [k for k in ("images", "categories") if k not in values]
    if not missing:
        return ann_start, len(text)  # later members, if any, are not needed
    # the missing members come after the annotations: find the last occurrence of each key
    # and accept it when parsing from there runs exactly to the end of the top-level object
    tail_end = _last_non_space(text, len(text), ann_start) + 1
    candidates = []
    for key in missing:
        at = text.rfind(json.dumps(key), ann_start)
        if at < 0:
            break
        tail: dict[str, Any] = {}
        try:
            after, _ = _members(text, at, tail, where)
        except DataError:
            break
        comma = _last_non_space(text, at, ann_start)
        bracket = _last_non_space(text, comma, ann_start)
        if after != tail_end or text[comma] != "," or text[bracket] != "]":
            break
        candidates.append((at, tail, bracket + 1))
    else:
        at, tail, ann_end = min(candidates, key=lambda c: c[0])
        values.update(tail)
        return ann_start, ann_end
    return _scanned(text, values, where)


def _last_non_space(text: str, end: int, lo: int) -> int:
    """Index of the last non-whitespace character of ``text[lo:end]`` (``lo - 1`` if none),
    without copying the text."""
    k = end - 1
    while k >= lo and text[k] in " \t\r\n":
        k -= 1
    return k


def _scanned(text: str, values: dict[str, Any], where: str) -> tuple[int, int]:
    """The general case: find every top-level member with the structural scan."""
    data = text.encode("utf-8")
    structure = scan(data, where)
    ascii_only = len(data) == len(text)

    def chars(offset: int) -> int:
        return offset if ascii_only else len(data[:offset].decode("utf-8"))

    span = None
    for key, (lo, hi) in structure.top.items():
        if key == "annotations":
            span = (chars(lo), chars(hi))
        else:
            values[key] = json.loads(data[lo:hi])
    if span is None:
        raise DataError(f"{where}: no 'annotations' list; this is not a COCO instances file")
    return span


# ---------------------------------------------------------------------------------------------
# Which kind of dataset a PATH is


@dataclass(frozen=True)
class CutmixOutput:
    """A cpgen cutmix output: ``rows`` of labels.csv as dicts (weights and box as numbers)."""

    root: Path
    classes: list[str]
    rows: list[dict[str, Any]]

    @property
    def images(self) -> Path:
        return self.root


def is_cutmix_output(path: Path) -> bool:
    return (path / CUTMIX_LABELS).is_file() and (path / CUTMIX_CLASSES).is_file()


def read_cutmix(path: Path) -> CutmixOutput:
    """Read ``labels.csv`` and ``classes.json`` of a cutmix output (cpgen.cutmix.COLUMNS)."""
    try:
        classes = json.loads((path / CUTMIX_CLASSES).read_text(encoding="utf-8"))
        with (path / CUTMIX_LABELS).open(newline="", encoding="utf-8") as f:
            raw = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read the cutmix output in {path}: {exc}") from None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{path / CUTMIX_CLASSES} is not a list of class names")
    rows = []
    for n, row in enumerate(raw, start=2):
        try:
            rows.append(
                {
                    **row,
                    "base_weight": float(row["base_weight"]),
                    **{k: int(row[k]) for k in ("top", "left", "bottom", "right")},
                }
            )
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path / CUTMIX_LABELS}, line {n}: not a cpgen labels row") from None
    return CutmixOutput(path, classes, rows)


def coco_files(
    path: Path | None, ann: Path | None, images: Path | None, split: str | None
) -> CocoFiles:
    """The COCO files named by PATH (a dataset folder or an annotation file) or by ``--ann``
    (+ ``--images``). Beside an annotation file, images are looked for in ``images/`` (the
    cpgen layout) if that folder exists, else in the file's own folder (Roboflow)."""
    if path is not None:
        if ann is not None or images is not None:
            raise UsageError("give either PATH, or --ann with --images, not both")
        if not path.exists():
            raise UsageError(f"{path} does not exist")
        if path.is_dir():
            return find_layout(path, split)
        ann = path
    elif ann is None:
        raise UsageError("give a dataset folder PATH, or --ann FILE with --images DIR")
    if not ann.is_file():
        raise UsageError(f"--ann {ann} is not a file")
    if images is None:
        images = ann.parent / "images" if (ann.parent / "images").is_dir() else ann.parent
    elif not images.is_dir():
        raise UsageError(f"--images {images} is not a folder")
    return CocoFiles(ann, images)


def locate(
    path: Path | None, ann: Path | None, images: Path | None, split: str | None
) -> CocoFiles | CutmixOutput:
    """A cutmix output (PATH holds labels.csv and classes.json), else COCO files."""
    if path is not None and ann is None and images is None and is_cutmix_output(path):
        return read_cutmix(path)
    return coco_files(path, ann, images, split)
