"""`cpgen copypaste` on the command line: layouts, options, bad input, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cpgen.cli import app
from cpgen.errors import EXIT_DATA, EXIT_SKIPPED, EXIT_USAGE
from tests.conftest import load_json, make_coco, square

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["copypaste", *args])


def one_error_line(result) -> str:
    """The stderr of a failed run: an `Error:` line (and maybe a hint), never a traceback."""
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("Error: "), result.stderr
    assert len(lines) <= 2 and "Traceback" not in result.stderr
    return lines[0]


def test_json_summary_on_stdout_and_a_line_on_stderr(small_coco, tmp_path):
    result = invoke("--src", str(small_coco), "--out", str(tmp_path / "o"), "-j", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["generated"] == 4 and summary["originals"] == 4
    assert summary["skipped_items"] == 0
    assert Path(summary["annotations"]).is_file()
    assert "4 images generated" in result.stderr


def test_ann_and_images_options_name_the_files(small_coco, tmp_path):
    ann = tmp_path / "elsewhere.json"
    shutil.copy(small_coco / "annotations.json", ann)
    out = tmp_path / "o"
    result = invoke(
        "--ann",
        str(ann),
        "--images",
        str(small_coco / "images"),
        "--out",
        str(out),
        "--num-images",
        "3",
        "-j",
        "1",
    )
    assert result.exit_code == 0, result.output
    data = load_json(out / "annotations.json")
    assert sum("cpgen" in r for r in data["images"]) == 3
    assert data["extra_key"] == {"kept": True}  # unknown top-level keys are kept
    assert [c["name"] for c in data["categories"]] == ["square", "square"]


def _relayout(src: Path, root: Path, ann_rel: str, images_rel: str) -> Path:
    (root / ann_rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "annotations.json", root / ann_rel)
    shutil.copytree(src / "images", root / images_rel, dirs_exist_ok=True)
    return root


@pytest.mark.parametrize(
    ("ann_rel", "images_rel"),
    [
        ("annotations/instances_val2017.json", "val2017"),  # COCO
        ("_annotations.coco.json", "."),  # Roboflow
        ("annotations/instances_default.json", "images"),  # CVAT
        ("valid/_annotations.coco.json", "valid"),  # Roboflow split, with --split
    ],
)
def test_common_layouts_are_found(small_coco, tmp_path, ann_rel, images_rel):
    root = _relayout(small_coco, tmp_path / "layout", ann_rel, images_rel)
    split = ["--split", "valid"] if ann_rel.startswith("valid/") else []
    result = invoke(
        "--src", str(root), "--out", str(tmp_path / "o"), "-j", "1", "--num-images", "2", *split
    )
    assert result.exit_code == 0, result.output
    assert len(load_json(tmp_path / "o" / "annotations.json")["images"]) == 6


def test_several_coco_splits_ask_for_split(small_coco, tmp_path):
    root = tmp_path / "coco"
    for split in ("train2017", "val2017"):
        _relayout(small_coco, root, f"annotations/instances_{split}.json", split)
    result = invoke("--src", str(root), "--out", str(tmp_path / "o"))
    assert result.exit_code == EXIT_USAGE
    assert "train2017, val2017" in one_error_line(result)
    assert "--split" in result.stderr
    ok = invoke("--src", str(root), "--split", "val2017", "--out", str(tmp_path / "o"), "-j", "1")
    assert ok.exit_code == 0, ok.output


def test_unknown_layout_lists_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("--src", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert result.exit_code == EXIT_USAGE
    line = one_error_line(result)
    for looked in (
        "annotations.json + images/",
        "_annotations.coco.json",
        "instances_default.json",
    ):
        assert looked in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"images": [', "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"annotations": [], "categories": []}', "no 'images' list"),
        ('{"images": {}, "annotations": [], "categories": []}', "'images' is a dict"),
    ],
)
def test_broken_annotation_files_stop_with_exit_1_and_write_nothing(
    small_coco, tmp_path, content, message
):
    (small_coco / "annotations.json").write_text(content)
    out = tmp_path / "o"
    result = invoke("--src", str(small_coco), "--out", str(out))
    assert result.exit_code == EXIT_DATA
    assert message in one_error_line(result)
    assert not out.exists()


@pytest.mark.parametrize("key", ["images", "annotations"])
def test_duplicate_ids_stop_the_run(small_coco, tmp_path, key):
    data = load_json(small_coco / "annotations.json")
    data[key][1]["id"] = data[key][0]["id"]
    (small_coco / "annotations.json").write_text(json.dumps(data))
    result = invoke("--src", str(small_coco), "--out", str(tmp_path / "o"))
    assert result.exit_code == EXIT_DATA
    assert "duplicate" in one_error_line(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale", "2", "1"], "--scale"),
        (["--scale", "0", "1"], "--scale"),
        (["--hflip", "1.5"], "--hflip"),
        (["--blend", "poisson"], "--blend"),
        (["--min-visible-frac", "0.8"], "--min-visible-frac"),
        (["--mask-format", "bitmap"], "--mask-format"),
        (["--originals", "move"], "--originals"),
        (["--quality", "0"], "--quality"),
        (["--num-images", "0"], "--num-images"),
        (["--max-paste", "0"], "--max-paste"),
        (["-j", "0"], "--workers"),
        (["--backend", "nosuch"], "--backend"),
    ],
)
def test_bad_options_exit_2_before_any_work(small_coco, tmp_path, args, message):
    out = tmp_path / "o"
    result = invoke("--src", str(small_coco), "--out", str(out), *args)
    assert result.exit_code == EXIT_USAGE
    assert message in one_error_line(result)
    assert not out.exists()


def test_out_inside_src_is_refused(small_coco):
    result = invoke("--src", str(small_coco), "--out", str(small_coco / "images" / "aug"))
    assert result.exit_code == EXIT_USAGE
    assert "inside the input" in one_error_line(result)


def test_non_empty_out_needs_overwrite_and_only_replaces_cpgen_output(small_coco, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = invoke("--src", str(small_coco), "--out", str(out))
    assert result.exit_code == EXIT_USAGE and "not empty" in one_error_line(result)
    result = invoke("--src", str(small_coco), "--out", str(out), "--overwrite")
    assert result.exit_code == EXIT_USAGE and "did not write" in one_error_line(result)
    assert (out / "precious.txt").read_text() == "keep me"

    out2 = tmp_path / "o2"
    assert invoke("--src", str(small_coco), "--out", str(out2), "-j", "1").exit_code == 0
    assert invoke("--src", str(small_coco), "--out", str(out2), "-j", "1").exit_code == EXIT_USAGE
    again = invoke(
        "--src", str(small_coco), "--out", str(out2), "-j", "1", "--overwrite", "--num-images", "2"
    )
    assert again.exit_code == 0, again.output
    assert len(list((out2 / "images" / "cpgen").iterdir())) == 2


def test_dry_run_prints_the_plan_and_writes_nothing(small_coco, tmp_path):
    out = tmp_path / "o"
    result = invoke("--src", str(small_coco), "--out", str(out), "--dry-run", "--num-images", "6")
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert [r[0] for r in rows] == [str(i) for i in range(6)]
    assert [r[1] for r in rows] == [f"img {i % 4}.jpg" for i in range(6)]
    assert all(r[1] != r[2] for r in rows)
    assert not out.exists()


def _summary(result) -> dict:
    return json.loads(result.stdout)


@pytest.mark.parametrize("breakage", ["corrupt", "missing", "wrong-size", "escaping"])
def test_a_broken_image_is_skipped_named_and_counted(small_coco, tmp_path, breakage):
    broken = small_coco / "images" / "img 2.jpg"
    if breakage == "corrupt":
        broken.write_bytes(broken.read_bytes()[:300])
    elif breakage == "missing":
        broken.unlink()
    elif breakage == "wrong-size":
        cv2.imwrite(str(broken), np.zeros((30, 30, 3), np.uint8))
    else:
        data = load_json(small_coco / "annotations.json")
        data["images"][2]["file_name"] = "../../outside.jpg"
        (small_coco / "annotations.json").write_text(json.dumps(data))
    out = tmp_path / "o"
    result = invoke(
        "--src", str(small_coco), "--out", str(out), "-j", "1", "--json", "--num-images", "8"
    )
    assert result.exit_code == EXIT_SKIPPED, result.output
    summary = _summary(result)
    name = "outside.jpg" if breakage == "escaping" else "img 2.jpg"
    assert len(summary["broken_images"]) == 1 and name in summary["broken_images"][0]
    assert any(
        line.startswith("skipped image") and name in line for line in result.stderr.splitlines()
    )
    assert summary["skipped_items"] >= 1
    data = load_json(out / "annotations.json")
    # the broken image is not in the output, nor any output made from it
    assert all(r["id"] != 2 for r in data["images"])
    assert all(r.get("cpgen", {}).get("target_id") != 2 for r in data["images"])
    assert all(2 not in r.get("cpgen", {}).get("source_ids", []) for r in data["images"])
    assert summary["generated"] + summary["skipped_outputs"] == 8
    for r in data["images"]:
        assert (out / "images" / r["file_name"]).is_file()
    assert not (tmp_path / "outside.jpg").exists()


def test_short_polygon_parts_are_dropped_and_empty_annotations_skipped(small_coco, tmp_path):
    data = load_json(small_coco / "annotations.json")
    data["annotations"][0]["segmentation"].append([1, 2, 3, 4])  # a part to drop
    data["annotations"][1]["segmentation"] = [[1, 2, 3]]  # nothing left: skipped
    (small_coco / "annotations.json").write_text(json.dumps(data))
    out = tmp_path / "o"
    result = invoke("--src", str(small_coco), "--out", str(out), "-j", "1", "--json")
    assert result.exit_code == EXIT_SKIPPED
    assert "polygon parts dropped" in result.stderr and "annotation 0" in result.stderr
    assert "empty segmentation" in result.stderr and "annotation 1" in result.stderr
    assert _summary(result)["skipped_annotations"] == 1
    out_data = load_json(out / "annotations.json")
    originals = {a["id"]: a for a in out_data["annotations"] if "cpgen" not in a}
    assert 1 not in originals
    assert originals[0]["segmentation"] == [square(6, 8, 20, 24)]


def test_originals_copy_makes_independent_files(small_coco, tmp_path):
    out = tmp_path / "o"
    assert (
        invoke(
            "--src", str(small_coco), "--out", str(out), "--originals", "copy", "-j", "1"
        ).exit_code
        == 0
    )
    placed = out / "images" / "img 0.jpg"
    assert placed.read_bytes() == (small_coco / "images" / "img 0.jpg").read_bytes()
    assert placed.stat().st_ino != (small_coco / "images" / "img 0.jpg").stat().st_ino


def test_a_dataset_with_only_crowd_regions_is_a_data_error(tmp_path):
    root = make_coco(tmp_path / "src", n_images=1)
    data = load_json(root / "annotations.json")
    data["annotations"] = [a for a in data["annotations"] if a["iscrowd"]]
    (root / "annotations.json").write_text(json.dumps(data))
    result = invoke("--src", str(root), "--out", str(tmp_path / "o"))
    assert result.exit_code == EXIT_DATA
    assert "non-crowd" in one_error_line(result)


def test_console_script_runs_as_a_subprocess(small_coco, tmp_path):
    script = Path(sys.executable).with_name("cpgen")
    if not script.exists():
        pytest.skip("console script not installed beside this interpreter")
    out = tmp_path / "o"
    done = subprocess.run(
        [
            str(script),
            "copypaste",
            "--src",
            str(small_coco),
            "--out",
            str(out),
            "-j",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["generated"] == 4
    lines = done.stderr.splitlines()  # no progress bar off a terminal
    # small_coco has annotation id 0 and a repeated category name: said once each, up front
    assert [line.split(":")[0:2] for line in lines[:2]] == [
        ["warning", " annotation id 0"],
        ["warning", " category names used by several ids"],
    ]
    assert len(lines) == 3 and lines[2].startswith("cpgen copypaste: 4 images generated")
    failed = subprocess.run(
        [str(script), "copypaste", "--src", str(tmp_path / "nope"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == EXIT_USAGE
    assert failed.stderr.startswith("Error: ") and failed.stdout == ""


def test_the_cli_does_not_import_torch():
    code = "import sys, cpgen.cli, cpgen.copypaste; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False"
