"""The catalogue of bad input, each built from a real dataset (labelme's VOC sample, copied).

A fatal problem stops the run with one `Error:` line (exit 1 or 2) and writes nothing final; a
problem with one item skips that item, names it on stderr, counts it, and the rest is written
complete and valid, with exit code 3 (EXIT_SKIPPED).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cpgen import masks
from cpgen.cli import app
from cpgen.errors import EXIT_DATA, EXIT_SKIPPED
from tests.conftest import load_json, shared_dataset

runner = CliRunner()


@pytest.fixture
def voc(tmp_path) -> Path:
    """A writable copy of labelme_voc2011_coco3 (3 images in images/JPEGImages/, 12 anns)."""
    copy = tmp_path / "voc"
    shutil.copytree(shared_dataset("labelme_voc2011_coco3"), copy)
    return copy


def edit(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = load_json(root / "annotations.json")
    change(data)
    (root / "annotations.json").write_text(json.dumps(data))


def run(root: Path, out: Path, *args: str):
    return runner.invoke(
        app, ["copypaste", "--src", str(root), "--out", str(out), "-j", "1", "--json", *args]
    )


def assert_fatal(result, exit_code: int, words: str, out: Path) -> None:
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Error: ") and words in lines[0]
    assert len(lines) <= 2 and "Traceback" not in result.stderr
    assert not (out / "annotations.json").exists()


def assert_valid_output(out: Path) -> dict[str, Any]:
    validated = runner.invoke(app, ["validate", str(out), "--json"])
    assert validated.exit_code == 0, validated.stdout
    return load_json(out / "annotations.json")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda text: text[: len(text) // 2], "not valid JSON"),
        (lambda text: json.dumps(json.loads(text)["images"]), "not a JSON object"),
        (lambda text: json.dumps({**json.loads(text), "annotations": None}), "not a list"),
        (
            lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "images"}),
            "no 'images' list",
        ),
        (
            lambda text: json.dumps(
                {k: v for k, v in json.loads(text).items() if k != "categories"}
            ),
            "no 'categories' list",
        ),
    ],
    ids=["truncated", "not-an-object", "annotations-null", "no-images", "no-categories"],
)
def test_unusable_annotation_files_are_fatal(voc, tmp_path, change, words):
    path = voc / "annotations.json"
    path.write_text(change(path.read_text()))
    out = tmp_path / "out"
    assert_fatal(run(voc, out), EXIT_DATA, words, out)


@pytest.mark.parametrize("table", ["images", "annotations", "categories"])
def test_duplicate_ids_are_fatal(voc, tmp_path, table):
    def duplicate(data):
        data[table][1]["id"] = data[table][0]["id"]

    edit(voc, duplicate)
    out = tmp_path / "out"
    assert_fatal(run(voc, out), EXIT_DATA, "duplicate", out)


@pytest.mark.parametrize(
    ("change", "warning"),
    [
        (lambda a: a.update(image_id=999), "annotation on an unknown image"),
        (lambda a: a.update(category_id=999), "annotation with an unknown category"),
        (  # segmentation [] is a box-only annotation: a bbox that is no box is the problem
            lambda a: a.update(segmentation=[], bbox=[1, 2, 0, 5]),
            "box-only annotation without a valid bbox",
        ),
        (lambda a: a.update(segmentation=[[1, 2, 3, 4]]), "annotation with an empty segmentation"),
        (
            lambda a: a.update(segmentation=[[1, 2, 3, 4, 5, 6, 7]]),
            "annotation with an empty segmentation",
        ),
        (
            lambda a: a.update(
                segmentation=masks.rle_to_json(masks.encode(np.ones((10, 10), np.uint8)))
            ),
            "segmentation that does not decode",
        ),
        (
            lambda a: a["segmentation"][0].__setitem__(0, 1e12),
            "annotation with a polygon that cannot be rasterised",
        ),
        (
            lambda a: a["segmentation"][0].__setitem__(1, -1e6),
            "annotation with a polygon that cannot be rasterised",
        ),
        (
            lambda a: a["segmentation"][0].__setitem__(1, float("nan")),  # json writes NaN
            "annotation with a polygon that cannot be rasterised",
        ),
        (
            lambda a: a["segmentation"][0].__setitem__(0, float("inf")),  # json writes Infinity
            "annotation with a polygon that cannot be rasterised",
        ),
    ],
    ids=[
        "unknown-image",
        "unknown-category",
        "empty",
        "short-part",
        "odd-part",
        "rle-size",
        "far-outside",
        "far-above",
        "nan",
        "infinity",
    ],
)
def test_a_bad_annotation_is_skipped_named_and_counted(voc, tmp_path, change, warning):
    edit(voc, lambda data: change(data["annotations"][0]))
    out = tmp_path / "out"
    result = run(voc, out, "--num-images", "6")
    assert result.exit_code == EXIT_SKIPPED, result.output
    assert f"warning: {warning}: annotation 0" in result.stderr
    assert json.loads(result.stdout)["skipped_annotations"] == 1
    data = assert_valid_output(out)
    assert 0 not in {a["id"] for a in data["annotations"]}
    assert all(a.get("cpgen", {}).get("ann_id") != 0 for a in data["annotations"])
    assert sum("cpgen" in r for r in data["images"]) == 6


def test_a_dropped_polygon_part_is_a_warning_not_a_skip(voc, tmp_path):
    edit(voc, lambda data: data["annotations"][0]["segmentation"].append([5, 5, 9, 9]))
    out = tmp_path / "out"
    result = run(voc, out, "--num-images", "3")
    assert result.exit_code == 0, result.output
    assert "polygon parts dropped" in result.stderr
    original = next(a for a in assert_valid_output(out)["annotations"] if a["id"] == 0)
    assert [5, 5, 9, 9] not in original["segmentation"]


def _write_bomb(path: Path) -> None:
    """A PNG whose header claims 100000 x 100000 pixels (a few bytes of real data follow)."""
    data = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    data[16:24] = (100_000).to_bytes(4, "big") * 2
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "breakage", ["missing", "corrupt", "wrong-size", "bomb", "absolute", "climbing"]
)
def test_a_broken_image_is_skipped_and_the_rest_is_valid(voc, tmp_path, breakage):
    image_dir = voc / "images" / "JPEGImages"
    broken = image_dir / "2011_000025.jpg"  # image id 1, as the JSON edits below
    if breakage == "missing":
        broken.unlink()
    elif breakage == "corrupt":
        broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 3])
    elif breakage == "wrong-size":
        pixels = cv2.imread(str(broken))
        cv2.imwrite(str(broken), cv2.resize(pixels, None, fx=0.5, fy=0.5))
    elif breakage == "bomb":
        _write_bomb(image_dir / "bomb.png")
        edit(
            voc,
            lambda d: d["images"][1].update(
                file_name="JPEGImages/bomb.png", width=100_000, height=100_000
            ),
        )
    else:
        target = "/etc/hostname" if breakage == "absolute" else "../../../secret.jpg"
        edit(voc, lambda d: d["images"][1].update(file_name=target))
    out = tmp_path / "out"
    result = run(voc, out, "--num-images", "9")
    assert result.exit_code == EXIT_SKIPPED, result.output
    summary = json.loads(result.stdout)
    assert len(summary["broken_images"]) == 1
    assert "skipped image" in result.stderr
    if breakage == "bomb":
        assert "decompression bomb" in result.stderr
    data = assert_valid_output(out)
    kept_ids = {r["id"] for r in data["images"] if "cpgen" not in r}
    assert kept_ids == {0, 2}
    assert all(
        1 not in (r["cpgen"]["target_id"], *r["cpgen"]["source_ids"])
        for r in data["images"]
        if "cpgen" in r
    )
    if breakage == "corrupt":
        # the header is intact, so the damage shows only when the image is decoded for an
        # output: those outputs are skipped (here all: image 1 is the only other pasteable one)
        assert summary["generated"] + summary["skipped_outputs"] == 9
        assert summary["skipped_outputs"] >= 3
    else:
        # found by the header check before planning: every output is made from the others
        assert summary["generated"] == 9 and summary["skipped_outputs"] == 0
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert all(w.startswith(("images/", ".cpgen/")) or w == "annotations.json" for w in written)


def test_unusual_but_valid_images_work(voc, tmp_path):
    """Grayscale, 16-bit and 4-channel PNGs; upper-case extensions; spaces and quotes."""
    image_dir = voc / "images" / "JPEGImages"
    names = {}
    for i, (kind, new_name) in enumerate(
        [("gray", "gray image.PNG"), ("16bit", "deep 'quoted'.png"), ("rgba", 'alpha "x".JPG')]
    ):
        old = (
            image_dir / load_json(voc / "annotations.json")["images"][i]["file_name"].split("/")[1]
        )
        pixels = cv2.imread(str(old))
        if kind == "gray":
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
            cv2.imwrite(str(image_dir / new_name), pixels)
        elif kind == "16bit":
            cv2.imwrite(str(image_dir / new_name), pixels.astype(np.uint16) * 257)
        else:
            rgba = cv2.cvtColor(pixels, cv2.COLOR_BGR2BGRA)
            ok, buf = cv2.imencode(".png", rgba)  # PNG bytes under a .JPG name: decoded by content
            (image_dir / new_name).write_bytes(buf.tobytes())
        old.unlink()
        names[i] = f"JPEGImages/{new_name}"
    edit(voc, lambda d: [d["images"][i].update(file_name=n) for i, n in names.items()])
    out = tmp_path / "out"
    result = run(voc, out, "--num-images", "6")
    assert result.exit_code == 0, result.output
    data = assert_valid_output(out)
    assert {r["file_name"] for r in data["images"] if "cpgen" not in r} == set(names.values())
    for record in data["images"]:
        assert (out / "images" / record["file_name"]).is_file()


def test_a_polygon_slightly_outside_the_frame_is_clipped_as_before(voc, tmp_path):
    poked: dict[str, Any] = {}

    def poke_out(data: dict[str, Any]) -> None:
        image = next(i for i in data["images"] if i["id"] == data["annotations"][0]["image_id"])
        data["annotations"][0]["segmentation"][0][0] = -0.5 * image["width"]
        poked.update(image=image, segmentation=data["annotations"][0]["segmentation"])

    edit(voc, poke_out)
    out = tmp_path / "out"
    result = run(voc, out, "--num-images", "3")
    assert result.exit_code == 0, result.output
    original = next(a for a in assert_valid_output(out)["annotations"] if a["id"] == 0)
    image = poked["image"]
    rle = masks.polygons_to_rle(poked["segmentation"], image["height"], image["width"])
    assert original["bbox"] == masks.bbox(rle) and original["area"] == masks.area(rle)


def test_integral_float_sizes_and_ids_are_integers(voc, tmp_path):
    def floats(data: dict[str, Any]) -> None:
        for image in data["images"]:
            image.update(id=float(image["id"]), width=float(image["width"]))
            image["height"] = float(image["height"])
        for ann in data["annotations"]:
            ann.update(id=float(ann["id"]), image_id=float(ann["image_id"]))
        data["categories"][0]["id"] = float(data["categories"][0]["id"])

    edit(voc, floats)
    assert '"width": 500.0' in (voc / "annotations.json").read_text()
    out = tmp_path / "out"
    result = run(voc, out, "--num-images", "3")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["generated"] == 3 and summary["originals"] == 3
    data = assert_valid_output(out)
    assert all(isinstance(i["width"], int) and isinstance(i["id"], int) for i in data["images"])


def test_a_coordinate_of_1e12_under_a_memory_limit_is_skipped_not_a_crash(voc, tmp_path):
    """pycocotools allocates in proportion to a polygon's extent: 1e12 crashed or ate memory."""
    import resource
    import subprocess
    import sys

    script = Path(sys.executable).with_name("cpgen")
    if not script.exists():
        pytest.skip("console script not installed beside this interpreter")
    edit(voc, lambda data: data["annotations"][0]["segmentation"][0].__setitem__(0, 1e12))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    for args in (
        ["copypaste", "--src", str(voc), "--out", str(tmp_path / "o"), "-j", "1"],
        ["validate", str(voc)],
    ):
        done = subprocess.run(
            [str(script), *args], capture_output=True, text=True, preexec_fn=limit, timeout=120
        )
        assert done.returncode == (EXIT_SKIPPED if args[0] == "copypaste" else EXIT_DATA)
        assert "annotation 0" in done.stderr + done.stdout and "Traceback" not in done.stderr
