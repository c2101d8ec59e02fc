"""Box-only (detection) datasets and ``--paste-by box``: a box is a rectangle mask on the pixel
grid, pasted as a rectangle of source pixels, occluded like a mask, written back as a box."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cpgen import masks
from cpgen.datasets import coco
from cpgen.errors import EXIT_SKIPPED
from cpgen.ops.paste import keep_occluded, warp_crop
from tests.conftest import shared_dataset
from tests.copypaste_helpers import (
    assert_valid,
    box_only_copy,
    generate,
    invoke,
    load,
    mask_of,
    placement_of,
    read_image,
    source_pixels,
    tree_bytes,
)


@pytest.fixture(scope="module")
def tiny() -> Path:
    return shared_dataset("coco_val2017_tiny80")


@pytest.fixture(scope="module")
def boxes_run(tiny, tmp_path_factory) -> tuple[Path, Path]:
    """A box-only copy of the COCO sample (every segmentation removed) and 16 outputs of it."""
    root = tmp_path_factory.mktemp("boxes")
    ann = box_only_copy(tiny, root / "src")
    out = root / "out"
    generate("--ann", str(ann), "--images", str(tiny / "images"), "-o", str(out),
             "--num-images", "16", "-j", "2")  # fmt: skip
    return ann, out


def pasted_mask(record: dict[str, Any], source_ann: dict[str, Any], source: dict[str, Any],
                height: int, width: int) -> np.ndarray:  # fmt: skip
    """The rectangle a box-only source instance becomes on the output, from provenance alone."""
    rect = masks.box_polygon(source_ann["bbox"], source["height"], source["width"])
    placed = placement_of(record, source).polygon(rect)
    return masks.decode(masks.polygons_to_rle([placed], height, width)).astype(bool)


def test_box_only_dataset_is_loaded_as_box_instances(boxes_run):
    ann, _ = boxes_run
    index = coco.load(coco.CocoFiles(ann, ann.parent))
    assert index.num_annotations > 500 and not index.problems
    assert all(masks.is_box_only(a) for anns in index.anns_by_image for a in anns)


def test_pasted_box_is_the_source_box_scaled_and_moved(boxes_run, tiny):
    ann_path, out = boxes_run
    source = load(ann_path)
    images = {r["id"]: r for r in source["images"]}
    anns = {a["id"]: a for a in source["annotations"]}
    data = load(out / "annotations.json")
    generated = [r for r in data["images"] if "cpgen" in r]
    assert len(generated) == 16
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    checked = 0
    for record in generated:
        src = images[record["cpgen"]["source_ids"][0]]
        placement = placement_of(record, src)
        h, w = record["height"], record["width"]
        pasted = [a for a in by_image.get(record["id"], []) if a["cpgen"]["from"] == "source"]
        assert pasted, record
        union = np.zeros((h, w), bool)
        for a in pasted:
            original = anns[a["cpgen"]["ann_id"]]
            assert ("segmentation" in a) == ("segmentation" in original)  # as it came
            assert a.get("segmentation") == original.get("segmentation")
            assert a["cpgen"]["ann_id"] in record["cpgen"]["params"]["instances"]
            expected = pasted_mask(record, original, src, h, w)
            ys, xs = np.nonzero(expected)
            assert a["bbox"] == [
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
            ]
            assert a["area"] == expected.sum() == a["bbox"][2] * a["bbox"][3]
            # the box in source pixels, scaled and moved: edges within a pixel of the formula
            x0, y0, x1, _, _, y1, _, _ = masks.box_polygon(
                original["bbox"], src["height"], src["width"]
            )
            if placement.flip:
                x0, x1 = src["width"] - x1, src["width"] - x0
            s, ox, oy = placement.scale, placement.offset_x, placement.offset_y
            left, top = max(s * x0 + ox, 0), max(s * y0 + oy, 0)
            right, bottom = min(s * x1 + ox, w), min(s * y1 + oy, h)
            assert abs(a["bbox"][0] - left) <= 1 and abs(a["bbox"][1] - top) <= 1
            assert abs(a["bbox"][0] + a["bbox"][2] - right) <= 1
            assert abs(a["bbox"][1] + a["bbox"][3] - bottom) <= 1
            union |= expected
            checked += 1
        # the pixels inside the pasted boxes are the source's, placed as recorded
        reduction = record["cpgen"]["params"]["source_reduction"]
        path = tiny / "images" / src["file_name"]
        pixels = source_pixels(path, reduction)
        placed = warp_crop(pixels, placement.reduced(reduction), (0, 0, w, h))
        written = read_image(out / "images" / record["file_name"])
        diff = np.abs(written.astype(int) - placed.astype(int))[union].mean()
        target = read_image(tiny / "images" / images[record["cpgen"]["target_id"]]["file_name"])
        before = np.abs(written.astype(int) - target.astype(int))[union].mean()
        assert diff < 8 and diff < before / 3, (record["file_name"], diff, before)
    assert checked >= 16


def test_target_box_loses_exactly_the_pasted_pixels(boxes_run):
    ann_path, out = boxes_run
    source = load(ann_path)
    images = {r["id"]: r for r in source["images"]}
    anns = {a["id"]: a for a in source["annotations"]}
    data = load(out / "annotations.json")
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    occluded = dropped = 0
    for record in (r for r in data["images"] if "cpgen" in r):
        h, w = record["height"], record["width"]
        src = images[record["cpgen"]["source_ids"][0]]
        written = by_image[record["id"]]
        union = np.zeros((h, w), bool)
        for a in written:
            if a["cpgen"]["from"] == "source":
                union |= pasted_mask(record, anns[a["cpgen"]["ann_id"]], src, h, w)
        kept = {a["cpgen"]["ann_id"]: a for a in written if a["cpgen"]["from"] == "target"}
        for original in (
            a for a in source["annotations"] if a["image_id"] == record["cpgen"]["target_id"]
        ):
            rect = mask_of(original, h, w)
            visible = rect & ~union
            if original["id"] not in kept:
                assert not keep_occluded(int(rect.sum()), int(visible.sum()), 10, 0.1)
                dropped += 1
                continue
            a = kept[original["id"]]
            assert a.get("segmentation", "none") == original.get("segmentation", "none")
            assert a["area"] == visible.sum()
            ys, xs = np.nonzero(visible)
            assert a["bbox"] == [
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
            ]
            occluded += bool(visible.sum() < rect.sum())
    assert occluded >= 5 and dropped >= 1


def test_box_only_outputs_validate_and_originals_keep_their_boxes(boxes_run):
    ann_path, out = boxes_run
    assert_valid(out)
    source = {a["id"]: a for a in load(ann_path)["annotations"]}
    originals = [a for a in load(out / "annotations.json")["annotations"] if "cpgen" not in a]
    assert len(originals) == len(source)
    assert all(a == {**source[a["id"]], "iscrowd": a["iscrowd"]} for a in originals)


def test_a_dataset_mixing_boxes_and_masks(tiny, tmp_path):
    ann = box_only_copy(tiny, tmp_path / "src", every=2)  # half the annotations lose their mask
    args = ["--ann", str(ann), "--images", str(tiny / "images"), "--num-images", "24"]
    generate(*args, "-o", str(tmp_path / "j1"), "-j", "1", "--mask-format", "polygon")
    generate(*args, "-o", str(tmp_path / "j2"), "-j", "2", "--mask-format", "polygon")
    assert tree_bytes(tmp_path / "j1") == tree_bytes(tmp_path / "j2")
    assert_valid(tmp_path / "j1")
    source = {a["id"]: a for a in load(ann)["annotations"]}
    kinds = set()
    for a in load(tmp_path / "j1" / "annotations.json")["annotations"]:
        if "cpgen" in a:
            original = source[a["cpgen"]["ann_id"]]
            box_only = masks.is_box_only(original)
            # a box stays a box (no key, null or []); a mask stays a mask
            assert ("segmentation" in a) == ("segmentation" in original)
            assert masks.is_box_only(a) == box_only
            kinds.add((a["cpgen"]["from"], box_only))
    assert kinds == {("target", True), ("target", False), ("source", True), ("source", False)}


def test_paste_by_box_pastes_rectangles_where_masks_exist(tiny, tmp_path):
    out = tmp_path / "out"
    generate("--src", str(tiny), "-o", str(out), "--num-images", "12", "--paste-by", "box",
             "--originals", "none", "-j", "2")  # fmt: skip
    data = load(out / "annotations.json")
    assert data["info"]["cpgen"]["options"]["paste_by"] == "box"
    pasted = [a for a in data["annotations"] if a["cpgen"]["from"] == "source"]
    assert len(pasted) >= 12
    images = {r["id"]: r for r in data["images"]}
    for a in pasted:
        image = images[a["image_id"]]
        mask = mask_of(a, image["height"], image["width"])
        x, y, w, h = a["bbox"]
        assert mask.sum() == a["area"] == w * h  # the pasted mask fills its box: a rectangle
        assert mask[y : y + h, x : x + w].all()
    assert_valid(out)


def test_a_box_without_a_usable_bbox_is_skipped_and_named(tiny, tmp_path):
    ann = box_only_copy(tiny, tmp_path / "src")
    data = load(ann)
    data["annotations"][0]["bbox"] = [10, 10, 0, 5]
    ann.write_text(__import__("json").dumps(data))
    result = invoke("--ann", str(ann), "--images", str(tiny / "images"), "-o",
                    str(tmp_path / "out"), "--num-images", "2", "-j", "1")  # fmt: skip
    assert result.exit_code == EXIT_SKIPPED, result.output
    first = data["annotations"][0]["id"]
    assert f"box-only annotation without a valid bbox: annotation {first}" in result.stderr


def test_box_polygon_rounds_half_up_and_clips():
    assert masks.box_polygon([1.5, 2.49, 3.0, 4.0], 100, 100) == [2, 2, 5, 2, 5, 6, 2, 6]
    assert masks.box_polygon([-3.2, 95.0, 10.0, 10.0], 100, 100) == [0, 95, 7, 95, 7, 100, 0, 100]
    rle = masks.polygons_to_rle([masks.box_polygon([1.5, 2.49, 3.0, 4.0], 20, 20)], 20, 20)
    assert masks.bbox(rle) == [2, 2, 3, 4] and masks.area(rle) == 12
