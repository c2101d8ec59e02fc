"""cutmix throughput against its codec floor.

The floor is a plain single-process OpenCV loop over the same plan: read and decode each
output's base and patch (EXIF orientation applied, as cpgen does), resize the patch to the base's
size with the same interpolation rule, and encode one JPEG at the same quality. cpgen's ratio to
it is the overhead of everything else (planning, drawing boxes, the copy, labels, workers).

    python -m bench.cutmix_bench [--src DIR] [--num-images N] [--repeats R]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from cpgen import cutmix
from cpgen.datasets import folders

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def cutmix_floor(index: folders.FolderIndex, tasks: list[cutmix.CutMixTask], quality: int) -> float:
    """Seconds for the plain loop: decode base and patch, resize the patch, encode one JPEG."""
    cv2.setNumThreads(1)
    paths = [index.root / rel for rel in index.files]
    start = time.perf_counter()
    for task in tasks:
        base = cv2.imdecode(np.fromfile(paths[task.base], np.uint8), cv2.IMREAD_COLOR)
        patch = cv2.imdecode(np.fromfile(paths[task.patch], np.uint8), cv2.IMREAD_COLOR)
        (h, w), (ph, pw) = base.shape[:2], patch.shape[:2]
        if (ph, pw) != (h, w):
            shrink = h <= ph and w <= pw
            interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            patch = cv2.resize(patch, (w, h), interpolation=interpolation)
        cv2.imencode(".jpg", base, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return time.perf_counter() - start


def cutmix_run(index: folders.FolderIndex, options: cutmix.CutMixOptions, workers: int) -> float:
    """Seconds for a whole cpgen cutmix run (plan, workers, merge) into a temporary folder."""
    out = Path(tempfile.mkdtemp(prefix="cpgen-bench-")) / "out"
    try:
        start = time.perf_counter()
        cutmix.run(index, out, options, cutmix.RunOptions(workers=workers))
        return time.perf_counter() - start
    finally:
        shutil.rmtree(out.parent)


def _median(measure: Callable[[], float], repeats: int) -> float:
    return statistics.median(measure() for _ in range(repeats))


def bench_cutmix(src: Path, num_images: int, repeats: int = 3) -> dict[str, float]:
    """Medians of ``repeats`` runs: the floor and cpgen with 1 and 2 workers; prints nothing.

    Keys: ``outputs``, ``floor_s``, ``one_s``, ``two_s`` (seconds), ``*_per_s`` (outputs per
    second), ``ratio_one`` (1-worker time over floor time), ``speedup_two`` (1 over 2 workers).
    """
    index = folders.load(src)
    options = cutmix.CutMixOptions(num_images=num_images)
    tasks = cutmix.plan(index, options)
    cutmix_floor(index, tasks[: len(index.files)], options.quality)  # warm the page cache
    floor = _median(lambda: cutmix_floor(index, tasks, options.quality), repeats)
    one = _median(lambda: cutmix_run(index, options, 1), repeats)
    two = _median(lambda: cutmix_run(index, options, 2), repeats)
    return {
        "outputs": num_images,
        "floor_s": floor,
        "one_s": one,
        "two_s": two,
        "floor_per_s": num_images / floor,
        "one_per_s": num_images / one,
        "two_per_s": num_images / two,
        "ratio_one": one / floor,
        "speedup_two": one / two,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_src = SHARED / "hymenoptera_val"
    if not default_src.is_dir():
        default_src = REPO / "examples" / "folders"
    parser.add_argument("--src", type=Path, default=default_src)
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    r = bench_cutmix(args.src, args.num_images, args.repeats)
    n = r["outputs"]
    print(f"cutmix on {args.src} ({n} outputs, medians of {args.repeats})")
    print(f"  codec floor        {r['floor_per_s']:8.1f} outputs/s  ({r['floor_s']:.2f} s)")
    print(
        f"  cpgen, 1 worker    {r['one_per_s']:8.1f} outputs/s  ({r['one_s']:.2f} s)"
        f"  = {r['ratio_one']:.2f}x the floor"
    )
    print(
        f"  cpgen, 2 workers   {r['two_per_s']:8.1f} outputs/s  ({r['two_s']:.2f} s)"
        f"  = {r['speedup_two']:.2f}x speed-up over 1 worker"
    )


if __name__ == "__main__":
    main()
