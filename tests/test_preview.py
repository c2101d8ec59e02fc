"""`cpgen preview`: the sheet decoded (tiles, colours, captions, boxes), placeholders, errors,
and the lazy COCO reader it relies on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cpgen import masks, sheet
from cpgen.cli import app
from cpgen.datasets import lazy
from cpgen.datasets.coco import CocoFiles
from cpgen.errors import EXIT_SKIPPED, EXIT_USAGE, DataError
from tests.conftest import EXAMPLES, load_json, make_coco

runner = CliRunner()


def preview(*args: str):
    return runner.invoke(app, ["preview", *args])


def copypaste(src: Path, out: Path, *args: str) -> Path:
    result = runner.invoke(
        app, ["copypaste", "--src", str(src), "--out", str(out), "-j", "1", "-q", *args]
    )
    assert result.exit_code == 0, result.output
    return out


def run_preview(path: Path, png: Path, *args: str, exit_code: int = 0) -> dict[str, Any]:
    result = preview(str(path), "--out", str(png), "--json", *args)
    assert result.exit_code == exit_code, result.output
    return json.loads(result.stdout)


def caption_strips(sheet_image: np.ndarray, width: int = sheet.TILE_WIDTH) -> list[tuple[int, int]]:
    """Top-left corners of the exactly white, tile-wide caption strips on a sheet."""
    white = np.all(sheet_image == 255, axis=2).astype(np.uint8)
    count, _, boxes, _ = cv2.connectedComponentsWithStats(white, connectivity=4)
    return [
        (int(x), int(y))
        for x, y, w, h, _ in boxes[1:count]
        if w == width and h == sheet.CAPTION_HEIGHT
    ]


def hue(bgr: np.ndarray) -> int:
    pixel = np.clip(bgr, 0, 255).astype(np.uint8).reshape(1, 1, 3)
    return int(cv2.cvtColor(pixel, cv2.COLOR_BGR2HSV)[0, 0, 0])


def is_warm(h: int) -> bool:
    return h <= 35 or h >= 170


def is_cool(h: int) -> bool:
    return 80 <= h <= 130


@pytest.fixture(params=["small", "tiny80"])
def cp_output(request, tmp_path) -> Path:
    """A copy-paste output of a built dataset and of the shared COCO sample."""
    if request.param == "small":
        src = make_coco(tmp_path / "src", n_images=6)
    else:
        src = request.getfixturevalue("tiny80")
    return copypaste(src, tmp_path / "out", "--num-images", "5", "--seed", "3")


def test_sheet_has_one_tile_per_generated_image_with_a_caption(cp_output, tmp_path):
    png = tmp_path / "sheet.png"
    summary = run_preview(cp_output, png, "--num", "4")
    image = cv2.imread(str(png))
    strips = caption_strips(image)
    assert len(strips) == len(summary["tiles"]) == 4
    data = load_json(cp_output / "annotations.json")
    generated = {r["id"] for r in data["images"] if "cpgen" in r}
    assert {t["id"] for t in summary["tiles"]} <= generated  # the generated images by default
    for tile in summary["tiles"]:
        assert (tile["x"] - (sheet.TILE_WIDTH - tile["width"]) // 2, tile["caption_y"]) in strips
        strip = image[tile["caption_y"] : tile["caption_y"] + sheet.CAPTION_HEIGHT]
        x0 = tile["x"] - (sheet.TILE_WIDTH - tile["width"]) // 2
        text = np.all(strip[:, x0 : x0 + sheet.TILE_WIDTH] < 128, axis=2)
        assert text.sum() > 200  # three lines of dark text, not an empty strip


def tile_mask(ann: dict[str, Any], record: dict[str, Any], tile: dict[str, Any]) -> np.ndarray:
    """The annotation's mask at the tile's size, eroded away from outlines."""
    seg = ann["segmentation"]
    h, w = record["height"], record["width"]
    rle = masks.segmentation_to_rle(
        masks.clean_polygons(seg)[0] if isinstance(seg, list) else seg, h, w
    )
    full = np.ascontiguousarray(masks.decode(rle))
    small = cv2.resize(full, (tile["width"], tile["height"]), interpolation=cv2.INTER_NEAREST)
    return cv2.erode(small, np.ones((5, 5), np.uint8)).astype(bool)


def test_pasted_instances_are_warm_and_the_targets_own_cool(cp_output, tmp_path):
    png = tmp_path / "sheet.png"
    summary = run_preview(cp_output, png, "--num", "5")
    image = cv2.imread(str(png)).astype(np.float64)
    data = load_json(cp_output / "annotations.json")
    records = {r["id"]: r for r in data["images"]}
    checked = {"source": 0, "target": 0}
    for tile in summary["tiles"]:
        record = records[tile["id"]]
        x, y, w, h = tile["x"], tile["y"], tile["width"], tile["height"]
        drawn = image[y : y + h, x : x + w]
        photo = cv2.imread(str(cp_output / "images" / record["file_name"]))
        photo = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA).astype(np.float64)
        # the fill colour, recovered from the translucent blend
        fill = (drawn - (1 - sheet.FILL_ALPHA) * photo) / sheet.FILL_ALPHA
        for ann in data["annotations"]:
            if ann["image_id"] != record["id"] or ann.get("iscrowd"):
                continue
            inside = tile_mask(ann, record, tile)
            if inside.sum() < 40:
                continue
            h_ = hue(np.median(fill[inside], axis=0))
            origin = ann["cpgen"]["from"]
            assert (is_warm if origin == "source" else is_cool)(h_), (ann["id"], origin, h_)
            checked[origin] += 1
    assert checked["source"] >= 2 and checked["target"] >= 2, checked


def test_plain_dataset_any_images_and_box_only_instances_as_boxes(tmp_path):
    src = make_coco(tmp_path / "src", n_images=3)
    data = load_json(src / "annotations.json")
    box_only = data["annotations"][0]
    del box_only["segmentation"]  # a detection-style annotation: a box only
    (src / "annotations.json").write_text(json.dumps(data))
    summary = run_preview(src, tmp_path / "p.png", "--ids", str(box_only["image_id"]))
    assert summary["kind"] == "coco" and [t["id"] for t in summary["tiles"]] == [0]
    tile = summary["tiles"][0]
    image = cv2.imread(str(tmp_path / "p.png")).astype(np.float64)
    s = tile["scale"]
    bx, by, bw, bh = box_only["bbox"]
    left, top = tile["x"] + round(bx * s), tile["y"] + round(by * s)
    right = tile["x"] + round((bx + bw) * s) - 1
    edge = image[top + 2 : top + round(bh * s) - 2, left]  # the left side of the box
    assert is_cool(hue(np.median(edge, axis=0)))
    # inside the box: the photo, unfilled (no colour cast towards the palette)
    photo = cv2.imread(str(src / "images" / "img 0.jpg"))
    photo = cv2.resize(photo, (tile["width"], tile["height"]), interpolation=cv2.INTER_AREA)
    cx, cy = round((bx + bw / 2) * s), round((by + bh / 2) * s)
    inner = image[tile["y"] + cy - 3 : tile["y"] + cy + 3, tile["x"] + cx - 3 : tile["x"] + cx + 3]
    assert np.abs(inner - photo[cy - 3 : cy + 3, cx - 3 : cx + 3]).mean() < 12
    assert right > left


def test_cutmix_tile_outlines_the_box(tmp_path):
    out = tmp_path / "cm"
    result = runner.invoke(
        app,
        ["cutmix", "--src", str(EXAMPLES / "folders"), "--out", str(out), "--num-images", "6"]
        + ["-j", "1", "-q"],
    )
    assert result.exit_code == 0, result.output
    summary = run_preview(out, tmp_path / "cm.png", "--num", "6")
    assert summary["kind"] == "cutmix" and len(summary["tiles"]) == 6
    image = cv2.imread(str(tmp_path / "cm.png"))
    assert len(caption_strips(image)) == 6
    rows = lazy.read_cutmix(out).rows
    outlined = 0
    for tile in summary["tiles"]:
        row, s = rows[tile["id"]], tile["scale"]
        left, top = round(row["left"] * s), round(row["top"] * s)
        right, bottom = round(row["right"] * s), round(row["bottom"] * s)
        if right - left < 10 or bottom - top < 10:
            continue
        mid = (left + right) // 2
        assert tuple(image[tile["y"] + top, tile["x"] + mid]) == (255, 255, 255)
        assert tuple(image[tile["y"] + bottom - 1, tile["x"] + mid]) == (255, 255, 255)
        outlined += 1
    assert outlined >= 3


def test_missing_image_is_a_placeholder_and_a_warning(tmp_path):
    src = make_coco(tmp_path / "src", n_images=3)
    (src / "images" / "img 1.jpg").unlink()
    (src / "images" / "img 2.jpg").write_bytes(b"not a jpeg at all")
    result = preview(str(src), "--out", str(tmp_path / "p.png"), "--json")
    assert result.exit_code == EXIT_SKIPPED, result.output
    assert "img 1.jpg" in result.stderr and "file not found" in result.stderr
    assert "img 2.jpg" in result.stderr and "placeholder" in result.stderr
    summary = json.loads(result.stdout)
    assert [t["placeholder"] for t in summary["tiles"]] == [False, True, True]
    image = cv2.imread(str(tmp_path / "p.png"))
    tile = summary["tiles"][1]
    area = image[tile["y"] : tile["y"] + tile["height"], tile["x"] : tile["x"] + tile["width"]]
    assert np.median(area) == 70  # the placeholder's grey, not a photo
    assert len(caption_strips(image)) == 3


def test_an_annotation_file_as_path_finds_its_images(tmp_path):
    src = make_coco(tmp_path / "src", n_images=2)
    for args in ([str(src / "annotations.json")], ["--ann", str(src / "annotations.json")]):
        result = preview(*args, "--out", str(tmp_path / "p.png"), "--json")
        assert result.exit_code == 0, result.output
        assert not any(t["placeholder"] for t in json.loads(result.stdout)["tiles"])
    assert not (src / "annotations-preview.png").exists()


def test_default_out_is_beside_path_never_inside(tmp_path):
    src = make_coco(tmp_path / "data", n_images=2)
    before = sorted(p.name for p in src.rglob("*"))
    result = preview(str(src))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data-preview.png").is_file()
    assert sorted(p.name for p in src.rglob("*")) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/nowhere"], "does not exist"),
        (["{src}", "--out", "{src}/images/p.png"], "inside the image folder"),
        (["{src}", "--ids", "1,99"], "no image with id 99"),
        (["{src}", "--ids", "x"], "not a list of integers"),
        (["{src}", "--num", "0"], "--num"),
        (["{src}", "--out", "{tmp}/p.jpg"], ".png"),
    ],
)
def test_bad_use_exits_2_with_one_error_line(tmp_path, args, message):
    src = make_coco(tmp_path / "src", n_images=2)
    filled = [a.format(tmp=tmp_path, src=src) for a in args]
    result = preview(*filled)
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_tile_width_sets_the_tiles(tmp_path):
    src = make_coco(tmp_path / "src", n_images=3)
    summary = run_preview(src, tmp_path / "p.png", "--tile-width", "200")
    strips = caption_strips(cv2.imread(str(tmp_path / "p.png")), width=200)
    assert summary["tile_width"] == 200 and len(strips) == 3
    assert all(t["width"] == 200 and t["height"] == 133 for t in summary["tiles"])  # 96x64


def test_caption_names_provenance_and_tolerates_missing_parameters():
    from cpgen.preview import coco_caption

    pasted = {"cpgen": {"from": "source"}}
    generated = {
        "id": 9,
        "file_name": "cpgen/000009.jpg",
        "cpgen": {"target_id": 4, "source_ids": [7, 8], "params": {"scale": 0.5, "hflip": True}},
    }
    assert coco_caption(generated, [pasted, pasted, {}]) == [
        "cpgen/000009.jpg",
        "id 9: target 4 <- source 7,8",
        "scale 0.50, flipped, 2 pasted",
    ]
    on_background = {
        "id": 10,
        "file_name": "cpgen/000010.jpg",
        "cpgen": {"background": "beach.jpg", "source_ids": [3], "params": {"rotation": -12.25}},
    }
    assert coco_caption(on_background, [pasted])[1:] == [
        "id 10: background beach.jpg <- source 3",
        "rotation -12.2 deg, 1 pasted",
    ]
    assert coco_caption({"id": 1, "file_name": "a.jpg", "cpgen": {}}, [])[1:] == [
        "id 1: background ? <- source -",
        "0 pasted",
    ]
    crowd_and_box = [{"iscrowd": 1, "segmentation": {}}, {"bbox": [0, 0, 2, 2]}]
    assert coco_caption({"id": 2, "file_name": "b.jpg"}, crowd_and_box)[2] == (
        "2 instances, 1 crowd, 1 box-only"
    )


def test_same_seed_same_tiles_other_seed_other_tiles(tiny80, tmp_path):
    first = run_preview(tiny80, tmp_path / "a.png", "--num", "5", "--seed", "1")
    again = run_preview(tiny80, tmp_path / "b.png", "--num", "5", "--seed", "1")
    other = run_preview(tiny80, tmp_path / "c.png", "--num", "5", "--seed", "2")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert [t["id"] for t in first["tiles"]] == [t["id"] for t in again["tiles"]]
    assert [t["id"] for t in first["tiles"]] != [t["id"] for t in other["tiles"]]


# ---------------------------------------------------------------------------------------------
# the lazy reader


def layouts(data: dict[str, Any]) -> dict[str, str]:
    """The same dataset in the member orders and spacings found in the wild."""
    images, anns, cats = data["images"], data["annotations"], data["categories"]
    return {
        "compact": json.dumps(data, separators=(",", ":")),
        "indented": json.dumps(data, indent=2),
        "annotations first": json.dumps(
            {"info": {"s": '{["x'}, "annotations": anns, "images": images, "categories": cats}
        ),
        "categories last (COCO)": json.dumps(
            {"images": images, "annotations": anns, "categories": cats, "x": [1, {"y": "]"}]},
            ensure_ascii=False,
        ),
        "needs the scan": json.dumps(
            {
                "annotations": anns,
                "x": {"categories": 1},
                "images": images,
                "categories": cats,
                "y": 'é\\"}',
            },
            ensure_ascii=False,
        ),
    }


@pytest.mark.parametrize(
    "layout",
    ["compact", "indented", "annotations first", "categories last (COCO)", "needs the scan"],
)
def test_lazy_reader_finds_what_json_load_finds(tiny80, tmp_path, layout):
    out = copypaste(tiny80, tmp_path / "out", "--num-images", "4")
    data = load_json(out / "annotations.json")  # provenance nests "image_id" keys too
    path = tmp_path / "a.json"
    path.write_text(layouts(data)[layout], encoding="utf-8")
    dataset = lazy.LazyCoco.open(CocoFiles(path, tmp_path))
    assert dataset.images == data["images"] and dataset.categories == data["categories"]
    ids = [r["id"] for r in data["images"]]
    expected = {i: [a for a in data["annotations"] if a["image_id"] == i] for i in ids}
    assert dataset.annotations_of(ids) == expected
    assert dataset.annotations_of(ids[-3:]) == {i: expected[i] for i in ids[-3:]}

    def light(anns):
        return [{k: v for k, v in a.items() if k != "segmentation"} for a in anns]

    assert light(dataset.annotations()) == light(data["annotations"])


def test_lazy_reader_refuses_broken_json(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"images": [], "annotations": [{"id": 1}')
    with pytest.raises(DataError):
        lazy.LazyCoco.open(CocoFiles(path, tmp_path))
