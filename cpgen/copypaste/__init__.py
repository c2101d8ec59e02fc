"""`cpgen copypaste`: Simple Copy-Paste (Ghiasi et al., CVPR 2021) over a COCO dataset.

The data flows one way through the package's modules:
read + validate (``datasets.coco``) -> plan (``run.plan``) -> shards in workers (``shard``,
composing each output with ``compose`` from the pixels ``sources`` reads) -> merge -> summary
(``run``). ``options`` holds what decides the output.
"""

from __future__ import annotations

from cpgen.copypaste.compose import Generated, copy_paste, draw_params, source_reduction
from cpgen.copypaste.device import RunOptions, check_device
from cpgen.copypaste.inputs import Inputs, prepare
from cpgen.copypaste.options import CopyPasteOptions, options_record
from cpgen.copypaste.run import Summary, generated_dir, merge, plan, run
from cpgen.copypaste.shard import (
    GenerateShard,
    OriginalsShard,
    OutputIds,
    ShardResult,
    run_generate_shard,
    run_originals_shard,
)
from cpgen.copypaste.sources import ImageRef, ShardImages, check_images, usable_images

__all__ = [
    "CopyPasteOptions",
    "Generated",
    "GenerateShard",
    "ImageRef",
    "Inputs",
    "OriginalsShard",
    "OutputIds",
    "RunOptions",
    "ShardImages",
    "ShardResult",
    "Summary",
    "check_device",
    "check_images",
    "copy_paste",
    "draw_params",
    "generated_dir",
    "merge",
    "options_record",
    "plan",
    "prepare",
    "run",
    "run_generate_shard",
    "run_originals_shard",
    "source_reduction",
    "usable_images",
]
