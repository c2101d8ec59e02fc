"""Plans: pure functions of (dataset index, options, seed) giving tasks and shards.

Every task carries its own seed, derived from ``SeedSequence([seed, output_index])``; all of a
task's randomness comes from ``task_rng(task_seed, stream)``, so an output never depends on the
worker count, the backend, the order shards finish in, or a resume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from cpgen.sampling import choose_other

T = TypeVar("T")

#: Streams of a task's generator: the plan's choices and the op parameters.
PLAN_STREAM = 0
PARAMS_STREAM = 1


def task_seed(seed: int, index: int) -> int:
    """The seed of output ``index`` of a run seeded with ``seed`` (a 63-bit integer)."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def task_rng(seed: int, stream: int) -> np.random.Generator:
    """The one way a task's generator is made from its seed."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))


@dataclass(frozen=True)
class CopyPasteTask:
    """One copy-paste output: positions of its target and source in their datasets.

    ``background`` is the position of a background photo when the output is on one (then
    ``target`` is unused); ``category`` is the category drawn by ``--balance category``.
    """

    index: int
    target: int
    source: int
    seed: int
    background: int | None = None
    category: int | None = None


def plan_copypaste(
    targets: Sequence[int],
    pasteable: Sequence[int],
    num_outputs: int,
    seed: int,
    *,
    same_dataset: bool = True,
    backgrounds: int = 0,
    background_frac: float = 0.0,
    by_category: Mapping[int, Sequence[int]] | None = None,
) -> list[CopyPasteTask]:
    """Targets cycle through ``targets``; each source is a random other pasteable image.

    ``targets`` and ``pasteable`` list (ascending) the positions of the usable images and of
    those with at least one instance to paste. When the target is the only pasteable image,
    it is its own source. Sources from another dataset (``same_dataset`` False) are never
    "the target". With ``backgrounds`` photos, each output first draws whether it goes on one
    (probability ``background_frac``) and which. With ``by_category`` (category id -> the
    pasteable images holding it) each output draws a category uniformly, then an image holding
    it. Without these options the draws are exactly the plain plan's.
    """
    where = {pos: i for i, pos in enumerate(pasteable)}
    categories = sorted(by_category) if by_category is not None else []
    holders = {c: {pos: i for i, pos in enumerate(by_category[c])} for c in categories}
    tasks = []
    for index in range(num_outputs):
        target = targets[index % len(targets)]
        seed_i = task_seed(seed, index)
        rng = task_rng(seed_i, PLAN_STREAM)
        background = None
        if backgrounds and rng.random() < background_frac:
            background = int(rng.integers(backgrounds))
        own = same_dataset and background is None  # the target's own instances are candidates
        category = None
        candidates: Sequence[int] = pasteable
        exclude = where.get(target) if own else None
        if by_category is not None:
            category = categories[int(rng.integers(len(categories)))]
            candidates = by_category[category]
            exclude = holders[category].get(target) if own else None
        if len(candidates) == 1:
            source = candidates[0]
        else:
            source = candidates[choose_other(rng, len(candidates), exclude)]
        tasks.append(CopyPasteTask(index, target, source, seed_i, background, category))
    return tasks


def shard(items: Sequence[T], size: int) -> list[list[T]]:
    """Consecutive groups of ``size`` items (the last may be shorter)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


#: Tasks grouped by :func:`affinity_shards` at a time (a multiple of the shard size): a block's
#: shards hold only its outputs, so the merge restores output order a block at a time, with at
#: most this / shard size files open.
AFFINITY_BLOCK = 4096


def affinity_shards(
    tasks: Sequence[CopyPasteTask], size: int, *, pool: bool = False, block: int = AFFINITY_BLOCK
) -> list[list[CopyPasteTask]]:
    """Groups of ``size`` tasks (each in output order) in which tasks that read the same image
    tend to be together, so that a shard decodes it once for all of them whichever worker runs
    it. Consecutive outputs share no image when each is used about once (one output per image:
    each is one output's target and about one other's source), and two workers would then decode
    half the images twice; an image read by two shards is decoded twice when two workers run
    them.

    Within each block of ``block`` consecutive tasks, the tasks are grouped by
    :func:`_affinity_order` through the images they share (target images, and source images:
    the dataset's, or with ``pool`` the pool's); shards are consecutive groups of that order. A
    pure function of the tasks, the same on every run and resume; where no two tasks share an
    image it gives consecutive groups.
    """
    groups: list[list[CopyPasteTask]] = []
    for begin in range(0, len(tasks), block):
        part = tasks[begin : begin + block]
        order = _affinity_order([_image_keys(t, pool) for t in part], size)
        groups += [
            [part[i] for i in sorted(order[k : k + size])] for k in range(0, len(order), size)
        ]
    return groups


def _affinity_order(keys: Sequence[Sequence[tuple[str, int]]], size: int) -> list[int]:
    """The positions ``0 .. len(keys) - 1`` (tasks, each reading the images ``keys[i]``) in an
    order whose consecutive groups of ``size`` share few images.

    Tasks linked by a shared image form a graph; a depth-first search from the first task not
    yet reached spans each of its parts with a tree. From the leaves up, each task
    gathers itself and what its subtrees left over, smallest first, and cuts off full groups
    from the far end whenever it holds more than ``size``: a group is then most often whole
    subtrees, tied to the rest by the one image each shares with its parent. The trees' last
    leftovers follow, largest first. On one output per image (2,000 tasks in groups of 16) this
    leaves about 190 images read by two groups, against 320 for groups cut from the search order
    itself and 1,000 or more for consecutive outputs.
    """
    sharing: dict[tuple[str, int], list[int]] = {}
    for i, own in enumerate(keys):
        for key in own:
            sharing.setdefault(key, []).append(i)
    children: list[list[int]] = [[] for _ in keys]
    reached = bytearray(len(keys))
    visited: list[int] = []  # each task after its parent
    roots = []
    for first in range(len(keys)):
        if reached[first]:
            continue
        reached[first] = 1
        roots.append(first)
        stack = [first]
        while stack:
            i = stack.pop()
            visited.append(i)
            for key in keys[i]:
                # each image's sharers are looked at once (an image many outputs read would
                # otherwise be scanned by each of them)
                for j in sharing.pop(key, ()):
                    if not reached[j]:
                        reached[j] = 1
                        children[i].append(j)
                        stack.append(j)
    full: list[int] = []  # the groups cut off, one after another
    left: list[list[int]] = [[] for _ in keys]
    for i in reversed(visited):  # each task after its children
        gathered = [i]
        for piece in sorted((left[j] for j in children[i]), key=len):
            gathered += piece
        for j in children[i]:
            left[j] = []
        keep = len(gathered) - (len(gathered) - 1) // size * size  # 1 .. size stay
        for end in range(len(gathered), keep, -size):
            full += gathered[end - size : end]
        left[i] = gathered[:keep]
    for piece in sorted((left[r] for r in roots), key=len, reverse=True):
        full += piece
    return full


def _image_keys(task: CopyPasteTask, pool: bool) -> list[tuple[str, int]]:
    """The images a shard decodes for a task: its source, then its target (a background photo
    is read for each use, so sharing one saves nothing)."""
    source = ("s" if pool else "t", task.source)
    return [source] if task.background is not None else [source, ("t", task.target)]
