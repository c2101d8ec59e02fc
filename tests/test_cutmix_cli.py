"""`cpgen cutmix` on the command line: outputs, determinism, bad input, options, exit codes."""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cpgen import images, output
from cpgen.cli import app
from cpgen.cutmix import COLUMNS, plan_tasks
from cpgen.errors import EXIT_DATA, EXIT_SKIPPED, EXIT_USAGE
from cpgen.ops.cutmix import Box, base_weight, paste_box, resize

REPO = Path(__file__).resolve().parents[1]
HYMENOPTERA = REPO.parent / "shared" / "data" / "hymenoptera_val"

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["cutmix", *args])


@pytest.fixture
def hymenoptera() -> Path:
    if not HYMENOPTERA.is_dir():
        pytest.skip(f"{HYMENOPTERA} not present (third-party test data lives beside the clone)")
    return HYMENOPTERA


def noise_image(seed: int, height: int = 24, width: int = 32) -> np.ndarray:
    """A smooth random image (JPEG-friendly) whose colours differ from image to image."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (3, 4, 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def make_folder(root: Path, counts: dict[str, int], ext: str = ".png", **size) -> Path:
    """``root/<class>/<class>_<k><ext>`` images; returns root."""
    seed = 0
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            cv2.imwrite(str(root / name / f"{name}_{k}{ext}"), noise_image(seed, **size))
            seed += 1
    return root


def read_rows(out: Path) -> list[dict[str, str]]:
    with (out / "labels.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def one_error_line(result) -> str:
    """The stderr of a failed run: an `Error:` line (and maybe a hint), never a traceback."""
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("Error: "), result.stderr
    assert len(lines) <= 2 and "Traceback" not in result.stderr
    return lines[0]


def output_files(out: Path) -> dict[str, bytes]:
    """Every file cpgen wrote for the user (not its .cpgen state or manifest), by relative path."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not any(part.startswith(".cpgen") for part in p.relative_to(out).parts)
    }


@pytest.fixture
def keep_state(monkeypatch):
    """Runs end as if killed just before the state folder is collapsed: shards stay."""
    monkeypatch.setattr(output, "finish_run", output.write_manifest)


def shard_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / ".cpgen" / "shards").glob("*.json"))}


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 EXIF segment holding only an Orientation tag after the SOI marker."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


# ---------------------------------------------------------------------------------------------
# The real dataset


def test_outputs_are_base_outside_the_box_and_resized_patch_inside(hymenoptera, tmp_path):
    out = tmp_path / "cm"
    result = invoke("--src", str(hymenoptera), "--out", str(out), "--num-images", "6", "-j", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "classes.json").read_text()) == ["ants", "bees"]
    rows = read_rows(out)
    assert [r["file"] for r in rows] == [f"images/{i:06d}.jpg" for i in range(6)]
    checked_inside = 0
    for row in rows:
        base = images.load(hymenoptera / row["base_file"], apply_orientation=True)
        patch = images.load(hymenoptera / row["patch_file"], apply_orientation=True)
        height, width = base.shape[:2]
        patch = resize(patch, height, width)
        box = Box(*(int(row[k]) for k in ("top", "left", "bottom", "right")))
        mixed = images.load(out / row["file"])
        assert mixed.shape == base.shape
        assert row["base_class"] == row["base_file"].split("/")[0]
        assert row["patch_class"] == row["patch_file"].split("/")[0]
        assert row["base_file"] != row["patch_file"]
        assert float(row["base_weight"]) == base_weight(box, height, width)
        assert float(row["base_weight"]) == 1 - box.area / (height * width)
        inside = np.zeros((height, width), bool)
        inside[box.top : box.bottom, box.left : box.right] = True
        expected = paste_box(base.copy(), patch, box)
        diff = np.abs(mixed.astype(np.int16) - expected).mean(axis=2)
        assert diff[~inside].mean() < 8  # JPEG noise at q95 on photos
        # exactly: the output is the expected mix, encoded once at --quality
        np.testing.assert_array_equal(mixed, images.decode(images.encode_jpeg(expected, 95)))
        if box.area >= 64:
            to_base = np.abs(mixed.astype(np.int16) - base).mean(axis=2)[inside].mean()
            assert diff[inside].mean() < min(8, to_base / 2)  # the patch, not the base
            checked_inside += 1
    assert checked_inside >= 1


def test_workers_backends_and_device_write_identical_files(hymenoptera, tmp_path, keep_state):
    common = ["--src", str(hymenoptera), "--num-images", "10", "--size", "48x64", "--soft-labels"]
    runs = {
        "j1": ["-j", "1"],
        "j2": ["-j", "2"],
        "threads": ["-j", "2", "--backend", "threading"],
        "device": ["--device", "cpu", "--batch-size", "4", "-j", "2"],
    }
    written = {}
    for name, extra in runs.items():
        result = invoke(*common, "--out", str(tmp_path / name), *extra)
        assert result.exit_code == 0, (name, result.output)
        written[name] = output_files(tmp_path / name)
    # images, labels.csv, classes.json, soft_labels.npy, metadata.jsonl
    assert len(written["j1"]) == 10 + 4
    shards = {name: shard_files(tmp_path / name) for name in runs}
    assert len(shards["j1"]) == 1
    for name in runs:
        assert written[name] == written["j1"], name
        assert shards[name] == shards["j1"], name  # so any of them can resume any other


def test_full_size_outputs_are_identical_with_one_and_two_workers(hymenoptera, tmp_path):
    common = ["--src", str(hymenoptera), "--num-images", "6", "--seed", "5", "--uniform-sampling"]
    for workers in ("1", "2"):
        result = invoke(*common, "--out", str(tmp_path / workers), "-j", workers)
        assert result.exit_code == 0, result.output
    assert output_files(tmp_path / "1") == output_files(tmp_path / "2")


# ---------------------------------------------------------------------------------------------
# Outputs on small folders


def test_default_is_one_output_per_readable_input_with_a_json_summary(tmp_path):
    src = make_folder(tmp_path / "src", {"cat": 3, "dog": 2})
    out = tmp_path / "out"
    result = invoke("--src", str(src), "--out", str(out), "-j", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["generated"] == 5 and summary["images"] == 5 and summary["classes"] == 2
    assert summary["skipped_items"] == 0 and summary["broken_images"] == []
    assert "5 images generated" in result.stderr
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}.jpg" for i in range(5)]


def test_labels_csv_has_exactly_the_documented_columns(tmp_path):
    src = make_folder(tmp_path / "src", {"cat": 2, "dog": 2})
    out = tmp_path / "out"
    assert invoke("--src", str(src), "--out", str(out), "-j", "1").exit_code == 0
    header = (out / "labels.csv").read_text().splitlines()[0]
    assert (
        header.split(",")
        == list(COLUMNS)
        == [
            "file",
            "base_class",
            "patch_class",
            "base_weight",
            "top",
            "left",
            "bottom",
            "right",
            "base_file",
            "patch_file",
            "seed",
        ]
    )
    rows = read_rows(out)
    # bases cycle through the inputs in torchvision's order
    assert [r["base_file"] for r in rows] == [
        "cat/cat_0.png",
        "cat/cat_1.png",
        "dog/dog_0.png",
        "dog/dog_1.png",
    ]
    assert all((out / r["file"]).is_file() and (src / r["patch_file"]).is_file() for r in rows)


def test_soft_labels_are_float32_rows_aligned_with_labels_csv(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 2, "b": 2, "c": 2})
    out = tmp_path / "out"
    args = ("--src", str(src), "--out", str(out), "--num-images", "9")
    assert invoke(*args, "--soft-labels", "-j", "1").exit_code == 0
    soft = np.load(out / "soft_labels.npy")
    rows = read_rows(out)
    classes = json.loads((out / "classes.json").read_text())
    assert soft.dtype == np.float32 and soft.shape == (9, 3)
    for row, label in zip(rows, soft, strict=True):
        weight = float(row["base_weight"])
        expected = np.zeros(3, np.float32)
        expected[classes.index(row["base_class"])] += np.float32(weight)
        expected[classes.index(row["patch_class"])] += np.float32(1 - weight)
        np.testing.assert_array_equal(label, expected)


def test_size_resizes_every_output_and_boxes_are_in_output_pixels(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 2, "b": 2}, height=30, width=50)
    out = tmp_path / "out"
    result = invoke("--src", str(src), "--out", str(out), "--size", "20x16", "-j", "1")
    assert result.exit_code == 0, result.output
    for row in read_rows(out):
        assert images.load(out / row["file"]).shape == (20, 16, 3)
        assert 0 <= int(row["top"]) <= int(row["bottom"]) <= 20
        assert 0 <= int(row["left"]) <= int(row["right"]) <= 16


def test_length_fixes_the_box_to_length_h_by_length_w(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 2, "b": 2})
    out = tmp_path / "out"
    args = ["--src", str(src), "--out", str(out), "--size", "40x60", "--length", "0.5"]
    assert invoke(*args, "--num-images", "12", "-j", "1").exit_code == 0
    for row in read_rows(out):
        rows, cols = int(row["bottom"]) - int(row["top"]), int(row["right"]) - int(row["left"])
        assert rows <= 20 and cols <= 30
        assert float(row["base_weight"]) == 1 - rows * cols / 2400


def test_alpha_zero_cuts_at_least_half_of_each_side(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 2, "b": 2})
    out = tmp_path / "out"
    args = ["--src", str(src), "--out", str(out), "--size", "10x10", "--alpha", "0"]
    assert invoke(*args, "--num-images", "8", "-j", "1").exit_code == 0
    for row in read_rows(out):
        assert int(row["bottom"]) - int(row["top"]) >= 5
        assert int(row["right"]) - int(row["left"]) >= 5


def test_names_with_commas_quotes_spaces_and_accents_survive_labels_csv(tmp_path):
    src = tmp_path / "src"
    for name, file_name in [("fish, red", 'a "b" c.png'), ("élan", "x y.PNG")]:
        (src / name).mkdir(parents=True)
        cv2.imwrite(str(src / name / file_name), noise_image(len(name)))
    out = tmp_path / "out"
    assert invoke("--src", str(src), "--out", str(out), "-j", "1").exit_code == 0
    rows = read_rows(out)
    assert [(r["base_class"], r["base_file"]) for r in rows] == [
        ("fish, red", 'fish, red/a "b" c.png'),
        ("élan", "élan/x y.PNG"),
    ]
    assert json.loads((out / "classes.json").read_text(encoding="utf-8")) == ["fish, red", "élan"]


def test_a_sideways_phone_photo_comes_out_upright(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 1, "b": 1}, ext=".jpg", height=24, width=32)
    ok, buf = cv2.imencode(".jpg", noise_image(99, height=24, width=32))
    (src / "a" / "a_0.jpg").write_bytes(with_exif_orientation(buf.tobytes(), 6))  # rotate 90
    out = tmp_path / "out"
    assert invoke("--src", str(src), "--out", str(out), "-j", "1").exit_code == 0
    first = read_rows(out)[0]
    assert first["base_file"] == "a/a_0.jpg"
    assert images.load(out / first["file"]).shape == (32, 24, 3)  # as a viewer shows it


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 2, "b": 1})
    out = tmp_path / "out"
    result = invoke("--src", str(src), "--out", str(out), "--dry-run", "--num-images", "4")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[0].split("\t")[:2] == ["0", "a/a_0.png"]
    assert not out.exists()
    result = invoke("--src", str(src), "--out", str(out), "--dry-run", "--json")
    plan = json.loads(result.stdout)["plan"]
    assert [p["base"] for p in plan] == ["a/a_0.png", "a/a_1.png", "b/b_0.png"]
    assert all(p["patch"] != p["base"] for p in plan)


def test_a_non_empty_out_needs_overwrite(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 1, "b": 1})
    out = tmp_path / "out"
    assert invoke("--src", str(src), "--out", str(out), "-j", "1").exit_code == 0
    result = invoke("--src", str(src), "--out", str(out), "-j", "1")
    assert result.exit_code == EXIT_USAGE and "not empty" in one_error_line(result)
    assert invoke("--src", str(src), "--out", str(out), "-j", "1", "--overwrite").exit_code == 0


def test_the_plan_is_pure_and_never_pairs_an_image_with_itself():
    tasks = plan_tasks(5, 40, seed=3)
    assert tasks == plan_tasks(5, 40, seed=3)
    assert plan_tasks(5, 10, seed=3) == tasks[:10]  # an output never depends on the count
    assert [t.base for t in tasks[:10]] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert all(t.patch != t.base and 0 <= t.patch < 5 for t in tasks)
    assert len({t.seed for t in tasks}) == 40
    assert {t.patch for t in plan_tasks(3, 60, seed=0)} == {0, 1, 2}


def test_the_example_image_folder_runs(tmp_path):
    examples = REPO / "examples" / "folders"
    if not examples.is_dir():
        pytest.skip("examples/folders not built")
    out = tmp_path / "out"
    result = invoke("--src", str(examples), "--out", str(out), "-j", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["generated"] >= 2


@pytest.mark.parametrize("keep_shards", [0, 1, 2])
@pytest.mark.parametrize("resume_args", [["-j", "1"], ["--device", "cpu", "--batch-size", "5"]])
def test_resume_after_a_crash_gives_the_uninterrupted_output(
    tmp_path, keep_shards, resume_args, monkeypatch
):
    src = make_folder(tmp_path / "src", {"a": 3, "b": 3})
    args = ["--src", str(src), "--num-images", "40", "--size", "12x16", "--soft-labels", "-q"]
    reference = tmp_path / "reference"
    assert invoke(*args, "--out", str(reference), "-j", "1").exit_code == 0
    out = tmp_path / "out"
    with monkeypatch.context() as patched:  # killed before the state folder is collapsed
        patched.setattr(output, "finish_run", output.write_manifest)
        assert invoke(*args, "--out", str(out), "-j", "1").exit_code == 0
    # as a kill leaves it: later shards unfinished, no labels, half-written files
    for shard_file in sorted((out / ".cpgen" / "shards").glob("*.json"))[keep_shards:]:
        shard_file.unlink()
    (out / "labels.csv").unlink()
    (out / ".labels.csv.x1.tmp").write_text("file,")
    unfinished = sorted((out / "images").glob("*.jpg"))[16 * keep_shards :]
    unfinished[0].write_bytes(unfinished[0].read_bytes()[:50])
    unfinished[1].unlink()
    result = invoke(*args, "--out", str(out), "--resume", *resume_args)
    assert result.exit_code == 0, result.output
    assert output_files(out) == output_files(reference)
    assert not list(out.rglob(".*.tmp"))


def test_resume_with_other_options_is_refused(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 2, "b": 2})
    out = tmp_path / "out"
    assert invoke("--src", str(src), "--out", str(out), "-j", "1").exit_code == 0
    result = invoke("--src", str(src), "--out", str(out), "--resume", "--alpha", "0.5")
    assert result.exit_code == EXIT_USAGE and "alpha" in one_error_line(result)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_empty_class_folders_stay_classes_and_are_reported(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 2, "c": 1})
    (src / "b").mkdir()
    out = tmp_path / "out"
    result = invoke("--src", str(src), "--out", str(out), "-j", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "classes.json").read_text()) == ["a", "b", "c"]  # as torchvision
    assert "class folder 'b' holds no readable image" in result.stderr
    assert json.loads(result.stdout)["empty_classes"] == ["b"]


def test_a_single_class_works_with_a_warning(tmp_path):
    src = make_folder(tmp_path / "src", {"only": 3})
    out = tmp_path / "out"
    result = invoke("--src", str(src), "--out", str(out), "-j", "1")
    assert result.exit_code == 0, result.output
    assert "single class" in result.stderr
    assert {r["base_class"] for r in read_rows(out)} == {"only"}


def test_non_image_files_gifs_root_files_and_hidden_files_are_ignored(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 2, "b": 1})
    (src / "a" / "notes.txt").write_text("not an image")
    (src / "a" / "anim.gif").write_bytes(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
    (src / "a" / "._a_0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (src / "a" / ".hidden").mkdir()
    (src / "a" / ".hidden" / "x.png").write_bytes(b"junk")
    cv2.imwrite(str(src / "root.png"), noise_image(5))
    (src / "README.md").write_text("hi")
    cv2.imwrite(str(src / "b" / "UPPER.JPG"), noise_image(6))
    out = tmp_path / "out"
    result = invoke("--src", str(src), "--out", str(out), "-j", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 4 and summary["ignored_files"] == 4
    assert summary["skipped_items"] == 0
    used = {r["base_file"] for r in read_rows(out)}
    assert used == {"a/a_0.png", "a/a_1.png", "b/UPPER.JPG", "b/b_0.png"}
    assert "1 image at the root of SRC ignored" in result.stderr
    assert "a/anim.gif" in result.stderr and "a/notes.txt" in result.stderr


def test_a_corrupt_image_is_skipped_named_and_counted(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 2, "b": 2})
    (src / "b" / "broken.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    (src / "b" / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    result = invoke("--src", str(src), "--out", str(out), "-j", "1", "--json")
    assert result.exit_code == EXIT_SKIPPED, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 4 and summary["generated"] == 4
    assert [b.split(":")[0] for b in summary["broken_images"]] == ["b/broken.jpg", "b/empty.png"]
    assert summary["skipped_items"] == 2
    assert "skipped image b/broken.jpg" in result.stderr
    assert "skipped image b/empty.png" in result.stderr
    assert all("broken" not in r["patch_file"] for r in read_rows(out))


def test_an_image_that_fails_to_decode_skips_its_outputs(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 2, "b": 2}, ext=".jpg")
    data = (src / "b" / "b_1.jpg").read_bytes()
    (src / "b" / "b_1.jpg").write_bytes(data[: len(data) // 3])  # header fine, data cut short
    out = tmp_path / "out"
    result = invoke("--src", str(src), "--out", str(out), "-j", "1", "--json", "--num-images", "8")
    assert result.exit_code == EXIT_SKIPPED, result.output
    summary = json.loads(result.stdout)
    assert [b.split(":")[0] for b in summary["broken_images"]] == ["b/b_1.jpg"]
    rows = read_rows(out)
    assert summary["generated"] == len(rows) and summary["skipped_outputs"] == 8 - len(rows)
    assert summary["skipped_outputs"] >= 2  # it is the base of outputs 3 and 7
    assert all("b/b_1.jpg" not in (r["base_file"], r["patch_file"]) for r in rows)
    assert all((out / r["file"]).is_file() for r in rows)
    assert "skipped image b/b_1.jpg" in result.stderr


def test_device_batches_skip_the_same_outputs_as_workers(tmp_path, keep_state):
    src = make_folder(tmp_path / "src", {"a": 3, "b": 3}, ext=".jpg")
    data = (src / "a" / "a_1.jpg").read_bytes()
    (src / "a" / "a_1.jpg").write_bytes(data[: len(data) // 3])
    args = ["--src", str(src), "--num-images", "20", "--size", "16x16", "--soft-labels", "--json"]
    numpy_run = invoke(*args, "--out", str(tmp_path / "numpy"), "-j", "1")
    device_run = invoke(
        *args, "--out", str(tmp_path / "device"), "--device", "cpu", "--batch-size", "3"
    )
    assert numpy_run.exit_code == device_run.exit_code == EXIT_SKIPPED
    summaries = [json.loads(r.stdout) for r in (numpy_run, device_run)]
    for summary in summaries:
        summary.pop("seconds"), summary.pop("out"), summary.pop("labels")
    assert summaries[0] == summaries[1] and summaries[0]["skipped_outputs"] >= 4
    assert output_files(tmp_path / "numpy") == output_files(tmp_path / "device")
    assert shard_files(tmp_path / "numpy") == shard_files(tmp_path / "device")


@pytest.mark.parametrize(
    ("counts", "junk"),
    [({"a": 1}, False), ({"a": 1, "b": 0}, False), ({"a": 1, "b": 0}, True), ({}, False)],
)
def test_fewer_than_two_readable_images_is_an_error(tmp_path, counts, junk):
    src = make_folder(tmp_path / "src", counts)
    src.mkdir(exist_ok=True)
    for name, count in counts.items():
        if count == 0:
            (src / name).mkdir(exist_ok=True)
            if junk:
                (src / name / "bad.jpg").write_bytes(b"junk")
    result = invoke("--src", str(src), "--out", str(tmp_path / "out"))
    assert result.exit_code == EXIT_DATA
    line = one_error_line(result)
    assert "needs at least two" in line or "no class folders" in line
    assert not (tmp_path / "out").exists()


def test_src_that_is_not_a_folder_is_a_usage_error(tmp_path):
    result = invoke("--src", str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    assert result.exit_code == EXIT_USAGE and "does not exist" in one_error_line(result)
    (tmp_path / "file.jpg").write_bytes(b"x")
    result = invoke("--src", str(tmp_path / "file.jpg"), "--out", str(tmp_path / "out"))
    assert result.exit_code == EXIT_USAGE and "is not a folder" in one_error_line(result)


# ---------------------------------------------------------------------------------------------
# Options


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alpha", "-1"], "--alpha"),
        (["--alpha", "nan"], "--alpha"),
        (["--length", "0"], "--length"),
        (["--length", "1.5"], "--length"),
        (["--size", "224"], "--size"),
        (["--size", "0x10"], "--size"),
        (["--size", "20000x20000"], "--size"),
        (["--quality", "0"], "--quality"),
        (["--num-images", "0"], "--num-images"),
        (["--batch-size", "0"], "--batch-size"),
        (["-j", "0"], "--workers"),
        (["--backend", "nope"], "--backend"),
        (["--device", "cpu"], "needs --size"),
        (["--device", "tpu", "--size", "8x8"], "--device"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path, args, message):
    src = make_folder(tmp_path / "src", {"a": 1, "b": 1})
    out = tmp_path / "out"
    result = invoke("--src", str(src), "--out", str(out), *args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert message in one_error_line(result)
    assert not out.exists()


def test_out_inside_src_is_refused(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 1, "b": 1})
    result = invoke("--src", str(src), "--out", str(src / "a" / "out"))
    assert result.exit_code == EXIT_USAGE and "inside" in one_error_line(result)


def test_device_cuda_without_cuda_is_one_clear_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    src = make_folder(tmp_path / "src", {"a": 1, "b": 1})
    result = invoke(
        "--src", str(src), "--out", str(tmp_path / "o"), "--device", "cuda", "--size", "8x8"
    )
    assert result.exit_code == EXIT_USAGE
    assert "CUDA is not available" in one_error_line(result)


def test_device_without_torch_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    src = make_folder(tmp_path / "src", {"a": 1, "b": 1})
    result = invoke(
        "--src", str(src), "--out", str(tmp_path / "o"), "--device", "cpu", "--size", "8x8"
    )
    assert result.exit_code == EXIT_USAGE
    assert "needs PyTorch" in one_error_line(result)


def test_the_console_script_runs_without_importing_torch(tmp_path):
    src = make_folder(tmp_path / "src", {"a": 2, "b": 1})
    code = (
        "import sys\n"
        "from cpgen.cli import main\n"
        f"sys.argv = ['cpgen', 'cutmix', '--src', {str(src)!r}, '--out', {str(tmp_path / 'o')!r},"
        " '-j', '1', '-q']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    script = Path(sys.executable).with_name("cpgen")
    if script.is_file():
        done = subprocess.run(
            [str(script), "cutmix", "--src", str(src), "--out", str(tmp_path / "o2"), "-j", "1"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == "" and "3 images generated" in done.stderr
