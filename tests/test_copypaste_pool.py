"""Object pools (``--paste-from``, ``--paste-ann``/``--paste-images``): instances of a second
dataset pasted into the first, categories matched by name, new ones appended."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cpgen import masks
from cpgen.copypaste.sources import merge_categories
from cpgen.errors import EXIT_DATA
from tests.conftest import make_coco, shared_dataset
from tests.copypaste_helpers import assert_valid, generate, invoke, load, placement_of


@pytest.fixture(scope="module")
def tiny() -> Path:
    return shared_dataset("coco_val2017_tiny80")


@pytest.fixture(scope="module")
def voc() -> Path:
    return shared_dataset("labelme_voc2011_coco3")


@pytest.fixture(scope="module")
def pool_run(tiny, voc, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pool") / "out"
    generate("--src", str(tiny), "-o", str(out), "--paste-from", str(voc), "--num-images", "16",
             "-j", "2")  # fmt: skip
    return out


def test_pool_categories_match_by_name_and_new_ones_are_appended(pool_run, tiny, voc):
    coco_categories = load(tiny / "annotations.json")["categories"]
    voc_categories = load(voc / "annotations.json")["categories"]
    categories = load(pool_run / "annotations.json")["categories"]
    assert categories[: len(coco_categories)] == coco_categories  # the dataset's, unchanged
    ids = {c["name"]: c["id"] for c in categories}
    coco_ids = {c["name"]: c["id"] for c in coco_categories}
    for name in ("person", "car", "dog", "bus", "chair", "bottle"):
        assert ids[name] == coco_ids[name]
    appended = categories[len(coco_categories) :]
    top = max(coco_ids.values())
    assert [c["id"] for c in appended] == list(range(top + 1, top + 1 + len(appended)))
    assert {"aeroplane", "diningtable", "sofa"} <= {c["name"] for c in appended}
    assert {c["name"] for c in appended} == {c["name"] for c in voc_categories} - set(coco_ids)


def test_pasted_instances_come_from_the_pool(pool_run, voc):
    data = load(pool_run / "annotations.json")
    pool = load(voc / "annotations.json")
    pool_anns = {a["id"]: a for a in pool["annotations"]}
    pool_images = {r["id"]: r for r in pool["images"]}
    pool_names = {c["id"]: c["name"] for c in pool["categories"]}
    names = {c["id"]: c["name"] for c in data["categories"]}
    records = {r["id"]: r for r in data["images"]}
    pasted = [a for a in data["annotations"] if a.get("cpgen", {}).get("from") == "source"]
    assert len(pasted) >= 16
    for a in pasted:
        assert a["cpgen"]["dataset"] == "pool"
        original = pool_anns[a["cpgen"]["ann_id"]]
        assert names[a["category_id"]] == pool_names[original["category_id"]]
        record = records[a["image_id"]]
        source = pool_images[record["cpgen"]["source_ids"][0]]
        assert original["image_id"] == source["id"]
        # the pasted mask is the pool polygon placed as the provenance says
        placement = placement_of(record, source)
        parts, _ = masks.clean_polygons(original["segmentation"])
        rle = masks.polygons_to_rle(
            [placement.polygon(p) for p in parts], record["height"], record["width"]
        )
        written = masks.segmentation_to_rle(a["segmentation"], record["height"], record["width"])
        assert np.array_equal(masks.decode(rle), masks.decode(written))
    targets = [a for a in data["annotations"] if a.get("cpgen", {}).get("from") == "target"]
    assert targets and all("dataset" not in a["cpgen"] for a in targets)
    assert_valid(pool_run)


def test_paste_ann_and_images_name_the_same_pool(pool_run, tiny, voc, tmp_path):
    out = tmp_path / "out"
    generate("--src", str(tiny), "-o", str(out), "--paste-ann", str(voc / "annotations.json"),
             "--paste-images", str(voc / "images"), "--num-images", "16", "-j", "1")  # fmt: skip
    a, b = load(pool_run / "annotations.json"), load(out / "annotations.json")
    assert a["images"] == b["images"] and a["annotations"] == b["annotations"]
    assert a["categories"] == b["categories"]
    for record in (r for r in a["images"] if "cpgen" in r):
        name = record["file_name"]
        assert (pool_run / "images" / name).read_bytes() == (out / "images" / name).read_bytes()


def test_repeated_names_map_to_the_first_id_and_warn():
    dataset = [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 7, "name": "dog"}]
    pool = [{"id": 0, "name": "dog"}, {"id": 1, "name": "fox"}, {"id": 2, "name": "fox"}]
    mapping, categories, warnings = merge_categories(dataset, pool)
    assert mapping == {0: 5, 1: 8, 2: 8}
    assert categories == [*dataset, {"id": 8, "name": "fox"}]
    assert len(warnings) == 2 and "'dog'" in warnings[0] and "'fox'" in warnings[1]
    # with --categories only the chosen pool categories are appended
    assert merge_categories(dataset, pool, only={0})[1] == dataset


def test_a_pool_with_nothing_to_paste_stops_before_any_work(tiny, tmp_path):
    pool = make_coco(tmp_path / "pool")
    data = load(pool / "annotations.json")
    data["annotations"] = [a for a in data["annotations"] if a["iscrowd"]]
    (pool / "annotations.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    result = invoke("--src", str(tiny), "-o", str(out), "--paste-from", str(pool))
    assert result.exit_code == EXIT_DATA, result.output
    assert "no image has a non-crowd instance" in result.stderr
    assert not out.exists()


def test_a_pool_fills_a_dataset_without_annotations(voc, tmp_path):
    scenes = make_coco(tmp_path / "scenes", n_images=3, size=(160, 120))
    data = load(scenes / "annotations.json")
    data["annotations"] = []  # scenes only: every instance comes from the pool
    (scenes / "annotations.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    summary = generate("--src", str(scenes), "-o", str(out), "--paste-from", str(voc),
                       "--num-images", "6", "-j", "1")  # fmt: skip
    assert summary["generated"] == 6 and summary["pasted_instances"] >= 6
    written = load(out / "annotations.json")["annotations"]
    assert written and all(a["cpgen"]["dataset"] == "pool" for a in written)
    assert_valid(out)


def test_a_pool_sharing_the_datasets_image_folder_reads_its_own_files(tiny, tmp_path):
    """A pool listing the same folder's images in another order: image positions differ between
    the two datasets, so the decoded-image caches must key by file, not position. The pixels
    equal those of the same pool with its images in a folder of its own."""
    data = load(tiny / "annotations.json")
    reordered = {**data, "images": data["images"][::-1]}
    pool_ann = tmp_path / "pool.json"
    pool_ann.write_text(json.dumps(reordered))
    apart = tmp_path / "apart"
    (apart / "images").mkdir(parents=True)
    for record in data["images"]:
        (apart / "images" / record["file_name"]).hardlink_to(tiny / "images" / record["file_name"])
    common = ["--src", str(tiny), "--num-images", "24", "-j", "1", "--originals", "none"]
    shared, separate = tmp_path / "shared", tmp_path / "separate"
    generate(*common, "-o", str(shared), "--paste-ann", str(pool_ann),
             "--paste-images", str(tiny / "images"))  # fmt: skip
    generate(*common, "-o", str(separate), "--paste-ann", str(pool_ann),
             "--paste-images", str(apart / "images"))  # fmt: skip
    written = sorted((shared / "images").rglob("*.jpg"))
    assert len(written) == 24
    for path in written:
        assert path.read_bytes() == (separate / path.relative_to(shared)).read_bytes(), path.name
