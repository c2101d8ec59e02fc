"""Every dataset option at once stays deterministic: same bytes whatever ``-j``, ``--backend``
or ``--resume``; and a resume with another value of one of them is refused."""

from __future__ import annotations

import pytest

from cpgen.errors import EXIT_USAGE
from tests.conftest import shared_dataset
from tests.copypaste_helpers import (
    assert_valid,
    box_only_copy,
    generate,
    invoke,
    tree_bytes,
    unfinish_shards,
)


@pytest.fixture(scope="module")
def combos(tmp_path_factory) -> dict[str, list[str]]:
    tiny = shared_dataset("coco_val2017_tiny80")
    voc = shared_dataset("labelme_voc2011_coco3")
    photos = shared_dataset("hymenoptera_val")
    mixed = box_only_copy(tiny, tmp_path_factory.mktemp("mixed"), every=2)
    common = ["--num-images", "40", "--originals", "copy", "--backgrounds", str(photos),
              "--backgrounds-frac", "0.4", "--rotate", "20"]  # fmt: skip
    return {
        "pool": [
            "--src",
            str(tiny),
            "--paste-from",
            str(voc),
            "--categories",
            "person,car,bus",
            "--balance",
            "category",
            *common,
        ],  # fmt: skip
        "boxes": [
            "--ann",
            str(mixed),
            "--images",
            str(tiny / "images"),
            "--paste-by",
            "box",
            "--mask-format",
            "polygon",
            *common,
        ],  # fmt: skip
    }


@pytest.mark.parametrize("combo", ["pool", "boxes"])
def test_every_option_gives_the_same_bytes_whatever_the_workers_backend_or_resume(
    combos, tmp_path, combo
):
    args = combos[combo]
    generate(*args, "-o", str(tmp_path / "j1"), "-j", "1")
    reference = tree_bytes(tmp_path / "j1")
    assert len(reference) == 1 + 80 + 40
    generate(*args, "-o", str(tmp_path / "j2"), "-j", "2")
    assert tree_bytes(tmp_path / "j2") == reference
    generate(*args, "-o", str(tmp_path / "thr"), "-j", "2", "--backend", "threading")
    assert tree_bytes(tmp_path / "thr") == reference
    # a run cut short after its originals and first generated shard, then resumed
    out = tmp_path / "j2"
    unfinished = unfinish_shards(out, 3)
    assert unfinished
    (out / "annotations.json").unlink()
    for image in unfinished:
        image.unlink()
    generate(*args, "-o", str(out), "-j", "2", "--resume")
    assert tree_bytes(out) == reference
    assert_valid(out)
    # resuming with another value of a new option is refused, naming it
    (out / "annotations.json").unlink()
    result = invoke(*args, "-o", str(out), "--resume", "--rotate", "10")
    assert result.exit_code == EXIT_USAGE
    assert "options.rotate was 20.0, now 10.0" in result.stderr
