"""CutMix workers keep decoded images across shards (``--cache-mb``): a small folder multiplied
many times is decoded about once per worker instead of twice per output, with the same bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cpgen import cutmix, images
from cpgen.cutmix.shard import WORKER_IMAGES, CutMixShard, ImageRef, run_cutmix_shard
from cpgen.datasets import folders
from tests.test_copypaste_e2e import tree_bytes
from tests.test_cutmix_cli import invoke, make_folder


class CountingLoads:
    """``images.load`` that counts the files it decodes, for runs in this process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = images.load

        def load(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(images, "load", load)


def run(src: Path, out: Path, *args: str) -> Path:
    result = invoke("--src", str(src), "--out", str(out), "--quiet", *args)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("size", [None, "20x28", "40x30"])
def test_the_cache_changes_no_byte(tmp_path: Path, size: str | None) -> None:
    """Each image is a base three times: without --size the base is kept at its own size, the
    array the cache holds, so a box pasted into it in place would show in its later outputs."""
    src = make_folder(tmp_path / "src", {"ant": 4, "bee": 3})
    args = ["--num-images", "21", "--soft-labels"] + (["--size", size] if size else [])
    plain = run(src, tmp_path / "plain", *args, "--cache-mb", "0", "-j", "1")
    for name, workers in (("one", "1"), ("two", "2")):
        cached = run(src, tmp_path / name, *args, "-j", workers)
        assert tree_bytes(cached) == tree_bytes(plain), name
    assert len(list((plain / "images").iterdir())) == 21


def test_a_folder_multiplied_is_decoded_once(tmp_path: Path, monkeypatch) -> None:
    src = make_folder(tmp_path / "src", {"ant": 4, "bee": 4})
    loads = CountingLoads(monkeypatch)
    run(src, tmp_path / "cached", "--num-images", "80", "-j", "1")
    assert loads.count == 8  # each image once
    assert not WORKER_IMAGES.decoded and WORKER_IMAGES.used == 0  # freed after the run
    loads.count = 0
    run(src, tmp_path / "plain", "--num-images", "80", "-j", "1", "--cache-mb", "0")
    assert loads.count == 160  # a base and a patch per output
    assert tree_bytes(tmp_path / "cached") == tree_bytes(tmp_path / "plain")


def test_a_shard_keeps_only_the_images_read_again(tmp_path: Path) -> None:
    """Within the shard an image stays until its last read; after it, only the images a later
    shard reads (``later``) are kept."""
    src = make_folder(tmp_path / "src", {"ant": 3, "bee": 2})
    index = folders.load(src)
    tasks = cutmix.plan_tasks(len(index.files), 5, seed=0)
    refs = {p: ImageRef(p, index.files[p], index.labels[p]) for p in range(len(index.files))}
    (tmp_path / "out").mkdir()
    job = CutMixShard(
        0,
        tasks,
        refs,
        index.classes,
        cutmix.CutMixOptions(),
        str(src),
        str(tmp_path / "out"),
        ("a run", 2**20, "", 0),
        frozenset({1, 3}),
    )
    try:
        result = run_cutmix_shard(job)
        assert result.done == 5
        kept = {key[1] for key in WORKER_IMAGES.decoded}
        assert kept == {index.files[1], index.files[3]}
    finally:
        WORKER_IMAGES.clear()


def test_with_a_size_the_cache_holds_each_image_at_that_size(tmp_path: Path) -> None:
    """Every use of an image resizes it to --size (a base to it, a patch to its base), so the
    worker keeps it resized: one resize per image, and a small image's memory."""
    src = make_folder(tmp_path / "src", {"ant": 3, "bee": 2}, height=60, width=90)
    index = folders.load(src)
    refs = {p: ImageRef(p, index.files[p], index.labels[p]) for p in range(len(index.files))}
    (tmp_path / "out").mkdir()
    job = CutMixShard(
        0,
        cutmix.plan_tasks(len(index.files), 5, seed=0),
        refs,
        index.classes,
        cutmix.CutMixOptions(size=(12, 16)),
        str(src),
        str(tmp_path / "out"),
        ("a run", 2**20, "", 0),
        frozenset(refs),
    )
    try:
        assert run_cutmix_shard(job).done == 5
        assert len(WORKER_IMAGES.decoded) == 5
        assert all(a.shape == (12, 16, 3) for a in WORKER_IMAGES.decoded.values())
    finally:
        WORKER_IMAGES.clear()


def test_a_broken_image_is_still_named_and_counted(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", {"ant": 3, "bee": 3})
    (src / "bee" / "bee_1.png").write_bytes(b"not an image")
    result = invoke("--src", str(src), "--out", str(tmp_path / "out"), "--num-images", "18")
    assert result.exit_code == 3, result.output
    assert "bee/bee_1.png" in result.output


def test_a_negative_cache_is_a_usage_error(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", {"ant": 2, "bee": 2})
    result = invoke("--src", str(src), "--out", str(tmp_path / "out"), "--cache-mb", "-1")
    assert result.exit_code == 2
    assert "Error: --cache-mb must be 0 or more" in result.output


def test_a_cutmix_worker_does_not_import_copy_paste() -> None:
    """The cache lives in ``cpgen.worker_images``: a cutmix worker starts without copy-paste's
    modules (pycocotools and the compositing code)."""
    code = "import sys, cpgen.cutmix.shard; print('cpgen.copypaste' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False"], done.stderr


def _second_worker(job: CutMixShard) -> int:
    """In another process: run ``job``; how many files it decoded."""
    calls = 0
    real = images.load

    def load(*args, **kwargs):
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    images.load = load
    run_cutmix_shard(job)
    return calls


def test_a_second_worker_maps_what_the_first_decoded(tmp_path: Path) -> None:
    """With a store (two or more workers on this machine), a worker publishes the images a
    later shard reads, and another process reads them from there instead of decoding them,
    writing the same bytes."""
    import dataclasses
    import multiprocessing

    src = make_folder(tmp_path / "src", {"ant": 3, "bee": 2})
    index = folders.load(src)
    tasks = cutmix.plan_tasks(len(index.files), 10, seed=0)
    refs = {p: ImageRef(p, index.files[p], index.labels[p]) for p in range(len(index.files))}
    store = tmp_path / "store"
    store.mkdir()
    jobs = []
    for out in ("shared", "plain"):
        (tmp_path / out).mkdir()
        cache = ("a run", 2**20, str(store), 2**20) if out == "shared" else ("", 0, "", 0)
        first = CutMixShard(
            0,
            tasks[:5],
            refs,
            index.classes,
            cutmix.CutMixOptions(),
            str(src),
            str(tmp_path / out),
            cache,
            frozenset(refs),
        )
        jobs.append(
            (first, dataclasses.replace(first, number=1, tasks=tasks[5:], later=frozenset()))
        )
    try:
        run_cutmix_shard(jobs[0][0])  # reads every image: publishes them all
        assert len(list(store.iterdir())) == len(refs)
    finally:
        WORKER_IMAGES.clear()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(_second_worker, (jobs[0][1],)) == 0  # no decode
        assert pool.apply(_second_worker, (jobs[1][1],)) == 10  # a base and a patch each
    run_cutmix_shard(jobs[1][0])
    assert tree_bytes(tmp_path / "shared") == tree_bytes(tmp_path / "plain")
    assert len(list((tmp_path / "shared" / "images").iterdir())) == 10
