"""What trips the common consumers of a COCO dataset although the COCO format allows it.

Warnings, not problems: the dataset is valid, but an annotation id 0 makes pycocotools'
``COCOeval`` count that annotation as unmatched (its matching uses 0 for "no match"), so AP is
wrong with no message; a category name used by several ids is refused by Datumaro and merged by
any tool that maps by name; a non-crowd RLE mask fails Detectron2's default
``INPUT.MASK_FORMAT = "polygon"`` ("Failed to use mask_format=='polygon'") and is marked
ignored by MMDetection with ``poly2mask=False``. ``cpgen copypaste`` keeps original ids and
segmentations, so it passes these on; it says so once at the start.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: Warning kinds, in report order: key (as in ``--json``) -> what it means for consumers.
KINDS: dict[str, str] = {
    "annotation_id_zero": "annotation id 0: pycocotools' COCOeval treats it as unmatched, so AP "
    "is wrong (renumber annotation ids from 1)",
    "duplicate_category_name": "category names used by several ids: Datumaro and tools that "
    "map classes by name refuse or merge them",
    "non_crowd_rle": "non-crowd annotations with RLE masks: Detectron2's default polygon mask "
    "format rejects them, MMDetection (poly2mask=False) ignores them",
}


@dataclass(frozen=True)
class ConsumerWarning:
    kind: str  # a key of KINDS
    count: int
    example: str

    def line(self) -> str:
        return f"{KINDS[self.kind]}; {self.count} found, e.g. {self.example}"


def consumer_warnings(
    categories: Iterable[Any], annotations: Iterable[Any]
) -> list[ConsumerWarning]:
    """The warnings of a dataset's categories and annotations (records of any shape)."""
    names = Counter(
        c["name"] for c in categories if isinstance(c, dict) and isinstance(c.get("name"), str)
    )
    repeated = [name for name, n in names.items() if n > 1]
    zero_ids: list[str] = []
    rles: list[str] = []
    for ann in annotations:
        if not isinstance(ann, dict):
            continue
        if ann.get("id") == 0 and not isinstance(ann.get("id"), bool):
            zero_ids.append(f"annotation 0 (image {ann.get('image_id')})")
        if isinstance(ann.get("segmentation"), dict) and not ann.get("iscrowd"):
            rles.append(f"annotation {ann.get('id')} (image {ann.get('image_id')})")
    found = [
        ("annotation_id_zero", zero_ids),
        ("duplicate_category_name", [f"{name!r} ({names[name]} ids)" for name in repeated]),
        ("non_crowd_rle", rles),
    ]
    return [ConsumerWarning(kind, len(where), where[0]) for kind, where in found if where]


def index_warning_lines(index: Any) -> list[str]:
    """The warnings of a loaded ``CocoIndex`` as stderr lines, for ``cpgen copypaste``."""
    annotations = (a for anns in index.anns_by_image for a in anns)
    return [
        f"warning: {w.line()} (kept in the output as in the input)"
        for w in consumer_warnings(index.categories, annotations)
    ]
