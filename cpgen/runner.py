"""Run shard jobs through joblib (any backend) with a progress bar on stderr."""

from __future__ import annotations

import atexit
import ctypes
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cpgen.errors import UsageError

R = TypeVar("R")


@dataclass(frozen=True)
class RunOptions:
    """How a run executes (never what it writes): workers, backend, OUT handling, progress."""

    workers: int = 1
    backend: str = "loky"
    overwrite: bool = False
    progress: bool = False
    resume: bool = False


_worker_ready = False


def setup_worker() -> None:
    """Once per worker process: single-threaded OpenCV, and keep image buffers in the heap.

    glibc hands multi-megabyte buffers back to the kernel after every image and faults them in
    again for the next one (measured +1.6 ms per 640x480 image); raising its mmap and trim
    thresholds stops that.
    """
    global _worker_ready
    if _worker_ready:
        return
    import cv2

    cv2.setNumThreads(1)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3
            libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
            libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)
        except OSError:
            pass
    _worker_ready = True


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_backend(backend: str) -> None:
    """Refuse a joblib backend that joblib does not know or cannot load (before any work)."""
    from joblib.parallel import BACKENDS, EXTERNAL_BACKENDS

    if backend not in BACKENDS and backend not in EXTERNAL_BACKENDS:
        known = ", ".join(sorted({*BACKENDS, *EXTERNAL_BACKENDS}))
        raise UsageError(f"unknown --backend {backend!r}", hint=f"joblib knows: {known}")
    if backend == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError(
                "--backend dask needs the 'distributed' package", hint='pip install "cpgen[dask]"'
            ) from None


_dask_client: Any = None


def _ensure_dask_client(workers: int) -> None:
    """joblib's dask backend runs on a ``distributed`` client: connect to the scheduler named
    by ``DASK_SCHEDULER_ADDRESS`` (dask's own variable), else start a local cluster of
    ``workers`` single-threaded processes. Once per process; closed at exit.

    Workers of a remote cluster need cpgen installed and the same paths to the images and OUT.
    """
    global _dask_client
    if _dask_client is not None:
        return
    import logging

    from distributed import Client

    address = os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        _dask_client = Client(address)
    else:
        _dask_client = Client(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    atexit.register(_dask_client.close)


def run_jobs(
    job: Callable[[Any], R],
    payloads: Sequence[Any],
    *,
    workers: int,
    backend: str,
    progress: bool,
    desc: str,
    on_result: Callable[[R], int] | None = None,
    total: int | None = None,
    initial: int = 0,
) -> list[R]:
    """Run ``job`` on every payload; results come back in payload order.

    ``on_result`` returns how many items a finished job did, for the progress bar, which counts
    to ``total`` from ``initial`` (items done before, by a run being resumed).
    """
    from joblib import Parallel, delayed, parallel_config
    from tqdm import tqdm

    results: list[R | None] = [None] * len(payloads)
    if not payloads:
        return []
    if backend == "dask":
        _ensure_dask_client(workers)
    bar = tqdm(
        desc=desc,
        total=total,
        initial=initial,
        unit="img",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        with parallel_config(backend=backend, n_jobs=workers):
            stream = Parallel(return_as="generator_unordered")(
                delayed(_indexed)(job, i, p) for i, p in enumerate(payloads)
            )
            for i, result in stream:
                results[i] = result
                bar.update(on_result(result) if on_result else 1)
    finally:
        bar.close()
    return results  # type: ignore[return-value]


def _indexed(job: Callable[[Any], R], i: int, payload: Any) -> tuple[int, R]:
    setup_worker()
    return i, job(payload)
