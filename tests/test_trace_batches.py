"""A shard traces several outputs' masks in one call (``copy_paste(..., trace_masks=False)``
then ``trace``): every record is the same as when each output traces its own."""

from __future__ import annotations

import json
import random

import pytest

from cpgen import output
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


@pytest.mark.parametrize("at", [0, 2, 5])
def test_a_traced_record_is_written_as_the_encoder_writes_it(at: int) -> None:
    """The table-lookup writer of traced polygons gives dumps' bytes, wherever the key sits,
    and hands a polygon beyond its table's reach to the encoder."""
    rng = random.Random(at)
    parts = [[rng.randrange(0, 640) for _ in range(2 * rng.randrange(3, 40))] for _ in range(3)]
    keys = [("id", None), ("category_id", 7), ("note", 'é "quoted"'), ("bbox", [3, 4, 600, 470])]
    keys += [("area", 12), ("cpgen", {"from": "target", "ann_id": 5})]
    keys.insert(at, ("segmentation", parts))
    record = dict(keys)
    assert output.dumps_traced(record) == output.dumps(record)
    assert output.dumps_traced({"segmentation": [], "bbox": [0, 0, 0, 0]}) == (
        '{"segmentation":[],"bbox":[0,0,0,0]}'
    )
    far = {**record, "bbox": [9000, 0, 5, 5], "segmentation": [[9000, 0, 9005, 0, 9005, 5]]}
    assert output.dumps_traced(far) == output.dumps(far)
