"""A shard parses a source image's polygons only where they are drawn: the records of an image
used only as a source stay JSON text, and ``copy_paste`` parses the drawn ones. Same output."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2

from cpgen.copypaste import CopyPasteOptions
from cpgen.copypaste.compose import copy_paste, draw_params
from cpgen.copypaste.shard import _usable
from cpgen.datasets import coco
from cpgen.datasets.coco_checks import usable_record

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "coco"


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
    index = coco.load(coco.find_layout(EXAMPLES))
    refs = [p for p, anns in enumerate(index.anns_by_image) if len(anns) >= 2]
    assert len(refs) >= 3
    options = CopyPasteOptions(max_paste=10)
    compared = 0
    for seed, (target, source) in enumerate(zip(refs, refs[1:] + refs[:1], strict=True)):
        records = [index.images[target], index.images[source]]
        pixels = [cv2.imread(str(index.files.images / r["file_name"])) for r in records]
        size = [(r["width"], r["height"]) for r in records]
        target_anns = [usable_record(a) for a in index.anns_by_image[target]]
        raw = index.anns_by_image[source]
        assert any(isinstance(a.get("segmentation"), bytes) for a in raw)
        results = []
        for source_anns in (copy.deepcopy(raw), [usable_record(a) for a in raw]):
            params = draw_params(seed, source_anns, size[1], size[0], options)
            results.append(
                copy_paste(
                    params,
                    pixels[0].copy(),
                    copy.deepcopy(target_anns),
                    pixels[1],
                    source_anns,
                    options,
                    size[1],
                )
            )
        lazy, parsed = results
        assert (lazy.image == parsed.image).all()
        assert json.dumps(lazy.annotations) == json.dumps(parsed.annotations)
        assert any(a["cpgen"]["from"] == "source" for a in lazy.annotations)
        compared += 1
    assert compared >= 3
