"""The ``fork`` backend, cpgen's default: worker processes forked from this one, fed by it.

A loky worker is a new interpreter: it imports joblib, numpy, OpenCV and cpgen's shard code
before its first task (about 0.3 s of CPU each), and loky starts one more interpreter, its
resource tracker, that imports joblib and numpy too. On a two-core machine that start competes
with this process reading the input, and the first tasks wait for it (measured 0.2-0.3 s of a
7 s run). A forked worker is ready at once: it has this process's modules already loaded.

Forking is safe only where nothing else runs in the process at that instant (a lock held by
another thread stays held in the child), so ``start`` forks every worker at once, from the main
thread, while this process has no other thread (``single_threaded``); the CLI does it as soon as
OUT is accepted, before it reads the input. Each worker ignores Ctrl-C (this process stops the
pool) and dies with this process, however it dies (``PR_SET_PDEATHSIG``), so none is left
running or holding a file.

The pool is cpgen's own, not joblib's (whose import alone costs 0.07 s): ``run`` hands each
worker one task at a time through the worker's own pipe, from the main thread, with no thread of
its own (this process stays forkable). Choosing the worker lets a task go where its images are:
given the keys of what each task reads, a worker is next given the first task that reads what
a task it ran read, so that its cache (``worker_images``) has the image, instead of whichever
worker is free first decoding it again (one output per image on two workers: 111 of 2,000
images decoded twice that way, 9-12 this way). Each worker's next task is made
(``payloads[i]``) and pickled while it runs its current one, and a worker that runs out takes
another's next. A worker that dies (killed, out of memory) fails the run (``WorkerDied``)
instead of hanging it.

Where forking is unsafe (another thread running, numpy's idle OpenBLAS threads included, which
the console script does not start; or not Linux: macOS's system libraries do not survive a
fork), the backend is loky's (``runner.run_jobs``).
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import importlib
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass
from typing import Any

#: The backend's name for ``--backend``.
NAME = "fork"

_PR_SET_PDEATHSIG = 1


class WorkerDied(BrokenExecutor):
    """A worker of the pool ended before it finished its task (a signal, the OOM killer)."""


class RemoteTraceback(Exception):
    """The traceback of an exception a task raised in a worker (its ``__cause__`` here)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(eq=False)
class _Worker:
    process: Any  # multiprocessing.Process
    conn: Any  # this end of its pipe
    running: int | None = None  # the task it was sent
    next: tuple[int, bytes] | None = None  # the task it is sent next, pickled


#: The pool forked by ``start``, or None.
_pool: list[_Worker] | None = None


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
        if len(_pool) == workers and all(w.process.is_alive() for w in _pool):
            return True
        stop()
    if not can_fork():
        return False
    for name in modules:
        importlib.import_module(name)
    import multiprocessing

    context = multiprocessing.get_context("fork")
    pool: list[_Worker] = []
    _pool = pool
    try:
        for k in range(workers):
            ours, theirs = context.Pipe()
            inherited = [w.conn for w in pool] + [ours]  # the child closes these
            process = context.Process(
                target=_serve,
                args=(theirs, os.getpid(), inherited),
                name=f"cpgen-worker-{k + 1}",
                daemon=True,
            )
            try:
                process.start()
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()  # the worker's alone: its end closes when it dies
            pool.append(_Worker(process, ours))
    except OSError:  # no process to be had (EAGAIN, ENOMEM): loky's pool then says so
        stop()
        return False
    return True


def stop() -> None:
    """Kill the pool's workers now and forget the pool (after a run, an error or a signal)."""
    global _pool
    pool, _pool = _pool, None
    for worker in pool or ():
        with contextlib.suppress(OSError, ValueError, AttributeError):  # already gone
            worker.process.kill()
    for worker in pool or ():
        worker.conn.close()
        with contextlib.suppress(OSError, ValueError, AssertionError):
            worker.process.join(timeout=10)  # reaped: no zombie left


def pids() -> list[int]:
    """The pool's worker pids (empty without a pool)."""
    return sorted(w.process.pid for w in _pool or ())


def run(
    job: Callable[[Any], Any],
    payloads: Sequence[Any],
    reads: Callable[[int], Iterable[Hashable]] | None = None,
) -> Iterator[tuple[int, Any]]:
    """``job(payloads[i])`` for every ``i`` on the pool ``start`` forked, one task per worker at
    a time; yields ``(i, result)`` as they finish. ``reads(i)`` names what task ``i`` reads
    (image keys): a worker is given the tasks that read what a task it ran read first
    (``_Schedule``). The first exception a task raises is raised here, with the worker's
    traceback as its cause; a worker that ends raises ``WorkerDied``. Payloads are made when
    a worker is about to need them (one ahead of it), in the order the schedule takes them.
    The workers are sent their first tasks before this returns."""
    pool = _pool
    if pool is None:
        raise RuntimeError("no pool: fork_pool.start first")
    schedule = _Schedule(len(payloads), reads, len(pool))

    def prepare(slot: int, steal: bool) -> tuple[int, bytes] | None:
        i = schedule.take(slot)
        if i is not None:
            return i, pickle.dumps((i, job, payloads[i]), pickle.HIGHEST_PROTOCOL)
        for other in pool if steal else ():  # nothing left to start: another's next, unsent
            if other.next is not None:
                task, other.next = other.next, None
                return task
        return None

    def send(worker: _Worker, slot: int) -> None:
        """Send ``worker`` (idle) its next task, and make the one after it."""
        task, worker.next = worker.next or prepare(slot, steal=True), None
        if task is None:
            return
        try:
            worker.conn.send_bytes(task[1])
        except OSError:
            raise WorkerDied("a worker ended") from None
        worker.running = task[0]
        worker.next = prepare(slot, steal=False)

    for worker in pool:
        worker.running, worker.next = None, None
    for slot, worker in enumerate(pool):  # the workers start now, before the results are asked
        send(worker, slot)
    return _results(pool, send)


def _results(
    pool: list[_Worker], send: Callable[[_Worker, int], None]
) -> Iterator[tuple[int, Any]]:
    """The results of ``run`` as they come, each worker sent its next task (``send``) first."""
    from multiprocessing.connection import wait

    try:
        while True:
            busy = {w.conn: (slot, w) for slot, w in enumerate(pool) if w.running is not None}
            if not busy:
                return
            for conn in wait(list(busy)):
                slot, worker = busy[conn]  # type: ignore[index]
                try:
                    i, ok, value = pickle.loads(conn.recv_bytes())
                except (EOFError, OSError):
                    raise WorkerDied("a worker ended") from None
                worker.running = None
                if not ok:
                    error, text = value
                    error.__cause__ = RemoteTraceback(text)
                    raise error
                send(worker, slot)  # before this result is handled: the worker goes on
                yield i, value
    finally:
        for worker in pool:
            worker.next = None


class _Schedule:
    """Which task each worker takes next: the first not yet taken among those that read a key
    (``reads``) that a task this worker took read first; else the first that reads nothing
    another worker's tasks read (a new part of the tasks for this worker to grow), else the
    first not yet taken. Each key's readers are looked at once (when a task first reads it),
    so a key read by every task costs no more than one read by two."""

    def __init__(
        self, count: int, reads: Callable[[int], Iterable[Hashable]] | None, workers: int
    ) -> None:
        self.count, self.taken = count, bytearray(count)
        self.first = 0  # no task before it is left
        self.fresh = 0  # no task before it is left that no worker's tasks share a key with
        self.shared = bytearray(count)  # shares a key with a task taken
        self.reads = reads
        self.near: list[list[int]] = [[] for _ in range(workers)]  # a heap per worker
        self.readers: dict[Hashable, list[int]] = {}
        if reads is not None:
            for i in range(count):
                for key in reads(i):
                    self.readers.setdefault(key, []).append(i)

    def take(self, slot: int) -> int | None:
        near = self.near[slot]
        while near:
            i = heapq.heappop(near)
            if not self.taken[i]:
                return self._claim(i, slot)
        while self.fresh < self.count and (self.taken[self.fresh] or self.shared[self.fresh]):
            self.fresh += 1
        if self.fresh < self.count:
            return self._claim(self.fresh, slot)
        while self.first < self.count and self.taken[self.first]:
            self.first += 1
        return self._claim(self.first, slot) if self.first < self.count else None

    def _claim(self, i: int, slot: int) -> int:
        self.taken[i] = 1
        if self.reads is not None:
            for key in self.reads(i):
                for j in self.readers.pop(key, ()):
                    if not self.taken[j]:
                        self.shared[j] = 1
                        heapq.heappush(self.near[slot], j)
        return i


def _serve(conn: Any, parent: int, inherited: list[Any]) -> None:
    """A worker: run each task the pipe brings, send back ``(i, True, result)`` or
    ``(i, False, (exception, traceback text))``, until the pipe closes."""
    for other in inherited:  # this process's copies of the other pipes' ends
        other.close()
    _init_worker(parent)
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        i = -1
        try:
            i, job, payload = pickle.loads(message)
            reply = (i, True, job(payload))
            data = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # the task's error goes back to the run, which stops
            data = _failure(i, exc)
        try:
            conn.send_bytes(data)
        except OSError:  # the run is gone
            return


def _failure(i: int, exc: BaseException) -> bytes:
    text = "".join(traceback.format_exception(exc))
    try:
        return pickle.dumps((i, False, (exc, text)), pickle.HIGHEST_PROTOCOL)
    except Exception:  # an exception that does not pickle: its words still go back
        plain = RuntimeError(f"{type(exc).__name__}: {exc}")
        return pickle.dumps((i, False, (plain, text)), pickle.HIGHEST_PROTOCOL)


def _init_worker(parent: int) -> None:
    """In each worker, once: die with the parent, leave Ctrl-C and OUT's lock to it, die of
    SIGTERM and SIGHUP (not the parent's handlers), set up as any worker."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    output = sys.modules.get("cpgen.output")
    if output is not None:  # a pool forked after OUT was locked must not keep it locked
        output.forget_locks()
    from cpgen.runner import setup_worker

    setup_worker()
