"""What both benchmarks share: interleaved medians and the printed report."""

from __future__ import annotations

import atexit
import math
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cpgen.runner import setup_worker

_SCRATCH: list[Path] = []


def scratch(prefix: str) -> Path:
    """A new empty folder (a run's output, a case's data), deleted when its case ends
    (``free_scratch``) or the bench does.

    Not sooner: on ext4 without a journal (this project's VM), the inode allocator checks and
    skips recently freed inodes, so for a while after thousands of files are deleted (minutes
    after tens of thousands) each new file costs 0.2-0.8 ms of kernel CPU, against 0.02-0.04 ms
    otherwise.
    Deleting one round's output before the next would bill that to cpgen (the floor writes
    nothing). ``file_creation_ms`` shows what creating a file costs where the bench writes.
    """
    if not _SCRATCH:
        use_scratch(None)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_SCRATCH[0]))


def free_scratch() -> float:
    """Delete every folder ``scratch`` made so far, between two cases, then wait until creating
    a file is cheap again (``settled_file_creation_ms``, returned).

    So the next case writes its outputs into the memory these freed. Kept, they would make it
    write into memory not used lately, which costs 10-20x more kernel time on a VM that gives
    free memory back to its host (``page_cache_write_s``), and more with two workers than
    with one: the dense case after the others, in one bench, read 1.63-1.76x with two workers
    (0.8-1.25 s of kernel time a worker) with the earlier cases' outputs kept, and 1.89x
    (0.1-0.13 s) with them deleted before it.
    """
    if _SCRATCH:
        for entry in list(_SCRATCH[0].iterdir()):
            shutil.rmtree(entry, ignore_errors=True)
    if hasattr(os, "sync"):
        os.sync()
    return settled_file_creation_ms()


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


def page_cache_write_s(total_mb: int = 128) -> tuple[float, float]:
    """Kernel seconds to write ``total_mb`` MB of new 2 MB files where the bench writes: first
    into memory the machine has not used lately, then, once those files are deleted, into the
    pages they freed.

    On a VM that gives free memory back to its host (this project's: free page reporting), the
    first cost 10-20x the second, presumably because the host backs each page again at its
    first use; two processes writing at once were only partly faster. Where a run writes into
    new pages, that cost is in cpgen's figures, more in two workers' than in one's: issue 9's
    dense case, with the bench's earlier outputs kept, spent 0.8-1.25 s of kernel time a
    worker, against 0.1-0.13 s once they were freed before it (``free_scratch``).
    """
    data = os.urandom(2 << 20)
    timings = []
    for _ in range(2):
        folder = scratch("pages-")
        start = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        for i in range(total_mb // 2):
            (folder / f"{i}.bin").write_bytes(data)
        timings.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - start)
        shutil.rmtree(folder)
    return timings[0], timings[1]


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
    cpu: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            if hasattr(os, "sync"):
                os.sync()
            before = cpu_seconds()
            runs[name].append(measure())
            cpu[name].append(cpu_spent(before, cpu_seconds()))
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {**medians, **_speedups(runs), **_speedups(cpu, "cpu_ratio", invert=True)}


def cpu_seconds() -> tuple[float, dict[int, float]]:
    """CPU seconds (user and kernel) used so far by this process and the children it waited for
    (whole-process runs, the floor's processes), and by each of the fork pool's workers, read
    from ``/proc``: NaN where a worker's cannot be read (no ``/proc``), so no ratio is made."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers = {}
    from cpgen import fork_pool

    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in fork_pool.pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan, workers
        workers[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime, workers


def cpu_spent(
    before: tuple[float, dict[int, float]], after: tuple[float, dict[int, float]]
) -> float:
    """CPU seconds between two ``cpu_seconds``: NaN where a worker ended between them (its whole
    life's CPU then moves to the waited children's)."""
    if before[1].keys() - after[1].keys():
        return math.nan
    return after[0] - before[0] + sum(t - before[1].get(p, 0.0) for p, t in after[1].items())


def _speedups(
    runs: dict[str, list[float]], suffix: str = "speedup", invert: bool = False
) -> dict[str, float]:
    """For each measure ``X_one_s`` with an ``X_two_s`` beside it, ``X_speedup``: the median
    of each round's one-worker over two-worker time. The two run back to back, so they share
    the VM's drift, which moves a single run by 10-15% here; the ratio of the two medians takes
    them from different rounds (three rounds of each image once read 1.76-2.0x that way).
    ``invert``: two over one instead, named ``X_`` + ``suffix`` (the CPU time ratio)."""
    found = {}
    for name in runs:
        if name.endswith("one_s") and name[: -len("one_s")] + "two_s" in runs:
            stem = name[: -len("one_s")]
            pairs = zip(runs[name], runs[stem + "two_s"], strict=True)
            ratios = [b / a if invert else a / b for a, b in pairs]
            ratios = [x for x in ratios if not math.isnan(x)]
            found[stem + suffix] = statistics.median(ratios) if ratios else math.nan
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
        f"  = {r['speedup']:.2f}x speed-up over 1 worker{_cpu(r, '')}"
    )
    if "floor_proc_two_s" in r:
        one, two = r["floor_proc_one_s"], r["floor_proc_two_s"]
        print(
            f"  the floor as whole processes, writing its JPEGs: 1 process {one:.2f} s,"
            f" 2 processes {two:.2f} s = {r['floor_proc_speedup']:.2f}x (two processes' best on"
            f" this machine){_cpu(r, 'floor_proc_')}"
        )
    if "cli_two_s" in r:
        print(
            f"  whole process (the console script): 1 worker {r['cli_one_s']:.2f} s,"
            f" 2 workers {r['cli_two_s']:.2f} s = {r['cli_speedup']:.2f}x speed-up{_cpu(r, 'cli_')}"
        )
    if "cli_default_two_s" in r:
        one, two = r["cli_default_one_s"], r["cli_default_two_s"]
        print(
            f"  whole process, every option at its default (originals linked, as issue 9"
            f" measured): 1 worker {one:.2f} s, 2 workers {two:.2f} s ="
            f" {r['cli_default_speedup']:.2f}x speed-up{_cpu(r, 'cli_default_')}"
        )


def _cpu(r: dict[str, float], stem: str) -> str:
    """How much CPU time two used against one, for a speed-up's line. Over 1, the same work cost
    more CPU with both of the machine's CPUs busy, and the speed-up is at most 2 over it. On
    this project's VM that is mostly kernel time writing into memory the host took back
    (``page_cache_write_s``), and Python-level code waiting on memory the other CPU and the
    host's other guests share (beside a process copying memory, cpgen's Python functions ran
    up to 2x slower, the codec 7-13%)."""
    ratio = r.get(stem + "cpu_ratio", math.nan)
    return "" if math.isnan(ratio) else f"; CPU time {ratio:.2f}x one's"
