"""Shards group the outputs that read the same images (``plan.affinity_shards``), so that an
image used by several outputs is decoded once for them whichever worker runs the shard; and
what an output is made of never depends on what else its shard reads."""

from __future__ import annotations

import functools
import importlib
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np

from cpgen import images
from cpgen.copypaste.sources import ImageRef, ShardImages, decode_image, refs
from cpgen.datasets import coco
from cpgen.plan import CopyPasteTask, affinity_shards, shard
from tests.copypaste_helpers import EXAMPLES, block_mean, generate, tree_bytes

# the module: the package's ``run`` attribute is its run() function
copypaste_run = importlib.import_module("cpgen.copypaste.run")

Shards = list[list[CopyPasteTask]]


def each_image_once(images: int, seed: int = 0) -> list[CopyPasteTask]:
    """One output per image (its target), each with a random other image as its source."""
    rng = random.Random(seed)
    return [
        CopyPasteTask(i, i, (i + 1 + rng.randrange(images - 1)) % images, i) for i in range(images)
    ]


def decodes(shards: Shards) -> int:
    """Images decoded if each shard decodes the images it reads once (no cache across shards)."""
    return sum(len({t.target for t in s} | {t.source for t in s}) for s in shards)


def test_every_task_once_in_output_order_within_its_block() -> None:
    tasks = each_image_once(1000)
    shards = affinity_shards(tasks, 16, block=256)
    assert sorted(t.index for s in shards for t in s) == list(range(1000))
    for s in shards:
        assert [t.index for t in s] == sorted(t.index for t in s)
        assert len({t.index // 256 for t in s}) == 1  # a block's shards hold its outputs alone
    assert [len(s) for s in shards] == ([16] * 16 + [16] * 16 + [16] * 16 + [16] * 14 + [8])[
        : len(shards)
    ]
    assert affinity_shards(tasks, 16, block=256) == shards  # a function of the tasks alone


def test_outputs_sharing_images_share_shards() -> None:
    """2,000 outputs each using one image as target and about one as source: consecutive
    shards read about two distinct images per output, affinity shards about 1.2."""
    tasks = each_image_once(2000)
    grouped, consecutive = affinity_shards(tasks, 16), shard(tasks, 16)
    assert decodes(consecutive) > 3800
    assert decodes(grouped) < 2500


def test_few_images_are_read_by_two_shards() -> None:
    """Two workers decode an image twice when two shards read it and each runs one. Whole
    subtrees of the sharing graph per shard leave about 190 of 2,000 images read by two shards
    (groups cut from a plain depth-first order left about 320)."""
    for seed in range(3):
        tasks = each_image_once(2000, seed)
        read = Counter(
            image
            for s in affinity_shards(tasks, 16)
            for image in {t.target for t in s} | {t.source for t in s}
        )
        assert len(read) == 2000
        assert sum(n - 1 for n in read.values()) < 220


def test_pool_sources_are_other_images_than_targets() -> None:
    """Task i targets dataset image i and takes image i + 16 (mod 32) as its source: the
    dataset's image i + 16 (task i + 16's target) groups the two; a pool's image i + 16 is
    another image, shared with no task, so the shards are consecutive."""
    tasks = [CopyPasteTask(i, i, (i + 16) % 32, i) for i in range(32)]
    assert affinity_shards(tasks, 16, pool=True) == shard(tasks, 16)
    grouped = affinity_shards(tasks, 16)
    assert {0, 16} <= {t.index for t in grouped[0]}


def test_a_reduced_source_is_the_whole_decode_averaged_down_whoever_decoded_it() -> None:
    """A shard that reads an image whole (a target) and reduced (a source drawn small) decodes
    it once; the reduced pixels are the same as those of a shard that reads it reduced only, so
    an output never depends on which others share its shard."""
    index = coco.load(coco.find_layout(EXAMPLES))
    ref: ImageRef = next(iter(refs(index, [0]).values()))
    decodes: list[tuple[int, int]] = []

    def counting(data: bytes, expected: tuple[int, int]):
        decodes.append(expected)
        return images.decode(data, expected)

    cache = ShardImages(Counter({ref.key: 2}), decode=counting)
    whole = cache.take(ref)
    reduced, reduction = cache.get(ref, 2)
    size = (ref.width, ref.height)
    assert decodes == [size] and reduction == 2
    assert reduced.shape[:2] == ((ref.height + 1) // 2, (ref.width + 1) // 2)
    assert whole.shape[:2] == (ref.height, ref.width)
    assert np.array_equal(reduced, block_mean(decode_image(ref), 2))
    alone, _ = ShardImages(Counter({ref.key: 1}), decode=counting).get(ref, 2)
    assert decodes == [size, size] and np.array_equal(alone, reduced)


def shard_outputs(out: Path) -> list[list[int]]:
    """Each generated shard's output indices, from its status's groups."""
    shards = []
    for path in sorted((out / ".cpgen" / "shards").glob("*.json")):
        status = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        if status["kind"] == "generated":
            shards.append([index for index, *_ in status["groups"]])
    return shards


def test_outputs_merge_in_order_across_affinity_blocks(tmp_path, monkeypatch) -> None:
    """Blocks of 32 outputs instead of 4,096: 70 outputs in three blocks, each grouped into
    shards of its own outputs. The merge takes each block's outputs in order from its shards'
    groups, so every file is byte-identical to a run in one block."""
    one_block, blocks = tmp_path / "one", tmp_path / "three"
    generate("--src", str(EXAMPLES), "--out", str(one_block), "--num-images", "70", "-j", "2")
    monkeypatch.setattr(copypaste_run, "AFFINITY_BLOCK", 32)
    monkeypatch.setattr(
        copypaste_run, "affinity_shards", functools.partial(affinity_shards, block=32)
    )
    generate("--src", str(EXAMPLES), "--out", str(blocks), "--num-images", "70", "-j", "2")
    assert any(len({i // 32 for i in s}) > 1 for s in shard_outputs(one_block))
    assert all(len({i // 32 for i in s}) == 1 for s in shard_outputs(blocks))
    assert tree_bytes(blocks) == tree_bytes(one_block)
