"""The cyclic garbage collector stays out of large loads: ``coco.load``, ``read_json``,
``stats``, ``validate`` and a worker's check of a batch run with it paused (parsed JSON holds no
cycles, and on a COCO-sized file each full collection walked millions of records), then restore
it as it was, to walk what they made once; a command loads its dataset paused and sets it aside
(``gc.freeze``) for the run, so no full collection walks it at all, and puts it back when it
ends."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cpgen import stats
from cpgen.cli import app
from cpgen.datasets import coco
from tests.conftest import make_coco


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generations of the collections that ran while the test did."""
    seen: list[int] = []

    def hook(phase: str, info: dict) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(hook)
    try:
        yield seen
    finally:
        gc.callbacks.remove(hook)


@pytest.fixture
def many(tmp_path: Path) -> Path:
    """A COCO file of 3,000 annotations: far more new objects than a young generation holds
    (700), so a load with the collector running collects many times."""
    src = make_coco(tmp_path / "src", n_images=2)
    data = json.loads((src / "annotations.json").read_text())
    first = data["annotations"][0]
    data["annotations"] = [{**first, "id": k + 1} for k in range(3000)]
    (src / "annotations.json").write_text(json.dumps(data))
    return src


def test_a_load_runs_with_the_collector_paused_and_gives_it_back(many, collections) -> None:
    files = coco.find_layout(many)
    gc.collect()  # young generations empty: none is due as a load begins
    collections.clear()
    json.loads(files.annotations.read_bytes())  # the control: the parse, the collector running
    assert len(collections) >= 10  # a young collection every 700 new containers
    gc.collect()
    collections.clear()
    index = coco.load(files)
    assert sum(len(a) for a in index.anns_by_image) == 3000
    assert gc.isenabled() and len(collections) <= 3  # only as it ends: its work walked once
    gc.collect()
    collections.clear()
    coco.read_json(files.annotations)
    assert gc.isenabled() and len(collections) <= 3
    gc.disable()  # a caller that turned it off keeps it off
    try:
        coco.load(files)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_batch_of_annotations_is_checked_paused(many, monkeypatch) -> None:
    """``check_annotations``, the part of a load that runs in workers, pauses it too."""
    from cpgen.datasets import coco_checks, lazy_json

    files = coco.find_layout(many)
    index = coco.load(files)
    anns = [a for image in index.anns_by_image for a in image]
    job = coco_checks.CheckJob([(k, a, 96, 64) for k, a in enumerate(anns)])
    during: list[bool] = []
    real_parse = lazy_json.parse_polygons

    def spying_parse(texts):
        during.append(gc.isenabled())
        return real_parse(texts)

    monkeypatch.setattr(lazy_json, "parse_polygons", spying_parse)
    result = coco_checks.check_annotations(job)
    assert len(result.usable) == 3000 and result.problems == []
    assert during == [False] and gc.isenabled()


def test_stats_run_with_the_collector_paused(many, collections) -> None:
    gc.collect()
    collections.clear()
    result = stats.stats(coco.find_layout(many), None)
    assert result["annotations"] == 3000
    assert gc.isenabled() and len(collections) <= 3


def test_validate_runs_with_the_collector_paused(many, collections, monkeypatch) -> None:
    """Its checks of every record too (after the parse), not only the parse."""
    import cpgen.validate as validate

    during: list[bool] = []
    real_check = validate.check_annotation_record

    def spying_check(*args, **kwargs):
        during.append(gc.isenabled())
        return real_check(*args, **kwargs)

    monkeypatch.setattr(validate, "check_annotation_record", spying_check)
    gc.collect()
    collections.clear()
    report = validate.validate(coco.find_layout(many))
    assert report.annotations == 3000
    assert len(during) == 3000 and not any(during)
    assert gc.isenabled() and len(collections) <= 3


def test_a_command_sets_its_dataset_aside_for_the_run_and_puts_it_back(
    many, tmp_path, monkeypatch, collections
) -> None:
    """No collection runs as the load ends (the collector was paused around it, and the freeze
    leaves nothing young); during the run the records are set aside; after it, back."""
    import sys

    import cpgen.copypaste  # noqa: F401 - the package, whose ``run`` the command calls

    at_load_end: list[list[int]] = []
    frozen: list[int] = []
    real_load, real_run = coco.load, sys.modules["cpgen.copypaste"].run

    def spying_load(*args, **kwargs):
        collections.clear()
        index = real_load(*args, **kwargs)
        at_load_end.append(list(collections))
        return index

    def spying_run(*args, **kwargs):
        frozen.append(gc.get_freeze_count())
        return real_run(*args, **kwargs)

    monkeypatch.setattr(coco, "load", spying_load)
    monkeypatch.setattr("cpgen.copypaste.run", spying_run)
    result = CliRunner().invoke(
        app,
        ["copypaste", "--src", str(many), "--out", str(tmp_path / "out"), "-j", "1"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert at_load_end == [[]]
    assert len(frozen) == 1 and frozen[0] > 3000  # the records and what else was alive
    assert gc.get_freeze_count() == 0  # back in the collector's sight
