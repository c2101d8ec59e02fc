"""The worker's decoded-image cache across shards (``--cache-mb``): it changes no output byte,
whatever its size, the workers or a resume, and never hands out an array a paste modified."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cpgen import copypaste
from cpgen.copypaste.sources import WORKER_IMAGES, ImageRef, WorkerImages, decode_image
from cpgen.datasets import coco
from tests.conftest import make_coco
from tests.test_copypaste_e2e import tree_bytes
from tests.test_resume import ARGS, crash
from tests.test_resume import copypaste as resume_run


def digests(out: Path) -> dict[str, str]:
    """Every output file but cpgen's own state (which records timings)."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not any(part.startswith(".cpgen") for part in p.relative_to(out).parts)
    }


def test_cache_changes_no_byte(tiny80: Path, tmp_path: Path) -> None:
    """80 images, 200 outputs (each image a target or source ~5 times): no cache, the default
    one (in this process, and in two worker processes) and a cache too small for most images
    write the same files."""
    index = coco.load(coco.find_layout(tiny80))
    options = copypaste.CopyPasteOptions(num_images=200, originals="none", blend="gaussian")
    runs = {
        "off": copypaste.RunOptions(workers=1, cache_mb=0),
        "default": copypaste.RunOptions(workers=1),
        "two": copypaste.RunOptions(workers=2),
        "tiny": copypaste.RunOptions(workers=1, cache_mb=3),
    }
    found = {}
    for name, run_options in runs.items():
        copypaste.run(index, tmp_path / name, options, run_options)
        found[name] = digests(tmp_path / name)
    assert len(found["off"]) == 201  # 200 images and annotations.json
    for name in runs:
        assert found[name] == found["off"], name
    assert not WORKER_IMAGES.decoded and WORKER_IMAGES.used == 0  # freed after the run


def test_resume_with_another_cache_size(tmp_path: Path) -> None:
    """--cache-mb is no option of the output: a crashed run resumed with another value gives
    the uninterrupted run's bytes."""
    src = make_coco(tmp_path / "src", n_images=6)
    expected = tmp_path / "expected"
    assert resume_run(src, expected, *ARGS, "--cache-mb", "0").exit_code == 0
    out = tmp_path / "out"
    assert resume_run(src, out, *ARGS, "--cache-mb", "0").exit_code == 0
    crash(out, 3)
    result = resume_run(src, out, *ARGS, "--resume", "--cache-mb", "64")
    assert result.exit_code == 0, result.output
    assert tree_bytes(out) == tree_bytes(expected)


def test_worker_images_budget_and_runs(tiny80: Path) -> None:
    """LRU by bytes within the budget; a new run empties it; a hit is the decode itself."""
    index = coco.load(coco.find_layout(tiny80))
    root = str(index.files.images)
    refs = [
        ImageRef(p, r["id"], r["file_name"], r["width"], r["height"], root)
        for p, r in enumerate(index.images[:3])
    ]
    first = decode_image(refs[0])
    cache = WorkerImages()
    cache.configure("run-a", first.nbytes + 10)  # room for one full image
    pixels, shared = cache.get(refs[0])
    assert shared and np.array_equal(pixels, first)
    assert cache.get(refs[0])[0] is pixels  # a hit
    cache.get(refs[1])
    assert list(cache.decoded) == [refs[1].key]  # the least recently used went out
    pixels, shared = cache.get(refs[2], keep=False)  # no later use: decoded, not kept
    assert not shared and np.array_equal(pixels, decode_image(refs[2]))
    assert list(cache.decoded) == [refs[1].key]
    assert cache.get(refs[1], keep=False)[1] and not cache.decoded  # its last use: it leaves
    cache.configure("run-b", 2**30)
    assert not cache.decoded and cache.used == 0
    cache.configure("run-b", 0)
    assert cache.get(refs[0])[1] is False  # no budget: nothing kept, nothing shared
    assert not cache.decoded


def test_a_targets_masks_are_rasterised_once_per_list_of_records(tiny80: Path) -> None:
    """A worker hands the same parsed records to every output of an image it keeps: their
    masks are rasterised once, and are exactly what rasterising them again gives."""
    from cpgen import masks
    from cpgen.copypaste import compose
    from cpgen.copypaste.sources import target_segmentation
    from cpgen.datasets.coco_checks import usable_record

    index = coco.load(coco.find_layout(tiny80))
    p = max(range(len(index.images)), key=lambda q: len(index.anns_by_image[q]))
    h, w = index.images[p]["height"], index.images[p]["width"]
    records = [usable_record(a) for a in index.anns_by_image[p]]
    rles, boxes, areas = compose.target_masks(records, h, w)
    expected = masks.segmentations_to_rles([target_segmentation(a, h, w) for a in records], h, w)
    assert len(rles) == len(records) > 5
    assert [r["counts"] for r in rles] == [r["counts"] for r in expected]
    assert boxes == masks.bboxes(expected) and areas == masks.areas(expected)
    again = compose.target_masks(records, h, w)
    assert again[0] is rles  # kept, not rasterised again
    assert again[1] == boxes  # new lists: a record may change its own
    assert all(a is not b for a, b in zip(again[1], boxes, strict=True))
    assert compose.target_masks(list(records), h, w)[0] is not rles  # another list: its own
    compose.forget_target_masks()
    assert compose.target_masks(records, h, w)[0] is not rles
