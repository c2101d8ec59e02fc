"""Exact polygon masks: hand-made and random masks round-trip through pycocotools pixel for
pixel, and `--mask-format polygon` output equals `--mask-format rle` output of the same seed and
loads in pycocotools' COCO, supervision, and under Detectron2's and MMDetection's checks."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as cocomask
from typer.testing import CliRunner

from cpgen import masks
from cpgen.cli import app
from cpgen.polygons import mask_to_exact_polygons
from tests.conftest import load_json, shared_dataset

runner = CliRunner()


def decode_parts(parts: list[list[float]], height: int, width: int) -> np.ndarray:
    """The mask pycocotools (and so Detectron2 and MMDetection) draws for polygon parts."""
    if not parts:
        return np.zeros((height, width), dtype=np.uint8)
    return cocomask.decode(cocomask.merge(cocomask.frPyObjects(parts, height, width)))


def shoelace(part: list[float]) -> float:
    x, y = np.asarray(part[0::2], float), np.asarray(part[1::2], float)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def assert_round_trip(mask: np.ndarray) -> list[list[float]]:
    """Polygons of ``mask`` decode to it exactly; each part has >= 6 numbers on pixel corners."""
    mask = np.asarray(mask, dtype=np.uint8)
    height, width = mask.shape
    parts = mask_to_exact_polygons(mask)
    assert np.array_equal(decode_parts(parts, height, width), mask)
    for part in parts:
        assert len(part) >= 6 and len(part) % 2 == 0
        assert all(isinstance(v, int) for v in part)
        assert min(part[0::2]) >= 0 and max(part[0::2]) <= width
        assert min(part[1::2]) >= 0 and max(part[1::2]) <= height
        assert_edges_follow_the_mask(part, mask)
    # each part is a component minus its holes: the shoelace areas add up to the pixel count
    assert sum(shoelace(p) for p in parts) == pytest.approx(int(mask.sum()))
    return parts


def assert_edges_follow_the_mask(part: list[float], mask: np.ndarray) -> None:
    """Every edge (cuts included) is horizontal or vertical and runs along pixel edges with a
    foreground pixel on at least one side: no edge crosses the background, so rasterisers
    other than pycocotools' draw no stray lines."""
    padded = np.pad(mask, 1)  # padded[r + 1, c + 1] is pixel (r, c); outside is background
    points = list(zip(part[0::2], part[1::2], strict=True))
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True):
        assert x0 == x1 or y0 == y1, "diagonal edge"
        if y0 == y1:
            cols = slice(min(x0, x1) + 1, max(x0, x1) + 1)
            assert np.all(padded[y0, cols] | padded[y0 + 1, cols])
        else:
            rows = slice(min(y0, y1) + 1, max(y0, y1) + 1)
            assert np.all(padded[rows, x0] | padded[rows, x0 + 1])


def frame(shape: tuple[int, int], *boxes: tuple[int, int, int, int, int]) -> np.ndarray:
    """A mask drawn from (row0, row1, col0, col1, value) boxes in order."""
    mask = np.zeros(shape, dtype=np.uint8)
    for r0, r1, c0, c1, value in boxes:
        mask[r0:r1, c0:c1] = value
    return mask


HAND_MADE = {
    "one pixel": frame((5, 5), (2, 3, 2, 3, 1)),
    "one pixel in a corner": frame((4, 4), (0, 1, 0, 1, 1)),
    "hole": frame((7, 7), (1, 6, 1, 6, 1), (3, 4, 3, 4, 0)),
    "two holes": frame((8, 11), (1, 7, 1, 10, 1), (2, 4, 2, 4, 0), (3, 6, 6, 8, 0)),
    "island in a hole": frame((11, 11), (1, 10, 1, 10, 1), (2, 9, 2, 9, 0), (4, 7, 4, 7, 1)),
    "diagonal one-pixel line": np.eye(6, dtype=np.uint8),
    "anti-diagonal line": np.fliplr(np.eye(5, dtype=np.uint8)).copy(),
    "checkerboard": (np.indices((6, 7)).sum(axis=0) % 2).astype(np.uint8),
    "touching every border": frame((6, 8), (0, 6, 0, 8, 1), (2, 4, 3, 5, 0)),
    "full frame": np.ones((3, 4), dtype=np.uint8),
    "one-pixel frame": np.ones((1, 1), dtype=np.uint8),
    "hole touching the outside at a corner": frame(
        (6, 6), (1, 5, 1, 5, 1), (2, 3, 2, 3, 0), (1, 2, 1, 2, 0)
    ),
}


@pytest.mark.parametrize("name", list(HAND_MADE))
def test_hand_made_masks_round_trip_exactly(name: str) -> None:
    assert_round_trip(HAND_MADE[name])


def test_one_pixel_is_its_square_and_a_hole_is_joined_by_a_cut() -> None:
    assert mask_to_exact_polygons(HAND_MADE["one pixel"]) == [[2, 2, 3, 2, 3, 3, 2, 3]]
    (part,) = mask_to_exact_polygons(HAND_MADE["hole"])  # one part: the hole is inside it
    assert (3, 3) in set(zip(part[0::2], part[1::2], strict=True))  # the hole's corner


def test_any_nonzero_is_inside_and_an_offset_moves_the_vertices() -> None:
    mask = HAND_MADE["hole"] * 255
    assert mask_to_exact_polygons(mask) == mask_to_exact_polygons(mask.astype(bool))
    full = np.pad(mask, ((3, 0), (5, 0)))
    assert mask_to_exact_polygons(mask, offset=(5, 3)) == mask_to_exact_polygons(full)
    every_other = np.repeat(mask, 2, axis=0)[::2]  # a strided view, neither C nor F order
    assert mask_to_exact_polygons(every_other) == mask_to_exact_polygons(mask)
    assert mask_to_exact_polygons(np.asfortranarray(mask)) == mask_to_exact_polygons(mask)


def test_an_island_in_a_hole_is_its_own_part_and_a_diagonal_line_is_one() -> None:
    assert len(mask_to_exact_polygons(HAND_MADE["island in a hole"])) == 2
    assert len(mask_to_exact_polygons(HAND_MADE["diagonal one-pixel line"])) == 1
    assert mask_to_exact_polygons(np.zeros((3, 3), np.uint8)) == []


@st.composite
def noise_masks(draw: Any) -> np.ndarray:
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    density = draw(st.floats(0.05, 0.95))
    seed = draw(st.integers(0, 2**32 - 1))
    return (np.random.default_rng(seed).random((height, width)) < density).astype(np.uint8)


@st.composite
def blob_masks(draw: Any) -> np.ndarray:
    """Discs and boxes drawn and erased in turn: blobs with holes, islands and thin parts."""
    height, width = draw(st.integers(4, 48)), draw(st.integers(4, 48))
    mask = np.zeros((height, width), dtype=np.uint8)
    for value in draw(st.lists(st.sampled_from([1, 1, 0]), min_size=1, max_size=8)):
        x, y = draw(st.integers(-4, width + 4)), draw(st.integers(-4, height + 4))
        size = draw(st.integers(0, max(height, width) // 2))
        if draw(st.booleans()):
            cv2.circle(mask, (x, y), size, value, -1)
        else:
            cv2.rectangle(mask, (x, y), (x + size, y + draw(st.integers(0, size))), value, -1)
    return mask


@settings(max_examples=400, deadline=None)
@given(noise_masks())
def test_random_noise_masks_round_trip_exactly(mask: np.ndarray) -> None:
    assert_round_trip(mask)


@settings(max_examples=300, deadline=None)
@given(blob_masks())
def test_random_blobs_round_trip_exactly(mask: np.ndarray) -> None:
    assert_round_trip(mask)


def test_rle_to_polygons_of_a_mask_with_a_hole() -> None:
    mask = HAND_MADE["two holes"]
    parts = masks.rle_to_polygons(masks.encode(mask))
    assert np.array_equal(masks.decode(masks.polygons_to_rle(parts, *mask.shape)), mask)


# ---------------------------------------------------------------------------------------------
# Whole runs: --mask-format polygon against --mask-format rle of the same seed


def run(src: Path, out: Path, mask_format: str | None, num_images: int) -> dict[str, Any]:
    """A copy-paste run; ``mask_format`` None is the default (polygon)."""
    args = ["copypaste", "--src", str(src), "--out", str(out)]
    args += ["--mask-format", mask_format] if mask_format else []
    args += ["--num-images", str(num_images), "--seed", "11", "-j", "2", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return load_json(out / "annotations.json")


@pytest.fixture(scope="module", params=[("coco_val2017_tiny80", 80), ("labelme_voc2011_coco3", 9)])
def both_formats(request: Any, tmp_path_factory: Any) -> tuple[Path, dict, dict]:
    name, num_images = request.param
    src = shared_dataset(name)
    root = tmp_path_factory.mktemp(name)
    as_rle = run(src, root / "rle", "rle", num_images)
    as_polygon = run(src, root / "polygon", None, num_images)  # the default
    return root / "polygon", as_rle, as_polygon


def generated(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in data["annotations"] if "cpgen" in a]


def test_polygon_output_decodes_to_the_rle_output_exactly(both_formats: Any) -> None:
    _, as_rle, as_polygon = both_formats
    sizes = {r["id"]: (r["height"], r["width"]) for r in as_rle["images"]}
    pairs = list(zip(generated(as_rle), generated(as_polygon), strict=True))
    assert pairs
    holes = 0
    for rle_ann, polygon_ann in pairs:
        assert rle_ann["cpgen"] == polygon_ann["cpgen"]
        height, width = sizes[rle_ann["image_id"]]
        truth = cocomask.decode(rle_ann["segmentation"])
        segmentation = polygon_ann["segmentation"]
        if rle_ann["iscrowd"]:
            assert segmentation == rle_ann["segmentation"]  # crowd regions stay RLE
            continue
        assert isinstance(segmentation, list)
        assert np.array_equal(decode_parts(segmentation, height, width), truth)
        rle = cocomask.encode(np.asfortranarray(truth))
        assert polygon_ann["area"] == rle_ann["area"] == int(truth.sum())
        assert polygon_ann["bbox"] == rle_ann["bbox"] == [int(v) for v in cocomask.toBbox(rle)]
        holes += int(cv2.connectedComponents(1 - truth, connectivity=4)[0] - 1 > 1)
    originals = [a for a in as_polygon["annotations"] if "cpgen" not in a]
    assert originals == [a for a in as_rle["annotations"] if "cpgen" not in a]
    # a target object the paste left whole keeps its own polygon, exactly as given
    by_id = {a["id"]: a for a in originals}
    whole = [
        a
        for a in generated(as_polygon)
        if a["cpgen"]["from"] == "target"
        and not a["iscrowd"]
        and a["area"] == by_id[a["cpgen"]["ann_id"]]["area"]
        and isinstance(by_id[a["cpgen"]["ann_id"]]["segmentation"], list)
    ]
    assert whole and all(
        a["segmentation"] == by_id[a["cpgen"]["ann_id"]]["segmentation"] for a in whole
    )
    if len(pairs) > 500:  # the COCO run occludes targets: some visible masks have holes
        assert holes > 0


def test_polygon_output_meets_detectron2_and_mmdetection_checks(both_formats: Any) -> None:
    """Detectron2's PolygonMasks (default INPUT.MASK_FORMAT "polygon") raises unless every
    segmentation is a list of parts with an even count >= 6 of numbers; MMDetection's
    LoadAnnotations(poly2mask=False) sets ignore_flag on any non-list segmentation and drops
    parts with odd or < 6 counts, and CocoDataset.parse_data_info skips boxes under 1 pixel or
    outside the image and areas <= 0."""
    _, _, as_polygon = both_formats
    sizes = {r["id"]: (r["height"], r["width"]) for r in as_polygon["images"]}
    for ann in generated(as_polygon):
        if ann["iscrowd"]:
            continue
        parts = ann["segmentation"]
        assert isinstance(parts, list) and parts
        assert all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in parts)
        height, width = sizes[ann["image_id"]]
        assert int(decode_parts(parts, height, width).sum()) == ann["area"] > 0
        x, y, w, h = ann["bbox"]
        assert w >= 1 and h >= 1 and 0 <= x <= width - w and 0 <= y <= height - h


def test_pycocotools_coco_loads_the_polygon_output(both_formats: Any) -> None:
    from pycocotools.coco import COCO

    out, as_rle, _ = both_formats
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
        coco = COCO(str(out / "annotations.json"))
    rle_by_key = {
        (a["image_id"], a["cpgen"]["ann_id"], a["cpgen"]["from"]): a for a in generated(as_rle)
    }
    checked = 0
    for ann in coco.loadAnns(coco.getAnnIds()):
        if "cpgen" not in ann:
            continue
        key = (ann["image_id"], ann["cpgen"]["ann_id"], ann["cpgen"]["from"])
        expected = cocomask.decode(rle_by_key[key]["segmentation"])
        assert np.array_equal(coco.annToMask(ann), expected)
        checked += 1
    assert checked == len(rle_by_key)


def test_supervision_loads_the_polygon_output(both_formats: Any) -> None:
    """supervision draws polygons with cv2.fillPoly on rounded vertices (pixel-index
    convention, right and bottom edges inclusive), so for a traced polygon (vertices on pixel
    corners) its mask holds ours plus at most the one-pixel rim to the right and bottom; a
    target the paste left whole keeps the dataset's own float polygon, and a pasted one the
    source's polygon placed on the frame, which supervision rounds its own way, so there it is
    only close: IoU >= 0.5 from 64 pixels on; smaller objects lose most, but still overlap."""
    sv = pytest.importorskip("supervision")
    out, as_rle, as_polygon = both_formats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = sv.DetectionDataset.from_coco(
            images_directory_path=str(out / "images"),
            annotations_path=str(out / "annotations.json"),
            force_masks=True,
        )
    by_file = {r["file_name"]: r["id"] for r in as_polygon["images"]}
    truth_by_image: dict[int, list[np.ndarray]] = {}
    traced_by_image: dict[int, list[bool]] = {}
    for ann, polygon_ann in zip(generated(as_rle), generated(as_polygon), strict=True):
        truth_by_image.setdefault(ann["image_id"], []).append(cocomask.decode(ann["segmentation"]))
        traced = isinstance(polygon_ann["segmentation"], dict) or all(
            float(v).is_integer() for part in polygon_ann["segmentation"] for v in part
        )
        traced_by_image.setdefault(ann["image_id"], []).append(traced)
    # a pixel is in the rim if ours holds it or its left, upper or upper-left neighbour
    rim = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=np.uint8)
    seen = 0
    for path, _image, detections in dataset:
        rel = Path(path).relative_to(out / "images").as_posix()
        image_id = by_file[rel]
        if image_id not in truth_by_image:
            continue
        truth = truth_by_image[image_id]
        assert len(detections) == len(truth)
        traced = traced_by_image[image_id]
        for loaded, ours, exact in zip(detections.mask, truth, traced, strict=True):
            if exact:
                grown = cv2.dilate(ours, rim, anchor=(1, 1)).astype(bool)
                assert np.all(loaded >= ours.astype(bool)) and not np.any(loaded & ~grown)
            else:
                mine = ours.astype(bool)
                assert np.any(loaded & mine)
                if mine.sum() >= 64:  # small objects lose most to its rounding
                    assert np.sum(loaded & mine) / np.sum(loaded | mine) >= 0.5
        seen += 1
    assert seen == len(truth_by_image)
