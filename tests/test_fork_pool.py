"""The ``fork`` backend (``cpgen.fork_pool``), the default: workers forked from the real console
script, a worker killed mid-run, the console script killed, and the rule that forks only a
process with one thread. Real processes and real signals, as in ``test_faults``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_coco
from tests.test_copypaste_e2e import tree_bytes
from tests.test_faults import cpgen, group_alive, no_traceback, start, wait_for_shards

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="forked workers are Linux's (/proc)"
)


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


def workers_of(proc: subprocess.Popen) -> list[int]:
    """The worker processes of a run: its children, less loky's resource tracker."""
    return [p for p in children(proc.pid) if b"resource_tracker" not in cmdline(p)]


def stopped_saying(proc: subprocess.Popen, code: int) -> list[str]:
    """What a run that stops with exit ``code`` says on stderr (less the annotation file's
    warnings), once it and every process of its group have ended, with no traceback."""
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    no_traceback(stderr)
    deadline = time.monotonic() + 10
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(proc.pid), "a worker outlived the run"
    return [line for line in stderr.splitlines() if not line.startswith("warning: ")]


@pytest.fixture
def job(tmp_path: Path) -> list[str]:
    src = make_coco(tmp_path / "src", n_images=6, size=(320, 240))
    return ["copypaste", "--src", str(src), "--num-images", "600", "-j", "2", "--quiet"]


def test_the_default_backend_forks_its_workers_and_writes_what_one_worker_writes(tmp_path, job):
    """Forked, not started: each worker runs the console script's own command line, and no
    interpreter of loky's (worker or resource tracker) is started."""
    out = tmp_path / "out"
    proc = start(*job, "--out", str(out))
    wait_for_shards(out, proc, 2)
    own, kids = cmdline(proc.pid), children(proc.pid)
    lines = [cmdline(p) for p in kids]
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert len(kids) == 2 and lines == [own, own], lines
    reference = tmp_path / "reference"
    one = cpgen(*job[:-3], "-j", "1", "--quiet", "--out", str(reference))
    assert one.returncode == 0, one.stderr
    assert tree_bytes(out) == tree_bytes(reference)


@pytest.mark.parametrize("backend", ["fork", "loky"])
def test_a_worker_killed_mid_run_is_one_error_line_and_resume_finishes_it(tmp_path, job, backend):
    out = tmp_path / "out"
    args = [*job, "--backend", backend]
    proc = start(*args, "--out", str(out))
    wait_for_shards(out, proc, 2)
    os.kill(workers_of(proc)[0], signal.SIGKILL)  # as the kernel's OOM killer does
    assert stopped_saying(proc, 1) == [
        "Error: a worker process died before it finished (killed by a signal, or by the kernel "
        "when memory ran out)",
        "Hint: if memory ran out, use fewer --workers or a smaller --cache-mb; then run the same "
        "command with --resume to finish (finished work is kept)",
    ]
    resumed = cpgen(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    assert cpgen(*args, "--out", str(reference)).returncode == 0
    assert tree_bytes(out) == tree_bytes(reference)


def test_forked_workers_die_with_the_console_script_and_leave_out_unlocked(tmp_path, job):
    """SIGKILL to the main process alone (no handler runs): the kernel ends its workers too
    (``PR_SET_PDEATHSIG``), so none keeps working on OUT, and the next run may resume it."""
    out = tmp_path / "out"
    proc = start(*job, "--out", str(out))
    wait_for_shards(out, proc, 2)
    kids = workers_of(proc)
    assert len(kids) == 2
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(running(p) for p in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(running(p) for p in kids), "a worker outlived the killed console script"
    resumed = cpgen(*job, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    assert cpgen(*job, "--out", str(reference)).returncode == 0
    assert tree_bytes(out) == tree_bytes(reference)


FORK_RULE = """
import json, os, sys, threading
from cpgen import fork_pool
from cpgen.runner import run_jobs, stop_workers

def where(i):
    line = lambda pid: open(f"/proc/{pid}/cmdline", "rb").read()
    forked = line("self") == line(os.getppid())  # a new interpreter has a command line of its own
    return i * i, os.getpid(), os.getppid(), forked

release = threading.Event()
other = threading.Thread(target=release.wait)
if sys.argv[1] == "thread":
    other.start()
if sys.argv[1] == "after_one_worker":  # a run without a bar leaves no thread behind
    run_jobs(where, [0], workers=1, backend="fork", progress=False, desc="")
started = fork_pool.start(2)
pids = fork_pool.pids()
done = run_jobs(where, list(range(8)), workers=2, backend="fork", progress=False, desc="")
stop_workers()
release.set()
print(json.dumps({"started": started, "pids": pids, "done": done, "me": os.getpid()}))
"""


def fork_rule(case: str) -> dict:
    """FORK_RULE's report in a fresh process with numpy's OpenBLAS single-threaded, as the
    console script sets it (its idle threads would count as a second thread)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", FORK_RULE, case],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_workers_are_forked_only_from_a_process_with_one_thread():
    """A lock another thread holds at a fork stays held in the child: with a second thread
    running, the backend is loky's (its workers are new interpreters); alone, also after a
    one-worker run (which leaves no thread behind), the pool is forked here, and the run's
    tasks run in those children."""
    alone, threaded = fork_rule("alone"), fork_rule("thread")
    after_one = fork_rule("after_one_worker")
    for report in (alone, threaded, after_one):
        assert [r[0] for r in report["done"]] == [i * i for i in range(8)]
    for report in (alone, after_one):
        assert report["started"] is True and len(report["pids"]) == 2
        assert {r[1] for r in report["done"]} <= set(report["pids"])
        assert {(r[2], r[3]) for r in report["done"]} == {(report["me"], True)}
    assert threaded["started"] is False and threaded["pids"] == []
    assert {(r[2], r[3]) for r in threaded["done"]} == {(threaded["me"], False)}


def test_ctrl_c_in_a_terminal_stops_the_run_once_and_leaves_no_worker(tmp_path, job):
    """A terminal sends Ctrl-C's SIGINT to the whole foreground group, workers included: the run
    stops, says one thing (no worker's traceback), and leaves no process behind."""
    out = tmp_path / "out"
    proc = start(*job, "--out", str(out))
    wait_for_shards(out, proc, 2)
    os.killpg(proc.pid, signal.SIGINT)
    assert stopped_saying(proc, 130) == [
        "Interrupted by SIGINT: the output is incomplete. Run the same command with --resume "
        "to continue where it stopped."
    ]


LOCK_RULE = """
import json, subprocess, sys
from pathlib import Path
from cpgen import copypaste, fork_pool, output
from cpgen.datasets import coco

src, out = Path(sys.argv[1]), Path(sys.argv[2])
index = coco.load(coco.find_layout(src))  # too few annotations to check them in workers
options = copypaste.CopyPasteOptions(num_images=4, originals="none")
copypaste.run(index, out, options, copypaste.RunOptions(workers=2))  # forks once OUT is locked
pids = fork_pool.pids()
output.release_locks()
again = [sys.executable, "-m", "cpgen", "copypaste", "--src", str(src), "--out", str(out)]
second = subprocess.run([*again, "--overwrite", "-j", "1", "--quiet"], capture_output=True)
alive = [Path(f"/proc/{p}").exists() for p in pids]
print(json.dumps({"pids": pids, "alive": alive, "code": second.returncode}))
"""


def test_workers_forked_after_out_was_locked_do_not_keep_it_locked(tmp_path):
    """Through the Python API the pool may be forked after the run took OUT's lock; the
    workers, which outlive the run, must not hold it once this process lets it go."""
    src = make_coco(tmp_path / "src", n_images=3)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", LOCK_RULE, str(src), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["pids"]) == 2 and all(report["alive"]), report
    assert report["code"] == 0, report


DAEMON_RULE = """
import multiprocessing
from cpgen.runner import run_jobs

def job(_):
    return run_jobs(abs, [-1, -2, -3], workers=2, backend="fork", progress=False, desc="")

if __name__ == "__main__":
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        print(pool.map(job, [0]))
"""


def test_a_daemonic_process_which_may_have_no_children_runs_its_jobs_as_loky_would(tmp_path):
    """Inside a multiprocessing pool's worker (daemonic: no children allowed), the backend is
    loky's, which runs the jobs in that process (joblib warns), instead of failing to fork."""
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON_RULE)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[[1, 2, 3]]"
