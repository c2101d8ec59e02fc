"""Workers of one run share their decodes through ``/dev/shm`` (``image_store``): a second
worker maps what the first decoded instead of decoding it again, within the cache budget and a
share of the free space; the folder goes when the run ends, by error or signal too, and one a
killed run left is swept. Real files, real processes, a real full tmpfs."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cpgen import image_store
from cpgen.copypaste.sources import ImageRef, WorkerImages, decode_image
from cpgen.datasets import coco
from cpgen.image_store import ImageStore, open_store, sweep
from tests.conftest import kill_group
from tests.test_copypaste_e2e import tree_bytes
from tests.test_faults import SCRIPT, _namespace_prefix, no_traceback, start


def sample_refs(tiny80: Path, n: int) -> list[ImageRef]:
    index = coco.load(coco.find_layout(tiny80))
    root = str(index.files.images)
    return [
        ImageRef(p, r["id"], r["file_name"], r["width"], r["height"], root)
        for p, r in enumerate(index.images[:n])
    ]


class Counting:
    """OpenCV's decode, counted."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, data: bytes, size: tuple[int, int]) -> np.ndarray:
        from cpgen import images

        self.calls += 1
        return images.decode(data, size)


def _second_worker(folder: str, limit: int, refs: list[ImageRef]) -> tuple[int, list[bool]]:
    """In another process: the decodes this worker makes for ``refs``, and which arrays came
    back equal to a fresh decode and read-only."""
    worker, decode = WorkerImages(), Counting()
    worker.configure("run", 2**30, folder, limit)
    checks = []
    for ref in refs:
        pixels, shared = worker.get(ref, True, decode)
        fresh = decode_image(ref)
        checks.append(shared and not pixels.flags.writeable and np.array_equal(pixels, fresh))
    return decode.calls, checks


def test_a_second_worker_maps_what_the_first_decoded(tiny80: Path, tmp_path: Path) -> None:
    refs = sample_refs(tiny80, 3)
    folder = tmp_path / "store"
    folder.mkdir()
    first, decode = WorkerImages(), Counting()
    first.configure("run", 2**30, str(folder), 2**30)
    for ref in refs[:2]:  # a later shard reads them: published
        pixels, shared = first.get(ref, True, decode)
        assert shared and not pixels.flags.writeable  # the worker keeps the store's copy
        assert np.array_equal(pixels, decode_image(ref))
    first.get(refs[2], False, decode)  # its last use: decoded, not published
    assert decode.calls == 3 and len(list(folder.iterdir())) == 2
    assert first.used == first.published == sum(decode_image(r).nbytes for r in refs[:2])

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        calls, checks = pool.apply(_second_worker, (str(folder), 2**30, refs))
    assert checks == [True, True, True]
    assert calls == 1  # only the image the first worker did not publish


def test_publishing_stays_within_the_budget_and_the_limit(tiny80: Path, tmp_path: Path) -> None:
    refs = [r for r in sample_refs(tiny80, 80) if (r.width, r.height) == (640, 480)][:4]
    size = 640 * 480 * 3
    worker = WorkerImages()
    worker.configure("run", int(2.5 * size), str(tmp_path), 2**30)  # room for two and a half
    for ref in refs:
        worker.get(ref)
        assert worker.used <= worker.budget
    assert worker.published == 2 * size and len(list(tmp_path.iterdir())) == 2
    # it keeps the two it published (mapped, costing it nothing more); the others did not fit
    assert list(worker.decoded) == [refs[0].key, refs[1].key] and worker.maps == 2
    assert not any(p.flags.writeable for p in worker.decoded.values())
    # the store's own limit (a share of /dev/shm's free space) bounds it too
    limited, other = WorkerImages(), tmp_path / "other"
    other.mkdir()
    limited.configure("run", 2**30, str(other), size + 1)
    for ref in refs:
        limited.get(ref)
    assert len(list(other.iterdir())) == 1 and limited.published == size


def test_maps_stay_within_a_second_budget(tiny80: Path, tmp_path: Path) -> None:
    """Mapped pages count in a worker's resident size (which loky watches for leaks): a worker
    keeps at most its budget of them, least recently used out, and decodes none."""
    refs = [r for r in sample_refs(tiny80, 80) if (r.width, r.height) == (640, 480)][:3]
    size = 640 * 480 * 3
    first = WorkerImages()
    first.configure("run", 2**30, str(tmp_path), 2**30)
    for ref in refs:
        first.get(ref)
    assert first.published == 3 * size
    second, decode = WorkerImages(), Counting()
    second.configure("run", int(1.5 * size), str(tmp_path), 2**30)
    for ref in refs:
        pixels, shared = second.get(ref, True, decode)
        assert shared and not pixels.flags.writeable
        assert second.mapped <= second.budget and second.used == 0
    assert decode.calls == 0 and list(second.decoded) == [refs[2].key]
    assert (second.maps, second.mapped) == (1, size)


def test_a_store_that_fails_to_write_stops_writing(tiny80: Path, tmp_path: Path) -> None:
    """The folder removed under the worker (the run ending): decodes go on, unpublished."""
    refs = sample_refs(tiny80, 2)
    folder = tmp_path / "gone"
    worker, decode = WorkerImages(), Counting()
    worker.configure("run", 2**30, str(folder), 2**30)
    pixels, _ = worker.get(refs[0], True, decode)
    assert pixels.flags.writeable and np.array_equal(pixels, decode_image(refs[0]))
    assert worker.published == 0 and worker.store is not None and worker.store.limit == 0


def test_a_store_removed_under_the_worker_keeps_its_maps_and_stops_writing(
    tiny80: Path, tmp_path: Path
) -> None:
    """Another run's sweep may remove a live store it cannot tell from a dead one (another pid
    namespace): maps already made stay valid, the next write fails and stops, decoding goes on."""
    import shutil

    refs = sample_refs(tiny80, 3)
    folder = tmp_path / "store"
    folder.mkdir()
    worker, decode = WorkerImages(), Counting()
    worker.configure("run", 2**30, str(folder), 2**30)
    mapped, _ = worker.get(refs[0], True, decode)
    assert not mapped.flags.writeable
    shutil.rmtree(folder)
    assert np.array_equal(mapped, decode_image(refs[0]))  # the unlinked file's pages remain
    assert worker.get(refs[0], True, decode)[0] is mapped  # still this worker's hit
    pixels, _ = worker.get(refs[1], True, decode)
    assert pixels.flags.writeable and np.array_equal(pixels, decode_image(refs[1]))
    assert worker.store is not None and worker.store.limit == 0
    assert worker.published == decode_image(refs[0]).nbytes and decode.calls == 2


FILL = """
import sys
import numpy as np
from cpgen.image_store import ImageStore
store = ImageStore(sys.argv[1], 2**30)
pixels = np.full((480, 640, 3), 7, np.uint8)
first = store.write(("r", "a.jpg", 640, 480), pixels)
second = store.write(("r", "b.jpg", 640, 480), pixels)
third = store.write(("r", "c.jpg", 640, 480), pixels)
import os
print(first is not None and np.array_equal(first, pixels), second, third, store.limit,
      sorted(os.listdir(sys.argv[1])) == [store._path(("r", "a.jpg", 640, 480)).split("/")[-1]])
"""


def test_a_full_tmpfs_stops_the_writes_and_leaves_no_partial_file(tmp_path: Path) -> None:
    """A real 1.2 MB tmpfs: the first 0.9 MB image fits, the second does not (ENOSPC); its
    partial file is removed and the worker writes no more."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"mount -t tmpfs -o size=1200k tmpfs {disk} && {sys.executable} -c '{FILL}' {disk}"
    done = subprocess.run(
        [*_namespace_prefix(), "sh", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "None", "None", "0", "True"]


def test_sweep_removes_only_the_stores_of_dead_runs(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        names = [
            f"{image_store.PREFIX}{dead.pid}-0123456789abcdef",
            f"{image_store.PREFIX}{alive.pid}-0123456789abcdef",
            f"{image_store.PREFIX}{os.getpid()}-0123456789abcdef",
            "cpgen-other-1",
        ]
        for name in names:
            (tmp_path / name).mkdir()
            (tmp_path / name / "pixels").write_bytes(b"x")
        sweep(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
    finally:
        alive.kill()
        alive.wait()


def test_open_store_sweeps_shares_and_removes(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{image_store.PREFIX}{dead.pid}-00"
    stale.mkdir()
    with open_store(1, tmp_path) as (folder, each):
        assert (folder, each) == ("", 0)  # one worker shares with no one
        assert not stale.exists()  # but the killed run's store goes
    stale.mkdir()
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with pytest.raises(KeyError), open_store(4, tmp_path) as (folder, each):
        assert Path(folder).parent == tmp_path and Path(folder).is_dir()
        assert 0 < each <= free * image_store.SHARE_OF_FREE / 4 * 1.01
        assert not stale.exists()
        (Path(folder) / "pixels").write_bytes(b"x")
        raise KeyError  # an error in the run
    assert [p.name for p in tmp_path.iterdir()] == []


def test_decodes_are_shared_only_where_shards_read_the_same_images(tiny80: Path) -> None:
    """800 outputs of 80 images read each image in many shards: worth sharing. One output per
    image reads most images in one shard only: writing them would cost what it saves."""
    from cpgen import copypaste
    from cpgen.copypaste.run import SHARD_SIZE, images_read
    from cpgen.image_store import SHARE_FROM_READS, reads_per_image
    from cpgen.plan import affinity_shards

    index = coco.load(coco.find_layout(tiny80))

    def reads(n: int) -> float:
        tasks = copypaste.plan(index, copypaste.CopyPasteOptions(num_images=n))
        return reads_per_image(images_read(c, False) for c in affinity_shards(tasks, SHARD_SIZE))

    assert reads(800) > 5 * SHARE_FROM_READS
    assert 1 < reads(80) < SHARE_FROM_READS


def _stores_of(pid: int) -> list[Path]:
    return list(image_store.SHM.glob(f"{image_store.PREFIX}{pid}-*"))


@pytest.mark.skipif(not image_store.SHM.is_dir(), reason="no /dev/shm here")
def test_two_workers_publish_real_decodes_and_a_signal_removes_the_store(
    tiny80: Path, tmp_path: Path
) -> None:
    """While a two-worker run goes, its store holds exact decodes of the dataset's images;
    SIGTERM ends the run and the store with it."""
    refs = {Path(ImageStore("", 0)._path(r.key)).name: r for r in sample_refs(tiny80, 80)}
    out = tmp_path / "out"
    proc = start(
        "copypaste", "--src", str(tiny80), "--out", str(out), "-j", "2", "--num-images", "2000"
    )
    files: list[Path] = []
    deadline = time.monotonic() + 120
    while not files and time.monotonic() < deadline and proc.poll() is None:
        files = [f for s in _stores_of(proc.pid) for f in s.iterdir() if f.name in refs]
        time.sleep(0.02)
    assert files, "the run published nothing"
    ref = refs[files[0].name]
    published = ImageStore(str(files[0].parent), 0).read(ref.key)
    assert published is not None and np.array_equal(published, decode_image(ref))
    os.killpg(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    no_traceback(stderr)
    assert _stores_of(proc.pid) == []


def test_a_finished_run_leaves_no_store_and_a_tiny_dev_shm_changes_no_byte(
    tiny80: Path, tmp_path: Path
) -> None:
    """In a private mount namespace /dev/shm is a 2 MB tmpfs (a container's is often 64 MB):
    the two-worker run finishes with the one-worker run's bytes, and /dev/shm is empty after."""
    args = ["copypaste", "--src", str(tiny80), "--num-images", "400", "--originals", "none"]
    one = subprocess.run(
        [str(SCRIPT), *args, "--out", str(tmp_path / "one"), "-j", "1"], capture_output=True
    )
    assert one.returncode == 0, one.stderr
    script = (
        "mount -t tmpfs -o size=2m tmpfs /dev/shm && "
        + " ".join([str(SCRIPT), *args, "--out", str(tmp_path / "two"), "-j", "2", "--json"])
        + " && echo LEFT && ls -A /dev/shm"
    )
    two = subprocess.run(
        [*_namespace_prefix(), "sh", "-c", script], capture_output=True, text=True, timeout=300
    )
    assert two.returncode == 0, two.stderr
    summary, leftover = two.stdout.split("LEFT")
    assert json.loads(summary)["generated"] == 400
    assert all(not line.startswith(image_store.PREFIX) for line in leftover.split())
    assert tree_bytes(tmp_path / "two") == tree_bytes(tmp_path / "one")


@pytest.mark.skipif(not image_store.SHM.is_dir(), reason="no /dev/shm here")
def test_the_store_of_a_killed_run_goes_with_the_next_run(tiny80: Path, tmp_path: Path) -> None:
    """SIGKILL leaves the store behind (nothing can remove it then); the next run removes it."""
    proc = start(
        "copypaste", "--src", str(tiny80), "--out", str(tmp_path / "a"), "-j", "2",
        "--num-images", "2000",
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(f for s in _stores_of(proc.pid) for f in s.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None, "the run published nothing"
        time.sleep(0.02)
    kill_group(proc)  # (and removes what joblib left in /dev/shm, not the store)
    assert _stores_of(proc.pid)  # left behind
    args = ["copypaste", "--src", str(tiny80), "--out", str(tmp_path / "b"), "-j", "2"]
    done = subprocess.run([str(SCRIPT), *args, "--num-images", "20"], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert _stores_of(proc.pid) == []


def test_a_file_carries_its_size_and_a_sized_key_checks_it(tmp_path: Path) -> None:
    """Cutmix's keys carry no size (0, 0): the reader takes the shape from the file. Copy-paste's
    carry the annotations' size, which a decode of another size does not match."""
    store = ImageStore(str(tmp_path), 2**20)
    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    unsized = ("cutmix src", "ant/a.png", 0, 0)
    copy = store.write(unsized, pixels)
    assert copy is not None and not copy.flags.writeable and np.array_equal(copy, pixels)
    assert np.array_equal(ImageStore(str(tmp_path), 0).read(unsized), pixels)  # another worker
    assert store.write(("root", "a.jpg", 5, 7), pixels) is None  # 7 wide, 5 high: not 5 x 7
    assert store.write(("root", "gray.png", 7, 5), pixels[:, :, 0]) is None  # not HxWx3
    assert store.read(("cutmix src", "ant/b.png", 0, 0)) is None  # never written
    Path(store._path(("cutmix src", "short", 0, 0))).write_bytes(b"1234")  # no whole header
    assert store.read(("cutmix src", "short", 0, 0)) is None
