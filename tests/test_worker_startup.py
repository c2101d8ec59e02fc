"""Worker processes start while the main process reads the input, and end with the run.

``runner.start_workers`` starts joblib's loky pool in the background; the run then uses
those same processes. The CLI kills its workers when a command ends, whatever the outcome.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from cpgen.runner import run_jobs, start_workers, stop_workers
from tests.conftest import after_entry_point, make_coco
from tests.test_faults import group_alive, no_traceback, start

PROBE = "wave"  # a standard module that nothing in a fresh worker imports


def imported(name: str) -> tuple[int, bool]:
    """(this worker's pid, whether ``name`` was imported before this task); the task lasts
    long enough for a run's tasks to spread over the workers."""
    had = name in sys.modules
    time.sleep(0.05)
    return os.getpid(), had


def _pool():
    from joblib.externals.loky import reusable_executor

    return reusable_executor._executor


def test_the_run_uses_the_workers_started_before_it():
    warmup = start_workers(2, "loky", [PROBE])
    # the run starts at once, while the pool may still be starting: it must join that pool
    results = run_jobs(
        imported, [PROBE] * 8, workers=2, backend="loky", progress=False, desc="probe"
    )
    warmed = warmup.wait(timeout=120)
    pool = _pool()
    assert warmed, "no warm-up task ran"
    assert set(warmed) <= set(pool._processes), "the warm-up ran in a pool the run did not use"
    assert {pid for pid, _ in results} <= set(pool._processes)
    # a task of the run may have come before the warm-up's on a worker; the next run's may not
    again = run_jobs(imported, [PROBE] * 8, workers=2, backend="loky", progress=False, desc="p")
    assert _pool() is pool
    warmed_then = [had for pid, had in again if pid in warmed]
    assert warmed_then and all(warmed_then), f"{PROBE} not imported by the warm-up: {again}"


@pytest.mark.parametrize(("workers", "backend"), [(1, "loky"), (2, "threading")])
def test_nothing_is_started_for_one_worker_or_another_backend(workers, backend):
    assert start_workers(workers, backend, [PROBE]).wait(timeout=5) == []


def _ended(pgid: int) -> bool:
    deadline = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not group_alive(pgid)


def test_a_finished_run_leaves_no_worker_behind(tmp_path):
    src = make_coco(tmp_path / "src", n_images=6)
    proc = start("copypaste", "--src", str(src), "--out", str(tmp_path / "out"), "-j", "2")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    no_traceback(stderr)
    assert _ended(proc.pid), "a worker outlived the run"


def test_an_input_error_after_the_workers_started_is_one_line_and_stops_them(tmp_path):
    """The pool starts once OUT is accepted, before the annotation file is read: a file that
    turns out unusable still gives one ``Error:`` line, exit 1, and no process left."""
    src = make_coco(tmp_path / "src", n_images=2)
    (src / "annotations.json").write_text('{"images": [], "annotations": [')
    proc = start("copypaste", "--src", str(src), "--out", str(tmp_path / "out"), "-j", "2")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    no_traceback(stderr)
    lines = stderr.splitlines()
    assert lines[0].startswith("Error: ") and "not valid JSON" in lines[0], stderr
    assert all(line.startswith("Hint: ") for line in lines[1:]), stderr
    assert _ended(proc.pid), "a worker outlived the failed run"


def test_stopping_lets_a_warm_up_in_progress_finish_first():
    """An error or a signal right after the warm-up was handed to a starting pool: the pool is
    killed only once the warm-up's tasks are in (killing it under a submission can make loky's
    manager thread fail with a traceback on stderr); nothing fails in any thread."""
    import threading

    failures: list[str] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: failures.append(f"{args.thread}: {args.exc_value!r}")
    try:
        stop_workers()  # a fresh pool: its workers take a while to start
        warmup = start_workers(2, "loky", [PROBE])
        stop_workers()
        assert warmup.wait(timeout=0) != [], "the pool was killed before the warm-up ran"
        time.sleep(0.5)
    finally:
        threading.excepthook = previous
    assert failures == []
    assert _pool()._flags.shutdown


def _threads_after_numpy(entry: bool, env: dict[str, str]) -> int:
    """Threads of a fresh process once it imports numpy, after the console script's entry
    point or not."""
    code = "import os, numpy\nprint(len(os.listdir('/proc/self/task')))\n"
    return int(after_entry_point(code, env, entry).split()[-1])


@pytest.mark.skipif(
    (os.cpu_count() or 1) < 2 or not os.path.isdir("/proc/self/task"),
    reason="needs two cores and Linux's /proc to see OpenBLAS's threads",
)
def test_numpy_starts_no_blas_threads_in_the_console_script_unless_the_user_asks():
    from cpgen.cli import BLAS_THREADS

    # OpenBLAS also reads OMP_NUM_THREADS, which a run in this process may have set
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    # the threads this keeps out: a plain process gets one per core
    assert _threads_after_numpy(False, env) > 1
    assert _threads_after_numpy(True, env) == 1
    # a number the user set is kept
    assert _threads_after_numpy(True, {**env, BLAS_THREADS: "2"}) == 2
