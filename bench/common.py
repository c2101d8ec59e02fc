"""What both benchmarks share: interleaved medians and the printed report."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

from cpgen.runner import setup_worker


def interleaved_medians(measures: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Run each measure once per round, ``repeats`` rounds, and keep each one's median.

    Interleaving lets drift on a shared machine hit every measure alike. The measuring process
    gets the same setup as a cpgen worker (single-threaded OpenCV, heap thresholds), so the
    codec floor is not handicapped.
    """
    setup_worker()
    runs: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            runs[name].append(measure())
    return {name: statistics.median(values) for name, values in runs.items()}


def report(name: str, src: Path, r: dict[str, float]) -> None:
    n = r["outputs"]
    print(f"{name} on {src} ({n} outputs, medians)")
    print(f"  codec floor        {n / r['floor_s']:8.1f} outputs/s  ({r['floor_s']:.2f} s)")
    print(
        f"  cpgen, 1 worker    {n / r['one_s']:8.1f} outputs/s  ({r['one_s']:.2f} s)"
        f"  = {r['one_s'] / r['floor_s']:.2f}x the floor"
    )
    print(
        f"  cpgen, 2 workers   {n / r['two_s']:8.1f} outputs/s  ({r['two_s']:.2f} s)"
        f"  = {r['one_s'] / r['two_s']:.2f}x speed-up over 1 worker"
    )
