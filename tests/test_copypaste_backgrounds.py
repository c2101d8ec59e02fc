"""``--backgrounds``: outputs on background photos take the photo's (upright) size and pixels
and carry only the pasted instances."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from cpgen.errors import EXIT_DATA, EXIT_SKIPPED, EXIT_USAGE
from tests.conftest import shared_dataset
from tests.copypaste_helpers import (
    assert_valid,
    generate,
    invoke,
    load,
    mask_of,
    read_image,
)


@pytest.fixture(scope="module")
def tiny() -> Path:
    return shared_dataset("coco_val2017_tiny80")


@pytest.fixture(scope="module")
def hymenoptera() -> Path:
    return shared_dataset("hymenoptera_val")


def with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """A JPEG with an EXIF APP1 segment holding only the orientation tag."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    payload = b"Exif\x00\x00" + b"MM\x00*\x00\x00\x00\x08" + ifd + struct.pack(">I", 0)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def some_photos(hymenoptera: Path, count: int) -> list[Path]:
    return sorted((hymenoptera / "ants").glob("*.jpg"))[:count]


def test_outputs_on_backgrounds_have_their_size_and_only_pasted_instances(
    tiny, hymenoptera, tmp_path
):
    out = tmp_path / "out"
    summary = generate("--src", str(tiny), "-o", str(out), "--backgrounds", str(hymenoptera),
                       "--num-images", "10", "-j", "2")  # fmt: skip
    assert summary["generated"] == 10 and summary["originals"] == 80
    data = load(out / "annotations.json")
    assert data["info"]["cpgen"]["options"]["backgrounds"] == str(hymenoptera)
    assert data["info"]["cpgen"]["options"]["backgrounds_frac"] == 1.0
    generated = [r for r in data["images"] if "cpgen" in r]
    assert len(generated) == 10
    for record in generated:
        provenance = record["cpgen"]
        assert "target_id" not in provenance
        photo = read_image(hymenoptera / provenance["background"], oriented=True)
        assert (record["height"], record["width"]) == photo.shape[:2]
        anns = [a for a in data["annotations"] if a["image_id"] == record["id"]]
        assert anns and all(a["cpgen"]["from"] == "source" for a in anns)
        union = np.zeros(photo.shape[:2], bool)
        for a in anns:
            union |= mask_of(a, record["height"], record["width"])
        written = read_image(out / "images" / record["file_name"])
        outside = np.abs(written.astype(int) - photo.astype(int))[~union]
        assert np.median(outside) <= 3 and outside.mean() < 6  # the photo, re-encoded
    names = {p.name for p in (out / "images").rglob("*.jpg")}
    assert not names & {p.name for p in hymenoptera.rglob("*.jpg")}  # not copied as originals
    assert_valid(out)


def test_backgrounds_frac_puts_a_share_of_outputs_on_backgrounds(tiny, hymenoptera, tmp_path):
    out = tmp_path / "out"
    generate("--src", str(tiny), "-o", str(out), "--backgrounds", str(hymenoptera),
             "--backgrounds-frac", "0.5", "--num-images", "30", "--originals", "none",
             "-j", "2")  # fmt: skip
    records = load(out / "annotations.json")["images"]
    on_photo = sum("background" in r["cpgen"] for r in records)
    assert 6 <= on_photo <= 24
    assert all(("background" in r["cpgen"]) != ("target_id" in r["cpgen"]) for r in records)


def test_exif_orientation_is_applied_and_names_are_relative(tiny, hymenoptera, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    photo = some_photos(hymenoptera, 1)[0]
    (folder / "sub" / "TURNED.JPG").write_bytes(with_orientation(photo.read_bytes(), 6))
    out = tmp_path / "out"
    generate("--src", str(tiny), "-o", str(out), "--backgrounds", str(folder),
             "--num-images", "3", "--originals", "none", "-j", "1")  # fmt: skip
    stored = read_image(photo)
    for record in load(out / "annotations.json")["images"]:
        assert record["cpgen"]["background"] == "sub/TURNED.JPG"
        assert (record["width"], record["height"]) == (stored.shape[0], stored.shape[1])


def test_a_broken_background_is_skipped_named_and_counted(tiny, hymenoptera, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in some_photos(hymenoptera, 2):
        shutil.copy(photo, folder / photo.name)
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("not a background")
    result = invoke("--src", str(tiny), "-o", str(tmp_path / "out"), "--backgrounds",
                    str(folder), "--num-images", "6", "-j", "1", "--json")  # fmt: skip
    assert result.exit_code == EXIT_SKIPPED, result.output
    assert "broken.jpg" in result.stderr
    summary = __import__("json").loads(result.stdout)
    assert summary["generated"] == 6
    assert [b for b in summary["broken_images"] if "broken.jpg" in b]
    used = {r["cpgen"]["background"] for r in load(tmp_path / "out" / "annotations.json")["images"]
            if "cpgen" in r}  # fmt: skip
    assert used <= {p.name for p in some_photos(hymenoptera, 2)}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--backgrounds", "{empty}"], EXIT_DATA, "none readable"),
        (["--backgrounds", "{missing}"], EXIT_USAGE, "is not a folder"),
        (["--backgrounds", "{empty}", "--backgrounds-frac", "1.5"], EXIT_USAGE, "fraction"),
        (["--backgrounds-frac", "0.5"], EXIT_USAGE, "needs --backgrounds"),
    ],
    ids=["no-readable-image", "missing-folder", "bad-frac", "frac-alone"],
)
def test_bad_backgrounds_stop_before_any_work(tiny, tmp_path, args, code, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.png").write_bytes(b"\x89PNG garbage")
    args = [a.format(empty=empty, missing=tmp_path / "nowhere") for a in args]
    out = tmp_path / "out"
    result = invoke("--src", str(tiny), "-o", str(out), "--num-images", "2", *args)
    assert result.exit_code == code, result.output
    assert message in result.stderr and "Error:" in result.stderr
    assert not out.exists()
