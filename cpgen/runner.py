"""Run shard jobs on cpgen's forked pool (``fork_pool``) or through joblib (any other backend),
with a progress bar on stderr."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from cpgen import fork_pool
from cpgen.errors import Terminated, UsageError, WorkerLost

R = TypeVar("R")
K = TypeVar("K")


class Lazy(Sequence[R]):
    """``build(key)`` for each of ``keys``, made only when asked for: payloads that are not
    all held in memory at once (``run_jobs`` takes them one by one as workers free up)."""

    def __init__(self, build: Callable[[K], R], keys: Sequence[K]) -> None:
        self.build, self.keys = build, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self.build(k) for k in self.keys[i]]
        return self.build(self.keys[i])


@dataclass(frozen=True)
class RunOptions:
    """How a run executes (never what it writes): workers, backend, OUT handling, progress."""

    workers: int = 1
    backend: str = "fork"
    overwrite: bool = False
    progress: bool = False
    resume: bool = False

    def map_jobs(self, desc: str, unit: str = "img") -> Callable[..., list[Any]] | None:
        """``map_jobs(job, payloads, total)`` on these workers (None for one worker): for a
        step before the run proper, e.g. checking a large annotation file."""
        if self.workers <= 1:
            return None

        def run(job: Callable[[Any], Any], payloads: Sequence[Any], total: int) -> list[Any]:
            return run_jobs(
                job,
                payloads,
                workers=self.workers,
                backend=self.backend,
                progress=self.progress,
                desc=desc,
                unit=unit,
                on_result=lambda r: r.done,
                total=total,
            )

        return run


_worker_ready = False

#: Signals handled like Ctrl-C: the run stops its workers and exits 128 + the signal number.
TERMINATION_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextmanager
def termination_signals() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise ``Terminated`` in the main thread, as SIGINT
    raises KeyboardInterrupt, so the run unwinds: workers stopped, one message, exit 128 + N.

    Slurm, Kubernetes, systemd and ``timeout`` stop a job with SIGTERM; by default Python dies
    of it at once and leaves its worker processes running.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    _reset_signals_in_forked_children()
    previous = {signum: signal.signal(signum, handler) for signum in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def thread_pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool that, when left by an exception (Ctrl-C, SIGTERM, a full disk), drops the
    work not yet started and does not wait for its threads: an exception raised by a signal
    handler may leave a future's lock taken, and joining would then hang. The CLI ends such a
    process without joining them (``cli._exit``)."""
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


_fork_hook_registered = False


def _reset_signals_in_forked_children() -> None:
    """A forked worker (``--backend multiprocessing``) must die of SIGTERM, as its pool expects
    when it terminates it, not raise ``Terminated`` from the handler it inherited."""
    global _fork_hook_registered
    if _fork_hook_registered or not hasattr(os, "register_at_fork"):
        return

    def reset() -> None:
        for signum in TERMINATION_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)

    os.register_at_fork(after_in_child=reset)
    _fork_hook_registered = True


def _quiet_dask_teardown() -> None:
    """Drop one known complaint at exit: a dask client whose event loop closed first prints
    "Exception ignored in Client.__del__ ... IOLoop is closed" from a worker being shut down
    (a traceback on stderr, though nothing failed). Any other unraisable error still prints."""
    default = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        owner = getattr(unraisable.object, "__qualname__", "")
        if owner == "Client.__del__" and "IOLoop is closed" in str(unraisable.exc_value):
            return
        default(unraisable)

    sys.unraisablehook = hook


def stop_workers() -> None:
    """Kill the worker processes now (the forked pool's and loky's; after a command, an error or
    a signal); a later run starts new ones. joblib already aborts its pool on an exception;
    this also covers an exception that reached us between two results, and the executor it
    keeps for reuse.

    A warm-up still handing its tasks to the pool (``start_workers``) is let finish first, for
    a few seconds at most: killing the pool under a submission makes loky's manager thread
    fail with a traceback on stderr."""
    global _warming
    warming, _warming = _warming, None
    if warming is not None:
        warming.join(WARMUP_GRACE_S)
    fork_pool.stop()
    reusable = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(reusable, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=False, kill_workers=True)
    close_dask_client()


def close_dask_client() -> None:
    """Close the dask client (and the local cluster it started), once; at exit, or at once
    after an error or a signal."""
    global _dask_client
    client, _dask_client = _dask_client, None
    if client is not None:
        with contextlib.suppress(Exception):  # already closing, or its loop is gone
            client.close(timeout=10)


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
    if "distributed" in sys.modules:
        _quiet_dask_teardown()
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
    """Refuse a backend that is neither cpgen's ``fork`` nor one joblib knows and can load
    (before any work). joblib is imported only for another backend than ``fork``."""
    if backend == fork_pool.NAME:
        return
    from joblib.parallel import BACKENDS, EXTERNAL_BACKENDS

    if backend not in BACKENDS and backend not in EXTERNAL_BACKENDS:
        known = ", ".join(sorted({fork_pool.NAME, *BACKENDS, *EXTERNAL_BACKENDS}))
        raise UsageError(f"unknown --backend {backend!r}", hint=f"known: {known}")
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
            dashboard_address=":0",  # any free port: never a clash with another cluster
            silence_logs=logging.ERROR,
        )
    atexit.register(close_dask_client)
    _quiet_dask_teardown()


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
    unit: str = "img",
    reads: Callable[[int], Iterable[Hashable]] | None = None,
    meanwhile: Callable[[], None] | None = None,
) -> list[R]:
    """Run ``job`` on every payload; results come back in payload order.

    ``on_result`` returns how many items a finished job did, for the progress bar, which counts
    to ``total`` from ``initial`` (items done before, by a run being resumed). ``reads(i)``
    names what payload ``i`` reads (image keys): the ``fork`` backend gives a worker the
    payloads that read what it already read (``fork_pool.run``); other backends take payloads
    in order. ``meanwhile()`` runs here once the jobs started (the workers' first ones sent,
    with the ``fork`` backend; joblib's start as results are asked for).

    The ``fork`` backend runs one worker's jobs here, and two or more on the pool
    ``fork_pool.start`` forks, without joblib; where it cannot fork, on loky's through joblib.
    """
    results: list[R | None] = [None] * len(payloads)
    if not payloads:
        return []
    forked = False
    if backend == fork_pool.NAME and workers > 1:  # forked here, else loky's through joblib
        forked = fork_pool.start(workers)
        backend = backend if forked else "loky"
    if backend == "dask":
        _ensure_dask_client(workers)
    # no bar at all when it is not shown: even a disabled one starts tqdm's monitor thread,
    # after which this process can no longer fork a pool
    bar = _bar(desc, total, initial, unit) if progress else None
    stream: Any = None
    try:
        if forked:
            stream = fork_pool.run(job, payloads, reads)
        elif backend == fork_pool.NAME:  # one worker: this process
            stream = _here(job, payloads)
        else:
            stream = _joblib(job, payloads, workers, backend)
        if meanwhile is not None:
            meanwhile()
        for i, result in stream:
            results[i] = result
            if bar is not None:
                bar.update(on_result(result) if on_result else 1)
    except BaseException:
        # an error in a job, a full disk, Ctrl-C or SIGTERM: no worker may outlive the run
        if backend == "dask":  # its scheduler logs the tasks dropped below as errors
            import logging

            logging.getLogger("distributed").setLevel(logging.CRITICAL)
        if stream is not None:
            stream.close()  # joblib aborts the remaining tasks and its pool
        stop_workers()
        lost = sys.exc_info()[1]
        if isinstance(lost, BrokenExecutor):  # loky's TerminatedWorkerError is one too
            raise WorkerLost(
                "a worker process died before it finished (killed by a signal, or by the "
                "kernel when memory ran out)",
                hint="if memory ran out, use fewer --workers or a smaller --cache-mb",
            ) from None
        raise
    finally:
        if bar is not None:
            bar.close()
    return results  # type: ignore[return-value]


def _bar(desc: str, total: int | None, initial: int, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(
        desc=desc, total=total, initial=initial, unit=unit, file=sys.stderr, dynamic_ncols=True
    )


def _here(job: Callable[[Any], R], payloads: Sequence[Any]) -> Iterator[tuple[int, R]]:
    """The jobs in this process, in order (as joblib's sequential backend runs them)."""
    for i in range(len(payloads)):
        yield _indexed(job, i, payloads[i])


def _joblib(
    job: Callable[[Any], R], payloads: Sequence[Any], workers: int, backend: str
) -> Iterator[tuple[int, R]]:
    from joblib import Parallel, delayed, parallel_config

    with parallel_config(backend=backend, n_jobs=workers):
        yield from Parallel(return_as=_return_as(backend))(
            delayed(_indexed)(job, i, p) for i, p in enumerate(payloads)
        )


class Warmup:
    """Worker processes being started in the background (``start_workers``)."""

    def __init__(self, thread: threading.Thread | None, pids: list[int]) -> None:
        self._thread, self._pids = thread, pids

    def wait(self, timeout: float | None = None) -> list[int]:
        """The worker pids that ran a warm-up task, once all ran (empty if none started)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return sorted(set(self._pids))


def start_workers(workers: int, backend: str, modules: Sequence[str]) -> Warmup:
    """Start the worker processes now, with ``modules`` imported in each, while this process
    goes on to read the input; the first ``run_jobs`` on the same ``workers`` and ``backend``
    uses them. Nothing for one worker or a backend other than these two:

    - ``fork``: the workers are forked here and now (``fork_pool.start``), ready at once; where
      forking is unsafe, loky's pool is started as below, the one ``run_jobs`` then falls back to.
    - ``loky``: in a background thread. A loky worker takes about 0.45 s to start and import
      joblib, numpy and OpenCV. loky keeps one pool and reuses it while it is asked for the same
      configuration, which this sets up as ``run_jobs`` does. A pool that fails to start here is
      left to ``run_jobs``, which reports it.
    """
    pids: list[int] = []
    if workers <= 1 or backend not in ("loky", fork_pool.NAME):
        return Warmup(None, pids)
    if backend == fork_pool.NAME:
        if fork_pool.start(workers, modules):
            return Warmup(None, fork_pool.pids())
        backend = "loky"

    def warm() -> None:
        from joblib import Parallel, delayed, parallel_config

        try:
            with parallel_config(backend=backend, n_jobs=workers):  # as run_jobs configures it
                pids.extend(Parallel()(delayed(_warm)(modules) for _ in range(workers)))
        except BaseException:  # stopped by a signal or an error: run_jobs reports it
            pass

    global _warming
    thread = threading.Thread(target=warm, name="cpgen-start-workers", daemon=True)
    thread.start()
    _warming = thread
    return Warmup(thread, pids)


#: The warm-up thread of ``start_workers`` not yet waited for by ``stop_workers``.
_warming: threading.Thread | None = None

#: How long ``stop_workers`` lets a warm-up finish before it kills the pool anyway (seconds).
WARMUP_GRACE_S = 10.0


def _warm(modules: Sequence[str]) -> int:
    import importlib

    setup_worker()
    for name in modules:
        importlib.import_module(name)
    return os.getpid()


def _return_as(backend: str) -> str:
    """Results as they finish, where the backend can; joblib's multiprocessing pool returns
    them all at the end (the progress bar then moves once)."""
    return "list" if backend == "multiprocessing" else "generator_unordered"


def _indexed(job: Callable[[Any], R], i: int, payload: Any) -> tuple[int, R]:
    setup_worker()
    return i, job(payload)
