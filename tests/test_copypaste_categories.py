"""``--categories`` (which instances are pasted) and ``--balance category`` (rare categories
pasted as often as common ones)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cpgen.errors import EXIT_DATA, EXIT_USAGE
from tests.conftest import shared_dataset
from tests.copypaste_helpers import assert_valid, generate, invoke, load


@pytest.fixture(scope="module")
def tiny() -> Path:
    return shared_dataset("coco_val2017_tiny80")


def pasted(out: Path) -> list[dict]:
    return [a for a in load(out / "annotations.json")["annotations"] if "cpgen" in a
            and a["cpgen"]["from"] == "source"]  # fmt: skip


def test_only_the_chosen_categories_are_pasted_and_targets_keep_theirs(tiny, tmp_path):
    out = tmp_path / "out"
    summary = generate("--src", str(tiny), "-o", str(out), "--categories", "dog,19",
                       "--num-images", "12", "-j", "2")  # fmt: skip
    data = load(out / "annotations.json")
    assert data["info"]["cpgen"]["options"]["categories"] == ["dog", "19"]  # dog is 18, horse 19
    got = pasted(out)
    assert got and {a["category_id"] for a in got} <= {18, 19}
    targets = [a for a in data["annotations"] if a.get("cpgen", {}).get("from") == "target"]
    assert len({a["category_id"] for a in targets}) > 5  # targets keep all their categories
    # every output's source holds a chosen category; the summary counts per category
    sources = {r["cpgen"]["source_ids"][0] for r in data["images"] if "cpgen" in r}
    holding = {a["image_id"] for a in load(tiny / "annotations.json")["annotations"]
               if a["category_id"] in (18, 19) and not a["iscrowd"]}  # fmt: skip
    assert sources <= holding
    per_category = {c["name"]: c["pasted"] for c in summary["pasted_per_category"]}
    assert per_category == dict(Counter({18: "dog", 19: "horse"}[a["category_id"]] for a in got))
    assert_valid(out)


def test_an_unknown_category_is_a_usage_error_listing_the_known_ones(tiny, tmp_path):
    out = tmp_path / "out"
    result = invoke("--src", str(tiny), "-o", str(out), "--categories", "dog,unicorn")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "'unicorn'" in result.stderr and "person" in result.stderr
    assert not out.exists()


def test_a_category_without_instances_is_a_data_error(tiny, tmp_path):
    voc = shared_dataset("labelme_voc2011_coco3")  # has the category aeroplane, no instance
    out = tmp_path / "out"
    result = invoke("--src", str(tiny), "-o", str(out), "--paste-from", str(voc),
                    "--categories", "person,aeroplane")  # fmt: skip
    assert result.exit_code == EXIT_DATA, result.output
    assert "'aeroplane'" in result.stderr
    assert not out.exists()


def test_balance_category_pastes_every_category_and_the_common_one_no_longer_dominates(
    tiny, tmp_path
):
    base = ["--src", str(tiny), "--originals", "none", "-j", "2"]
    plain = generate(*base, "-o", str(tmp_path / "plain"), "--num-images", "120")
    balanced = generate(*base, "-o", str(tmp_path / "bal"), "--num-images", "400",
                        "--balance", "category")  # fmt: skip
    pasteable = {a["category_id"] for a in load(tiny / "annotations.json")["annotations"]
                 if not a["iscrowd"]}  # fmt: skip
    assert {c["id"] for c in balanced["pasted_per_category"]} == pasteable

    def person_share(summary: dict) -> float:
        counts = {c["name"]: c["pasted"] for c in summary["pasted_per_category"]}
        return counts["person"] / sum(counts.values())

    assert max(plain["pasted_per_category"], key=lambda c: c["pasted"])["name"] == "person"
    assert person_share(plain) > 4 * person_share(balanced)
    # each output pastes only instances of the category it drew (recorded in provenance)
    data = load(tmp_path / "bal" / "annotations.json")
    drawn = {r["id"]: r["cpgen"]["params"]["category"] for r in data["images"]}
    assert all(a["category_id"] == drawn[a["image_id"]] for a in data["annotations"]
               if a["cpgen"]["from"] == "source")  # fmt: skip
