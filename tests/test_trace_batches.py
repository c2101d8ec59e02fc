"""A shard traces several outputs' masks in one call (``copy_paste(..., trace_masks=False)``
then ``trace``): every record is the same as when each output traces its own."""

from __future__ import annotations

import json

from cpgen.copypaste import CopyPasteOptions
from cpgen.copypaste.compose import trace
from cpgen.datasets.coco_checks import usable_record
from tests.copypaste_helpers import example_pairs


def test_outputs_traced_together_give_each_output_its_own_polygons() -> None:
    options = CopyPasteOptions(max_paste=10, scale=(1.0, 2.0))  # cut at the frame: traced
    alone, waiting = [], []
    for pair in example_pairs():
        source_anns = [usable_record(a) for a in pair.source_records]
        traced, untraced = (pair.paste(options, source_anns, trace_masks=t) for t in (True, False))
        assert not traced.untraced
        assert all(record["segmentation"] is None for record, _ in untraced.untraced)
        assert (traced.image == untraced.image).all()
        alone.append(traced.annotations)
        waiting.append(untraced)
    assert sum(len(g.untraced) for g in waiting) >= 4  # several outputs' masks in one call
    trace([u for g in waiting for u in g.untraced])
    assert json.dumps([g.annotations for g in waiting]) == json.dumps(alone)
