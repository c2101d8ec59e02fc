"""Large annotation files: polygons kept as text, checked in batches (and in workers), with the
same verdicts, messages, counts and output bytes as the one-by-one check."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pycocotools import mask as cocomask
from typer.testing import CliRunner

from cpgen import images
from cpgen.cli import app
from cpgen.datasets import coco, coco_checks, lazy_json, polygon_batch
from tests.conftest import shared_dataset


def _plain(value: Any) -> Any:
    """A parse result with every polygon kept as text parsed back."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return json.loads(value)
    return value


CUTS = [
    # compact, pretty-printed and a multi-part polygon
    '{"annotations": [{"id": 1, "segmentation": [[1, 2, 3, 4, 5, 6]], "area": 1}]}',
    '{"annotations": [\n  {\n    "segmentation": [\n      [1.5, 2e1,\n 3, 4, 5, 6]\n    ],'
    ' "id": 2\n  }, {"segmentation": [[1,2,3,4,5,6],[7,8,9,10,11,12]]}\n]}',
    # a "segmentation" that is no annotation's own: everything parsed the plain way
    '{"images": [{"segmentation": [[1, 2, 3, 4, 5, 6]]}], "annotations": []}',
    '{"annotations": [{"extra": {"segmentation": [[1, 2, 3, 4, 5, 6]]}, "segmentation": 0}]}',
    '{"annotations": [{"segmentation": 0}, {"segmentation": [[1, 2, 3, 4, 5, 6]]}]}',
    '{"annotations": [{"segmentation": [[1, 2, 3, 4, 5, 6]], "segmentation": [[7, 8]]}]}',
    '{"annotations": [{"note": "\\"segmentation\\": [[1, 2]]", "segmentation": [[1, 2]]}]}',
    # values that are not numbers stay parsed: NaN, RLE, box-only
    '{"annotations": [{"segmentation": [[NaN, 1, 2, 3, 4, 5]]}, {"segmentation": []},'
    ' {"segmentation": {"size": [2, 2], "counts": "04"}}, {"segmentation": [[1e999, 1]]}]}',
]


@pytest.mark.parametrize("text", CUTS)
def test_polygons_kept_as_text_parse_to_the_same_values(text, tmp_path):
    raw = text.encode()
    (tmp_path / "a.json").write_bytes(raw)
    kept = lazy_json.load_keeping_polygons(tmp_path / "a.json")
    expected = json.loads(raw)
    assert json.dumps(_plain(kept)) == json.dumps(expected)  # same values, same key order
    anns = kept["annotations"]
    segs = [a.get("segmentation") for a in anns if isinstance(a, dict)]
    nested = [a.get("extra", {}).get("segmentation") for a in anns if isinstance(a, dict)]
    for seg in segs + nested + [r.get("segmentation") for r in kept.get("images", [])]:
        if isinstance(seg, bytes):  # only an annotation's own polygon is kept as text
            assert seg in [a.get("segmentation") for a in anns]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_bad_number_inside_a_polygon_is_reported_as_the_plain_parser_does(tmp_path):
    tiny = shared_dataset("coco_val2017_tiny80")
    data = json.loads((tiny / "annotations.json").read_text())
    text = json.dumps(data)
    first = json.dumps(data["annotations"][5]["segmentation"])
    broken = text.replace(first[:14], first[:14].replace(".", ".2.", 1), 1)
    assert broken != text
    _write(tmp_path / "src" / "annotations.json", broken)
    (tmp_path / "src" / "images").symlink_to(tiny / "images")
    with pytest.raises(json.JSONDecodeError) as plain:
        json.loads(broken)
    result = CliRunner().invoke(
        app, ["copypaste", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    where = f"(line {plain.value.lineno}, column {plain.value.colno}: {plain.value.msg})"
    assert f"is not valid JSON {where}" in result.stderr
    assert not (tmp_path / "o").exists()  # found before OUT was touched


def _broken_copy(root: Path) -> Path:
    """The COCO sample with annotations that each old check refuses or cleans."""
    tiny = shared_dataset("coco_val2017_tiny80")
    data = json.loads((tiny / "annotations.json").read_text())
    polys = [a for a in data["annotations"] if isinstance(a["segmentation"], list)]
    polys[0]["segmentation"].append([1, 2, 3, 4])  # a part dropped, the rest kept
    polys[1]["segmentation"] = [[5, 5, 5, 5, 5, 5]]  # an empty mask
    polys[2]["segmentation"][0][3] = 1e12  # far outside the frame
    polys[3]["segmentation"] = [[1, 2, 3, 4]]  # nothing left
    polys[4]["image_id"] = 999_999_999
    polys[5]["category_id"] = 424_242
    polys[6]["segmentation"][0][0] = True
    polys[7]["segmentation"] = [[1, 2, 3], *polys[7]["segmentation"]]
    polys[8]["id"] = float(polys[8]["id"])
    polys[10]["segmentation"][0][1] = -700.0
    polys[11]["segmentation"] = [[0, 0, 0.1, 0, 0.1, 0.1, 0, 0.1]]
    polys[12]["segmentation"] = []  # box-only
    polys[13]["segmentation"] = [[[1, 2, 3, 4, 5, 6]]]
    polys[14]["segmentation"] = [[0.5, 0.5, 40, 0.5, 0.6, 0.9]]  # a thin sliver
    text = json.dumps(data)
    seg = json.dumps(polys[15]["segmentation"])
    text = text.replace(seg, seg.replace("[[", "[[NaN, ", 1), 1)
    _write(root / "annotations.json", text)
    (root / "images").symlink_to(tiny / "images")
    return root


def _run(src: Path, out: Path, *args: str) -> tuple[int, list[str], dict[str, Any]]:
    result = CliRunner().invoke(
        app, ["copypaste", "--src", str(src), "--out", str(out), "--json", *args]
    )
    summary = json.loads(result.stdout)
    summary.pop("seconds")
    summary.pop("out")
    summary.pop("annotations")
    lines = [line for line in result.stderr.splitlines() if not line.startswith("cpgen ")]
    return result.exit_code, lines, summary


def _digests(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".cpgen" not in p.parts
    }


def test_problems_found_in_workers_are_reported_as_in_one_process(tmp_path, monkeypatch):
    src = _broken_copy(tmp_path / "src")
    args = ("--num-images", "12", "--originals", "copy")
    code, lines, summary = _run(src, tmp_path / "one", *args, "-j", "1")
    monkeypatch.setattr(coco, "PARALLEL_CHECK", 1)  # check in two worker processes
    monkeypatch.setattr(coco, "CHECK_BATCH", 100)
    code2, lines2, summary2 = _run(src, tmp_path / "two", *args, "-j", "2")
    assert (code, lines, summary) == (code2, lines2, summary2)
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")
    assert code == 3 and summary["skipped_annotations"] == 11
    ids = [a["id"] for a in json.loads((src / "annotations.json").read_text())["annotations"]]
    assert lines[:3] == [
        f"warning: polygon parts dropped (fewer than 6 numbers or odd): annotation {ids[0]}"
        f" (image 532481)",
        f"warning: annotation with an empty mask: annotation {ids[1]} (image 532481)",
        "warning: annotation with a polygon that cannot be rasterised: annotation "
        f"{ids[2]} (image 532481): a polygon reaches far outside its 640x426 image (y = 1e+12)",
    ]
    assert sum("empty mask" in line for line in lines) == 3  # the sliver, the dot, the square
    assert any("not a finite number (nan)" in line for line in lines)


def test_usable_records_are_the_cleaned_annotations(tmp_path):
    src = _broken_copy(tmp_path / "src")
    index = coco.load(coco.find_layout(src))
    data = json.loads((src / "annotations.json").read_text())
    by_id = {a["id"]: a for a in data["annotations"]}
    for anns in index.anns_by_image:
        for ann in anns:
            record = coco_checks.usable_record(ann)
            original = by_id[record["id"]]
            assert list(record) == list(original)  # same keys, same order
            seg = original.get("segmentation")
            if isinstance(seg, list) and seg:
                kept = [p for p in seg if len(p) >= 6 and len(p) % 2 == 0]
                kept = [p for p in kept if not any(isinstance(v, bool) for v in p)]
                assert record["segmentation"] == [[float(v) for v in p] for p in kept]


def test_a_polygon_called_surely_non_empty_never_rasterises_empty():
    """Small, thin, self-crossing and off-frame polygons around the clearance."""
    rng = np.random.default_rng(3)
    segs, sizes = [], []
    for _ in range(20_000):
        width, height = (int(v) for v in rng.integers(3, 40, 2))
        n = int(rng.integers(3, 12))
        centre = rng.uniform(-3, [width + 3, height + 3])
        angle = rng.uniform(0, 2 * np.pi, n)
        if rng.random() < 0.7:  # a star-shaped polygon; else one that crosses itself
            angle = np.sort(angle)
        radius = rng.uniform(1.5, 8) * rng.uniform(0.5, 1.5, n)
        points = np.stack([np.cos(angle), np.sin(angle) * rng.choice([1, 0.3])], 1)
        points = centre + radius[:, None] * points
        if rng.random() < 0.5:
            points = np.round(points * 5) / 5
        segs.append([points.ravel().tolist()])
        sizes.append((width, height))
    ok, nonempty = polygon_batch.plain_polygons(segs, sizes)
    claimed = [k for k in range(len(segs)) if nonempty[k]]
    assert len(claimed) > 2000  # the test has teeth
    for k in claimed:
        width, height = sizes[k]
        assert ok[k]
        assert cocomask.area(cocomask.frPyObjects(segs[k], height, width)[0]) > 0, segs[k]


def test_a_header_after_a_large_exif_segment_is_still_read(tmp_path):
    pixels = np.full((30, 50, 3), 128, np.uint8)
    data = cv2.imencode(".jpg", pixels)[1].tobytes()
    app1 = b"\xff\xe1" + (2 + 40_000).to_bytes(2, "big") + b"Exif\x00\x00" + bytes(39_994)
    path = tmp_path / "big-exif.jpg"
    path.write_bytes(data[:2] + app1 + data[2:])
    assert images.header_size(path.read_bytes()) == (50, 30)
    images.check_file(path, (50, 30))
    with pytest.raises(images.ImageError):
        images.check_file(path, (30, 50))


def test_the_sample_loads_to_the_same_index_as_the_plain_parse(tmp_path):
    tiny = shared_dataset("coco_val2017_tiny80")
    src = tmp_path / "src"
    shutil.copytree(tiny, src, symlinks=True, ignore=shutil.ignore_patterns("images"))
    index = coco.load(coco.CocoFiles(src / "annotations.json", tiny / "images"))
    data = json.loads((tiny / "annotations.json").read_text())
    usable = [coco_checks.usable_record(a) for anns in index.anns_by_image for a in anns]
    assert len(usable) == len(data["annotations"]) and not index.problems
    by_id = {a["id"]: a for a in data["annotations"]}
    for record in usable:
        seg = by_id[record["id"]]["segmentation"]
        expected = [[float(v) for v in p] for p in seg] if isinstance(seg, list) else seg
        assert record["segmentation"] == expected
