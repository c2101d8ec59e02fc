"""Draw op parameters from a task's numpy Generator; the only place randomness is consumed.

The order of draws is part of the output contract: changing it changes every output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cpgen.ops.cutmix import Box, box_at, centre_range, cut_from_lambda, cut_from_length
from cpgen.ops.paste import Placement


@dataclass(frozen=True)
class CopyPasteParams:
    """The parameters of one copy-paste output, recorded in its provenance."""

    instances: tuple[int, ...]  # positions in the source's pasteable instance list
    placement: Placement


def choose_other(rng: np.random.Generator, candidates: int, exclude: int | None) -> int:
    """A uniform position in ``range(candidates)`` other than ``exclude`` (if it is a candidate)."""
    if exclude is None:
        return int(rng.integers(candidates))
    pick = int(rng.integers(candidates - 1))
    return pick + 1 if pick >= exclude else pick


def sample_copypaste(
    rng: np.random.Generator,
    num_instances: int,
    source_size: tuple[int, int],
    target_size: tuple[int, int],
    max_paste: int,
    scale_range: tuple[float, float],
    hflip: float,
    required: Sequence[int] | None = None,
    rotate: float = 0.0,
) -> CopyPasteParams:
    """Subset, flip, scale, offset (and angle) for pasting a source (w, h) onto a target (w, h).

    Subset size is uniform in ``1..min(n, max_paste)``. The scale is ``u * fit`` with ``u`` uniform
    in ``scale_range`` and ``fit`` the factor that fits the source inside the target frame. The
    offset is uniform over positions where the placed source either lies inside the frame (when
    smaller) or covers it (when larger), so the visible part is a random crop.

    ``required`` (positions of the instances of a category to balance) restricts the subset to
    them: only that category is pasted, so a common category cannot crowd out a rare one.
    ``rotate`` > 0 draws an angle uniform in ``[-rotate, rotate]`` degrees, last; with 0 nothing
    more is drawn.
    """
    pool = num_instances if required is None else len(required)
    k = int(rng.integers(1, min(pool, max_paste) + 1))
    picks = (int(i) for i in rng.choice(pool, size=k, replace=False))
    chosen = tuple(sorted(picks if required is None else (int(required[i]) for i in picks)))
    flip = bool(rng.random() < hflip)
    (sw, sh), (tw, th) = source_size, target_size
    fit = min(tw / sw, th / sh)
    scale = float(rng.uniform(scale_range[0], scale_range[1])) * fit
    free_x, free_y = tw - sw * scale, th - sh * scale
    offset_x = float(rng.uniform(min(0.0, free_x), max(0.0, free_x)))
    offset_y = float(rng.uniform(min(0.0, free_y), max(0.0, free_y)))
    angle = float(rng.uniform(-rotate, rotate)) if rotate > 0 else 0.0
    return CopyPasteParams(chosen, Placement(flip, scale, offset_x, offset_y, sw, sh, angle))


@dataclass(frozen=True)
class CutMixParams:
    """The parameters of one CutMix box, recorded in its provenance.

    ``lam`` is the drawn lambda (the base's nominal share; None with a fixed ``length``), ``cut``
    the nominal (rows, cols) before clipping, ``centre`` the drawn (row, col), ``box`` the result.
    """

    lam: float | None
    cut: tuple[int, int]
    centre: tuple[int, int]
    box: Box


def sample_cutmix(
    rng: np.random.Generator,
    height: int,
    width: int,
    alpha: float = 1.0,
    length: float | None = None,
    uniform_sampling: bool = False,
) -> CutMixParams:
    """Draw a CutMix box for a ``height x width`` frame as Composer's ``_rand_bbox`` does.

    Draws, in this order: lambda ~ Beta(alpha, alpha) (only when ``length`` is None and
    alpha > 0; alpha 0 gives lambda 0, a full-frame cut, as in Composer), then the centre row,
    then the centre column, each uniform over :func:`cpgen.ops.cutmix.centre_range`.
    """
    if length is not None:
        lam = None
        cut_rows, cut_cols = cut_from_length(height, length), cut_from_length(width, length)
    else:
        lam = float(rng.beta(alpha, alpha)) if alpha > 0 else 0.0
        cut_rows, cut_cols = cut_from_lambda(height, lam), cut_from_lambda(width, lam)
    centre_row = int(rng.integers(*centre_range(height, cut_rows, uniform_sampling)))
    centre_col = int(rng.integers(*centre_range(width, cut_cols, uniform_sampling)))
    box = box_at(height, width, cut_rows, cut_cols, centre_row, centre_col)
    return CutMixParams(lam, (cut_rows, cut_cols), (centre_row, centre_col), box)
