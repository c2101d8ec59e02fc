"""`cpgen copypaste --device`: outputs per second on a device against the CPU path, same job.

Builds the each-image-once input (``--copies`` x the shared COCO sample, hard-linked; 25: 2,000
distinct 640x480 images) and times whole console-script runs, interleaved, medians:

* the CPU path with ``-j`` each of ``--cpu-workers`` (default: 1, 2 and every core),
* ``--device DEVICE`` (default cuda when available, else cpu) with ``--device-workers`` threads
  and ``--batch-size``,

then prints outputs/s, which codec the device run used (its manifest), and whether its
``annotations.json`` is byte-identical to the CPU path's. For the GPU issue: run on the lent
machine, compare with the 2-core VM's CPU figure in the README.

    python -m bench.device_bench [--copies 25] [--device cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("cpgen")


def timed_run(src: Path, out: Path, args: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [str(SCRIPT), "copypaste", "--src", str(src), "--out", str(out), *args]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    from bench.big_annotations import SAMPLE, build

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=25)
    parser.add_argument("--device", default=None, help="cuda (when available) or cpu")
    parser.add_argument("--device-workers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cpu-workers", default=None, help="comma list (default 1,2,all)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not SAMPLE.is_dir():
        sys.exit(f"needs the shared COCO sample at {SAMPLE}")
    device = args.device
    if device is None:
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            sys.exit("needs torch (pip install '.[gpu]')")
    cores = os.cpu_count() or 1
    cpu_workers = sorted(
        {int(w) for w in args.cpu_workers.split(",")} if args.cpu_workers else {1, 2, cores}
    )
    work = Path(tempfile.mkdtemp(prefix="cpgen-bench-device-"))
    try:
        src = build(work / "src", args.copies)
        n = args.copies * 80
        common = ["--num-images", str(n), "--originals", "none", "--quiet"]
        runs = {f"cpu -j {w}": common + ["-j", str(w)] for w in cpu_workers}
        runs[f"--device {device} -j {args.device_workers}"] = common + [
            "-j",
            str(args.device_workers),
            "--device",
            device,
            "--batch-size",
            str(args.batch_size),
        ]
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for k, (name, run_args) in enumerate(runs.items()):
                times[name].append(timed_run(src, work / f"out{k}", run_args))
        print(f"copypaste, each image once: {n} outputs of 640x480, {cores} cores, medians")
        for name, values in times.items():
            seconds = statistics.median(values)
            print(f"  {name:28s} {n / seconds:8.1f} outputs/s  ({seconds:.2f} s)")
        device_out = work / f"out{len(runs) - 1}"
        manifest = json.loads((device_out / ".cpgen" / "manifest.json").read_text())
        same = (device_out / "annotations.json").read_bytes() == (
            work / "out0" / "annotations.json"
        ).read_bytes()
        print(f"  device pixels: {manifest.get('pixels')}; annotations.json identical: {same}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
