"""A shard parses a source image's polygons only where they are drawn: the records of an image
used only as a source stay JSON text, and ``copy_paste`` parses the drawn ones. Same output."""

from __future__ import annotations

import copy
import json

from cpgen.copypaste import CopyPasteOptions
from cpgen.copypaste.shard import _usable
from cpgen.datasets import coco
from cpgen.datasets.coco_checks import usable_record
from tests.copypaste_helpers import EXAMPLES, example_pairs


def test_only_the_images_to_parse_are_parsed() -> None:
    index = coco.load(coco.find_layout(EXAMPLES))
    annotations = {p: anns for p, anns in enumerate(index.anns_by_image) if anns}
    first, *others = sorted(annotations)
    usable = _usable(annotations, None, {first})
    assert not any(isinstance(a.get("segmentation"), bytes) for a in usable[first])
    for p in others:
        assert usable[p] is annotations[p]  # as they are: polygons still JSON text
        assert any(isinstance(a.get("segmentation"), bytes) for a in usable[p])
    assert usable[first] == [usable_record(a) for a in annotations[first]]


def test_copy_paste_from_unparsed_source_records_is_the_same() -> None:
    """Pixels and every record are the same whether the source's records come parsed or as
    the index keeps them (polygons as JSON text)."""
    pairs = example_pairs()
    assert len(pairs) >= 3
    options = CopyPasteOptions(max_paste=10)
    for pair in pairs:
        raw = pair.source_records
        assert any(isinstance(a.get("segmentation"), bytes) for a in raw)
        lazy, parsed = (
            pair.paste(options, source_anns)
            for source_anns in (copy.deepcopy(raw), [usable_record(a) for a in raw])
        )
        assert (lazy.image == parsed.image).all()
        assert json.dumps(lazy.annotations) == json.dumps(parsed.annotations)
        assert any(a["cpgen"]["from"] == "source" for a in lazy.annotations)
