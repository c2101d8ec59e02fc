"""`cpgen stats`: every figure against an independent count over the files, the table, the
plot, and errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cpgen.cli import app
from cpgen.errors import EXIT_USAGE
from tests.conftest import EXAMPLES, REPO, load_json, make_coco

runner = CliRunner()


def stats(*args: str, exit_code: int = 0):
    result = runner.invoke(app, ["stats", *args])
    assert result.exit_code == exit_code, result.output
    return result


def stats_json(*args: str) -> dict[str, Any]:
    return json.loads(stats(*args, "--json").stdout)


def copypaste(src: Path, out: Path, *args: str) -> dict[str, Any]:
    result = runner.invoke(
        app, ["copypaste", "--src", str(src), "--out", str(out), "-j", "1", "--json", *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def bucket(area: float) -> str:
    return "small" if area < 32 * 32 else "medium" if area < 96 * 96 else "large"


def independent_counts(annotations: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per category: instances, images, crowd and size buckets, counted here from scratch."""
    counts: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"instances": 0, "images": set(), "crowd": 0, "small": 0, "medium": 0, "large": 0}
    )
    for ann in annotations:
        c = counts[ann["category_id"]]
        c["instances"] += 1
        c["images"].add(ann["image_id"])
        if ann["iscrowd"]:
            c["crowd"] += 1
        else:
            c[bucket(ann["area"])] += 1
    return counts


def test_counts_on_the_coco_sample_match_an_independent_count(tiny80):
    result = stats_json(str(tiny80))
    data = load_json(tiny80 / "annotations.json")
    expected = independent_counts(data["annotations"])
    assert result["kind"] == "coco"
    assert result["images"] == 80 and result["annotations"] == len(data["annotations"]) == 815
    assert [c["id"] for c in result["categories"]] == [c["id"] for c in data["categories"]]
    for row in result["categories"]:
        want = expected[row["id"]]
        assert row["name"] == next(c["name"] for c in data["categories"] if c["id"] == row["id"])
        assert row["instances"] == want["instances"]
        assert row["images"] == len(want["images"])
        assert row["crowd"] == want["crowd"]
        assert [row[s] for s in ("small", "medium", "large")] == [
            want[s] for s in ("small", "medium", "large")
        ]
    assert sum(result["sizes"].values()) == sum(1 for a in data["annotations"] if not a["iscrowd"])


@pytest.fixture(scope="module")
def tiny80_output(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    src = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_val2017_tiny80"
    if not src.is_dir():
        pytest.skip(f"{src} not present")
    out = tmp_path_factory.mktemp("stats") / "out"
    summary = copypaste(src, out, "--num-images", "12", "--seed", "0")
    return out, summary


def test_counts_on_a_copypaste_output_match_an_independent_count(tiny80_output, tiny80):
    out, summary = tiny80_output
    result = stats_json(str(out), "--compare", str(tiny80))
    data = load_json(out / "annotations.json")
    source = load_json(tiny80 / "annotations.json")
    generated = {r["id"] for r in data["images"] if "cpgen" in r}
    gen_anns = [a for a in data["annotations"] if a["image_id"] in generated]
    orig_anns = [a for a in data["annotations"] if a["image_id"] not in generated]
    everything, gen, orig = (
        independent_counts(data["annotations"]),
        independent_counts(gen_anns),
        independent_counts(orig_anns),
    )
    compare = independent_counts(source["annotations"])
    pasted = Counter(a["category_id"] for a in gen_anns if a["cpgen"]["from"] == "source")
    assert result["kind"] == "cpgen" and result["pasted"] == summary["pasted_instances"]
    assert result["parts"]["generated"]["images"] == len(generated) == 12
    assert result["parts"]["original"]["annotations"] == len(orig_anns)
    for row in result["categories"]:
        cid = row["id"]
        assert row["instances"] == everything[cid]["instances"]
        assert row["images"] == len(everything[cid]["images"])
        assert row["generated_instances"] == gen[cid]["instances"]
        assert row["generated_images"] == len(gen[cid]["images"])
        assert row["original_instances"] == orig[cid]["instances"]
        assert row["original_images"] == len(orig[cid]["images"])
        assert row["compare_instances"] == compare[cid]["instances"]
        assert row["compare_images"] == len(compare[cid]["images"])
        assert row["pasted"] == pasted[cid]

    # dropped: the target image's original annotations that no generated annotation names
    by_image = defaultdict(set)
    for a in orig_anns:
        by_image[a["image_id"]].add(a["id"])
    category = {a["id"]: a["category_id"] for a in orig_anns}
    kept = defaultdict(set)
    for a in gen_anns:
        if a["cpgen"]["from"] == "target":
            kept[a["image_id"]].add(a["cpgen"]["ann_id"])
    dropped = Counter()
    for r in data["images"]:
        if "cpgen" in r:
            for ann_id in by_image[r["cpgen"]["target_id"]] - kept[r["id"]]:
                dropped[category[ann_id]] += 1
    assert result["dropped"]["total"] == sum(dropped.values())
    assert result["dropped"]["total"] == summary["dropped_target_annotations"] > 0
    assert {r["id"]: r["dropped"] for r in result["categories"] if r["dropped"]} == dict(dropped)

    # visibility: visible area / the original annotation's area, for occluded targets
    area = {a["id"]: a["area"] for a in orig_anns}
    ratios = [
        a["area"] / area[a["cpgen"]["ann_id"]]
        for a in gen_anns
        if a["cpgen"]["from"] == "target"
        and not a["iscrowd"]
        and a["area"] < area[a["cpgen"]["ann_id"]]
    ]
    visibility = result["visibility"]
    assert visibility["available"] and visibility["occluded"] == len(ratios) > 0
    assert visibility["counts"] == np.histogram(ratios, bins=10, range=(0, 1))[0].tolist()
    assert visibility["mean"] == pytest.approx(np.mean(ratios), abs=1e-4)


def test_table_is_aligned_and_names_every_category(tiny80_output):
    out, _ = tiny80_output
    text = stats(str(out)).stdout
    lines = text.splitlines()
    header = next(k for k, line in enumerate(lines) if line.startswith("id "))
    rows = lines[header + 2 : header + 2 + 80]
    end = lines[header].index("instances") + len("instances")
    for line in rows:  # numbers right-aligned under their heading
        assert line[end - 1].isdigit() and (len(line) == end or line[end] == " ")
    assert any(" person " in line for line in rows)
    assert "dropped target annotations:" in text and "visible share" in text


def test_without_originals_visibility_is_unavailable(tmp_path):
    src = make_coco(tmp_path / "src", n_images=4)
    copypaste(src, tmp_path / "out", "--originals", "none")
    result = stats_json(str(tmp_path / "out"))
    assert result["visibility"] == {
        "available": False,
        "reason": "the output holds no originals (made with --originals none)",
    }
    assert "dropped" not in result["categories"][0]
    assert "unavailable" in stats(str(tmp_path / "out")).stdout


def test_cutmix_figures_match_labels_and_soft_labels(tmp_path):
    out = tmp_path / "cm"
    result = runner.invoke(
        app,
        ["cutmix", "--src", str(EXAMPLES / "folders"), "--out", str(out), "--num-images", "30"]
        + ["--soft-labels", "-j", "1", "-q"],
    )
    assert result.exit_code == 0, result.output
    figures = stats_json(str(out), "--compare", str(EXAMPLES / "folders"))
    with (out / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    classes = json.loads((out / "classes.json").read_text())
    soft = np.load(out / "soft_labels.npy")
    weights = [float(r["base_weight"]) for r in rows]
    assert figures["kind"] == "cutmix" and figures["images"] == 30
    for k, row in enumerate(figures["categories"]):
        name = classes[k]
        assert row["id"] == k and row["name"] == name
        assert row["base"] == sum(r["base_class"] == name for r in rows)
        assert row["patch"] == sum(r["patch_class"] == name for r in rows)
        assert row["images"] == sum(name in (r["base_class"], r["patch_class"]) for r in rows)
        assert row["label_mass"] == pytest.approx(float(soft[:, k].sum()), abs=1e-3)
        assert row["compare_images"] == len(list((EXAMPLES / "folders" / name).glob("*.jpg")))
    distribution = figures["base_weight"]
    assert distribution["counts"] == np.histogram(weights, bins=10, range=(0, 1))[0].tolist()
    assert distribution["mean"] == pytest.approx(np.mean(weights), abs=1e-4)
    assert "base weight:" in stats(str(out)).stdout


def test_plot_writes_a_png(tiny80_output, tmp_path):
    pytest.importorskip("matplotlib")
    out, _ = tiny80_output
    stats(str(out), "--plot", str(tmp_path / "charts.png"))
    image = cv2.imread(str(tmp_path / "charts.png"))
    assert image is not None and image.shape[1] > 1000


def test_plot_without_matplotlib_exits_2_with_a_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    src = make_coco(tmp_path / "src", n_images=2)
    result = stats(str(src), "--plot", str(tmp_path / "c.png"), exit_code=EXIT_USAGE)
    assert "matplotlib" in result.stderr and "pip install 'cpgen[plot]'" in result.stderr
    assert not (tmp_path / "c.png").exists()


def test_missing_path_exits_2(tmp_path):
    result = stats(str(tmp_path / "nowhere"), exit_code=EXIT_USAGE)
    assert result.stderr.startswith("Error: ") and "does not exist" in result.stderr


def test_cli_import_stays_light():
    code = "import sys, cpgen.cli; print(sorted({'matplotlib', 'torch'} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
