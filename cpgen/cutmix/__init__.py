"""`cpgen cutmix`: CutMix (Yun et al., ICCV 2019) over an image folder, Composer-exact.

read + check (datasets.folders) -> plan (pure, seeded: :func:`plan`) -> shards in workers
(:func:`run_cutmix_shard`), or batches mixed by PyTorch on a device (:func:`run_device`) ->
merge (``labels.csv``, ``classes.json``, ``soft_labels.npy``) -> summary.

One output, given its task seed:

1. The base is the next input image (cycling through SRC in torchvision's order); the patch is a
   random other image (``PLAN_STREAM`` of the task's generator).
2. Both are decoded with their EXIF orientation applied (a phone photo comes out upright, like
   its class mates), as 8-bit BGR. The base keeps its size, or is resized to ``--size``; the
   patch is resized to the base's size: INTER_AREA when shrinking both sides, INTER_LINEAR
   otherwise (:func:`cpgen.ops.cutmix.resize`).
3. lambda ~ Beta(alpha, alpha) and the box centre are drawn with numpy from ``PARAMS_STREAM``
   (:func:`cpgen.sampling.sample_cutmix`); the box is Composer's ``_rand_bbox`` box, clipped.
4. The box's pixels are copied from the patch; the base class weight is
   ``1 - box_area / image_area``. The image is written as ``OUT/images/<index:06d>.jpg``.

Because all randomness is drawn per task with numpy, and decoding, resizing and encoding happen
the same way on both paths, ``-j 1``, ``-j N``, any backend and ``--device cpu|cuda`` write the
same bytes: the device only does the box copy.

Output: ``images/<index:06d>.jpg``; ``labels.csv`` (:data:`COLUMNS`; the box in output pixels,
rows ``[top, bottom)``, columns ``[left, right)``; ``file`` relative to OUT, ``base_file`` and
``patch_file`` relative to SRC); ``classes.json``, a JSON list (index -> class name, torchvision's
``dataset.classes``); with ``soft_labels``, ``soft_labels.npy`` (N x C float32, row i for
labels.csv row i); ``metadata.jsonl``, the same rows (``file`` as ``file_name``) and soft labels
for Hugging Face's ``load_dataset("imagefolder", data_dir=OUT)``. Shards of 16 outputs write
their result file last, whatever the path, so ``--resume`` keeps finished shards, and may even
switch between the numpy and device paths. A finished run keeps only its manifest, as
``.cpgen.json``: no folder but ``images/`` is left for a folder-based loader to take for a class.
"""

from cpgen.cutmix.options import (
    CLASSES,
    COLUMNS,
    LABELS,
    SHARD_SIZE,
    SOFT_LABELS,
    CutMixOptions,
    RunOptions,
    check_device,
    parse_size,
)
from cpgen.cutmix.plan import CutMixTask, Prepared, plan, plan_rows, plan_tasks, prepare
from cpgen.cutmix.run import (
    Summary,
    index_digest,
    merge,
    options_record,
    run,
    soft_labels,
    warnings,
)
from cpgen.cutmix.shard import (
    CutMixShard,
    ImageRef,
    ShardResult,
    output_name,
    run_cutmix_shard,
    run_device,
)

__all__ = [
    "CLASSES",
    "COLUMNS",
    "CutMixOptions",
    "CutMixShard",
    "CutMixTask",
    "ImageRef",
    "LABELS",
    "Prepared",
    "RunOptions",
    "SHARD_SIZE",
    "SOFT_LABELS",
    "ShardResult",
    "Summary",
    "check_device",
    "index_digest",
    "merge",
    "options_record",
    "output_name",
    "parse_size",
    "plan",
    "plan_rows",
    "plan_tasks",
    "prepare",
    "run",
    "run_cutmix_shard",
    "run_device",
    "soft_labels",
    "warnings",
]
