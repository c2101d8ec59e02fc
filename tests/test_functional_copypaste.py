"""cpgen.functional.copypaste_batch (torch) against cpgen's numpy ops, image by image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cpgen import masks as cocomasks
from cpgen.functional import CopyPasteBatch, copypaste_batch, masks_to_boxes
from cpgen.ops.paste import Placement, composite, keep_occluded, occlude, warp_crop, warp_mask
from cpgen.sampling import CopyPasteParams, sample_copypaste

MIN_PX, MIN_FRAC = 10, 0.1


@dataclass
class Expected:
    image: np.ndarray  # (H, W, C)
    masks: np.ndarray  # (M, H, W) uint8
    labels: list[int]
    pasted: list[bool]


def numpy_copy_paste(images, masks, labels, indices, params, min_px=MIN_PX, min_frac=MIN_FRAC):
    """The CLI's per-image route with cpgen.ops: warp_mask, the min_visible_px filter, warp_crop
    over the union's tight box, a hard composite, occlusion and keep_occluded."""
    n, c, h, w = images.shape
    hwc = images.permute(0, 2, 3, 1).numpy()
    results = []
    for i in range(n):
        j, p = int(indices[i]), params[i]
        target = np.array(hwc[i] if c > 1 else hwc[i, :, :, 0], order="C")  # composite writes
        own = masks[i].numpy().astype(np.uint8)
        pasted, pasted_labels = [], []
        for pos in p.instances if p is not None else ():
            warped = warp_mask(masks[j][pos].numpy().astype(np.uint8), p.placement, h, w)
            if int(warped.sum()) >= min_px:
                pasted.append(warped)
                pasted_labels.append(int(labels[j][pos]))
        kept, kept_labels = list(own), labels[i].tolist()
        if pasted:
            union = np.any(pasted, 0).astype(np.uint8)
            x, y, bw, bh = cocomasks.bbox(cocomasks.encode(np.asfortranarray(union)))
            rect = (x, y, bw, bh)
            source = np.ascontiguousarray(hwc[j] if c > 1 else hwc[j, :, :, 0])
            crop = np.ascontiguousarray(union[y : y + bh, x : x + bw])
            composite(target, warp_crop(source, p.placement, rect), crop, rect)
            kept, kept_labels = [], []
            for k in range(own.shape[0]):
                visible = occlude(own[k], union)
                area, original = int(visible.sum()), int(own[k].sum())
                if area < original and not keep_occluded(original, area, min_px, min_frac):
                    continue
                kept.append(visible)
                kept_labels.append(int(labels[i][k]))
        all_masks = np.array(kept + pasted, np.uint8).reshape(-1, h, w)
        flags = [False] * len(kept) + [True] * len(pasted)
        results.append(
            Expected(target.reshape(h, w, c), all_masks, kept_labels + pasted_labels, flags)
        )
    return results


def random_batch(rng, n, c, h, w, dtype=torch.uint8, max_k=6):
    """Random pixels with sharp edges and 0..max_k rectangular, ragged instances per image."""
    images = torch.from_numpy(rng.integers(0, 256, (n, c, h, w), dtype=np.uint8))
    if dtype != torch.uint8:
        images = images.to(dtype) / 255
    masks, labels = [], []
    for _ in range(n):
        k = int(rng.integers(0, max_k + 1))
        m = np.zeros((k, h, w), bool)
        for q in range(k):
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            m[q, y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = True
            m[q] &= rng.random((h, w)) < 0.9
        masks.append(torch.from_numpy(m))
        labels.append(torch.from_numpy(rng.integers(1, 91, k)))
    return images, masks, labels


def random_params(rng, masks, indices, w, h):
    """Half drawn as the CLI draws them, half by hand over a wider range (far off-frame too)."""
    params = []
    for j in indices:
        k = int(masks[int(j)].shape[0])
        if k == 0:
            params.append(None)
        elif rng.random() < 0.5:
            params.append(sample_copypaste(rng, k, (w, h), (w, h), 5, (0.05, 4.0), 0.5))
        else:
            chosen = tuple(sorted(rng.choice(k, int(rng.integers(1, k + 1)), replace=False)))
            s = float(rng.uniform(0.05, 4.0))
            offset = float(rng.uniform(-w * s, w)), float(rng.uniform(-h * s, h))
            placement = Placement(bool(rng.random() < 0.5), s, *offset, w)
            params.append(CopyPasteParams(tuple(int(v) for v in chosen), placement))
    return params


def assert_matches_numpy(result: CopyPasteBatch, images, masks, labels, params, pixel_tol):
    expected = numpy_copy_paste(images, masks, labels, result.indices, params)
    for i, want in enumerate(expected):
        got_image = result.images[i].permute(1, 2, 0).numpy().astype(np.float64)
        assert np.abs(got_image - want.image.astype(np.float64)).max() <= pixel_tol
        assert np.array_equal(result.masks[i].numpy().astype(np.uint8), want.masks)
        assert result.labels[i].tolist() == want.labels
        assert result.pasted[i].tolist() == want.pasted
        boxes = result.boxes[i].tolist()
        assert len(boxes) == len(want.masks)
        for box, mask in zip(boxes, want.masks, strict=True):
            x, y, bw, bh = cocomasks.bbox(cocomasks.encode(np.asfortranarray(mask)))
            assert box == ([x, y, x + bw, y + bh] if bw else [0, 0, 0, 0])


@pytest.mark.parametrize(("dtype", "pixel_tol"), [(torch.uint8, 1), (torch.float32, 1e-5)])
def test_given_params_masks_equal_and_pixels_within_one_level_of_numpy_ops(dtype, pixel_tol):
    rng = np.random.default_rng(11)
    for _ in range(25):
        n, c = int(rng.integers(1, 5)), int(rng.choice([1, 3, 4]))
        h, w = int(rng.integers(8, 120)), int(rng.integers(8, 160))
        images, masks, labels = random_batch(rng, n, c, h, w, dtype)
        indices = rng.integers(0, n, n)
        params = random_params(rng, masks, indices, w, h)
        before = images.clone()
        result = copypaste_batch(images, masks, labels, indices, params)
        assert result.images.dtype == dtype and result.images.shape == images.shape
        assert torch.equal(images, before)  # the input is left alone
        assert_matches_numpy(result, images, masks, labels, params, pixel_tol)


def rle_annotations(masks, labels, k: int) -> list[dict]:
    """Image ``k``'s instances as COCO annotations with compressed RLE segmentations."""
    return [
        {
            "id": 100 * k + q,
            "image_id": k,
            "category_id": int(labels[k][q]),
            "iscrowd": 0,
            "segmentation": cocomasks.rle_to_json(
                cocomasks.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
            ),
        }
        for q, m in enumerate(masks[k])
    ]


def test_agrees_with_the_clis_copy_paste_on_rle_annotations():
    """The CLI's own per-output function (RLE masks take its warp_mask route)."""
    from cpgen.copypaste import CopyPasteOptions, copy_paste

    rng = np.random.default_rng(21)
    options = CopyPasteOptions(min_visible_px=MIN_PX, min_visible_frac=MIN_FRAC, blend="none")
    for _ in range(4):
        n, h, w = 3, int(rng.integers(30, 90)), int(rng.integers(30, 120))
        images, masks, labels = random_batch(rng, n, 3, h, w)
        indices = rng.permutation(n)
        params = random_params(rng, masks, indices, w, h)
        result = copypaste_batch(images, masks, labels, indices, params)

        for i, (j, p) in enumerate(zip(indices.tolist(), params, strict=True)):
            if p is None:
                continue
            target = images[i].permute(1, 2, 0).numpy().copy()
            source = images[j].permute(1, 2, 0).numpy().copy()
            generated = copy_paste(
                p,
                target,
                rle_annotations(masks, labels, i),
                source,
                rle_annotations(masks, labels, j),
                options,
            )
            got = result.images[i].permute(1, 2, 0).numpy().astype(int)
            assert np.abs(got - generated.image.astype(int)).max() <= 1
            cli_masks = [
                cocomasks.decode(cocomasks.segmentation_to_rle(a["segmentation"], h, w))
                for a in generated.annotations
            ]
            assert np.array_equal(
                result.masks[i].numpy(), np.array(cli_masks, bool).reshape(-1, h, w)
            )
            assert result.labels[i].tolist() == [a["category_id"] for a in generated.annotations]
            xywh = masks_to_boxes(result.masks[i], "xywh").tolist()
            assert xywh == [a["bbox"] for a in generated.annotations]


def test_float64_and_float16_images_give_the_float32_result():
    rng = np.random.default_rng(12)
    images, masks, labels = random_batch(rng, 3, 3, 50, 70, torch.float32)
    indices = [1, 2, 0]
    params = random_params(rng, masks, indices, 70, 50)
    single = copypaste_batch(images, masks, labels, indices, params).images
    double = copypaste_batch(images.double(), masks, labels, indices, params).images
    half = copypaste_batch(images.half(), masks, labels, indices, params).images
    assert double.dtype == torch.float64 and half.dtype == torch.float16
    assert (double - single.double()).abs().max() <= 1e-6
    assert (half.float() - single).abs().max() <= 1e-3


def test_drawn_params_on_a_detection_sized_batch_match_numpy_ops():
    rng = np.random.default_rng(5)
    images, masks, labels = random_batch(rng, 3, 3, 240, 320, max_k=10)
    result = copypaste_batch(images, masks, labels, generator=np.random.default_rng(2))
    assert sorted(result.indices.tolist()) == [0, 1, 2]  # a permutation
    assert_matches_numpy(result, images, masks, labels, result.params, 1)
    assert any(p is not None and len(p.instances) for p in result.params)


def test_same_generator_seed_same_output_and_replay_from_returned_params():
    rng = np.random.default_rng(0)
    images, masks, labels = random_batch(rng, 4, 3, 40, 56)
    runs = [
        copypaste_batch(images, masks, labels, generator=torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    other = copypaste_batch(images, masks, labels, generator=torch.Generator().manual_seed(8))
    a, b = runs
    assert torch.equal(a.indices, b.indices) and a.params == b.params
    assert torch.equal(a.images, b.images)
    assert all(torch.equal(x, y) for x, y in zip(a.masks, b.masks, strict=True))
    assert (other.indices.tolist(), other.params) != (a.indices.tolist(), a.params)
    # given the indices and params it drew, nothing is drawn and the output is the same
    replay = copypaste_batch(images, masks, labels, a.indices, list(a.params))
    assert torch.equal(replay.images, a.images)
    assert all(torch.equal(x, y) for x, y in zip(replay.boxes, a.boxes, strict=True))
    # a numpy generator works the same way
    seeded = [
        copypaste_batch(images, masks, labels, generator=np.random.default_rng(3)) for _ in range(2)
    ]
    assert torch.equal(seeded[0].images, seeded[1].images)


def test_given_indices_are_used_and_only_params_are_drawn():
    rng = np.random.default_rng(1)
    images, masks, labels = random_batch(rng, 3, 3, 32, 32, max_k=3)
    masks = [m if m.shape[0] else torch.ones((1, 32, 32), dtype=torch.bool) for m in masks]
    labels = [lab if lab.shape[0] else torch.tensor([5]) for lab in labels]
    result = copypaste_batch(images, masks, labels, [2, 2, 0], generator=np.random.default_rng(0))
    assert result.indices.tolist() == [2, 2, 0]
    for p, j in zip(result.params, [2, 2, 0], strict=True):
        assert p is not None and max(p.instances) < masks[j].shape[0]
    assert_matches_numpy(result, images, masks, labels, result.params, 1)


def test_a_partner_without_instances_changes_nothing():
    rng = np.random.default_rng(2)
    images, masks, labels = random_batch(rng, 2, 3, 30, 40, max_k=4)
    masks[1], labels[1] = (
        torch.zeros((0, 30, 40), dtype=torch.bool),
        torch.zeros(0, dtype=torch.long),
    )
    result = copypaste_batch(
        images, masks, labels, indices=[1, 0], generator=np.random.default_rng(0)
    )
    assert result.params[0] is None
    assert torch.equal(result.images[0], images[0])
    assert torch.equal(result.masks[0], masks[0]) and torch.equal(result.labels[0], labels[0])
    assert not result.pasted[0].any()
    assert torch.equal(result.boxes[0], masks_to_boxes(masks[0]))
    # image 1 has no instances of its own and receives image 0's
    if masks[0].shape[0]:
        assert result.pasted[1].all()


def test_a_batch_of_one_pastes_its_own_instances():
    mask = torch.zeros((1, 1, 20, 30), dtype=torch.bool)
    mask[0, 0, 5:15, 2:12] = True
    image = torch.zeros((1, 3, 20, 30), dtype=torch.uint8)
    image[0, :, 5:15, 2:12] = 200
    params = [CopyPasteParams((0,), Placement(False, 1.0, 15.0, 0.0, 30))]
    result = copypaste_batch(image, [mask[0]], [torch.tensor([3])], [0], params)
    assert result.labels[0].tolist() == [3, 3]
    assert result.pasted[0].tolist() == [False, True]
    assert result.boxes[0].tolist() == [[2, 5, 12, 15], [17, 5, 27, 15]]
    assert (result.images[0, :, 5:15, 17:27] == 200).all()
    assert_matches_numpy(result, image, [mask[0]], [torch.tensor([3])], params, 0)


def test_instances_cut_out_of_the_frame_or_too_small_are_not_pasted():
    images = torch.arange(2 * 3 * 24 * 24, dtype=torch.float32).reshape(2, 3, 24, 24)
    masks = [torch.zeros((2, 24, 24), dtype=torch.bool) for _ in range(2)]
    masks[1][0, 0:10, 0:10] = True  # 100 px
    masks[1][1, 0:3, 20:23] = True  # 9 px: under min_visible_px even where fully in frame
    labels = [torch.tensor([1, 2]), torch.tensor([3, 4])]
    beyond = CopyPasteParams((0, 1), Placement(False, 1.0, 30.0, 0.0, 24))  # right of the frame
    kept_small = CopyPasteParams((0, 1), Placement(False, 1.0, 0.0, 0.0, 24))
    for params, pasted_labels in (([beyond, None], []), ([kept_small, None], [3])):
        result = copypaste_batch(images, masks, labels, [1, 0], params)
        assert result.labels[0].tolist() == [1, 2, *pasted_labels]
        if not pasted_labels:
            assert torch.equal(result.images, images)
        assert_matches_numpy(result, images, masks, labels, params, 1e-5)


def test_target_instances_lose_the_union_and_follow_the_drop_rules():
    h = w = 40
    own = torch.zeros((4, h, w), dtype=torch.bool)
    own[0, 0:10, 0:10] = True  # fully covered: dropped
    own[1, 0:10, 10:30] = True  # 200 px, 150 covered, 50 visible (25%, >= 10 px): kept
    own[2, 20:40, 0:10] = True  # 200 px, 195 covered, 5 visible: dropped (under 10 px)
    own[3, 30:40, 30:40] = True  # untouched: kept as it is
    source = torch.zeros((1, h, w), dtype=torch.bool)
    source[0, 0:10, 0:25] = True
    source[0, 10:35, 0:10] = True
    source[0, 35:40, 0:9] = True  # leaves column 9 of rows 35..39 of own[2] visible
    images = torch.zeros((2, 3, h, w), dtype=torch.uint8)
    images[1] = 255
    labels = [torch.tensor([1, 2, 3, 4]), torch.tensor([9])]
    params = [CopyPasteParams((0,), Placement(False, 1.0, 0.0, 0.0, w)), None]
    masks = [own, source]
    result = copypaste_batch(images, masks, labels, [1, 0], params)
    assert result.labels[0].tolist() == [2, 4, 9]
    assert result.masks[0][0].sum() == 50 and torch.equal(result.masks[0][1], own[3])
    assert not (result.masks[0][0] & source[0]).any()
    assert_matches_numpy(result, images, masks, labels, params, 0)
    assert copypaste_batch(images, masks, labels, [1, 0], params, box_format="xywh").boxes[
        0
    ].tolist() == [[25, 0, 5, 10], [30, 30, 10, 10], [0, 0, 25, 40]]


def test_bad_arguments_are_refused():
    images = torch.zeros((2, 3, 8, 8), dtype=torch.uint8)
    masks = [torch.zeros((1, 8, 8), dtype=torch.bool)] * 2
    labels = [torch.tensor([1])] * 2
    params = [None, None]
    with pytest.raises(ValueError, match="indices"):
        copypaste_batch(images, masks, labels, params=params)
    with pytest.raises(ValueError, match="indices"):
        copypaste_batch(images, masks, labels, [0, 2], params)
    with pytest.raises(ValueError, match="masks"):
        copypaste_batch(images, masks[:1], labels)
    with pytest.raises(ValueError, match="box_format"):
        copypaste_batch(images, masks, labels, box_format="cxcywh")
    with pytest.raises(ValueError, match="angle"):
        turned = CopyPasteParams((0,), Placement(False, 1.0, 0.0, 0.0, 8, 8, angle=10.0))
        copypaste_batch(images, masks, labels, [1, 0], [turned, None])
    with pytest.raises(ValueError, match="outside"):
        bad = CopyPasteParams((1,), Placement(False, 1.0, 0.0, 0.0, 8))
        copypaste_batch(images, masks, labels, [1, 0], [bad, None])


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(2, 40),
    w=st.integers(2, 70),
    flip=st.booleans(),
    scale=st.floats(0.05, 6.0),
    fx=st.floats(-1.5, 1.0),
    fy=st.floats(-1.5, 1.0),
    seed=st.integers(0, 2**16),
)
def test_property_any_placement_matches_numpy_ops(h, w, flip, scale, fx, fy, seed):
    rng = np.random.default_rng(seed)
    images, masks, labels = random_batch(rng, 2, 3, h, w, max_k=4)
    masks[1] = torch.cat([masks[1], torch.ones((1, h, w), dtype=torch.bool)])
    labels[1] = torch.cat([labels[1], torch.tensor([7])])
    placement = Placement(flip, scale, fx * w * scale, fy * h * scale, w)
    params = [CopyPasteParams(tuple(range(masks[1].shape[0])), placement), None]
    result = copypaste_batch(images, masks, labels, [1, 0], params)
    assert_matches_numpy(result, images, masks, labels, params, 1)
    union = torch.zeros((h, w), dtype=torch.bool)
    for m in result.masks[0][result.pasted[0]]:
        union |= m
    for m in result.masks[0][~result.pasted[0]]:
        assert not (m & union).any()  # what stays of the target is never under a pasted mask


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_gives_the_cpu_result():
    rng = np.random.default_rng(9)
    images, masks, labels = random_batch(rng, 4, 3, 96, 128, max_k=8)
    indices = rng.permutation(4)
    params = random_params(rng, masks, indices, 128, 96)
    cpu = copypaste_batch(images, masks, labels, indices, params)
    gpu = copypaste_batch(
        images.cuda(), [m.cuda() for m in masks], [lab.cuda() for lab in labels], indices, params
    )
    assert (gpu.images.cpu().int() - cpu.images.int()).abs().max() <= 1
    for name in ("masks", "labels", "boxes", "pasted"):
        for a, b in zip(getattr(cpu, name), getattr(gpu, name), strict=True):
            assert torch.equal(a, b.cpu())
