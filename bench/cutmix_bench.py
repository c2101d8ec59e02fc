"""cutmix throughput against its codec floor.

The floor is a plain single-process OpenCV loop over the same plan: read and decode each
output's base and patch (EXIF orientation applied, as cpgen does), resize the patch to the base's
size with the same interpolation rule (with ``--size``, the base to that size first), and encode
one JPEG at the same quality. cpgen's ratio to it is the overhead of everything else (planning,
drawing boxes, the copy, labels, workers), less what its workers' kept decodes save.

    python -m bench.cutmix_bench [--src DIR] [--num-images N] [--repeats R] [--size HxW]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from bench.common import interleaved_medians, report, scratch
from cpgen import cutmix
from cpgen.datasets import folders

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def cutmix_floor(
    index: folders.FolderIndex,
    tasks: list[cutmix.CutMixTask],
    quality: int,
    size: tuple[int, int] | None = None,
) -> float:
    """Seconds for the plain loop: decode base and patch, resize the base to ``size`` (when
    given) and the patch to the base, encode one JPEG."""
    cv2.setNumThreads(1)
    paths = [index.root / rel for rel in index.files]
    start = time.perf_counter()
    for task in tasks:
        base = cv2.imdecode(np.fromfile(paths[task.base], np.uint8), cv2.IMREAD_COLOR)
        patch = cv2.imdecode(np.fromfile(paths[task.patch], np.uint8), cv2.IMREAD_COLOR)
        if size is not None:
            base = _resized(base, *size)
        patch = _resized(patch, *base.shape[:2])
        cv2.imencode(".jpg", base, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return time.perf_counter() - start


def _resized(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """cpgen's interpolation rule: INTER_AREA when shrinking both sides, else INTER_LINEAR."""
    ih, iw = image.shape[:2]
    if (ih, iw) == (h, w):
        return image
    interpolation = cv2.INTER_AREA if h <= ih and w <= iw else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interpolation)


def cutmix_run(index: folders.FolderIndex, options: cutmix.CutMixOptions, workers: int) -> float:
    """Seconds for a whole cpgen cutmix run (plan, workers, merge) into a temporary folder."""
    out = scratch("cutmix-") / "out"
    start = time.perf_counter()
    cutmix.run(index, out, options, cutmix.RunOptions(workers=workers))
    return time.perf_counter() - start


def bench_cutmix(
    src: Path, num_images: int, repeats: int = 3, size: tuple[int, int] | None = None
) -> dict[str, float]:
    """Medians of ``repeats`` interleaved rounds: the floor and cpgen with 1 and 2 workers
    (outputs at ``size``, ``--size``, when given).

    Keys: ``outputs``, ``floor_s``, ``one_s``, ``two_s`` (seconds), ``speedup`` (the median of
    the rounds' one over two). Prints nothing.
    """
    index = folders.load(src)
    options = cutmix.CutMixOptions(num_images=num_images, size=size)
    tasks = cutmix.plan(index, options)
    cutmix_floor(index, tasks[: len(index.files)], options.quality)  # warm the page cache
    medians = interleaved_medians(
        {
            "floor_s": lambda: cutmix_floor(index, tasks, options.quality, size),
            "one_s": lambda: cutmix_run(index, options, 1),
            "two_s": lambda: cutmix_run(index, options, 2),
        },
        repeats,
    )
    return {"outputs": num_images, **medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_src = SHARED / "hymenoptera_val"
    if not default_src.is_dir():
        default_src = REPO / "examples" / "folders"
    parser.add_argument("--src", type=Path, default=default_src)
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", help="HxW, e.g. 224x224: outputs at that size (--size)")
    args = parser.parse_args()
    size = cutmix.parse_size(args.size) if args.size else None
    name = f"cutmix --size {args.size}" if size else "cutmix"
    report(name, args.src, bench_cutmix(args.src, args.num_images, args.repeats, size))


if __name__ == "__main__":
    main()
