"""A shard traces several outputs' masks in one call (``copy_paste(..., trace_masks=False)``
then ``trace``): every record is the same as when each output traces its own."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2

from cpgen.copypaste import CopyPasteOptions
from cpgen.copypaste.compose import copy_paste, draw_params, trace
from cpgen.datasets import coco
from cpgen.datasets.coco_checks import usable_record

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "coco"


def test_outputs_traced_together_give_each_output_its_own_polygons() -> None:
    index = coco.load(coco.find_layout(EXAMPLES))
    refs = [p for p, anns in enumerate(index.anns_by_image) if len(anns) >= 2]
    options = CopyPasteOptions(max_paste=10, scale=(1.0, 2.0))  # cut at the frame: traced
    alone, waiting = [], []
    for seed, (target, source) in enumerate(zip(refs, refs[1:] + refs[:1], strict=True)):
        records = [index.images[target], index.images[source]]
        pixels = [cv2.imread(str(index.files.images / r["file_name"])) for r in records]
        size = [(r["width"], r["height"]) for r in records]
        target_anns = [usable_record(a) for a in index.anns_by_image[target]]
        source_anns = [usable_record(a) for a in index.anns_by_image[source]]
        params = draw_params(seed, source_anns, size[1], size[0], options)
        runs = [
            copy_paste(
                params,
                pixels[0].copy(),
                copy.deepcopy(target_anns),
                pixels[1],
                source_anns,
                options,
                size[1],
                trace_masks=traced,
            )
            for traced in (True, False)
        ]
        assert not runs[0].untraced
        assert all(record["segmentation"] is None for record, _ in runs[1].untraced)
        assert (runs[0].image == runs[1].image).all()
        alone.append(runs[0].annotations)
        waiting.append(runs[1])
    assert sum(len(g.untraced) for g in waiting) >= 4  # several outputs' masks in one call
    trace([u for g in waiting for u in g.untraced])
    assert json.dumps([g.annotations for g in waiting]) == json.dumps(alone)
