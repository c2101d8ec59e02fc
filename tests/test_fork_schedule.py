"""Which worker of the ``fork`` backend runs which task (``fork_pool.run``): a worker is given
the tasks that read the images a task it ran read, so each image is decoded about once however
many workers share the run; and where the tasks go changes no output byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cpgen.fork_pool import _Schedule
from tests.test_copypaste_e2e import tree_bytes


def taken(schedule: _Schedule, slots: list[int]) -> list[int | None]:
    return [schedule.take(slot) for slot in slots]


def test_without_reads_every_task_is_taken_once_in_order() -> None:
    schedule = _Schedule(5, None, 2)
    assert taken(schedule, [0, 1, 1, 0, 0, 1, 0]) == [0, 1, 2, 3, 4, None, None]


def test_a_worker_is_given_the_tasks_that_read_what_its_tasks_read() -> None:
    """Tasks i and i + 4 read image i: whichever worker took one is given the other next,
    before the first task nobody read from."""
    reads = [[f"image {i % 4}"] for i in range(8)]
    schedule = _Schedule(8, lambda i: reads[i], 2)
    assert taken(schedule, [0, 1, 0, 1, 0, 1, 0, 1, 0]) == [0, 1, 4, 5, 2, 3, 6, 7, None]


def test_a_task_is_taken_once_when_several_workers_read_its_images() -> None:
    """Task 2 reads what tasks 0 (worker 0) and 1 (worker 1) read: the first worker to ask has
    it, the other is not given it again."""
    reads = [["a"], ["b"], ["a", "b"], ["c"]]
    schedule = _Schedule(4, lambda i: reads[i], 2)
    assert taken(schedule, [0, 1, 1, 0, 0, 1]) == [0, 1, 2, 3, None, None]


def test_an_image_every_task_reads_leaves_them_in_order() -> None:
    """A small set multiplied: every task reads image "all"; its readers are handed to the first
    worker that read it, and taken in order."""
    reads = [["all", f"own {i}"] for i in range(6)]
    schedule = _Schedule(6, lambda i: reads[i], 2)
    assert taken(schedule, [0, 1, 0, 1, 0, 1, 1]) == [0, 1, 2, 3, 4, 5, None]


def distinct_images(root: Path, count: int) -> Path:
    """``count`` different small images with two square instances each (one output per image
    makes each image one output's target and about one other's source)."""
    rng = np.random.default_rng(11)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        pixels = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (0, 0), 2)
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), pixels)
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 64, "height": 48})
        for k in range(2):
            x, y = 4 + 30 * k + i % 8, 6 + i % 16
            annotations.append(
                {
                    "id": 2 * i + k + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "segmentation": [[x, y, x + 20, y, x + 20, y + 20, x, y + 20]],
                    "area": 400.0,
                    "bbox": [x, y, 20, 20],
                    "iscrowd": 0,
                }
            )
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


# Every decode of an input image, counted by the process that made it (the forked workers
# inherit the counting decode), then the real run through the Python API.
COUNT_DECODES = """
import os, sys
from pathlib import Path
from cpgen import copypaste, images
from cpgen.datasets import coco

src, out, counts, workers = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
decode = images.decode

def counted(*args, **kwargs):
    with open(os.path.join(counts, str(os.getpid())), "a") as f:
        f.write("1")
    return decode(*args, **kwargs)

images.decode = counted
index = coco.load(coco.find_layout(src))
options = copypaste.CopyPasteOptions(originals="none")
copypaste.run(index, out, options, copypaste.RunOptions(workers))
"""


def decodes(src: Path, out: Path, workers: int, counts: Path) -> dict[int, int]:
    """The decodes of a copy-paste run on ``workers``, by process id."""
    counts.mkdir()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # as the console script: it may fork
    done = subprocess.run(
        [sys.executable, "-c", COUNT_DECODES, str(src), str(out), str(counts), str(workers)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return {int(p.name): len(p.read_text()) for p in counts.iterdir()}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers are Linux's")
def test_each_image_used_once_is_decoded_about_once_by_two_workers(tmp_path: Path) -> None:
    """One output per image, 640 images in 40 shards, of which about 60 are read by two shards.
    Shards taken by whichever worker was free first decoded 25-29 images twice (measured);
    given to the worker that read their images, 7-9 (where the two workers' parts meet)."""
    src = distinct_images(tmp_path / "src", 640)
    one = decodes(src, tmp_path / "one", 1, tmp_path / "counts-one")
    two = decodes(src, tmp_path / "two", 2, tmp_path / "counts-two")
    assert list(one.values()) == [640]
    assert len(two) == 2 and all(n > 160 for n in two.values()), two  # both workers worked
    assert sum(two.values()) <= 640 + 15, two
    assert tree_bytes(tmp_path / "two") == tree_bytes(tmp_path / "one")


POOL_RULE = """
import json, os, sys, threading
from cpgen import fork_pool
from cpgen.runner import run_jobs, stop_workers

class Unpicklable(Exception):
    def __init__(self, lock):
        super().__init__("held")
        self.lock = lock

def square(i):
    return i * i, os.getpid()

def fails(i):
    if i == 3:
        raise ValueError(f"task {i} fails")
    return i

def fails_oddly(i):
    raise Unpicklable(threading.Lock())

report = {"pids": []}
for workers in (2, 3):
    assert fork_pool.start(workers)
    report["pids"].append(fork_pool.pids())
    report[f"done {workers}"] = [
        run_jobs(square, list(range(count)), workers=workers, backend="fork", progress=False,
                 desc="", reads=lambda i: [i % 3])
        for count in (0, 1, 2, 3, 7, 40)
    ]
for job, name in ((fails, "error"), (fails_oddly, "odd")):
    try:
        run_jobs(job, list(range(8)), workers=2, backend="fork", progress=False, desc="")
    except Exception as exc:
        report[name] = [type(exc).__name__, str(exc), str(exc.__cause__), fork_pool.pids()]
stop_workers()
print(json.dumps(report))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers are Linux's")
def test_the_pool_runs_every_task_once_and_brings_back_what_a_task_raised() -> None:
    """Results in payload order, for fewer tasks than workers and more; pools of two and three
    workers, each task in one of them. A task's exception is raised in the run with the
    worker's traceback as its cause, and the pool is stopped; one that cannot be pickled comes
    back as a RuntimeError that names it."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", POOL_RULE], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for workers, pids in zip((2, 3), report["pids"], strict=True):
        assert len(pids) == workers
        for count, results in zip((0, 1, 2, 3, 7, 40), report[f"done {workers}"], strict=True):
            assert [r[0] for r in results] == [i * i for i in range(count)]
            assert {r[1] for r in results} <= set(pids)
        assert len({r[1] for r in report[f"done {workers}"][-1]}) > 1  # 40 tasks: shared out
    name, words, cause, pids = report["error"]
    assert (name, words, pids) == ("ValueError", "task 3 fails", [])
    assert "in fails\n" in cause and "ValueError: task 3 fails" in cause
    name, words, cause, _ = report["odd"]
    assert (name, words) == ("RuntimeError", "Unpicklable: held")
    assert "in fails_oddly" in cause
