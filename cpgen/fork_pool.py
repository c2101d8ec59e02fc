"""The ``fork`` joblib backend, cpgen's default: worker processes forked from this one.

A loky worker is a new interpreter: it imports joblib, numpy, OpenCV and cpgen's shard code
before its first task (about 0.3 s of CPU each), and loky starts one more interpreter, its
resource tracker, that imports joblib and numpy too. On a two-core machine that start competes
with this process reading the input, and the first tasks wait for it (measured 0.2-0.3 s of a
7 s run). A forked worker is ready at once: it has this process's modules already loaded.

Forking is safe only where nothing else runs in the process at that instant (a lock held by
another thread stays held in the child), so ``start`` forks every worker at once, from the main
thread, while this process has no other thread (``single_threaded``); the CLI does it as soon as
OUT is accepted, before it reads the input. The pool is ``concurrent.futures``' own: it never
forks again, and a worker that dies (killed, out of memory) fails the run with an error instead
of hanging it. Each worker ignores Ctrl-C (this process stops the pool) and dies with this
process, however it dies (``PR_SET_PDEATHSIG``), so none is left running or holding a file.

Where forking is unsafe (another thread running, numpy's idle OpenBLAS threads included, which
the console script does not start; or not Linux: macOS's system libraries do not survive a
fork), the backend is loky's. joblib is imported only when the backend is registered or used.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

#: The backend's name for ``--backend`` and ``joblib.parallel_config``.
NAME = "fork"

#: The pool forked by ``start``: (workers, executor), or None.
_pool: tuple[int, Any] | None = None

_PR_SET_PDEATHSIG = 1


def single_threaded() -> bool:
    """Whether this process runs one thread only, native threads included (Linux counts them
    in ``/proc/self/task``); False where that cannot be told."""
    if threading.active_count() != 1 or threading.current_thread() is not threading.main_thread():
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def can_fork() -> bool:
    """Whether ``start`` may fork workers now: on Linux, from a process with one thread that is
    not itself a daemonic worker (of a multiprocessing pool, say: it may have no children)."""
    if not (sys.platform.startswith("linux") and hasattr(os, "fork") and single_threaded()):
        return False
    import multiprocessing

    return not multiprocessing.current_process().daemon


def start(workers: int, modules: Sequence[str] = ()) -> bool:
    """Fork ``workers`` worker processes now, with ``modules`` imported first (here, so that the
    workers have them). Returns whether a pool of that size is ready: False where forking is
    unsafe (``can_fork``), where the run then uses loky. A pool of another size is stopped."""
    global _pool
    if workers < 2:
        return False
    if _pool is not None:
        if _pool[0] == workers:
            return True
        stop()
    if not can_fork():
        return False
    for name in modules:
        importlib.import_module(name)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )
    _pool = (workers, executor)
    try:
        executor.submit(int)  # forks every worker now, before the pool starts its thread
    except OSError:  # no process to be had (EAGAIN, ENOMEM): loky's pool then says so
        stop()
        return False
    return True


def stop() -> None:
    """Kill the pool's workers now and forget the pool (after a run, an error or a signal)."""
    global _pool
    pool, _pool = _pool, None
    if pool is None:
        return
    executor = pool[1]
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        with contextlib.suppress(OSError, ValueError):  # already gone
            process.kill()
    executor.shutdown(wait=False, cancel_futures=True)


def pids() -> list[int]:
    """The pool's worker pids (empty without a pool)."""
    if _pool is None:
        return []
    return sorted(getattr(_pool[1], "_processes", None) or {})


def _init_worker(parent: int) -> None:
    """In each worker, once: die with the parent, leave Ctrl-C and OUT's lock to it, set up as
    any worker."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    output = sys.modules.get("cpgen.output")
    if output is not None:  # a pool forked after OUT was locked must not keep it locked
        output.forget_locks()
    from cpgen.runner import setup_worker

    setup_worker()


def register() -> None:
    """Make ``fork`` a joblib backend (once)."""
    from joblib.parallel import BACKENDS, register_parallel_backend

    if NAME not in BACKENDS:
        register_parallel_backend(NAME, _backend_class())


def _backend_class() -> type:
    from joblib._parallel_backends import (
        AutoBatchingMixin,
        FallbackToBackend,
        LokyBackend,
        ParallelBackendBase,
        SequentialBackend,
    )

    class ForkBackend(AutoBatchingMixin, ParallelBackendBase):
        """joblib's view of the pool ``start`` forked (loky's backend where there is none and
        none can be forked now)."""

        supports_retrieve_callback = True

        def effective_n_jobs(self, n_jobs: int | None) -> int:
            if n_jobs is None:
                return 1
            if n_jobs < 0:
                return max((os.cpu_count() or 1) + 1 + n_jobs, 1)
            return n_jobs

        def configure(self, n_jobs: int = 1, parallel: Any = None, **kwargs: Any) -> int:
            n_jobs = self.effective_n_jobs(n_jobs)
            if n_jobs == 1:
                raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
            if not start(n_jobs):
                raise FallbackToBackend(LokyBackend(nesting_level=self.nesting_level))
            assert _pool is not None
            self._executor = _pool[1]
            self.parallel = parallel
            return n_jobs

        def submit(self, func: Any, callback: Any = None) -> Any:
            future = self._executor.submit(func)
            if callback is not None:
                future.add_done_callback(callback)
            return future

        apply_async = submit  # joblib before 1.5 calls this name

        def retrieve_result_callback(self, future: Any) -> Any:
            return future.result()

        def terminate(self) -> None:
            self._executor = None  # the pool stays for the next call of the run
            self.reset_batch_stats()

        def abort_everything(self, ensure_ready: bool = True) -> None:
            stop()  # a later call forks a new pool where it still can, else uses loky
            self._executor = None

    return ForkBackend
