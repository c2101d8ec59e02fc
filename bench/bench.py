"""`make bench`: copy-paste (and cutmix) throughput against the codec floor, in one run.

The floor is what a plain OpenCV loop takes to read and decode the same target and source
images and encode the same number of output JPEGs; cpgen's ratio to it is the overhead of
everything else (planning, pasting, masks, JSON, workers). Figures are medians of repeats.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench.common import interleaved_medians, report
from cpgen import copypaste
from cpgen.datasets import coco

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def copypaste_floor(index: coco.CocoIndex, tasks: list, quality: int) -> float:
    """Seconds for a plain loop: decode each task's target and source, encode one JPEG."""
    cv2.setNumThreads(1)
    root = index.files.images
    paths = [root / r["file_name"] for r in index.images]
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    start = time.perf_counter()
    for task in tasks:
        target = cv2.imdecode(np.fromfile(paths[task.target], np.uint8), flags)
        cv2.imdecode(np.fromfile(paths[task.source], np.uint8), flags)
        cv2.imencode(".jpg", target, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return time.perf_counter() - start


def copypaste_run(index: coco.CocoIndex, options, workers: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="cpgen-bench-")) / "out"
    try:
        start = time.perf_counter()
        copypaste.run(index, out, options, copypaste.RunOptions(workers=workers))
        return time.perf_counter() - start
    finally:
        shutil.rmtree(out.parent)


def bench_copypaste(src: Path, num_images: int, repeats: int) -> dict[str, float]:
    """Medians of ``repeats`` interleaved rounds: the floor and cpgen with 1 and 2 workers."""
    index = coco.load(coco.find_layout(src))
    options = copypaste.CopyPasteOptions(num_images=num_images, originals="none")
    gaussian = dataclasses.replace(options, blend="gaussian")
    tasks = copypaste.plan(index, options)
    copypaste_floor(index, tasks[: len(index.images)], options.quality)  # warm the page cache
    medians = interleaved_medians(
        {
            "floor_s": lambda: copypaste_floor(index, tasks, options.quality),
            "one_s": lambda: copypaste_run(index, options, 1),
            "two_s": lambda: copypaste_run(index, options, 2),
            "gaussian_s": lambda: copypaste_run(index, gaussian, 1),
        },
        repeats,
    )
    return {"outputs": num_images, **medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-images", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    coco_src = SHARED / "coco_val2017_tiny80"
    if not coco_src.is_dir():
        coco_src = REPO / "examples" / "coco"
        print(f"(../shared/data absent: using {coco_src})", file=sys.stderr)
    result = bench_copypaste(coco_src, args.num_images, args.repeats)
    report("copypaste", coco_src, result)
    print(
        f"  --blend gaussian, 1 worker {args.num_images / result['gaussian_s']:8.1f} outputs/s"
        f"  = {result['gaussian_s'] / result['floor_s']:.2f}x the floor"
    )
    try:
        from bench.cutmix_bench import bench_cutmix
    except ImportError:
        return
    folder_src = SHARED / "hymenoptera_val"
    if not folder_src.is_dir():
        folder_src = REPO / "examples" / "folders"
    report("cutmix", folder_src, bench_cutmix(folder_src, args.num_images, args.repeats))


if __name__ == "__main__":
    main()
