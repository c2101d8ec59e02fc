"""`cpgen validate`: each problem kind is found and counted; clean data and cpgen output pass."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cpgen import masks
from cpgen import validate as checks
from cpgen.cli import app
from cpgen.datasets.consumers import KINDS as CONSUMER_KINDS

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LABELME = SHARED_DATA / "labelme_voc2011_coco3"

runner = CliRunner()

# --------------------------------------------------------------------------------------------
# A tiny clean dataset: a.jpg (64x48) and sub/b.png (40x30), ids from 0, polygons and a crowd RLE
# --------------------------------------------------------------------------------------------

SQUARE = [8.0, 8.0, 30.0, 8.0, 30.0, 30.0, 8.0, 30.0]
TRIANGLE_AND_SQUARE = [[35.0, 5.0, 60.0, 5.0, 47.0, 40.0], [2.0, 36.0, 10.0, 36.0, 10.0, 44.0]]


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE (list counts, column-major, starting with a run of zeros)."""
    flat = mask.flatten(order="F")
    runs, value, run = [], 0, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            runs.append(run)
            value, run = pixel, 1
    runs.append(run)
    return {"size": list(mask.shape), "counts": [int(r) for r in runs]}


def annotation(
    ann_id: int, image: dict[str, Any], category_id: int, segmentation: Any, iscrowd: int = 0
) -> dict[str, Any]:
    """An annotation whose area and bbox are its mask's, as cpgen writes them."""
    rle = masks.segmentation_to_rle(segmentation, image["height"], image["width"])
    return {
        "id": ann_id,
        "image_id": image["id"],
        "category_id": category_id,
        "segmentation": segmentation,
        "area": masks.area(rle),
        "bbox": masks.bbox(rle),
        "iscrowd": iscrowd,
    }


def make_dataset(root: Path) -> dict[str, Any]:
    """Write a clean dataset in the annotations.json + images/ layout; return its JSON."""
    (root / "images" / "sub").mkdir(parents=True)
    picture = np.full((48, 64, 3), 90, np.uint8)
    cv2.rectangle(picture, (8, 8), (30, 30), (0, 200, 0), -1)
    cv2.imwrite(str(root / "images" / "a.jpg"), picture)
    cv2.imwrite(str(root / "images" / "sub" / "b.png"), np.full((30, 40, 3), 160, np.uint8))
    image_a = {"id": 0, "file_name": "a.jpg", "width": 64, "height": 48}
    image_b = {"id": 1, "file_name": "sub/b.png", "width": 40, "height": 30}
    crowd = np.zeros((30, 40), np.uint8)
    crowd[2:10, 25:35] = 1
    data = {
        "info": {"description": "test"},
        "licenses": [],
        "categories": [
            {"id": 0, "name": "thing", "supercategory": "x"},
            {"id": 1, "name": "other", "supercategory": "x"},
        ],
        "images": [image_a, image_b],
        "annotations": [
            annotation(0, image_a, 0, [list(SQUARE)]),  # copies: tests edit them in place
            annotation(1, image_a, 1, [list(p) for p in TRIANGLE_AND_SQUARE]),
            annotation(2, image_b, 0, [[5.0, 5.0, 20.0, 5.0, 20.0, 25.0, 5.0, 25.0]]),
            annotation(3, image_b, 1, uncompressed_rle(crowd), iscrowd=1),
        ],
    }
    write_json(root, data)
    return data


def write_json(root: Path, data: Any) -> None:
    (root / "annotations.json").write_text(json.dumps(data))


def run_json(path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["validate", str(path), "--json", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def counts(report: dict[str, Any]) -> dict[str, int]:
    return {kind: found["count"] for kind, found in report["problems"].items()}


# --------------------------------------------------------------------------------------------
# Broken files
# --------------------------------------------------------------------------------------------


def jpeg_with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment holding only the orientation tag after the SOI marker."""
    entry = struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming the given size, and nothing else."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc


def encoded_jpeg(height: int, width: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


# --------------------------------------------------------------------------------------------
# One case per problem kind: (mutation of the clean dataset, expected counts)
# --------------------------------------------------------------------------------------------

Mutation = Callable[[Path, dict[str, Any]], None]


def _json_shape(root: Path, data: dict[str, Any]) -> None:
    data["images"][1]["width"] = "40"
    del data["annotations"][0]["iscrowd"]
    data["annotations"][2]["bbox"] = [1, 2, 3]


def _duplicate_ids(root: Path, data: dict[str, Any]) -> None:
    data["annotations"].append(dict(data["annotations"][0]))
    data["categories"].append({"id": 1, "name": "again"})


def _duplicate_file_name(root: Path, data: dict[str, Any]) -> None:
    data["images"].append({"id": 7, "file_name": "./a.jpg", "width": 64, "height": 48})


def _unknown_image(root: Path, data: dict[str, Any]) -> None:
    data["annotations"][0]["image_id"] = 999


def _unknown_category(root: Path, data: dict[str, Any]) -> None:
    data["annotations"][0]["category_id"] = 42
    data["annotations"][2]["category_id"] = 43


def _segmentation_undecodable(root: Path, data: dict[str, Any]) -> None:
    anns = data["annotations"]
    anns[0]["segmentation"] = {"size": [10, 10], "counts": "PP0"}  # size of another image
    big = masks.encode(np.ones((60, 60), np.uint8))  # runs cover 3600 pixels, not 64 x 48
    anns[1]["segmentation"] = masks.rle_to_json({"size": [48, 64], "counts": big["counts"]})
    anns[2]["segmentation"] = [5.0, 5.0, 20.0, 5.0, 20.0, 25.0]  # flat, not a list of parts


def _polygon_part_short(root: Path, data: dict[str, Any]) -> None:
    data["annotations"][0]["segmentation"] = [SQUARE, [1.0, 2.0, 3.0, 4.0], [1.0] * 7]


def _empty_mask(root: Path, data: dict[str, Any]) -> None:
    data["annotations"][0]["segmentation"] = [[4.0, 4.0, 9.0, 4.0, 9.0, 4.0]]  # a flat line
    data["annotations"][2]["segmentation"] = [[3.0, 3.0, 3.0, 3.0, 3.0, 3.0]]


def _area_mismatch(root: Path, data: dict[str, Any]) -> None:
    ann = data["annotations"][1]
    ann["area"] = ann["bbox"][2] * ann["bbox"][3]  # a box area, as some converters write


def _bbox_mismatch(root: Path, data: dict[str, Any]) -> None:
    data["annotations"][0]["bbox"][0] += 3


def _bbox_outside(root: Path, data: dict[str, Any]) -> None:
    image = data["images"][0]
    outside = annotation(9, image, 0, [[-5.0, -5.0, 20.0, -5.0, 20.0, 20.0, -5.0, 20.0]])
    outside["bbox"] = [-5.0, -5.0, 25.0, 25.0]  # the polygon's extent, as COCO computes it
    data["annotations"].append(outside)


def _file_name_unsafe(root: Path, data: dict[str, Any]) -> None:
    data["images"][0]["file_name"] = "../a.jpg"
    data["images"][1]["file_name"] = str((root / "images" / "sub" / "b.png").resolve())


def _image_missing(root: Path, data: dict[str, Any]) -> None:
    (root / "images" / "sub" / "b.png").unlink()


def _image_undecodable(root: Path, data: dict[str, Any]) -> None:
    jpeg = root / "images" / "a.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    (root / "images" / "sub" / "b.png").write_bytes(b"not an image at all")


def _image_too_large(root: Path, data: dict[str, Any]) -> None:
    (root / "images" / "sub" / "b.png").write_bytes(png_header(20_000, 20_000))


def _image_size_mismatch(root: Path, data: dict[str, Any]) -> None:
    data["images"][0]["width"] = 65


def _polygon_unsafe(root: Path, data: dict[str, Any]) -> None:
    data["annotations"][0]["segmentation"] = [[5.0, 5.0, 1e12, 5.0, 20.0, 25.0]]
    data["annotations"][1]["segmentation"] = [[5.0, 5.0, 20.0, -70.0, 20.0, 25.0]]  # -H beyond


CASES: dict[str, tuple[Mutation, dict[str, int]]] = {
    "json_shape": (_json_shape, {"json_shape": 3}),
    "duplicate_id": (_duplicate_ids, {"duplicate_id": 2}),
    "duplicate_file_name": (_duplicate_file_name, {"duplicate_file_name": 1}),
    "unknown_image": (_unknown_image, {"unknown_image": 1}),
    "unknown_category": (_unknown_category, {"unknown_category": 2}),
    "segmentation_undecodable": (_segmentation_undecodable, {"segmentation_undecodable": 3}),
    "polygon_part_short": (_polygon_part_short, {"polygon_part_short": 2}),
    "empty_mask": (_empty_mask, {"empty_mask": 2}),
    "area_mismatch": (_area_mismatch, {"area_mismatch": 1}),
    "bbox_mismatch": (_bbox_mismatch, {"bbox_mismatch": 1}),
    "bbox_outside": (_bbox_outside, {"bbox_outside": 1}),
    "file_name_unsafe": (_file_name_unsafe, {"file_name_unsafe": 2}),
    "image_missing": (_image_missing, {"image_missing": 1}),
    "image_undecodable": (_image_undecodable, {"image_undecodable": 2}),
    "image_too_large": (_image_too_large, {"image_too_large": 1}),
    "image_size_mismatch": (_image_size_mismatch, {"image_size_mismatch": 1}),
    "polygon_unsafe": (_polygon_unsafe, {"polygon_unsafe": 2}),
}


def test_every_kind_has_a_case() -> None:
    assert set(CASES) == set(checks.KINDS) - {"json"}


@pytest.mark.parametrize("kind", list(CASES))
def test_problem_kind_is_reported_and_counted(tmp_path: Path, kind: str) -> None:
    data = make_dataset(tmp_path)
    mutate, expected = CASES[kind]
    mutate(tmp_path, data)
    write_json(tmp_path, data)
    code, report = run_json(tmp_path)
    assert code == 1
    assert report["valid"] is False
    assert counts(report) == expected
    assert all(len(found["examples"]) == found["count"] for found in report["problems"].values())


def test_clean_dataset_is_valid(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "valid: 2 images, 4 annotations, 2 categories",
        # its annotation ids start at 0, valid COCO that COCOeval gets wrong
        "warning: " + CONSUMER_KINDS["annotation_id_zero"] + "; 1 found, e.g. annotation 0 "
        "(image 0)",
    ]


def test_what_trips_consumers_is_warned_about_not_failed(tmp_path: Path) -> None:
    data = make_dataset(tmp_path)
    for ann in data["annotations"]:
        ann["id"] += 1  # no id 0
    data["categories"][1]["name"] = "thing"
    image_a = data["images"][0]
    square = np.zeros((48, 64), np.uint8)
    square[10:20, 10:20] = 1
    data["annotations"].append(annotation(9, image_a, 1, uncompressed_rle(square)))
    write_json(tmp_path, data)
    code, report = run_json(tmp_path)
    assert code == 0 and report["valid"] is True
    assert {k: (w["count"], w["example"]) for k, w in report["warnings"].items()} == {
        "duplicate_category_name": (1, "'thing' (2 ids)"),
        "non_crowd_rle": (1, "annotation 9 (image 0)"),
    }


def test_integral_floats_are_integers_and_hostile_polygons_are_refused(tmp_path: Path) -> None:
    data = make_dataset(tmp_path)
    data["images"][0].update(width=64.0, height=48.0, id=0.0)
    data["annotations"][0]["image_id"] = 0.0
    nan_part = list(data["annotations"][1]["segmentation"][0])  # a copy: the constant is shared
    nan_part[3] = float("nan")  # json writes NaN
    data["annotations"][1]["segmentation"] = [nan_part]
    data["annotations"][2]["segmentation"] = [[5.0, 5.0, 1e12, 5.0, 20.0, 25.0]]
    write_json(tmp_path, data)
    code, report = run_json(tmp_path)
    assert code == 1
    assert report["problems"] == {
        "polygon_unsafe": {
            "count": 2,
            "examples": [
                "annotation 1 (image 0): a polygon coordinate is not a finite number (nan)",
                "annotation 2 (image 1): a polygon reaches far outside its 40x30 image (x = 1e+12)",
            ],
        }
    }


def test_json_output_matches_the_human_one(tmp_path: Path) -> None:
    data = make_dataset(tmp_path)
    _unknown_category(tmp_path, data)
    _image_missing(tmp_path, data)
    write_json(tmp_path, data)
    code, report = run_json(tmp_path)
    assert code == 1
    assert report == {
        "valid": False,
        "images": 2,
        "annotations": 4,
        "categories": 2,
        "problems": {
            "unknown_category": {
                "count": 2,
                "examples": ["annotation 0: category_id 42", "annotation 2: category_id 43"],
            },
            "image_missing": {
                "count": 1,
                "examples": [f'image 1 "sub/b.png": no file {tmp_path / "images/sub/b.png"}'],
            },
        },
        "warnings": {
            "annotation_id_zero": {
                "count": 1,
                "example": "annotation 0 (image 0)",
                "why": CONSUMER_KINDS["annotation_id_zero"],
            }
        },
    }
    human = runner.invoke(app, ["validate", str(tmp_path)]).stdout.splitlines()
    assert human[0] == "unknown_category (2): " + checks.KINDS["unknown_category"]
    assert human[1:3] == ["  annotation 0: category_id 42", "  annotation 2: category_id 43"]
    assert human[-2] == "3 problems in 2 kinds"
    assert human[-1].startswith("warning: annotation id 0: ")


def test_human_output_shows_five_examples_per_kind(tmp_path: Path) -> None:
    data = make_dataset(tmp_path)
    for ann in data["annotations"]:
        ann["category_id"] = 77
    for i in range(3):
        data["annotations"].append({**data["annotations"][0], "id": 100 + i})
    write_json(tmp_path, data)
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("unknown_category (7): ")
    assert [line for line in lines if line.startswith("  annotation")] == lines[1:6]
    assert lines[6] == "  ... and 2 more"
    assert lines[-2] == "7 problems in 1 kind"


def test_size_mismatch_names_exif_rotation(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    jpeg = encoded_jpeg(64, 48)  # stored 48 wide, 64 high: the recorded 64x48 transposed
    (tmp_path / "images" / "a.jpg").write_bytes(jpeg_with_exif_orientation(jpeg, 6))
    code, report = run_json(tmp_path)
    assert code == 1
    [example] = report["problems"]["image_size_mismatch"]["examples"]
    assert "stored 48x64, recorded 64x48" in example
    assert "EXIF orientation is 6" in example


def test_size_mismatch_without_exif_does_not_blame_rotation(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    (tmp_path / "images" / "a.jpg").write_bytes(encoded_jpeg(64, 48))
    _, report = run_json(tmp_path)
    [example] = report["problems"]["image_size_mismatch"]["examples"]
    assert "EXIF" not in example


def test_validation_goes_on_after_every_problem(tmp_path: Path) -> None:
    data = make_dataset(tmp_path)
    for kind in ("duplicate_id", "unknown_category", "area_mismatch", "image_undecodable"):
        CASES[kind][0](tmp_path, data)
    write_json(tmp_path, data)
    code, report = run_json(tmp_path)
    assert code == 1
    assert counts(report) == {
        "duplicate_id": 2,
        "unknown_category": 2,
        "area_mismatch": 1,
        "image_undecodable": 2,
    }


# --------------------------------------------------------------------------------------------
# Annotation files that end validation early: exit 1, a clear message, no traceback
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "kind", "message"),
    [
        ('{"images": [{"id": 1', "json", "is not valid JSON"),
        ("[1, 2, 3]", "json_shape", "the top level is a list, not an object"),
        ('{"annotations": [], "categories": []}', "json_shape", "no 'images' list"),
        ('{"images": {}, "annotations": [], "categories": []}', "json_shape", "not a list"),
    ],
)
def test_unusable_annotation_file_is_one_problem(
    tmp_path: Path, content: str, kind: str, message: str
) -> None:
    make_dataset(tmp_path)
    (tmp_path / "annotations.json").write_text(content)
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stdout.splitlines()[0].startswith(f"{kind} (1): ")
    assert message in result.stdout
    assert result.stdout.splitlines()[-1] == "1 problem in 1 kind"
    code, report = run_json(tmp_path)
    assert code == 1 and counts(report) == {kind: 1}


def test_console_script_reports_truncated_json_without_traceback(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    (tmp_path / "annotations.json").write_text('{"images": [')
    done = subprocess.run(
        [sys.executable, "-m", "cpgen", "validate", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert report["valid"] is False and counts(report) == {"json": 1}
    assert "is not valid JSON" in report["problems"]["json"]["examples"][0]


def test_ann_and_images_options_name_the_files(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    args = ["--ann", str(tmp_path / "annotations.json"), "--images", str(tmp_path / "images")]
    result = runner.invoke(app, ["validate", *args])
    assert result.exit_code == 0, result.output
    both = runner.invoke(app, ["validate", str(tmp_path), *args])
    assert both.exit_code == 2
    assert "Error: give either PATH" in both.stderr
    nothing = runner.invoke(app, ["validate", str(tmp_path / "nowhere")])
    assert nothing.exit_code == 2
    assert "is not a folder" in nothing.stderr


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def test_rle_string_counts_match_pycocotools() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 5), (48, 64)]:
        mask = (rng.random(shape) < 0.3).astype(np.uint8)
        runs = masks.rle_string_counts(masks.rle_to_json(masks.encode(mask))["counts"])
        assert runs is not None and sum(runs) == mask.size
        values = np.repeat(np.arange(len(runs)) % 2, runs).astype(np.uint8)
        np.testing.assert_array_equal(values.reshape(shape, order="F"), mask)
    assert masks.rle_string_counts("0") is not None
    assert masks.rle_string_counts("P") is None  # ends in the middle of a number
    assert masks.rle_string_counts("0 ") is None  # a character outside the alphabet


def test_outline_pixels_counts_the_mask_edge() -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[2:7, 2:7] = 1
    assert checks.outline_pixels(mask) == 16  # a 5x5 square: 25 pixels, 9 inside
    assert checks.outline_pixels(np.ones((3, 3), np.uint8)) == 8  # the image edge is an edge


def test_the_outline_from_an_rle_is_the_whole_frames_outline() -> None:
    """``check_area``'s tolerance decodes only the mask's box (``rle_outline_pixels``); on
    random masks, empty, full and touching the frame's edges, it is the outline of the whole
    frame counted the plain numpy way: pixels with a 4-neighbour outside the mask or image."""
    from cpgen.validate.records import rle_outline_pixels

    rng = np.random.default_rng(7)
    shapes = [(1, 1), (1, 9), (9, 1), (48, 64)] + [tuple(rng.integers(1, 40, 2)) for _ in range(60)]
    for k, shape in enumerate(shapes):
        fill = (0.0, 1.0, 0.1, 0.5, 0.9)[k % 5]
        mask = (rng.random(shape) < fill).astype(np.uint8)
        if k % 3 == 0 and mask.size > 4:  # a blob away from the edges too
            mask[:] = 0
            mask[shape[0] // 4 : shape[0] // 2 + 1, shape[1] // 4 : shape[1] // 2 + 1] = 1
        padded = np.pad(mask, 1).astype(bool)
        interior = (
            padded[1:-1, 1:-1]
            & padded[:-2, 1:-1]
            & padded[2:, 1:-1]
            & padded[1:-1, :-2]
            & padded[1:-1, 2:]
        )
        expected = int(mask.sum()) - int(interior.sum())
        assert checks.outline_pixels(mask) == expected
        assert rle_outline_pixels(masks.encode(np.asfortranarray(mask))) == expected


def test_jpeg_checks() -> None:
    jpeg = encoded_jpeg(20, 30)
    assert not checks.jpeg_truncated(jpeg)
    assert checks.jpeg_truncated(jpeg[:-20])
    assert checks.exif_orientation(jpeg) is None
    for orientation in (1, 6, 8):
        tagged = jpeg_with_exif_orientation(jpeg, orientation)
        assert checks.exif_orientation(tagged) == orientation
        assert not checks.jpeg_truncated(tagged)


# --------------------------------------------------------------------------------------------
# Real data and cpgen's own output
# --------------------------------------------------------------------------------------------


@pytest.fixture
def labelme_copy(tmp_path: Path) -> Path:
    if not LABELME.is_dir():
        pytest.skip(f"real dataset not found at {LABELME}")
    copy = tmp_path / "labelme"
    shutil.copytree(LABELME, copy)
    return copy


def test_real_labelme_dataset_is_valid_with_a_warning_about_id_0(labelme_copy: Path) -> None:
    result = runner.invoke(app, ["validate", str(labelme_copy)])
    assert result.exit_code == 0, result.output
    valid, warning = result.stdout.splitlines()
    assert valid == "valid: 3 images, 12 annotations, 21 categories"
    assert warning.startswith("warning: annotation id 0: pycocotools' COCOeval treats it as")
    assert warning.endswith("1 found, e.g. annotation 0 (image 0)")


def test_broken_real_dataset_reports_every_problem(labelme_copy: Path) -> None:
    data = json.loads((labelme_copy / "annotations.json").read_text())
    first, second, third = data["images"]
    jpeg = labelme_copy / "images" / first["file_name"]
    jpeg.write_bytes(jpeg.read_bytes()[:5000])  # truncated
    (labelme_copy / "images" / second["file_name"]).unlink()
    third["file_name"] = "../../" + third["file_name"]
    box_area = data["annotations"][0]["bbox"][2] * data["annotations"][0]["bbox"][3]
    data["annotations"][0]["area"] = box_area
    data["annotations"][1]["bbox"] = [0, 0, first["width"] + 10, 20]
    data["annotations"][2]["segmentation"].append([250.0, 100.0, 260.0, 100.0])
    data["annotations"].append({**data["annotations"][3], "image_id": 12345})
    write_json(labelme_copy, data)
    code, report = run_json(labelme_copy)
    assert code == 1
    assert report["images"] == 3 and report["annotations"] == 13
    assert counts(report) == {
        "duplicate_id": 1,
        "unknown_image": 1,
        "polygon_part_short": 1,
        "area_mismatch": 1,
        "bbox_mismatch": 1,
        "bbox_outside": 1,
        "file_name_unsafe": 1,
        "image_missing": 1,
        "image_undecodable": 1,
    }


@pytest.mark.parametrize("mask_format", ["rle", "polygon"])
def test_copypaste_output_validates_clean(tmp_path: Path, mask_format: str) -> None:
    make_dataset(tmp_path / "src")
    out = tmp_path / "out"
    args = ["--src", str(tmp_path / "src"), "--out", str(out), "--num-images", "4", "-j", "1"]
    made = runner.invoke(app, ["copypaste", *args, "--mask-format", mask_format, "--quiet"])
    assert made.exit_code == 0, made.output
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("valid: 6 images")
