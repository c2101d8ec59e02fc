"""`make bench`: copy-paste (and cutmix) throughput against the codec floor, in one run.

The floor is what a plain OpenCV loop takes to read and decode the same target and source
images and encode the same number of output JPEGs; cpgen's ratio to it is the overhead of
everything else (planning, pasting, masks, JSON, workers). Figures are medians of repeats.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from bench.common import (
    free_scratch,
    interleaved_medians,
    page_cache_write_s,
    report,
    scratch,
    settled_file_creation_ms,
    use_scratch,
)
from bench.floor_processes import floor_processes, write_pairs
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
    out = scratch("copypaste-") / "out"
    start = time.perf_counter()
    copypaste.run(index, out, options, copypaste.RunOptions(workers=workers))
    return time.perf_counter() - start


def whole_process(src: Path, num_images: int, workers: int, defaults: bool = False) -> float:
    """Wall seconds of the console script as a user runs it: interpreter start, imports,
    reading the annotations, starting the workers, the run and the exit. ``defaults``: with
    every option at its default (one output per image, the originals hard-linked), as issue 9
    measured its two-worker speed-up; else as the floor is compared (``--originals none``)."""
    from bench.big_annotations import cpgen_command

    out = scratch("copypaste-cli-") / "out"
    command = cpgen_command(src, out, num_images, workers)
    if defaults:
        command = [command[0], "copypaste", "--src", str(src), "--out", str(out)]
        command += ["-j", str(workers), "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(command)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 3):  # 3: finished, some items skipped
        sys.exit(f"cpgen copypaste failed ({done.returncode})")
    return seconds


def bench_copypaste(
    src: Path, num_images: int, repeats: int, gaussian: bool = True, whole: bool = False
) -> dict[str, float]:
    """Medians of ``repeats`` interleaved rounds: the floor and cpgen with 1 and 2 workers
    (and ``--blend gaussian`` with 1 worker when ``gaussian``; the whole console script with 1
    and 2 workers when ``whole``, with ``--originals none`` and with every option at its
    default). cpgen runs in this process, where the worker pool stays up
    between rounds: these figures leave out what a fresh process pays once."""
    index = coco.load(coco.find_layout(src))
    options = copypaste.CopyPasteOptions(num_images=num_images, originals="none")
    tasks = copypaste.plan(index, options)
    copypaste_floor(index, tasks[: len(index.images)], options.quality)  # warm the page cache
    measures = {
        "floor_s": lambda: copypaste_floor(index, tasks, options.quality),
        "one_s": lambda: copypaste_run(index, options, 1),
        "two_s": lambda: copypaste_run(index, options, 2),
    }
    if gaussian:
        blended = dataclasses.replace(options, blend="gaussian")
        measures["gaussian_s"] = lambda: copypaste_run(index, blended, 1)
    if whole:
        quality, root = options.quality, index.files.images
        paths = [str(root / r["file_name"]) for r in index.images]
        pairs = write_pairs(
            scratch("floor-pairs-") / "pairs.json",
            [(paths[t.target], paths[t.source]) for t in tasks],
        )
        floor_out = lambda: scratch("floor-") / "out"  # noqa: E731
        measures["floor_proc_one_s"] = lambda: floor_processes(pairs, floor_out(), 1, quality)
        measures["floor_proc_two_s"] = lambda: floor_processes(pairs, floor_out(), 2, quality)
        measures["cli_one_s"] = lambda: whole_process(src, num_images, 1)
        measures["cli_two_s"] = lambda: whole_process(src, num_images, 2)
        measures["cli_default_one_s"] = lambda: whole_process(src, num_images, 1, defaults=True)
        measures["cli_default_two_s"] = lambda: whole_process(src, num_images, 2, defaults=True)
    return {"outputs": num_images, **interleaved_medians(measures, repeats)}


def bench_each_once(copies: int, repeats: int) -> dict[str, float]:
    """Each image used about once: ``copies`` x the sample hard-linked under new names (25:
    2,000 distinct images), one output per image (``bench.big_annotations.build``)."""
    from bench.big_annotations import SAMPLE, build

    if not SAMPLE.is_dir():
        return {}
    work = scratch("once-")
    src = build(work / "once", copies)
    return bench_copypaste(src, copies * 80, repeats, gaussian=False, whole=True)


def bench_dense(count: int, repeats: int) -> dict[str, float]:
    """Dense high-resolution images: ``count`` distinct 1024x1024 tiles of about 39 polygons
    (``bench.dense``: 2x2 mosaics of the sample), one output per tile."""
    from bench.big_annotations import SAMPLE
    from bench.dense import build

    if not SAMPLE.is_dir():
        return {}
    work = scratch("dense-")
    src = build(work / "dense", count)
    return bench_copypaste(src, count, repeats, gaussian=False)


def copypaste_cpu(index: coco.CocoIndex, options) -> float:
    """CPU seconds of one run in this process (1 thread): steadier than wall time on a busy VM."""
    out = scratch("copypaste-") / "out"
    start = time.process_time()
    copypaste.run(index, out, options, copypaste.RunOptions(workers=1, backend="threading"))
    return time.process_time() - start


def bench_options(src: Path, num_images: int, repeats: int) -> dict[str, float]:
    """CPU seconds of a 1-worker run, plain and with each dataset option (interleaved medians)."""
    index = coco.load(coco.find_layout(src))
    plain = copypaste.CopyPasteOptions(num_images=num_images, originals="none")
    variants = {"plain": plain}
    variants["--rotate 20"] = dataclasses.replace(plain, rotate=20.0)
    variants["--paste-by box"] = dataclasses.replace(plain, paste_by="box")
    variants["--balance category"] = dataclasses.replace(plain, balance="category")
    variants["--categories person,car"] = dataclasses.replace(plain, categories=("person", "car"))
    photos = SHARED / "hymenoptera_val"
    if photos.is_dir():
        variants["--backgrounds (hymenoptera)"] = dataclasses.replace(
            plain, backgrounds=str(photos)
        )
    pool = SHARED / "labelme_voc2011_coco3"
    if pool.is_dir():
        variants["--paste-from (labelme VOC)"] = dataclasses.replace(plain, paste_from=str(pool))
    return interleaved_medians(
        {name: (lambda o=o: copypaste_cpu(index, o)) for name, o in variants.items()}, repeats
    )


def bench_big_file(copies: int, repeats: int) -> dict[str, float]:
    """A COCO file of ``copies`` x the sample (``bench.big_annotations``): the median seconds
    and peak MiB of ``json.load`` alone (the floor: parsing the file) and of a 200-output run."""
    from bench.big_annotations import SAMPLE, build, cpgen_command, measure

    if not SAMPLE.is_dir():
        return {}
    work = scratch("big-")
    src = build(work / "big", copies)
    load = f"import json; json.load(open({str(src / 'annotations.json')!r}, 'rb'))"
    peaks: dict[str, float] = {}

    def timed(name: str, command: list[str]) -> float:
        seconds, mib = measure(command)
        peaks[name] = max(peaks.get(name, 0.0), mib)
        return seconds

    medians = interleaved_medians(
        {
            "parse_s": lambda: timed("parse", [sys.executable, "-c", load]),
            "run_s": lambda: timed("run", cpgen_command(src, scratch("big-out-") / "out", 200)),
        },
        repeats,
    )
    size = (src / "annotations.json").stat().st_size / 2**20
    return {**medians, "parse_mib": peaks["parse"], "run_mib": peaks["run"], "mib": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-images", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--options", action="store_true", help="Only the cost of each copypaste dataset option."
    )
    parser.add_argument(
        "--big-copies", type=int, default=625, help="copies of the sample in the big-file case"
    )
    parser.add_argument(
        "--many", type=int, default=2000, help="outputs of the small-set-multiplied case"
    )
    parser.add_argument(
        "--once-copies", type=int, default=25, help="copies of the sample, each image used once"
    )
    parser.add_argument(
        "--dense", type=int, default=600, help="1024x1024 tiles in the dense case (0: skip)"
    )
    parser.add_argument(
        "--only",
        choices=("once", "dense"),
        help="run only this case (the each-image-once or the dense one)",
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        help="folder to write outputs and built cases under (default: the temp folder)",
    )
    args = parser.parse_args()
    coco_src = SHARED / "coco_val2017_tiny80"
    if not coco_src.is_dir():
        coco_src = REPO / "examples" / "coco"
        print(f"(../shared/data absent: using {coco_src})", file=sys.stderr)
    if args.options:
        seconds = bench_options(coco_src, args.num_images, args.repeats)
        print(f"copypaste options on {coco_src} ({args.num_images} outputs, 1 worker, CPU time)")
        for name, value in seconds.items():
            print(
                f"  {name:28s} {value / args.num_images * 1000:6.2f} ms/output"
                f"  = {value / seconds['plain']:.3f}x plain"
            )
        return
    use_scratch(args.scratch)
    print(
        "(creating a new 100 KB file where the bench writes:"
        f" {settled_file_creation_ms():.3f} ms of CPU; the floor writes nothing)"
    )
    fresh, reused = page_cache_write_s()
    print(
        f"(writing 128 MB of new files there: {fresh:.2f} s of kernel time into memory not used"
        f" lately, {reused:.2f} s into pages just freed)"
    )
    if args.only:
        cases = {"once": lambda: _report_once(args, coco_src), "dense": lambda: _report_dense(args)}
        cases[args.only]()
        return
    result = bench_copypaste(coco_src, args.num_images, args.repeats)
    report("copypaste", coco_src, result)
    print(
        f"  --blend gaussian, 1 worker {args.num_images / result['gaussian_s']:8.1f} outputs/s"
        f"  = {result['gaussian_s'] / result['floor_s']:.2f}x the floor"
    )
    free_scratch()  # each case writes into the memory the one before freed (``free_scratch``)
    many = bench_copypaste(coco_src, args.many, args.repeats, gaussian=False)
    report(f"copypaste, a small set multiplied ({args.many} outputs)", coco_src, many)
    free_scratch()
    _report_once(args, coco_src)
    free_scratch()
    _report_dense(args)
    free_scratch()
    big = bench_big_file(args.big_copies, args.repeats)
    if big:
        print(
            f"big annotation file ({args.big_copies} copies of the sample, {big['mib']:.0f} MiB;"
            " 200 outputs, -j 2, --originals none)"
        )
        print(f"  json.load alone    {big['parse_s']:6.1f} s  {big['parse_mib']:6.0f} MiB peak")
        print(
            f"  cpgen copypaste    {big['run_s']:6.1f} s  {big['run_mib']:6.0f} MiB peak"
            f"  = {big['run_s'] / big['parse_s']:.2f}x json.load (issue 9: <= 15 s where json.load"
            " takes 9 s, i.e. <= 1.67x)"
        )
    try:
        from bench.cutmix_bench import bench_cutmix
    except ImportError:
        return
    folder_src = SHARED / "hymenoptera_val"
    if not folder_src.is_dir():
        folder_src = REPO / "examples" / "folders"
    free_scratch()
    report("cutmix", folder_src, bench_cutmix(folder_src, args.num_images, args.repeats))
    free_scratch()
    at_224 = bench_cutmix(folder_src, args.num_images, args.repeats, (224, 224))
    report("cutmix --size 224x224", folder_src, at_224)


def _report_once(args: argparse.Namespace, coco_src: Path) -> None:
    once = bench_each_once(args.once_copies, args.repeats)
    if once:
        report(
            f"copypaste, each image used once ({args.once_copies} x the sample hard-linked)",
            coco_src,
            once,
        )


def _report_dense(args: argparse.Namespace) -> None:
    dense = bench_dense(args.dense, args.repeats) if args.dense > 0 else {}
    if dense:
        report("copypaste, dense 1024x1024 tiles (bench.dense)", Path("(built)"), dense)


if __name__ == "__main__":
    main()
