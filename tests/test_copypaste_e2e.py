"""End to end: run `cpgen copypaste` on real datasets and check every point of the contract
by decoding the written images and masks."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cpgen import masks
from cpgen.cli import app
from cpgen.ops.paste import Placement, composite, keep_occluded, warp_crop
from tests.conftest import EXAMPLES, load_json, shared_dataset
from tests.copypaste_helpers import block_mean

runner = CliRunner()
MIN_VISIBLE_PX, MIN_VISIBLE_FRAC = 10, 0.1


def run_copypaste(src: Path, out: Path, *args: str) -> Any:
    result = runner.invoke(app, ["copypaste", "--src", str(src), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return result


def mask_of(ann: dict[str, Any], image: dict[str, Any]) -> np.ndarray:
    seg = ann["segmentation"]
    if isinstance(seg, list):
        seg, _ = masks.clean_polygons(seg)
    rle = masks.segmentation_to_rle(seg, image["height"], image["width"])
    return masks.decode(rle).astype(bool)


def check_contract(src: Path, out: Path, images_subdir: str = "images") -> dict[str, int]:
    """Assert DESIGN.md's copy-paste output contract; return counts of what was checked."""
    source = load_json(src / "annotations.json")
    data = load_json(out / "annotations.json")
    assert data["categories"] == source["categories"]
    assert data["info"]["cpgen"]["command"] == "copypaste"
    assert data["info"]["cpgen"]["tool"] == "cpgen"
    assert data["info"]["cpgen"]["options"]["seed"] == 0
    recorded = data["info"]["cpgen"]["options"]  # regenerate with the options the run used
    sigma = recorded["sigma"] if recorded["blend"] == "gaussian" else 0.0
    assert data["licenses"] == source.get("licenses", [])

    image_ids = [r["id"] for r in data["images"]]
    ann_ids = [a["id"] for a in data["annotations"]]
    assert len(set(image_ids)) == len(image_ids)
    assert len(set(ann_ids)) == len(ann_ids)

    src_images = {r["id"]: r for r in source["images"]}
    src_anns = {a["id"]: a for a in source["annotations"]}
    max_src_image = max(src_images)
    names = {r["file_name"] for r in source["images"]}
    out_images = {r["id"]: r for r in data["images"]}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        assert ann["image_id"] in out_images
        by_image.setdefault(ann["image_id"], []).append(ann)

    counts = {"generated": 0, "originals": 0, "annotations": 0, "target": 0, "pasted": 0}
    decoded_cache: dict[tuple[int, int], np.ndarray] = {}

    def src_pixels(image_id: int, reduction: int = 1) -> np.ndarray:
        if (image_id, reduction) not in decoded_cache:
            path = src / images_subdir / src_images[image_id]["file_name"]
            decoded_cache[image_id, reduction] = block_mean(
                cv2.imread(str(path), cv2.IMREAD_COLOR), reduction
            )
        return decoded_cache[image_id, reduction]

    for image in data["images"]:
        pixels = cv2.imread(str(out / "images" / image["file_name"]), cv2.IMREAD_COLOR)
        assert pixels is not None, image["file_name"]
        assert pixels.shape[:2] == (image["height"], image["width"])
        anns = by_image.get(image["id"], [])
        for ann in anns:  # area and bbox are the mask's, for every annotation
            mask = mask_of(ann, image)
            assert ann["area"] == int(mask.sum()) > 0
            assert ann["bbox"] == masks.bbox(masks.encode(mask.astype(np.uint8)))
            counts["annotations"] += 1
        if "cpgen" not in image:  # an original: same record, same bytes
            counts["originals"] += 1
            assert image == src_images[image["id"]]
            original = src / images_subdir / image["file_name"]
            assert (out / "images" / image["file_name"]).read_bytes() == original.read_bytes()
            assert all("cpgen" not in a for a in anns)
            continue

        counts["generated"] += 1
        prov = image["cpgen"]
        assert image["id"] > max_src_image
        assert image["file_name"] not in names
        assert set(prov) >= {"target_id", "source_ids", "seed"}
        target_rec = src_images[prov["target_id"]]
        assert (image["width"], image["height"]) == (target_rec["width"], target_rec["height"])
        h, w = image["height"], image["width"]

        pasted = [a for a in anns if a["cpgen"]["from"] == "source"]
        union = np.zeros((h, w), bool)
        for ann in pasted:
            assert ann["cpgen"]["image_id"] in prov["source_ids"]
            assert src_anns[ann["cpgen"]["ann_id"]]["iscrowd"] == 0  # crowds never pasted
            assert ann["area"] >= MIN_VISIBLE_PX
            union |= mask_of(ann, image)
            counts["pasted"] += 1

        # target-origin masks are their original minus the pasted union
        kept = set()
        for ann in anns:
            if ann["cpgen"]["from"] != "target":
                continue
            original = src_anns[ann["cpgen"]["ann_id"]]
            assert original["image_id"] == prov["target_id"]
            assert ann["category_id"] == original["category_id"]
            expected = mask_of(original, target_rec) & ~union
            assert np.array_equal(mask_of(ann, image), expected)
            kept.add(original["id"])
            counts["target"] += 1
        # a target annotation missing from the output was hidden enough to be dropped
        for original in source["annotations"]:
            if original["image_id"] != prov["target_id"] or original["id"] in kept:
                continue
            full = mask_of(original, target_rec)
            if not full.any():
                continue  # unusable in the source (skipped with a warning)
            visible = int((full & ~union).sum())
            assert not keep_occluded(int(full.sum()), visible, MIN_VISIBLE_PX, MIN_VISIBLE_FRAC)

        # pixels away from pasted objects are the target's, within JPEG noise: JPEG codes
        # 16x16 blocks independently, so away from the paste the output equals the target
        # re-encoded at the same quality (chroma upsampling may move a value by one)
        target = src_pixels(prov["target_id"])
        reencoded = cv2.imdecode(cv2.imencode(".jpg", target, [cv2.IMWRITE_JPEG_QUALITY, 95])[1], 1)
        near = cv2.dilate(union.astype(np.uint8), np.ones((33, 33), np.uint8)).astype(bool)
        diff = np.abs(pixels.astype(np.int16) - reencoded.astype(np.int16)).max(axis=2)
        if (~near).any():
            assert diff[~near].max() <= 1
        # the output is regenerated exactly from its provenance: the placed source composited
        # through the pasted union onto the target (so JPEG noise cancels out)
        params = prov["params"]
        source_rec = src_images[prov["source_ids"][0]]
        r = params["source_reduction"]  # the source was decoded at 1/r of its size
        placement = Placement(
            params["hflip"], params["scale"] * r, *params["offset"], source_rec["width"] / r
        )
        source_pixels = src_pixels(source_rec["id"], r)
        placed = warp_crop(source_pixels, placement, (0, 0, w, h))
        expected = target.copy()
        composite(expected, placed, union.astype(np.uint8), (0, 0, w, h), sigma)
        expected = cv2.imdecode(
            cv2.imencode(".jpg", expected, [cv2.IMWRITE_JPEG_QUALITY, 95])[1], 1
        )
        regen = np.abs(pixels.astype(np.int16) - expected.astype(np.int16)).max(axis=2)
        # the tool renders a crop, the test the frame: float rounding may move a value by one,
        # which JPEG spreads over a few pixels of that block (measured: max 7, <0.5% of pixels)
        assert regen.max() <= 10 and (regen > 1).mean() < 0.01
        # and inside pasted objects the pixels are the source's, not the target's
        inner = cv2.erode(union.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        if inner.sum() > 50:
            to_source = np.abs(pixels.astype(np.int16) - placed.astype(np.int16))[inner].mean()
            to_target = np.abs(pixels.astype(np.int16) - target.astype(np.int16))[inner].mean()
            assert to_source < 12 and to_source < to_target
    return counts


def check_cocoeval_self_ap(out: Path) -> None:
    """The output loads in pycocotools and scores AP 1.0 against itself (segm and bbox)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset = load_json(out / "annotations.json")
    # COCOeval stores matches by annotation id with 0 meaning "unmatched", so a ground truth
    # whose id is 0 (labelme's, kept as the contract says) never counts: shift ids for the eval
    for ann in dataset["annotations"]:
        ann["id"] += 1
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        detections = [
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "segmentation": a["segmentation"]
                if isinstance(a["segmentation"], dict)
                else masks.rle_to_json(gt.annToRLE(a)),
                "bbox": a["bbox"],
                "score": 1.0,
            }
            for a in gt.dataset["annotations"]
            if not a["iscrowd"]
        ]
        dt = gt.loadRes(detections)
        for iou_type in ("segm", "bbox"):
            evaluator = COCOeval(gt, dt, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            assert evaluator.stats[0] == pytest.approx(1.0), iou_type


@pytest.fixture(scope="module")
def tiny80_out(tmp_path_factory) -> tuple[Path, Path]:
    src = shared_dataset("coco_val2017_tiny80")
    out = tmp_path_factory.mktemp("tiny80") / "aug"
    run_copypaste(src, out, "--num-images", "120", "-j", "2", "--quiet")
    return src, out


def test_tiny80_output_meets_the_contract(tiny80_out):
    src, out = tiny80_out
    counts = check_contract(src, out)
    assert counts["generated"] == 120
    assert counts["originals"] == 80
    assert counts["pasted"] > 120 and counts["target"] > 300


def test_tiny80_output_scores_ap_1_against_itself(tiny80_out):
    check_cocoeval_self_ap(tiny80_out[1])


def test_tiny80_crowd_regions_are_kept_and_occluded(tiny80_out):
    src, out = tiny80_out
    data = load_json(out / "annotations.json")
    crowds = [a for a in data["annotations"] if a["iscrowd"] and "cpgen" in a]
    assert crowds, "crowd annotations of targets must be carried into generated images"
    assert all(a["cpgen"]["from"] == "target" for a in crowds)
    assert all(isinstance(a["segmentation"]["counts"], str) for a in crowds)


def test_generated_masks_are_polygons_and_crowd_regions_compressed_rle(tiny80_out):
    data = load_json(tiny80_out[1] / "annotations.json")
    generated = [a for a in data["annotations"] if "cpgen" in a]
    assert any(a["iscrowd"] for a in generated) and any(not a["iscrowd"] for a in generated)
    for ann in generated:
        seg = ann["segmentation"]
        if ann["iscrowd"]:
            assert isinstance(seg, dict) and isinstance(seg["counts"], str)
        else:
            assert isinstance(seg, list) and all(len(part) >= 6 for part in seg)


def test_labelme_subfolders_and_zero_based_ids(labelme3, tmp_path):
    out = tmp_path / "aug"
    run_copypaste(
        labelme3,
        out,
        "--num-images",
        "6",
        "-j",
        "1",
        "--quiet",
        "--blend",
        "gaussian",
        "--sigma",
        "2",
    )
    counts = check_contract(labelme3, out)
    assert counts["generated"] == 6 and counts["originals"] == 3
    check_cocoeval_self_ap(out)
    data = load_json(out / "annotations.json")
    assert data["info"]["source_info"]["year"] == 2020
    assert "type" in data  # unknown top-level keys are kept
    assert (out / "images" / "JPEGImages" / "2011_000003.jpg").is_file()


def test_examples_demo_output_meets_the_contract(tmp_path):
    out = tmp_path / "demo"
    run_copypaste(EXAMPLES / "coco", out, "--num-images", "10", "-j", "2", "--quiet")
    counts = check_contract(EXAMPLES / "coco", out)
    assert counts["generated"] == 10 and counts["pasted"] >= 10
    check_cocoeval_self_ap(out)


def test_polygon_mask_format_keeps_area_and_bbox_consistent(tmp_path):
    out = tmp_path / "poly"
    run_copypaste(
        EXAMPLES / "coco", out, "--num-images", "5", "--mask-format", "polygon", "-j", "1"
    )
    data = load_json(out / "annotations.json")
    generated = [a for a in data["annotations"] if "cpgen" in a]
    assert any(isinstance(a["segmentation"], list) for a in generated)
    images = {r["id"]: r for r in data["images"]}
    for ann in generated:
        mask = mask_of(ann, images[ann["image_id"]])
        assert ann["area"] == int(mask.sum())
        assert ann["bbox"] == masks.bbox(masks.encode(mask.astype(np.uint8)))
        if ann["iscrowd"]:
            assert isinstance(ann["segmentation"], dict)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every output file but cpgen's own state (``.cpgen/``, or a finished run's
    ``.cpgen.json``), which records timings."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".cpgen") for part in p.relative_to(root).parts)
    }


def test_same_output_whatever_the_workers_backend_or_rerun(tiny80, tmp_path):
    args = ["--num-images", "40", "--quiet", "--originals", "copy"]
    run_copypaste(tiny80, tmp_path / "j1", *args, "-j", "1")
    run_copypaste(tiny80, tmp_path / "j2", *args, "-j", "2")
    run_copypaste(tiny80, tmp_path / "thr", *args, "-j", "2", "--backend", "threading")
    run_copypaste(tiny80, tmp_path / "again", *args, "-j", "2")
    reference = tree_bytes(tmp_path / "j1")
    assert len(reference) == 1 + 80 + 40
    for other in ("j2", "thr", "again"):
        assert tree_bytes(tmp_path / other) == reference, other


def test_another_seed_gives_another_output(tiny80, tmp_path):
    args = ["--num-images", "8", "--quiet", "--originals", "none", "-j", "1"]
    run_copypaste(tiny80, tmp_path / "s0", *args)
    run_copypaste(tiny80, tmp_path / "s1", *args, "--seed", "1")
    a, b = tree_bytes(tmp_path / "s0"), tree_bytes(tmp_path / "s1")
    assert a.keys() == b.keys()
    assert a["annotations.json"] != b["annotations.json"]
    assert sum(a[k] != b[k] for k in a) >= 8


def test_originals_none_writes_only_generated_images(labelme3, tmp_path):
    out = tmp_path / "gen"
    run_copypaste(labelme3, out, "--num-images", "4", "--originals", "none", "-j", "1")
    data = load_json(out / "annotations.json")
    assert len(data["images"]) == 4
    assert all("cpgen" in r for r in data["images"])
    assert all(r["id"] > 2 for r in data["images"])
    assert not (out / "images" / "JPEGImages").exists()


def test_dask_backend_writes_the_same_files(tmp_path):
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    args = ["--src", str(EXAMPLES / "coco"), "--num-images", "20", "--quiet", "--originals", "copy"]
    for name, backend in (("loky", "loky"), ("dask", "dask")):
        result = runner.invoke(
            app,
            ["copypaste", *args, "--out", str(tmp_path / name), "-j", "2", "--backend", backend],
        )
        assert result.exit_code == 0, result.output
    assert tree_bytes(tmp_path / "dask") == tree_bytes(tmp_path / "loky")


def test_a_target_with_more_than_255_instances(tmp_path: Path) -> None:
    """pycocotools' ``area`` of a list fails past 255 RLEs (its result sized through a uint8);
    a crowded target (aerial and shelf datasets have thousands) is measured in batches. The
    output holds every target instance the pastes left visible, each with its own mask's area."""
    import json

    from tests.conftest import make_coco
    from tests.copypaste_helpers import generate

    src = make_coco(tmp_path / "src", n_images=2, size=(320, 240))
    data = json.loads((src / "annotations.json").read_text())
    image = data["images"][0]["id"]
    crowd = []
    for k in range(300):  # 20 x 15 small squares of 4 x 4 pixels over the first image
        x, y = 16 * (k % 20) + 2, 16 * (k // 20) + 2
        square = [x, y, x + 4, y, x + 4, y + 4, x, y + 4]
        crowd.append(
            {
                "id": 1000 + k,
                "image_id": image,
                "category_id": data["categories"][0]["id"],
                "segmentation": [square],
                "area": 16.0,
                "bbox": [x, y, 4, 4],
                "iscrowd": 0,
            }
        )
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != image] + crowd
    (src / "annotations.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    generate("--src", str(src), "--out", str(out), "--num-images", "2", "--seed", "3")
    written = json.loads((out / "annotations.json").read_text())
    generated = [r for r in written["images"] if "cpgen" in r]
    on_crowd = [r for r in generated if r["cpgen"].get("target_id") == image]
    assert len(on_crowd) == 1
    kept = [a for a in written["annotations"] if a["image_id"] == on_crowd[0]["id"]]
    targets = [a for a in kept if a["cpgen"]["from"] == "target"]
    assert 200 < len(targets) <= 300
    rles = [masks.segmentation_to_rle(a["segmentation"], 240, 320) for a in kept]
    assert masks.areas(rles) == [masks.area(r) for r in rles] == [a["area"] for a in kept]
