"""CutMix tasks (pure, seeded) and one output's preparation (decode, resize, draw the box)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cpgen import images
from cpgen.cutmix.options import CutMixOptions
from cpgen.datasets import folders
from cpgen.ops.cutmix import Box, base_weight, resize
from cpgen.plan import PARAMS_STREAM, PLAN_STREAM, task_rng, task_seed
from cpgen.sampling import choose_other, sample_cutmix

# ---------------------------------------------------------------------------------------------
# Plan


@dataclass(frozen=True)
class CutMixTask:
    """One output: positions of its base and patch images in the index, and its seed."""

    index: int
    base: int
    patch: int
    seed: int


def plan_tasks(num_inputs: int, num_outputs: int, seed: int) -> list[CutMixTask]:
    """Bases cycle through the inputs; each patch is a uniform random other input."""
    if num_inputs < 2:
        raise ValueError("cutmix needs at least two inputs")
    tasks = []
    for index in range(num_outputs):
        base = index % num_inputs
        seed_i = task_seed(seed, index)
        patch = choose_other(task_rng(seed_i, PLAN_STREAM), num_inputs, base)
        tasks.append(CutMixTask(index, base, patch, seed_i))
    return tasks


def plan(index: folders.FolderIndex, options: CutMixOptions) -> list[CutMixTask]:
    num = options.num_images if options.num_images is not None else len(index.files)
    return plan_tasks(len(index.files), num, options.seed)


def plan_rows(index: folders.FolderIndex, tasks: list[CutMixTask]) -> list[dict[str, Any]]:
    """The plan for ``--dry-run``: output index, base and patch files, seed."""
    return [
        {
            "index": t.index,
            "base": index.files[t.base],
            "patch": index.files[t.patch],
            "seed": t.seed,
        }
        for t in tasks
    ]


# ---------------------------------------------------------------------------------------------
# One output, in memory


@dataclass
class Prepared:
    """A base and its patch at the output size, and the box to copy (not yet mixed)."""

    base: images.Image
    patch: images.Image
    box: Box
    base_weight: float


def prepare(
    task_seed: int, base: images.Image, patch: images.Image, options: CutMixOptions
) -> Prepared:
    """Resize the base (to ``--size``) and the patch (to the base), and draw the box."""
    if options.size is not None:
        base = resize(base, *options.size)
    height, width = base.shape[:2]
    patch = resize(patch, height, width)
    params = sample_cutmix(
        task_rng(task_seed, PARAMS_STREAM),
        height,
        width,
        options.alpha,
        options.length,
        options.uniform_sampling,
    )
    return Prepared(base, patch, params.box, base_weight(params.box, height, width))
