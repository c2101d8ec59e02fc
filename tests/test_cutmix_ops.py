"""CutMix pure ops and sampling, checked against Composer's formulas computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpgen.ops.cutmix import (
    Box,
    base_weight,
    box_at,
    centre_range,
    cut_from_lambda,
    cut_from_length,
    paste_box,
    resize,
)
from cpgen.sampling import sample_cutmix


def composer_rand_bbox(
    W: int, H: int, cutmix_lambda: float, cx: int, cy: int
) -> tuple[int, int, int, int]:
    """Composer 0.32's ``_rand_bbox`` with an explicit centre, from its formulas."""
    cut_ratio = np.sqrt(1.0 - cutmix_lambda)
    cut_w, cut_h = int(W * cut_ratio), int(H * cut_ratio)
    bbx1 = np.clip(cx - cut_w // 2, 0, W)
    bby1 = np.clip(cy - cut_h // 2, 0, H)
    bbx2 = np.clip(cx + cut_w // 2, 0, W)
    bby2 = np.clip(cy + cut_h // 2, 0, H)
    return int(bbx1), int(bby1), int(bbx2), int(bby2)


def test_lambda_075_on_7x7_cuts_3_and_gives_a_2x2_box():
    # cut = int(7 * sqrt(1 - 0.75)) = int(3.5) = 3; edges at centre -/+ 3 // 2 = 1
    assert cut_from_lambda(7, 0.75) == 3
    box = box_at(7, 7, 3, 3, 3, 3)
    assert box == Box(2, 2, 4, 4) and box.area == 4
    assert base_weight(box, 7, 7) == 1 - 4 / 49


def test_odd_and_even_cuts_on_a_non_square_frame():
    # 5 x 9 frame, lambda 0.19: sqrt(0.81) = 0.9 -> cuts int(4.5) = 4 rows, int(8.1) = 8 cols
    assert (cut_from_lambda(5, 0.19), cut_from_lambda(9, 0.19)) == (4, 8)
    box = box_at(5, 9, 4, 8, 2, 4)
    assert box == Box(0, 0, 4, 8)  # rows 2-2..2+2, cols 4-4..4+4
    assert base_weight(box, 5, 9) == 1 - 32 / 45


@pytest.mark.parametrize(
    ("centre", "expected"),
    [
        ((0, 5), Box(0, 3, 2, 7)),  # top edge
        ((9, 5), Box(7, 3, 10, 7)),  # bottom edge: 9 + 2 = 11 clipped to 10
        ((5, 0), Box(3, 0, 7, 2)),  # left edge
        ((5, 9), Box(3, 7, 7, 10)),  # right edge
        ((0, 0), Box(0, 0, 2, 2)),  # top-left corner
        ((9, 9), Box(7, 7, 10, 10)),  # bottom-right corner
        ((-2, 5), Box(0, 3, 0, 7)),  # uniform sampling can put the centre outside: empty
        ((11, 11), Box(9, 9, 10, 10)),
    ],
)
def test_box_is_clipped_at_every_edge(centre, expected):
    box = box_at(10, 10, 4, 4, *centre)
    assert box == expected
    assert base_weight(box, 10, 10) == 1 - expected.area / 100


def test_cut_from_length_is_a_side_relative_to_the_image():
    assert cut_from_length(224, 0.5) == 112
    assert cut_from_length(7, 0.5) == 3  # int(3.5)
    assert cut_from_length(10, 1.0) == 10


def test_alpha_zero_cuts_the_full_frame_and_draws_only_the_centre():
    rng = np.random.default_rng(3)
    params = sample_cutmix(rng, 6, 8, alpha=0.0)
    assert params.lam == 0.0 and params.cut == (6, 8)
    replay = np.random.default_rng(3)
    centre = (int(replay.integers(0, 6)), int(replay.integers(0, 8)))
    assert params.centre == centre
    assert params.box == box_at(6, 8, 6, 8, *centre)


def test_lambda_is_drawn_from_beta_alpha_alpha_before_the_centre():
    params = sample_cutmix(np.random.default_rng(11), 40, 30, alpha=0.4)
    replay = np.random.default_rng(11)
    lam = replay.beta(0.4, 0.4)
    cut_rows = int(40 * math.sqrt(1 - lam))
    cut_cols = int(30 * math.sqrt(1 - lam))
    centre = (int(replay.integers(0, 40)), int(replay.integers(0, 30)))
    assert params.lam == lam and params.cut == (cut_rows, cut_cols) and params.centre == centre


def test_length_replaces_alpha_and_draws_no_lambda():
    params = sample_cutmix(np.random.default_rng(5), 20, 40, alpha=1.0, length=0.25)
    assert params.lam is None and params.cut == (5, 10)
    replay = np.random.default_rng(5)
    assert params.centre == (int(replay.integers(0, 20)), int(replay.integers(0, 40)))


def test_uniform_sampling_widens_the_centre_range_by_half_the_cut():
    assert centre_range(10, 5, uniform_sampling=False) == (0, 10)
    assert centre_range(10, 5, uniform_sampling=True) == (-3, 12)  # (-5) // 2, 10 + 5 // 2
    assert centre_range(10, 4, uniform_sampling=True) == (-2, 12)
    assert centre_range(10, 0, uniform_sampling=True) == (0, 10)
    rows = {
        sample_cutmix(np.random.default_rng(s), 10, 10, length=0.5).centre[0] for s in range(300)
    }
    assert rows == set(range(10))
    rows = {
        sample_cutmix(np.random.default_rng(s), 10, 10, length=0.5, uniform_sampling=True).centre[0]
        for s in range(300)
    }
    assert rows == set(range(-3, 12))


@settings(max_examples=300, deadline=None)
@given(
    height=st.integers(1, 64),
    width=st.integers(1, 64),
    lam=st.floats(0.0, 1.0),
    data=st.data(),
)
def test_box_matches_composer_rand_bbox_with_the_same_centre(height, width, lam, data):
    centre_row = data.draw(st.integers(-40, height + 40))
    centre_col = data.draw(st.integers(-40, width + 40))
    box = box_at(
        height,
        width,
        cut_from_lambda(height, lam),
        cut_from_lambda(width, lam),
        centre_row,
        centre_col,
    )
    # Composer calls _rand_bbox(input.shape[2], input.shape[3]): its "W" is the row count
    assert tuple(box) == composer_rand_bbox(height, width, lam, centre_row, centre_col)
    assert 0 <= box.top <= box.bottom <= height and 0 <= box.left <= box.right <= width
    weight = base_weight(box, height, width)
    assert 0.0 <= weight <= 1.0
    assert weight == 1 - ((box.bottom - box.top) * (box.right - box.left) / (width * height))


def test_paste_box_copies_exactly_the_box():
    base = np.zeros((6, 7, 3), np.uint8)
    patch = np.full((6, 7, 3), 200, np.uint8)
    out = paste_box(base, patch, Box(1, 2, 4, 6))
    assert out is base
    expected = np.zeros((6, 7, 3), np.uint8)
    expected[1:4, 2:6] = 200
    np.testing.assert_array_equal(out, expected)


def test_an_empty_box_leaves_the_base_unchanged():
    base = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    before = base.copy()
    paste_box(base, np.zeros_like(base), Box(2, 1, 2, 3))
    np.testing.assert_array_equal(base, before)


def test_paste_box_refuses_images_of_different_sizes():
    with pytest.raises(ValueError, match="differ"):
        paste_box(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8), Box(0, 0, 1, 1))


def test_resize_keeps_an_image_of_the_right_size_and_averages_when_shrinking():
    image = np.zeros((4, 4, 3), np.uint8)
    image[::2, ::2] = 255
    assert resize(image, 4, 4) is image
    # INTER_AREA averages each 2x2 block: one 255 and three 0s
    np.testing.assert_array_equal(resize(image, 2, 2), np.full((2, 2, 3), 64, np.uint8))
    assert resize(image, 8, 6).shape == (8, 6, 3)
