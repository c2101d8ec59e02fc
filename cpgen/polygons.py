"""Exact COCO polygons of a binary mask: outlines along pixel edges, holes joined by cuts.

Coordinates are pixel *corners*: pixel ``(row y, column x)`` is the unit square from corner
``(x, y)`` to ``(x + 1, y + 1)``, so every vertex is an integer in ``[0, w] x [0, h]``.

Why these polygons decode exactly with pycocotools (``rleFrPoly``, which Detectron2's and
MMDetection's polygon masks also use): it scales vertices by 5, rounds, walks every edge, and for
each pixel column ``x`` whose centre ``5x + 2.5`` an edge crosses it toggles the mask on at row
``ceil(y - 0.4)`` of that crossing; toggles at one position cancel in pairs. A horizontal edge at
corner row ``c`` from ``x = a`` to ``x = b`` therefore toggles columns ``a .. b - 1`` at row
``c``, exactly the pixel edges it runs along; a vertical edge toggles nothing; a segment walked
once each way (a zero-width cut, whatever its slope) toggles the same positions twice, which
cancel. So a closed outline made of a component's pixel edges, with its holes' outlines joined
to it by cuts, fills exactly the component's pixels. Parts of one annotation are united
(``frPyObjects`` + ``merge``), so each 8-connected component is one part; an island inside a
hole is a component of its own and so its own part.

Tracing keeps the foreground on the right (clockwise on screen for outer outlines,
anticlockwise around holes) and turns left where two pixels touch only at a corner, so such
pixels stay in one outline (8-connectivity: a diagonal one-pixel line is one part). The shoelace
area of every part equals its pixel count. Everything is traced from a mask's foreground runs
down its columns (what an RLE holds: ``runs_to_exact_polygons``; a raster is turned into them
first, in a few numpy passes over it), at a cost in runs and outline segments, not pixels; many
masks are traced in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

# travel directions on screen (y down), clockwise: a right turn is +1, a left turn -1 (mod 4)
EAST, SOUTH, WEST, NORTH = 0, 1, 2, 3

Ints = npt.NDArray[np.int64]


def mask_to_exact_polygons(
    mask: npt.ArrayLike, offset: tuple[int, int] = (0, 0)
) -> list[list[float]]:
    """COCO polygon parts (``[x0, y0, x1, y1, ...]``, pixel corners) that rasterise with
    pycocotools to exactly ``mask`` (an HxW array, nonzero = inside); ``[]`` for an empty mask.

    One part per 8-connected component, its holes joined to its outline by zero-width cuts;
    every part has at least 4 vertices (8 numbers). ``offset`` ``(x, y)``, pixels, is added to
    every vertex (for a mask cropped out of a larger frame). Coordinates are Python ints (valid
    JSON numbers that every COCO reader turns into floats).
    """
    return masks_to_exact_polygons([mask], [offset])[0]


def masks_to_exact_polygons(
    masks: Sequence[npt.ArrayLike], offsets: Sequence[tuple[int, int]]
) -> list[list[list[float]]]:
    """``mask_to_exact_polygons`` of each mask with its offset, traced in one pass
    (:func:`runs_to_exact_polygons` of the masks' runs down their columns)."""
    runs, boxes = [], []
    for mask, (dx, dy) in zip(masks, offsets, strict=True):
        columns, starts, stops = _raster_runs(_binary(np.asarray(mask)))
        runs.append((columns + dx, starts + dy, stops + dy))
        if columns.size:
            left, top = int(columns.min()), int(starts.min())
            boxes.append(
                (left + dx, top + dy, int(columns.max()) + 1 - left, int(stops.max()) - top)
            )
        else:
            boxes.append((0, 0, 0, 0))
    return runs_to_exact_polygons(runs, boxes)


def _raster_runs(binary: npt.NDArray[np.uint8]) -> tuple[Ints, Ints, Ints]:
    """A 0/1 mask's foreground runs down its columns: pixel column, first row, past row."""
    padded = np.zeros((binary.shape[1], binary.shape[0] + 2), dtype=np.int8)
    padded[:, 1:-1] = binary.T  # a column per row, background above and below
    change = padded[:, 1:] - padded[:, :-1]
    columns, starts = np.nonzero(change == 1)  # both in column order, then row order
    stops = np.nonzero(change == -1)[1]
    return columns.astype(np.int64), starts.astype(np.int64), stops.astype(np.int64)


def runs_to_exact_polygons(
    runs: Sequence[tuple[Ints, Ints, Ints]], boxes: Sequence[Sequence[int]]
) -> list[list[list[float]]]:
    """``mask_to_exact_polygons`` of masks given as foreground runs down their columns: per
    mask, pixel columns, first rows and past rows of its runs (each run within one column),
    and its tight box ``(x, y, w, h)``; vertices in the same pixel coordinates. The cost is in
    runs rather than pixels (:func:`joined_runs_to_exact_polygons`)."""
    if not runs:
        return []
    owner = np.repeat(np.arange(len(runs)), [r[0].size for r in runs])
    columns, starts, stops = (np.concatenate([r[i] for r in runs]) for i in range(3))
    return joined_runs_to_exact_polygons(columns, starts, stops, owner, boxes)


def joined_runs_to_exact_polygons(
    columns: Ints, starts: Ints, stops: Ints, owner: Ints, boxes: Sequence[Sequence[int]]
) -> list[list[list[float]]]:
    """:func:`runs_to_exact_polygons` of the runs of several masks laid end to end, ``owner``
    saying whose each run is. The masks' boxes are stacked one above the other, a background
    row apart, so no outline reaches another mask and each mask's parts come out as its own, in
    its own order; the per-call numpy overhead is paid once for all of them."""
    result: list[list[list[float]]] = [[] for _ in boxes]
    box = np.array(boxes, dtype=np.int64).reshape(-1, 4)
    used = np.flatnonzero((box[:, 2] > 0) & (box[:, 3] > 0))
    if used.size == 0:
        return result
    width = int(box[used, 2].max())
    # mask k's padded rows start at row[k]; padded (r, c) is pixel (top + r - row, left + c - 1)
    row = np.zeros(len(boxes), np.int64)
    first_rows = np.cumsum(np.concatenate(([0], box[used, 3] + 1))) + 1
    row[used] = first_rows[:-1]
    shift_x, shift_y = box[:, 0] - 1, box[:, 1] - row
    keep = np.isin(owner, used) if used.size < len(boxes) else slice(None)
    columns, starts, stops, owner = columns[keep], starts[keep], stops[keep], owner[keep]
    horizontal, vertical = _column_edges(
        columns - shift_x[owner], starts - shift_y[owner], stops - shift_y[owner]
    )
    parts = _outlines(width + 2, horizontal, vertical)
    if not parts:
        return result
    # each part's mask, from the padded row of its first corner; all parts moved back at once
    lengths = [2 * len(part) for part in parts]
    tops = np.array([part[0, 1] for part in parts], dtype=np.int64)
    owners = used[np.searchsorted(first_rows, tops, side="right") - 1]
    shift = np.stack((shift_x[owners], shift_y[owners]), axis=1)
    numbers = (np.concatenate(parts) + np.repeat(shift, np.array(lengths) // 2, axis=0)).ravel()
    flat = numbers.tolist()
    at = 0
    for k, n in zip(owners.tolist(), lengths, strict=True):
        result[k].append(flat[at : at + n])
        at += n
    return result


def _binary(mask: np.ndarray) -> npt.NDArray[np.uint8]:
    """The mask as 0/1 uint8 (a view of uint8 or bool input whose values are already 0/1)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if mask.dtype == np.bool_:
        return mask.view(np.uint8)
    if mask.dtype == np.uint8 and mask.size and int(mask.max()) <= 1:
        return mask
    return (mask != 0).view(np.uint8)


def _column_edges(
    columns: Ints, starts: Ints, stops: Ints
) -> tuple[tuple[Ints, Ints, Ints, Ints], tuple[Ints, Ints, Ints, Ints]]:
    """From a mask's foreground runs down its columns (pixel rows ``starts[i] .. stops[i] - 1``
    of pixel column ``columns[i]``, each run whole, in any order): the horizontal runs of pixel
    edges (corner row, first and past column, +1 where the foreground is below) in row order,
    and the vertical ones (corner column, first and past row, +1 where the foreground is to the
    east) in column order. The cost is the number of runs, not the mask's area."""
    # a run's top edge is at corner row ``start`` (+1), its bottom edge at ``stop`` (-1); edges
    # of neighbouring columns at one corner row and with one sign make one horizontal run
    edge_row = np.concatenate((starts, stops))
    edge_column = np.concatenate((columns, columns))
    edge_sign = np.concatenate((np.ones_like(starts), -np.ones_like(stops)))
    order = np.argsort(edge_row * (int(edge_column.max()) + 2) + edge_column, kind="stable")
    edge_row, edge_column, edge_sign = edge_row[order], edge_column[order], edge_sign[order]
    breaks = np.flatnonzero(
        (np.diff(edge_row) != 0) | (np.diff(edge_column) != 1) | (np.diff(edge_sign) != 0)
    )
    first = np.concatenate(([0], breaks + 1))
    last = np.concatenate((breaks, [edge_row.size - 1]))
    horizontal = (edge_row[first], edge_column[first], edge_column[last] + 1, edge_sign[first])
    # at corner column C, (foreground east) - (foreground west) changes where a run of column C
    # or of column C - 1 starts or stops; it is 0 again past each column's last change
    event_column = np.concatenate((columns, columns, columns + 1, columns + 1))
    event_row = np.concatenate((starts, stops, starts, stops))
    one = np.ones_like(starts)
    event_change = np.concatenate((one, -one, -one, one))
    rows = int(stops.max()) + 1
    key = event_column * rows + event_row
    order = np.argsort(key, kind="stable")  # runs of sorted keys: merged, not sorted again
    key = key[order]
    first = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    change = np.add.reduceat(event_change[order], first)  # events at one place, summed
    keep = change != 0
    column, row = np.divmod(key[first[keep]], rows)
    change = change[keep]
    level = np.cumsum(change)  # each column's changes add up to 0: no reset needed
    runs = np.flatnonzero(level[:-1] != 0)
    vertical = (column[runs], row[runs], row[runs + 1], level[runs])
    return horizontal, vertical


def _outlines(
    cols: int, horizontal: tuple[Ints, Ints, Ints, Ints], vertical: tuple[Ints, Ints, Ints, Ints]
) -> list[Ints]:
    """Each component's closed outline with its holes joined, as (n, 2) arrays of (x, y)
    corners, components in raster order of their top-left pixel, from the runs of pixel edges
    (:func:`_column_edges`) of a frame ``cols`` pixels wide."""
    stride = cols + 1  # corners per corner row
    h_y, c0, c1, sign = horizontal
    east = sign > 0  # foreground below: walked left to right; above: right to left
    h_x0, h_x1 = np.where(east, c0, c1), np.where(east, c1, c0)
    v_x, r0, r1, sign = vertical
    north = sign > 0  # foreground to the east: walked upwards; to the west: downwards
    v_y0, v_y1 = np.where(north, r1, r0), np.where(north, r0, r1)

    start_x = np.concatenate((h_x0, v_x))
    start_y = np.concatenate((h_y, v_y0))
    start = start_y * stride + start_x
    end = np.concatenate((h_y * stride + h_x1, v_y1 * stride + v_x))
    direction = np.concatenate((np.where(east, EAST, WEST), np.where(north, NORTH, SOUTH)))
    successor = _successors(start, end, direction)

    # the outlines are the cycles of ``successor``; each is walked from its first horizontal
    # segment in raster order of left ends (the order of the runs, and segments' order: all
    # horizontal ones come first), so from its smallest segment number. An outline first met
    # on an eastward edge is a component's outer outline (the top edge of its top-left pixel),
    # one first met on a westward edge is a hole's (the bottom edge of the pixel above the
    # hole's top-left corner)
    # outlines alternate horizontal and vertical segments (both are maximal straight runs), so
    # their cycles are found on the horizontal ones alone, two steps at a time: half the
    # elements, one pass fewer; a vertical one is a step before its successor
    turns = h_y.size
    across, back = successor[:turns], successor[turns:]
    if (across < turns).any() or (back >= turns).any():  # cannot happen: they turn
        raise AssertionError("outline does not alternate")
    label_h, ahead_h = _cycles(successor[across])
    label = np.concatenate((label_h, label_h[back]))
    ahead = np.concatenate((2 * ahead_h, 1 + 2 * ahead_h[back]))
    head = label == np.arange(label.size)  # each outline's first segment
    first_segments = np.flatnonzero(head)
    loop_of = (np.cumsum(head) - 1)[label]  # outlines numbered in order of first segments
    lengths = np.bincount(loop_of, minlength=first_segments.size)
    ends = np.cumsum(lengths)
    # each segment's place: its outline's, then its place in the walk from the first segment
    place = ends[loop_of] - lengths[loop_of] + (lengths[loop_of] - ahead) % lengths[loop_of]
    walk = np.empty_like(place)
    walk[place] = np.arange(place.size)
    xy = np.stack((start_x[walk], start_y[walk]), axis=1)
    bounds = [0, *ends.tolist()]
    corners = [xy[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    is_hole = (~east[first_segments]).tolist()
    loop_of = loop_of.tolist()

    # a hole belongs to the component of the outline right above its top-left corner: the
    # first eastward edge met going up from it (all foreground in between)
    component = list(range(len(corners)))
    holes_of: dict[int, list[int]] = {}
    e_x0, e_x1, e_y = h_x0[east], h_x1[east], h_y[east]
    e_segment = np.flatnonzero(east)
    for number, hole in enumerate(is_hole):
        if not hole:
            continue
        first_segment = first_segments[number]  # westward: ends at the hole's top-left corner
        qx, qy = int(h_x1[first_segment]), int(h_y[first_segment])
        above = np.flatnonzero((e_x0 <= qx) & (qx <= e_x1) & (e_y < qy))
        hit = int(e_segment[above[np.argmax(e_y[above])]])
        component[number] = component[loop_of[hit]]
        holes_of.setdefault(component[number], []).append(number)

    parts = []
    for number, hole in enumerate(is_hole):
        if hole:
            continue
        vertices = corners[number]
        for inner in holes_of.get(number, []):  # in order of their top-left corners
            vertices = _join(vertices, corners[inner])
        parts.append(vertices)
    return parts


def _cycles(successor: Ints) -> tuple[Ints, Ints]:
    """For each element of a permutation: the smallest element of its cycle, and how many steps
    it takes from the element to reach that one (pointer jumping: a few numpy passes over the
    permutation, no Python loop over its elements)."""
    n = successor.size
    label = np.arange(n)
    jump = successor.copy()
    for _ in range(max(n - 1, 1).bit_length()):  # 2**k >= n: every cycle is covered
        label = np.minimum(label, label[jump])
        jump = jump[jump]
    start = label == np.arange(n)
    ahead = np.where(start, 0, 1)
    jump = np.where(start, np.arange(n), successor)
    for _ in range(max(n - 1, 1).bit_length()):
        ahead = ahead + ahead[jump]
        jump = jump[jump]
    return label, ahead


def _successors(start: Ints, end: Ints, direction: Ints) -> Ints:
    """For each segment, the segment that continues its outline: the one starting where it
    ends, turning left if there is one (two pixels touching at a corner), else right.

    Segments are maximal straight runs, so the next one turns. A corner has as many segments
    ending as starting there: one each, or two each where two pixels touch diagonally, and then
    both turn left. So sorting the segments by start corner then direction, and by end corner
    then the direction a left turn takes, lists the same corners in the same order, and pairs
    each segment with its successor (two sorts, no search).
    """
    starting = np.argsort(start * 4 + direction, kind="stable")
    ending = np.argsort(end * 4 + (direction - 1) % 4, kind="stable")
    if not np.array_equal(start[starting], end[ending]):  # cannot happen: outlines are closed
        raise AssertionError("open outline")
    successor = np.empty_like(starting)
    successor[ending] = starting
    return successor


def _top_left(loop: Ints) -> int:
    """Index of a loop's top-left vertex (smallest y, then smallest x)."""
    return int(np.lexsort((loop[:, 0], loop[:, 1]))[0])


def _join(outline: Ints, hole: Ints) -> Ints:
    """``outline`` with ``hole`` spliced in by a vertical zero-width cut, walked up and back
    down, from the hole's top-left corner Q to the first eastward (foreground-below) edge of
    ``outline`` above it. The cut crosses only foreground when every hole higher up is already
    joined (holes in order of their top-left corners). Where Q is on ``outline`` (the hole
    touches it at a corner) no cut is needed."""
    hole = np.roll(hole, -_top_left(hole), axis=0)
    qx, qy = int(hole[0, 0]), int(hole[0, 1])
    at = np.flatnonzero((outline[:, 0] == qx) & (outline[:, 1] == qy))
    if at.size:
        k = int(at[0])
        return np.concatenate((outline[: k + 1], hole[1:], hole[:1], outline[k + 1 :]))
    x0, y0 = outline[:, 0], outline[:, 1]
    following = np.roll(outline, -1, axis=0)
    x1, y1 = following[:, 0], following[:, 1]
    above = (y0 == y1) & (x0 < x1) & (x0 <= qx) & (qx <= x1) & (y0 < qy)
    candidates = np.flatnonzero(above)
    if candidates.size == 0:  # cannot happen: a hole lies inside its component's outline
        raise AssertionError("no edge above a hole")
    i = int(candidates[np.argmax(y0[candidates])])
    top = np.array([[qx, int(y0[i])]], dtype=np.int64)
    down_and_back = np.concatenate((hole, hole[:1], top))
    if qx == x0[i]:  # the cut leaves from the edge's start vertex
        head, tail = outline[: i + 1], outline[i + 1 :]
    elif qx == x1[i]:  # ... from its end vertex (which may be vertex 0)
        k = (i + 1) % len(outline)
        head, tail = outline[: k + 1], outline[k + 1 :]
    else:  # ... from a new vertex inside the edge
        head, tail = np.concatenate((outline[: i + 1], top)), outline[i + 1 :]
    return np.concatenate((head, down_and_back, tail))
