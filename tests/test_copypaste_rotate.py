"""``--rotate``: the pasted instances turn together; one affine map moves pixels, polygons
(mapped as polygons) and RLE masks (warped, nearest neighbour)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cpgen import masks
from cpgen.copypaste import CopyPasteOptions, copy_paste
from cpgen.ops.paste import Placement, warp_crop, warp_mask
from cpgen.sampling import CopyPasteParams
from tests.conftest import shared_dataset
from tests.copypaste_helpers import (
    assert_valid,
    generate,
    load,
    placement_of,
    read_image,
    source_pixels,
    tree_bytes,
)


@pytest.fixture(scope="module")
def tiny() -> Path:
    return shared_dataset("coco_val2017_tiny80")


@pytest.mark.parametrize("flip", [False, True])
def test_one_map_for_polygons_and_pixels(flip):
    placement = Placement(flip, 1.5, 7.0, -3.0, 40, 30, angle=33.0)
    matrix = placement.affine()
    part = [4.0, 3.0, 30.0, 5.0, 18.0, 26.0]
    mapped = np.asarray(placement.polygon(part)).reshape(-1, 2)
    expected = np.asarray(part).reshape(-1, 2) @ matrix[:, :2].T + matrix[:, 2]
    assert np.allclose(mapped, expected)
    # pixel index i (centre i + 0.5) lands on index j with j + 0.5 the mapped centre
    warp = placement.warp_matrix(5, 2)
    for i in ([0, 0], [39, 29], [12, 7]):
        centre = matrix[:, :2] @ (np.asarray(i) + 0.5) + matrix[:, 2]
        assert np.allclose(warp[:, :2] @ i + warp[:, 2], centre - 0.5 - [5, 2])
    # the rotation is about the placed source's centre, which stays put
    centre = [7.0 + 1.5 * 20, -3.0 + 1.5 * 15]
    assert np.allclose(matrix[:, :2] @ [20, 15] + matrix[:, 2], centre)
    # the polygon rasterised and its mask warped cover the same pixels (up to the outline)
    source_mask = masks.decode(masks.polygons_to_rle([part], 30, 40))
    warped = warp_mask(source_mask, placement, 60, 80).astype(bool)
    drawn = masks.decode(masks.polygons_to_rle([placement.polygon(part)], 60, 80)).astype(bool)
    assert (warped & drawn).sum() / (warped | drawn).sum() > 0.85


def test_angle_zero_is_the_plain_placement():
    plain = Placement(True, 0.7, 3.5, 2.25, 50)
    turned = Placement(True, 0.7, 3.5, 2.25, 50, 40, angle=0.0)
    assert np.array_equal(plain.warp_matrix(3, 4), turned.warp_matrix(3, 4))
    assert plain.polygon([1, 2, 3, 4, 5, 6]) == turned.polygon([1, 2, 3, 4, 5, 6])


def test_rle_instances_turn_with_a_nearest_warp():
    rng = np.random.default_rng(3)
    source = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    target = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 8:30] = 1
    rle = masks.rle_to_json(masks.encode(mask))
    source_anns = [
        {"id": 1, "image_id": 2, "category_id": 1, "segmentation": rle, "iscrowd": 0},
    ]
    placement = Placement(False, 1.2, 5.0, 4.0, 40, 30, angle=-25.0)
    params = CopyPasteParams((0,), placement)
    out = copy_paste(params, target.copy(), [], source, source_anns, CopyPasteOptions())
    (ann,) = out.annotations
    written = masks.decode(masks.segmentation_to_rle(ann["segmentation"], 50, 60))
    expected = warp_mask(mask, placement, 50, 60)
    assert np.array_equal(written, expected) and expected.sum() > 200
    pixels = warp_crop(source, placement, (0, 0, 60, 50))
    assert np.array_equal(out.image[expected == 1], pixels[expected == 1])


def test_rotate_zero_writes_todays_bytes(tiny, tmp_path):
    args = ["--src", str(tiny), "--num-images", "6", "--originals", "none", "-j", "1"]
    generate(*args, "-o", str(tmp_path / "plain"))
    generate(*args, "-o", str(tmp_path / "zero"), "--rotate", "0")
    assert tree_bytes(tmp_path / "plain") == tree_bytes(tmp_path / "zero")


def test_rotated_instances_are_the_source_polygons_turned_as_recorded(tiny, tmp_path):
    out = tmp_path / "out"
    generate("--src", str(tiny), "-o", str(out), "--rotate", "30", "--num-images", "12", "-j", "2")
    data = load(out / "annotations.json")
    assert data["info"]["cpgen"]["options"]["rotate"] == 30.0
    source = load(tiny / "annotations.json")
    images = {r["id"]: r for r in source["images"]}
    anns = {a["id"]: a for a in source["annotations"]}
    angles, pasted = [], 0
    for record in (r for r in data["images"] if "cpgen" in r):
        angle = record["cpgen"]["params"]["rotation"]
        assert -30 <= angle <= 30
        angles.append(angle)
        src = images[record["cpgen"]["source_ids"][0]]
        placement = placement_of(record, src)
        h, w = record["height"], record["width"]
        union = np.zeros((h, w), bool)
        for a in (a for a in data["annotations"] if a["image_id"] == record["id"]):
            if a["cpgen"]["from"] != "source":
                continue
            parts, _ = masks.clean_polygons(anns[a["cpgen"]["ann_id"]]["segmentation"])
            rle = masks.polygons_to_rle([placement.polygon(p) for p in parts], h, w)
            written = masks.segmentation_to_rle(a["segmentation"], h, w)
            assert np.array_equal(masks.decode(rle), masks.decode(written))
            union |= masks.decode(written).astype(bool)
        if not union.any():  # everything drawn was turned out of the frame or too small
            continue
        pasted += 1
        reduction = record["cpgen"]["params"]["source_reduction"]
        path = tiny / "images" / src["file_name"]
        pixels = source_pixels(path, reduction)
        placed = warp_crop(pixels, placement.reduced(reduction), (0, 0, w, h))
        written_pixels = read_image(out / "images" / record["file_name"])
        diff = np.abs(written_pixels.astype(int) - placed.astype(int))[union].mean()
        assert diff < 8, record["file_name"]
    assert len({round(a) for a in angles}) > 6 and pasted >= 8
    assert_valid(out)
