"""cpgen.functional (torch): Composer-exact cutmix_batch, soft targets, per-sample box copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cpgen.cutmix import soft_labels
from cpgen.functional import cutmix_batch, cutmix_soft_targets, paste_boxes
from cpgen.ops.cutmix import Box, paste_box
from cpgen.sampling import sample_cutmix


def composer_cutmix_batch(input, target, bbox, indices):
    """Composer 0.32's cutmix_batch with a given bbox and indices, from its formulas."""
    x_cutmix = torch.clone(input)
    rx, ry, rw, rh = bbox[0], bbox[1], bbox[2], bbox[3]
    x_cutmix[:, :, rx:rw, ry:rh] = x_cutmix[indices, :, rx:rw, ry:rh]
    adjusted_lambda = 1 - ((rw - rx) * (rh - ry) / (input.size()[-1] * input.size()[-2]))
    return x_cutmix, target[indices], adjusted_lambda, bbox


def batch(n: int, c: int, h: int, w: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    values = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, c, h, w)))
    return values.to(dtype) if dtype == torch.uint8 else values.to(dtype) / 255 - 0.5


@settings(max_examples=120, deadline=None)
@given(
    n=st.integers(1, 5),
    c=st.integers(1, 4),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    dtype=st.sampled_from([torch.uint8, torch.float32, torch.float64, torch.float16]),
    data=st.data(),
)
def test_given_bbox_and_indices_the_result_is_composers(n, c, h, w, dtype, data):
    x = batch(n, c, h, w, dtype, seed=n * 1000 + h * 10 + w)
    y = torch.arange(n) * 3 % 7
    top = data.draw(st.integers(0, h))
    bottom = data.draw(st.integers(top, h))
    left = data.draw(st.integers(0, w))
    right = data.draw(st.integers(left, w))
    bbox = (top, left, bottom, right)
    indices = torch.tensor(data.draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n)))
    before = x.clone()

    mixed, target_perm, lam, out_bbox = cutmix_batch(x, y, bbox=bbox, indices=indices)
    ref_mixed, ref_perm, ref_lam, ref_bbox = composer_cutmix_batch(x, y, bbox, indices)

    assert mixed.dtype == x.dtype and mixed.shape == x.shape
    assert torch.equal(mixed, ref_mixed) and torch.equal(target_perm, ref_perm)
    assert lam == ref_lam and type(lam) is type(ref_lam) and out_bbox == ref_bbox
    assert torch.equal(x, before)  # the input is not modified
    expected = before.clone()  # and independently, sample by sample
    for i in range(n):
        expected[i, :, top:bottom, left:right] = before[int(indices[i]), :, top:bottom, left:right]
    assert torch.equal(mixed, expected)
    assert lam == 1 - (bottom - top) * (right - left) / (h * w)


def test_the_first_bbox_pair_indexes_rows_top_left_bottom_right():
    x = torch.zeros(2, 1, 4, 6, dtype=torch.uint8)
    x[1] = 9
    mixed, _, lam, _ = cutmix_batch(x, torch.tensor([0, 1]), bbox=(1, 2, 3, 5), indices=[1, 0])
    expected = torch.zeros(4, 6, dtype=torch.uint8)
    expected[1:3, 2:5] = 9  # rows 1-2, columns 2-4
    assert torch.equal(mixed[0, 0], expected)
    assert lam == 1 - 6 / 24


def test_a_bbox_of_zeros_is_lambda_one_and_changes_nothing():
    x = batch(3, 3, 5, 7, torch.float32)
    y = torch.tensor([0, 1, 2])
    mixed, target_perm, lam, bbox = cutmix_batch(x, y, bbox=(0, 0, 0, 0), indices=[2, 0, 1])
    assert torch.equal(mixed, x) and lam == 1.0 and bbox == (0, 0, 0, 0)
    assert target_perm.tolist() == [2, 0, 1]


def test_indices_mapping_each_image_to_itself_change_nothing():
    x = batch(4, 3, 8, 8, torch.uint8)
    y = torch.tensor([3, 1, 0, 2])
    mixed, target_perm, lam, _ = cutmix_batch(x, y, bbox=(2, 1, 6, 7), indices=torch.arange(4))
    assert torch.equal(mixed, x) and torch.equal(target_perm, y)
    assert lam == 1 - 24 / 64  # lambda still counts the box, as in Composer


def test_length_and_bbox_together_are_refused():
    with pytest.raises(ValueError, match="both length and bbox"):
        cutmix_batch(torch.zeros(2, 1, 4, 4), torch.zeros(2), length=0.5, bbox=(0, 0, 1, 1))


def test_drawn_box_and_permutation_come_from_the_generator():
    x = batch(4, 3, 20, 30, torch.float32)
    y = torch.arange(4)
    first = cutmix_batch(x, y, alpha=0.5, generator=np.random.default_rng(9))
    again = cutmix_batch(x, y, alpha=0.5, generator=np.random.default_rng(9))
    assert torch.equal(first[0], again[0]) and first[2:] == again[2:]
    replay = np.random.default_rng(9)
    perm = replay.permutation(4)
    box = sample_cutmix(replay, 20, 30, alpha=0.5).box
    assert first[3] == tuple(box) and first[1].tolist() == perm.tolist()
    mixed, _, lam, _ = cutmix_batch(x, y, bbox=tuple(box), indices=torch.from_numpy(perm))
    assert torch.equal(mixed, first[0]) and lam == first[2]


@pytest.mark.parametrize("uniform_sampling", [False, True])
def test_length_gives_a_box_of_length_h_by_length_w(uniform_sampling):
    x = torch.zeros(2, 1, 40, 20)
    for seed in range(20):
        _, _, lam, (top, left, bottom, right) = cutmix_batch(
            x,
            torch.arange(2),
            length=0.5,
            uniform_sampling=uniform_sampling,
            generator=np.random.default_rng(seed),
        )
        assert bottom - top <= 20 and right - left <= 10
        assert lam == 1 - (bottom - top) * (right - left) / 800


def test_alpha_zero_cuts_up_to_the_full_frame():
    x = torch.zeros(1, 1, 10, 10)
    for seed in range(10):
        _, _, _, (top, left, bottom, right) = cutmix_batch(
            x, torch.zeros(1), alpha=0.0, generator=np.random.default_rng(seed)
        )
        assert bottom - top >= 5 and right - left >= 5  # half-cut 5 either side of the centre


def test_soft_targets_are_composers_float32_formula():
    y = torch.tensor([0, 2, 1, 1])
    y_perm = torch.tensor([1, 2, 0, 3])
    lam = 0.7183673469387755
    soft = cutmix_soft_targets(y, y_perm, lam, num_classes=4)
    eye = np.eye(4, dtype=np.float32)
    expected = np.float32(lam) * eye[[0, 2, 1, 1]] + np.float32(1 - lam) * eye[[1, 2, 0, 3]]
    assert soft.dtype == torch.float32
    np.testing.assert_array_equal(soft.numpy(), expected)
    # cpgen's soft_labels.npy rows are computed the same way
    rows = list(zip(y.tolist(), y_perm.tolist(), [lam] * 4, strict=True))
    np.testing.assert_array_equal(soft_labels(rows, 4), soft.numpy())


def test_soft_targets_mix_dense_targets_as_they_are():
    y = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    soft = cutmix_soft_targets(y, y.flip(0), 0.25, num_classes=2)
    assert torch.allclose(soft, 0.25 * y + 0.75 * y.flip(0))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_paste_boxes_copies_each_samples_own_box_like_numpy(dtype):
    base = batch(3, 3, 9, 11, dtype, seed=1)
    patch = batch(3, 3, 9, 11, dtype, seed=2)
    boxes = [Box(0, 0, 9, 11), Box(2, 3, 2, 8), Box(4, 1, 9, 5)]
    mixed = paste_boxes(base, patch, boxes)
    for i, box in enumerate(boxes):
        expected = paste_box(
            base[i].permute(1, 2, 0).numpy().copy(), patch[i].permute(1, 2, 0).numpy(), box
        )
        np.testing.assert_array_equal(mixed[i].permute(1, 2, 0).numpy(), expected)


def test_paste_boxes_with_one_box_repeated_is_cutmix_batch():
    x = batch(4, 3, 10, 12, torch.uint8)
    indices = torch.tensor([1, 3, 0, 2])
    bbox = (2, 3, 8, 11)
    mixed = paste_boxes(x, x[indices], [bbox] * 4)
    assert torch.equal(mixed, cutmix_batch(x, torch.arange(4), bbox=bbox, indices=indices)[0])


def test_paste_boxes_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="differ"):
        paste_boxes(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3), [(0, 0, 1, 1)])
    with pytest.raises(ValueError, match="boxes for a batch"):
        paste_boxes(torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2), [(0, 0, 1, 1)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_cuda_the_result_equals_the_cpu_result():
    x = batch(4, 3, 16, 16, torch.uint8)
    boxes = [(0, 0, 4, 4), (2, 2, 9, 16), (0, 0, 0, 0), (5, 1, 16, 7)]
    cpu = paste_boxes(x, x.flip(0), boxes)
    assert torch.equal(paste_boxes(x.cuda(), x.flip(0).cuda(), boxes).cpu(), cpu)
    ref = composer_cutmix_batch(x, torch.arange(4), (1, 2, 9, 13), torch.tensor([3, 2, 1, 0]))
    got = cutmix_batch(
        x.cuda(), torch.arange(4).cuda(), bbox=(1, 2, 9, 13), indices=torch.tensor([3, 2, 1, 0])
    )
    assert torch.equal(got[0].cpu(), ref[0]) and got[2] == ref[2]
