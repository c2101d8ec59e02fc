"""Parse a COCO file while keeping polygon segmentations as their JSON text.

Most of a COCO file's bytes are polygon numbers, and building a Python float for each is most of
``json.load``'s time and memory (a 280 MB file: 9 s, 1.6 GB). The planning process needs none of
those numbers, so ``load_keeping_polygons`` cuts every ``"segmentation": [[...]]`` value made of
numbers out of the bytes, parses the rest, and puts each cut value back as its ``bytes`` (never
a value ``json`` produces, so unambiguous): a worker parses it when it needs the polygon.

The result is exactly ``json.loads(raw)`` with those values still text. A cut is kept only when
it was an annotation's own ``segmentation`` (checked after the parse: every ``"segmentation"`` in
the bytes is the key of one annotation record, and every cut comes back at such a place, once,
in file order); otherwise the whole file is parsed the plain way. A cut value
that is not valid JSON means the file is not either; ``coco.read_json`` then reports it with the
plain parser's message, line and column.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: A segmentation value that looks like a list of lists of numbers. Loose on purpose (``1.2.3``
#: matches): the text is parsed, and so checked, in a worker; the file is valid JSON only if
#: every cut value is.
_POLYGON_VALUE = re.compile(rb'"segmentation"\s*:\s*(\[\s*\[[-+.eE0-9,\s\[\]]*\]\s*\])')


def load_keeping_polygons(path: Path) -> Any:
    """The JSON file at ``path`` parsed, each annotation's polygon segmentation left as its
    JSON bytes. Memory: the rest is built in one buffer (no object per piece), and the file's
    bytes are dropped before the rest is parsed.

    Raises ``json.JSONDecodeError`` (or ``UnicodeDecodeError``) when the rest is not JSON; the
    caller then parses the whole file to report the error where the plain parser finds it.
    """
    raw = path.read_bytes()
    view = memoryview(raw)
    rest = bytearray()  # the text between the cut values, copied from ``raw`` without slices
    polygons: list[bytes] = []
    last = 0
    for start, end in (match.span(1) for match in _POLYGON_VALUE.finditer(raw)):
        rest += view[last:start]
        rest += b"%d" % len(polygons)  # a marker: the index of the cut value
        polygons.append(raw[start:end])
        last = end
    if not polygons:
        return json.loads(raw)
    rest += view[last:]
    occurrences = raw.count(b'"segmentation"')
    view.release()
    del view, raw
    data = json.loads(rest)
    del rest
    if not _put_back(data, polygons, occurrences):
        del data, polygons
        return json.loads(path.read_bytes())  # a cut in an unexpected place: parse everything
    return data


def _put_back(data: Any, polygons: list[bytes], occurrences: int) -> bool:
    """Replace each marker by its text; False unless each of the ``occurrences`` of the bytes
    ``"segmentation"`` is one annotation record's key and the markers come back at those keys,
    each once, in file order (so a marker can be neither misplaced nor a genuine value)."""
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list):
        return False
    expected = keys = 0
    for ann in anns:
        if not isinstance(ann, dict) or "segmentation" not in ann:
            continue
        keys += 1
        seg = ann["segmentation"]
        if type(seg) is not int:
            continue
        if seg != expected or expected >= len(polygons):
            return False
        ann["segmentation"] = polygons[expected]
        expected += 1
    return expected == len(polygons) and keys == occurrences


def parse_polygon(text: bytes) -> Any:
    """The polygon value kept as text (a list of parts of numbers, in a valid file)."""
    return json.loads(text)


def parse_polygons(texts: list[bytes]) -> list[Any]:
    """The values of several polygon texts, in one parse (ValueError if one is not JSON)."""
    if not texts:
        return []
    values = json.loads(b"[" + b",".join(texts) + b"]")
    if len(values) != len(texts):  # a text holding a comma-separated run is no one value
        raise ValueError("a polygon text is not one JSON value")
    return values


def shown(ann: Any) -> Any:
    """``ann`` as the plain parser would have given it (for messages that print a record)."""
    if isinstance(ann, dict) and isinstance(ann.get("segmentation"), bytes):
        return {**ann, "segmentation": parse_polygon(ann["segmentation"])}
    return ann
