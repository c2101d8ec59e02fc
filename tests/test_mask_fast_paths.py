"""The per-output fast paths give the same masks, polygons and pixels as the plain ways:
box-only RLE decoding, batched tracing, pasted instances' placed polygons, painting only the
pasted instances' boxes, and the C-speed polygon check."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as cocomask
from typer.testing import CliRunner

from cpgen import masks
from cpgen.cli import app
from cpgen.copypaste.compose import CPU_PIXELS, paint_rects
from cpgen.ops.paste import Placement, composite, warp_crop
from cpgen.polygons import mask_to_exact_polygons, masks_to_exact_polygons
from tests.conftest import shared_dataset


@st.composite
def frames(draw: Any) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A random blobby mask and a random box inside its frame (possibly empty)."""
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mask = (rng.random((height, width)) < draw(st.floats(0.0, 1.0))).astype(np.uint8)
    x, y = draw(st.integers(0, width)), draw(st.integers(0, height))
    w, h = draw(st.integers(0, width - x)), draw(st.integers(0, height - y))
    return mask, (x, y, w, h)


@settings(max_examples=300, deadline=None)
@given(frames())
def test_decode_box_is_the_frame_decode_cropped(case: Any) -> None:
    mask, (x, y, w, h) = case
    rle = masks.encode(mask)
    runs = masks.run_lengths(rle["counts"])
    assert runs.tolist() == masks.rle_string_counts(rle["counts"].decode())
    assert int(runs.sum()) == mask.size
    crop = masks.decode_box(rle, (x, y, w, h))
    assert crop.shape == (h, w) and crop.flags.c_contiguous
    assert np.array_equal(crop, cocomask.decode(rle)[y : y + h, x : x + w])


@settings(max_examples=200, deadline=None)
@given(frames())
def test_complement_from_the_runs_is_the_encoded_complement(case: Any) -> None:
    mask, _ = case
    complement = masks.complement(masks.encode(mask))
    assert complement["counts"] == masks.encode(1 - mask)["counts"]  # the same canonical RLE
    assert np.array_equal(cocomask.decode(complement), 1 - mask)


@settings(max_examples=150, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=6))
def test_runs_of_several_rles_decoded_together_are_each_ones_own(cases: list[Any]) -> None:
    """One decode of many compressed strings (frames of other sizes, empty and full masks
    among them) gives each RLE's own foreground runs down its columns, in its order."""
    rles = [masks.encode(mask) for mask, _ in cases]
    columns, starts, stops, owner = masks.joined_column_runs(rles)
    assert np.all(np.diff(owner) >= 0)
    for k, (mask, _) in enumerate(cases):
        mine = owner == k
        rebuilt = np.zeros(mask.shape[::-1], np.uint8)  # column-major, as the RLE runs
        for c, a, b in zip(columns[mine], starts[mine], stops[mine], strict=True):
            assert 0 <= a < b <= mask.shape[0]
            rebuilt[c, a:b] = 1
        assert np.array_equal(rebuilt.T, mask)
        runs = masks.run_lengths(rles[k]["counts"])
        assert runs.tolist() == masks.rle_string_counts(rles[k]["counts"].decode())


def test_decode_box_of_large_runs_and_a_full_frame() -> None:
    """Counts above 2**15 take several 5-bit groups, and differences to the count two before
    may be negative: both decode as pycocotools does."""
    mask = np.zeros((480, 640), np.uint8)
    mask[:, 300:] = 1
    mask[100:101, 10:20] = 1
    rle = masks.encode(mask)
    assert np.array_equal(masks.decode_box(rle, (0, 0, 640, 480)), mask)
    full = masks.encode(np.ones((300, 200), np.uint8))
    assert masks.run_lengths(full["counts"]).tolist() == [0, 60000]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 31), st.lists(st.integers(1, 2**26), min_size=1, max_size=60))
def test_run_lengths_of_long_and_falling_counts(first: int, runs: list[int]) -> None:
    """Counts of up to six 5-bit chunks, differences to the count two before of either sign
    (one-chunk strings take their own path): decoded as pycocotools encoded them.

    The first count (0: the mask starts set) takes one chunk: pycocotools' ``rleToString``
    allocates six characters per count and writes its terminator after them, one byte past the
    buffer when every count takes six (each of them, or its difference, 2**24 or more), which
    corrupts the heap and aborts the process later."""
    counts = [first, *runs]
    rle = cocomask.frPyObjects({"size": [1, sum(counts)], "counts": counts}, 1, sum(counts))
    assert masks.run_lengths(rle["counts"]).tolist() == counts
    assert masks.rle_string_counts(rle["counts"].decode()) == counts


@settings(max_examples=60, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=6))
def test_batched_tracing_gives_each_masks_own_polygons(cases: list[Any]) -> None:
    crops = [mask for mask, _ in cases]
    offsets = [(box[0], box[1]) for _, box in cases]
    batched = masks_to_exact_polygons(crops, offsets)
    assert batched == [mask_to_exact_polygons(m, o) for m, o in zip(crops, offsets, strict=True)]
    rles = [masks.encode(m) for m in crops]
    assert masks.rles_to_polygons(rles) == [mask_to_exact_polygons(m) for m in crops]


def test_tracing_from_runs_matches_the_raster_where_runs_wrap_columns() -> None:
    """Full-height columns make one RLE run span several columns: split per column, the
    outline is still the raster's; a hole and an island inside it come out the same too."""
    mask = np.zeros((12, 14), np.uint8)
    mask[:, 2:5] = 1  # full columns: one run across three columns
    mask[2:11, 6:13] = 1
    mask[3:10, 7:12] = 0  # a hole
    mask[6, 9] = 1  # an island in it
    mask[0, 13] = 1  # touching the frame's corner
    rle = masks.encode(mask)
    columns, starts, stops = masks.column_runs(rle)
    assert (columns[:3].tolist(), starts[:3].tolist(), stops[:3].tolist()) == (
        [2, 3, 4],
        [0, 0, 0],
        [12, 12, 12],
    )
    assert masks.rles_to_polygons([rle]) == [mask_to_exact_polygons(mask)]
    assert len(mask_to_exact_polygons(mask)) == 4  # the bar, the ring, the island, the dot


def test_clean_polygons_fast_path_keeps_the_checks() -> None:
    parts = [
        [1, 2, 3.5, 4, 5, 6],  # kept, as floats
        [1, 2, 3, 4],  # too short (a box to pycocotools)
        [1, 2, 3, 4, 5, 6, 7],  # odd
        [1.0, float("nan"), 3, 4, 5, 6],
        [1.0, 2, 3, 4, 5, float("inf")],
        [True, 1, 2, 3, 4, 5],  # a bool is no number
        [1, 2, 3, 4, 5, "6"],
        "not a list",
        [np.float64(1.5), 2, 3, 4, 5, 6],  # a float subclass: the slow path keeps it
    ]
    kept, dropped = masks.clean_polygons(parts)
    assert kept == [[1.0, 2.0, 3.5, 4.0, 5.0, 6.0], [1.5, 2.0, 3.0, 4.0, 5.0, 6.0]]
    assert all(type(v) is float for part in kept for v in part)
    assert dropped == 7


def test_pasting_only_the_instance_boxes_matches_one_composite_per_box() -> None:
    """Two instances far apart: only their boxes are resampled, each box composited through
    the union as if alone, and nothing outside the union changes."""
    rng = np.random.default_rng(3)
    source = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    target = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    placement = Placement(True, 1.37, 11.3, 7.9, 160.0, 120.0)
    union = np.zeros((240, 320), np.uint8)
    union[20:60, 30:70] = 1
    union[180:230, 250:300] = 1
    union[40:45, 40:200] = 0
    boxes = [(30, 20, 40, 40), (250, 180, 50, 50)]
    rect = (30, 20, 270, 210)
    assert paint_rects(rect, 0.0, boxes) == boxes
    assert paint_rects(rect, 1.5, boxes) == [rect]  # a blend needs the whole union
    assert paint_rects((30, 20, 50, 50), 0.0, boxes) == [(30, 20, 50, 50)]  # boxes add up more
    crop = union[20:230, 30:300].copy()
    painted = target.copy()
    CPU_PIXELS.paint(painted, source, placement, rect, crop, 0.0, boxes)
    expected = target.copy()
    for x, y, w, h in boxes:
        composite(
            expected,
            warp_crop(source, placement, (x, y, w, h)),
            union[y : y + h, x : x + w].copy(),
            (x, y, w, h),
        )
    assert np.array_equal(painted, expected)
    assert np.array_equal(painted[union == 0], target[union == 0])
    whole = warp_crop(source, placement, (0, 0, 320, 240))
    assert np.abs(painted.astype(int) - np.where(union[..., None] == 1, whole, target)).max() <= 1


@pytest.fixture(scope="module")
def pasted_run(tmp_path_factory: Any) -> tuple[dict, dict]:
    src = shared_dataset("coco_val2017_tiny80")
    out = tmp_path_factory.mktemp("placed") / "out"
    args = ["copypaste", "--src", str(src), "--out", str(out), "--num-images", "60"]
    result = CliRunner().invoke(app, [*args, "--seed", "11", "--originals", "none", "--quiet"])
    assert result.exit_code == 0, result.output
    return json.loads((src / "annotations.json").read_text()), json.loads(
        (out / "annotations.json").read_text()
    )


def test_a_pasted_instance_inside_the_frame_keeps_its_placed_source_polygon(
    pasted_run: tuple[dict, dict],
) -> None:
    """Its mask is that polygon's rasterisation, so the polygon itself is exact; an instance cut
    at the frame is traced instead (vertices on pixel corners, inside the frame)."""
    source, output = pasted_run
    by_id = {a["id"]: a for a in source["annotations"]}
    sizes = {r["id"]: (r["width"], r["height"]) for r in source["images"]}
    images = {r["id"]: r for r in output["images"]}
    placed = cut = 0
    for ann in output["annotations"]:
        if ann.get("cpgen", {}).get("from") != "source":
            continue
        record = images[ann["image_id"]]
        params = record["cpgen"]["params"]
        original = by_id[ann["cpgen"]["ann_id"]]
        width, height = sizes[original["image_id"]]
        placement = Placement(params["hflip"], params["scale"], *params["offset"], width, height)
        parts = [placement.polygon(p) for p in original["segmentation"]]
        inside = all(
            0 <= v <= (record["width"] if i % 2 == 0 else record["height"])
            for part in parts
            for i, v in enumerate(part)
        )
        segmentation = ann["segmentation"]
        if inside:
            assert segmentation == parts
            placed += 1
        else:
            assert all(isinstance(v, int) for part in segmentation for v in part)
            assert all(
                0 <= v <= (record["width"] if i % 2 == 0 else record["height"])
                for part in segmentation
                for i, v in enumerate(part)
            )
            cut += 1
        rle = cocomask.merge(cocomask.frPyObjects(segmentation, record["height"], record["width"]))
        assert int(cocomask.area(rle)) == ann["area"]
    assert placed >= 20 and cut >= 5
