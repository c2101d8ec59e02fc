"""Property-based tests (hypothesis) of copy-paste's mask invariants, in memory (no JPEG)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cpgen import masks
from cpgen.copypaste import CopyPasteOptions, copy_paste, draw_params

sizes = st.tuples(st.integers(8, 48), st.integers(8, 48))


@st.composite
def polygon(draw, width: int, height: int) -> list[float]:
    """A triangle or quadrilateral, vertices anywhere near (or a little outside) the frame."""
    n = draw(st.integers(3, 4))
    xs = draw(st.lists(st.floats(-4, width + 4, allow_nan=False), min_size=n, max_size=n))
    ys = draw(st.lists(st.floats(-4, height + 4, allow_nan=False), min_size=n, max_size=n))
    return [round(v, 2) for pair in zip(xs, ys, strict=True) for v in pair]


@st.composite
def annotations(draw, width: int, height: int, image_id: int, crowd_ok: bool):
    anns = []
    for k in range(draw(st.integers(1, 4))):
        part = draw(polygon(width, height))
        rle = masks.polygons_to_rle([part], height, width)
        if masks.area(rle) == 0:
            continue  # the loader drops empty masks before any op sees them
        crowd = crowd_ok and draw(st.booleans()) and k > 0
        seg = masks.rle_to_json(rle) if crowd else [part]
        anns.append(
            {
                "id": 100 * image_id + k,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": seg,
                "iscrowd": int(crowd),
            }
        )
    return anns


@st.composite
def scenes(draw):
    (tw, th), (sw, sh) = draw(sizes), draw(sizes)
    target_anns = draw(annotations(tw, th, 1, crowd_ok=True))
    source_anns = draw(annotations(sw, sh, 2, crowd_ok=True))
    assume(any(not a["iscrowd"] for a in source_anns))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    target = rng.integers(0, 256, (th, tw, 3), dtype=np.uint8)
    source = rng.integers(0, 256, (sh, sw, 3), dtype=np.uint8)
    lo = draw(st.floats(0.2, 1.5))
    options = CopyPasteOptions(
        scale=(lo, lo + draw(st.floats(0, 1.5))),
        hflip=draw(st.sampled_from([0.0, 0.5, 1.0])),
        blend=draw(st.sampled_from(["gaussian", "none"])),
        sigma=draw(st.sampled_from([0.5, 1.0, 3.0])),
        min_visible_px=draw(st.integers(1, 20)),
        min_visible_frac=draw(st.floats(0, 0.5)),
    )
    seed = draw(st.integers(0, 2**63 - 1))
    return seed, target, target_anns, source, source_anns, options


def decoded(ann, height, width) -> np.ndarray:
    return masks.decode(masks.segmentation_to_rle(ann["segmentation"], height, width)).astype(bool)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes())
def test_copy_paste_mask_invariants(scene):
    seed, target, target_anns, source, source_anns, options = scene
    th, tw = target.shape[:2]
    before = target.copy()
    params = draw_params(seed, source_anns, source.shape[1::-1], (tw, th), options)
    out = copy_paste(params, target, target_anns, source, source_anns, options)

    pasted = [a for a in out.annotations if a["cpgen"]["from"] == "source"]
    union = np.zeros((th, tw), bool)
    for ann in pasted:
        mask = decoded(ann, th, tw)
        union |= mask
        assert not any(s["iscrowd"] for s in source_anns if s["id"] == ann["cpgen"]["ann_id"])
        assert ann["area"] >= options.min_visible_px

    # pixels change only inside the pasted masks: each pasted object is inside its mask's box
    changed = (out.image != before).any(axis=2)
    assert not (changed & ~union).any()
    for ann in pasted:
        x, y, w, h = ann["bbox"]
        box = np.zeros((th, tw), bool)
        box[y : y + h, x : x + w] = True
        assert not (decoded(ann, th, tw) & ~box).any()

    # a kept target annotation's mask is its original minus the pasted union
    originals = {a["id"]: a for a in target_anns}
    kept = set()
    for ann in out.annotations:
        if ann["cpgen"]["from"] == "target":
            original = decoded(originals[ann["cpgen"]["ann_id"]], th, tw)
            assert np.array_equal(decoded(ann, th, tw), original & ~union)
            kept.add(ann["cpgen"]["ann_id"])
    assert len(originals) - len(kept) == out.dropped

    # every annotation's area is its pixel count and its box the tight box of its pixels
    for ann in out.annotations:
        mask = decoded(ann, th, tw)
        assert ann["area"] == int(mask.sum()) > 0
        ys, xs = np.nonzero(mask)
        tight = [
            int(xs.min()),
            int(ys.min()),
            int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1),
        ]
        assert ann["bbox"] == tight
