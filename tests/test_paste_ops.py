"""Pure copy-paste ops, masks, sampling and plan on hand-made arrays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cpgen import masks
from cpgen.ops.paste import Placement, composite, keep_occluded, occlude, warp_crop, warp_mask
from cpgen.plan import plan_copypaste, shard, task_rng, task_seed
from cpgen.sampling import choose_other, sample_copypaste
from tests.conftest import rle_counts, square


def test_placement_maps_polygon_and_pixels_identically():
    source = np.zeros((100, 120, 3), np.uint8)
    source[20:40, 30:60] = 255
    part = square(30, 20, 30, 20)
    for placement in (
        Placement(False, 1.0, 5, 7, 120),
        Placement(True, 0.5, 3.25, 2, 120),
        Placement(True, 2.0, -10, -5, 120),
    ):
        warped = warp_crop(source, placement, (0, 0, 150, 130))[..., 0] > 127
        polygon = masks.decode(masks.polygons_to_rle([placement.polygon(part)], 130, 150))
        assert warped.sum() > 0
        assert np.array_equal(warped, polygon.astype(bool))


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("angle", [0.0, 17.5])
def test_placing_many_parts_at_once_gives_each_parts_own_numbers(flip, angle):
    rng = np.random.default_rng(5)
    parts = [(rng.random(2 * n) * 300 - 20).tolist() for n in (3, 7, 4, 12)]
    placement = Placement(flip, 0.73, 12.25, -3.5, 300.0, 200.0, angle)
    assert placement.polygons(parts) == [placement.polygon(p) for p in parts]
    assert placement.polygons([]) == []


def test_flip_mirrors_about_the_source_width():
    placement = Placement(True, 1.0, 0, 0, 10)
    assert placement.polygon([0, 0, 2, 0, 2, 3]) == [10, 0, 8, 0, 8, 3]
    mask = np.zeros((4, 10), np.uint8)
    mask[:, 0] = 1
    assert warp_mask(mask, placement, 4, 10)[:, 9].all()
    assert warp_mask(mask, placement, 4, 10).sum() == 4


def test_warp_crop_renders_only_the_rect():
    source = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    placement = Placement(False, 1.0, 0, 0, 30)
    crop = warp_crop(source, placement, (5, 4, 10, 6))
    assert np.array_equal(crop, source[4:10, 5:15])


def test_hard_paste_copies_masked_pixels_and_nothing_else():
    target = np.full((20, 20, 3), 10, np.uint8)
    pasted = np.full((6, 8, 3), 200, np.uint8)
    mask = np.zeros((6, 8), np.uint8)
    mask[1:5, 2:6] = 1
    before = target.copy()
    composite(target, pasted, mask, (3, 4, 8, 6), sigma=0)
    full = np.zeros((20, 20), bool)
    full[4:10, 3:11] = mask.astype(bool)
    assert (target[full] == 200).all()
    assert np.array_equal(target[~full], before[~full])


def test_soft_paste_stays_inside_mask_and_softens_its_edge():
    target = np.zeros((40, 40, 3), np.uint8)
    pasted = np.full((40, 40, 3), 250, np.uint8)
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 1
    composite(target, pasted, mask, (0, 0, 40, 40), sigma=2.0)
    assert (target[mask == 0] == 0).all()  # nothing leaks outside the mask
    assert (target[16:24, 16:24] >= 248).all()  # the interior (3 sigma in) is the source
    edge = target[20, 10, 0]
    assert 0 < edge < 250  # the edge is blended


def test_occlusion_removes_exactly_the_pasted_union():
    mask = np.zeros((10, 10), np.uint8)
    mask[2:8, 2:8] = 1
    union = np.zeros((10, 10), np.uint8)
    union[5:10, 5:10] = 1
    visible = occlude(mask, union)
    assert visible.sum() == 36 - 9
    assert not (visible & union).any()
    # the RLE form used by the job gives the same pixels
    rle = masks.intersect(masks.encode(mask), masks.encode(1 - union))
    assert np.array_equal(masks.decode(rle), visible)


@pytest.mark.parametrize(
    ("original", "visible", "min_px", "min_frac", "kept"),
    [
        (100, 0, 10, 0.1, False),  # nothing left
        (100, 100, 10, 0.1, True),  # untouched
        (100, 60, 1000, 0.5, True),  # mostly visible: never dropped, whatever the thresholds
        (100, 50, 1000, 0.5, True),  # exactly half
        (100, 30, 10, 0.1, True),  # enough pixels and fraction
        (100, 30, 40, 0.1, False),  # too few pixels
        (1000, 50, 10, 0.1, False),  # too small a fraction
        (5, 4, 10, 0.1, True),  # a small object mostly visible
    ],
)
def test_drop_rule(original, visible, min_px, min_frac, kept):
    assert keep_occluded(original, visible, min_px, min_frac) is kept


def test_area_and_bbox_are_the_masks():
    mask = np.zeros((30, 40), np.uint8)
    mask[5:12, 7:20] = 1
    mask[20, 30] = 1
    rle = masks.encode(mask)
    assert masks.area(rle) == 7 * 13 + 1
    assert masks.bbox(rle) == [7, 5, 24, 16]
    assert masks.bbox(masks.empty_rle(30, 40)) == [0, 0, 0, 0]


def test_polygon_parts_too_short_or_odd_are_dropped():
    parts, dropped = masks.clean_polygons(
        [[1, 2, 3, 4], [1, 2, 3, 4, 5], square(0, 0, 4, 4), [1, 2, 3, 4, 5, 6, 7], []]
    )
    assert parts == [square(0, 0, 4, 4)]
    assert dropped == 4


def test_uncompressed_and_compressed_rle_decode_the_same_mask():
    mask = np.zeros((12, 9), np.uint8)
    mask[3:7, 2:5] = 1
    plain = {"counts": rle_counts(mask), "size": [12, 9]}
    compressed = masks.rle_to_json(masks.encode(mask))
    assert isinstance(compressed["counts"], str)
    for seg in (plain, compressed):
        assert np.array_equal(masks.decode(masks.segmentation_to_rle(seg, 12, 9)), mask)


def test_rle_of_another_size_is_refused():
    seg = masks.rle_to_json(masks.encode(np.ones((5, 5), np.uint8)))
    with pytest.raises(masks.MaskError, match="differs"):
        masks.segmentation_to_rle(seg, 6, 5)


def test_mask_to_polygons_roundtrips_exactly():
    mask = np.zeros((50, 60), np.uint8)
    cv2.circle(mask, (30, 25), 15, 1, -1)
    parts = masks.mask_to_polygons(mask)
    assert np.array_equal(masks.decode(masks.polygons_to_rle(parts, 50, 60)), mask)


def test_choose_other_never_picks_the_excluded_and_covers_the_rest():
    rng = np.random.default_rng(0)
    picks = {choose_other(rng, 5, 2) for _ in range(200)}
    assert picks == {0, 1, 3, 4}


def test_sampled_parameters_stay_in_their_ranges():
    for i in range(100):
        params = sample_copypaste(
            np.random.default_rng(i), 7, (200, 100), (100, 100), 3, (0.5, 1.5), 0.5
        )
        assert 1 <= len(params.instances) <= 3
        assert len(set(params.instances)) == len(params.instances)
        assert all(0 <= k < 7 for k in params.instances)
        fit = 0.5  # the 200-wide source fits the 100-wide target at scale 0.5
        assert 0.5 * fit <= params.placement.scale <= 1.5 * fit
        placed_w = 200 * params.placement.scale
        lo, hi = sorted((0.0, 100 - placed_w))
        assert lo <= params.placement.offset_x <= hi


def test_plan_is_pure_and_cycles_targets():
    tasks = plan_copypaste(range(5), [0, 2, 3], 12, seed=1)
    assert tasks == plan_copypaste(range(5), [0, 2, 3], 12, seed=1)
    assert [t.target for t in tasks] == [i % 5 for i in range(12)]
    assert all(t.source in (0, 2, 3) and t.source != t.target for t in tasks)
    assert tasks != plan_copypaste(range(5), [0, 2, 3], 12, seed=2)
    assert len({t.seed for t in tasks}) == 12
    # a task's seed depends on its index only, not on how many outputs are planned
    assert plan_copypaste(range(5), [0, 2, 3], 3, seed=1) == tasks[:3]


def test_task_streams_are_independent_and_repeatable():
    seed = task_seed(0, 3)
    a = task_rng(seed, 0).random(3)
    assert np.array_equal(a, task_rng(seed, 0).random(3))
    assert not np.array_equal(a, task_rng(seed, 1).random(3))


def test_shard_groups_consecutively():
    assert shard(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]


def test_rle_string_whose_runs_do_not_cover_the_image_is_refused():
    counts = masks.rle_to_json(masks.encode(np.ones((4, 5), np.uint8)))["counts"]  # 20 pixels
    with pytest.raises(masks.MaskError, match="add up"):
        masks.segmentation_to_rle({"size": [5, 5], "counts": counts}, 5, 5)
    with pytest.raises(masks.MaskError, match="does not decode"):
        masks.segmentation_to_rle({"size": [5, 5], "counts": "P"}, 5, 5)


def test_batched_segmentations_decode_like_one_by_one():
    mask = np.zeros((30, 40), np.uint8)
    mask[3:9, 5:25] = 1
    segmentations = [
        [square(1, 1, 10, 8)],
        [square(20, 2, 5, 5), square(30, 10, 6, 12)],  # two parts
        masks.rle_to_json(masks.encode(mask)),
        {"counts": rle_counts(mask), "size": [30, 40]},
        [[-5.0, -5.0, 45.0, -5.0, 45.0, 2.5]],  # partly outside the frame
    ]
    batched = masks.segmentations_to_rles(segmentations, 30, 40)
    for seg, rle in zip(segmentations, batched, strict=True):
        alone = masks.segmentation_to_rle(seg, 30, 40)
        assert np.array_equal(masks.decode(rle), masks.decode(alone))
    assert masks.bboxes(batched) == [masks.bbox(r) for r in batched]
