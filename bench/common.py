"""What both benchmarks share: interleaved medians and the printed report."""

from __future__ import annotations

import atexit
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cpgen.runner import setup_worker

_SCRATCH: list[Path] = []


def scratch(prefix: str) -> Path:
    """A new empty folder (a run's output, a case's data), deleted only when the bench ends.

    Not before: on ext4 without a journal (this project's VM), the inode allocator checks and
    skips recently freed inodes, so for a while after thousands of files are deleted (minutes
    after tens of thousands) each new file costs 0.2-0.8 ms of kernel CPU, against 0.02-0.04 ms
    otherwise.
    Deleting one round's output before the next would bill that to cpgen (the floor writes
    nothing). ``file_creation_ms`` shows what creating a file costs where the bench writes.
    """
    if not _SCRATCH:
        use_scratch(None)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_SCRATCH[0]))


def use_scratch(parent: Path | None) -> None:
    """Write the bench's folders in a new folder under ``parent`` (default: the temp folder)."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    _SCRATCH[:] = [Path(tempfile.mkdtemp(prefix="cpgen-bench-", dir=parent))]
    atexit.register(shutil.rmtree, _SCRATCH[0], True)


def settled_file_creation_ms(limit_ms: float = 0.1, wait_s: float = 120.0) -> float:
    """``file_creation_ms`` once it is under ``limit_ms``, waiting up to ``wait_s`` seconds:
    files deleted just before the bench (an earlier bench, a test run) make new ones slow for
    a while on ext4 without a journal, and that cost would be billed to cpgen."""
    deadline = time.monotonic() + wait_s
    cost = file_creation_ms()
    while cost > limit_ms and time.monotonic() < deadline:
        time.sleep(15)
        cost = file_creation_ms()
    return cost


def file_creation_ms(count: int = 500) -> float:
    """CPU milliseconds (kernel time included) to create one new 100 KB file where the bench
    writes its outputs, the median of ``count``."""
    folder = scratch("files-")
    data = os.urandom(100_000)
    times = []
    for i in range(count):
        start = time.thread_time()
        fd = os.open(folder / f"{i:06d}.jpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        times.append(time.thread_time() - start)
        os.write(fd, data)
        os.close(fd)
    return statistics.median(times) * 1000


def interleaved_medians(measures: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Run each measure once per round, ``repeats`` rounds, and keep each one's median.

    Interleaving lets drift on a shared machine hit every measure alike. The measuring process
    gets the same setup as a cpgen worker (single-threaded OpenCV, heap thresholds), so the
    codec floor is not handicapped. Each measure starts with nothing of the ones before left to
    write back (``os.sync``, not timed): the kernel writes a run's outputs (200 MB for 2,000
    images) to disk up to 30 s after it, in whichever measure then runs, as a user's command is
    not billed for the one before it.
    """
    setup_worker()
    runs: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            if hasattr(os, "sync"):
                os.sync()
            runs[name].append(measure())
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {**medians, **_speedups(runs)}


def _speedups(runs: dict[str, list[float]]) -> dict[str, float]:
    """For each measure ``X_one_s`` with an ``X_two_s`` beside it, ``X_speedup``: the median
    of each round's one-worker over two-worker time. The two run back to back, so they share
    the VM's drift, which moves a single run by 10-15% here; the ratio of the two medians takes
    them from different rounds (three rounds of each image once read 1.76-2.0x that way)."""
    found = {}
    for name in runs:
        if name.endswith("one_s") and name[: -len("one_s")] + "two_s" in runs:
            stem = name[: -len("one_s")]
            ratios = [a / b for a, b in zip(runs[name], runs[stem + "two_s"], strict=True)]
            found[stem + "speedup"] = statistics.median(ratios)
    return found


def report(name: str, src: Path, r: dict[str, float]) -> None:
    """Print a case's figures: medians, and each speed-up as the median of its rounds' own
    (``_speedups``)."""
    n = r["outputs"]
    print(f"{name} on {src} ({n} outputs, medians; speed-ups: the median of the rounds')")
    print(f"  codec floor        {n / r['floor_s']:8.1f} outputs/s  ({r['floor_s']:.2f} s)")
    print(
        f"  cpgen, 1 worker    {n / r['one_s']:8.1f} outputs/s  ({r['one_s']:.2f} s)"
        f"  = {r['one_s'] / r['floor_s']:.2f}x the floor"
    )
    print(
        f"  cpgen, 2 workers   {n / r['two_s']:8.1f} outputs/s  ({r['two_s']:.2f} s)"
        f"  = {r['speedup']:.2f}x speed-up over 1 worker"
    )
    if "floor_proc_two_s" in r:
        one, two = r["floor_proc_one_s"], r["floor_proc_two_s"]
        print(
            f"  the floor as whole processes, writing its JPEGs: 1 process {one:.2f} s,"
            f" 2 processes {two:.2f} s = {r['floor_proc_speedup']:.2f}x (two processes' best on"
            " this machine)"
        )
    if "cli_two_s" in r:
        print(
            f"  whole process (the console script): 1 worker {r['cli_one_s']:.2f} s,"
            f" 2 workers {r['cli_two_s']:.2f} s = {r['cli_speedup']:.2f}x speed-up"
        )
    if "cli_default_two_s" in r:
        one, two = r["cli_default_one_s"], r["cli_default_two_s"]
        print(
            f"  whole process, every option at its default (originals linked, as issue 9"
            f" measured): 1 worker {one:.2f} s, 2 workers {two:.2f} s ="
            f" {r['cli_default_speedup']:.2f}x speed-up"
        )
