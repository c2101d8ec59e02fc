"""Plans: pure functions of (dataset index, options, seed) giving tasks and shards.

Every task carries its own seed, derived from ``SeedSequence([seed, output_index])``; all of a
task's randomness comes from ``task_rng(task_seed, stream)``, so an output never depends on the
worker count, the backend, the order shards finish in, or a resume.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


@dataclass(frozen=True)
class CopyPasteTask:
    """One copy-paste output: positions of its target and source in the dataset index."""

    index: int
    target: int
    source: int
    seed: int


def plan_copypaste(
    targets: Sequence[int], pasteable: Sequence[int], num_outputs: int, seed: int
) -> list[CopyPasteTask]:
    """Targets cycle through ``targets``; each source is a random other pasteable image.

    ``targets`` and ``pasteable`` list (ascending) the positions of the usable images and of
    those with at least one non-crowd instance. When the target is the only pasteable image,
    it is its own source.
    """
    where = {pos: i for i, pos in enumerate(pasteable)}
    tasks = []
    for index in range(num_outputs):
        target = targets[index % len(targets)]
        seed_i = task_seed(seed, index)
        rng = task_rng(seed_i, PLAN_STREAM)
        if len(pasteable) == 1:
            source = pasteable[0]
        else:
            source = pasteable[choose_other(rng, len(pasteable), where.get(target))]
        tasks.append(CopyPasteTask(index, target, source, seed_i))
    return tasks


def shard(items: Sequence[T], size: int) -> list[list[T]]:
    """Consecutive groups of ``size`` items (the last may be shorter)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
