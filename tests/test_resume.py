"""`--resume`: a killed run continues to exactly the output of an uninterrupted one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cpgen.cli import app
from cpgen.errors import EXIT_INTERRUPTED, EXIT_USAGE
from tests.conftest import kill_group, make_coco
from tests.copypaste_helpers import unfinish_shards
from tests.test_copypaste_e2e import tree_bytes
from tests.test_faults import start, wait_for_shards

runner = CliRunner()
ARGS = ["--num-images", "70", "-j", "1", "--quiet"]  # 1 originals shard + 5 generate shards


def copypaste(src: Path, out: Path, *args: str):
    return runner.invoke(app, ["copypaste", "--src", str(src), "--out", str(out), *args])


@pytest.fixture
def reference(tmp_path) -> tuple[Path, dict[str, bytes]]:
    src = make_coco(tmp_path / "src", n_images=6)
    out = tmp_path / "reference"
    assert copypaste(src, out, *ARGS).exit_code == 0
    return src, tree_bytes(out)


def crash(out: Path, keep_shards: int) -> None:
    """Leave OUT as a kill could: later shards unfinished, half-written files lying around.

    Shard 0 places the originals; shards 1 .. 5 generate 70 outputs. A shard's result file is
    written after its images, so only unfinished shards have damaged images.
    """
    unfinished = unfinish_shards(out, keep_shards)
    (out / "annotations.json").unlink()
    (out / ".annotations.json.x1y2.tmp").write_text('{"images": [')
    if unfinished:
        unfinished[0].write_bytes(unfinished[0].read_bytes()[:100])
        (unfinished[0].parent / f".{unfinished[0].name}.abc.tmp").write_bytes(b"\xff\xd8")
        for image in unfinished[1::2]:
            image.unlink()
    if keep_shards == 0:
        (out / "images" / "img 1.jpg").unlink()  # an original not yet placed


@pytest.mark.parametrize("keep_shards", [0, 1, 3, 6])
def test_resume_after_a_crash_gives_the_uninterrupted_output(reference, tmp_path, keep_shards):
    src, expected = reference
    out = tmp_path / "out"
    assert copypaste(src, out, *ARGS).exit_code == 0
    crash(out, keep_shards)
    result = copypaste(src, out, *ARGS, "--resume")
    assert result.exit_code == 0, result.output
    assert tree_bytes(out) == expected
    assert not list(out.rglob("*.tmp"))


def test_resume_with_other_options_names_the_difference(reference, tmp_path):
    src, _ = reference
    out = tmp_path / "out"
    assert copypaste(src, out, *ARGS).exit_code == 0
    crash(out, 2)
    result = copypaste(src, out, *ARGS, "--resume", "--seed", "5")
    assert result.exit_code == EXIT_USAGE
    assert "options.seed was 0, now 5" in result.stderr
    assert not (out / "annotations.json").exists()  # nothing touched


def test_a_shard_is_one_file_its_status_then_its_records(reference, tmp_path):
    """Each shard writes one result file (a file and its fsync cost as much as part of an
    encode on some file systems): the status line, then the image and annotation records; the
    status lists each output's index and its count of each, and the merge puts them in output
    order by it."""
    src, _ = reference
    out = tmp_path / "out"
    assert copypaste(src, out, *ARGS).exit_code == 0
    shards = out / ".cpgen" / "shards"
    assert sorted(p.name for p in shards.iterdir()) == [f"{n:06d}.json" for n in range(6)]
    merged = json.loads((out / "annotations.json").read_text())
    images, annotations = {}, {}
    for path in sorted(shards.iterdir())[1:]:  # the generated shards
        status_line, *lines = path.read_text().splitlines()
        status = json.loads(status_line)
        counts = status["lines"]
        assert len(lines) == counts["images"] + counts["annotations"]
        records = iter(map(json.loads, lines))
        groups = status["groups"]
        for index, image_lines, _ in groups:
            assert image_lines == 1
            images[index] = next(records)
        for index, _, annotation_lines in groups:
            annotations[index] = [next(records) for _ in range(annotation_lines)]
        assert next(records, None) is None
        indices = [index for index, *_ in groups]
        assert indices == sorted(indices)  # a shard's outputs in order
        assert all(images[i]["file_name"].endswith(f"{i:06d}.jpg") for i in indices)
    assert sorted(images) == list(range(70))
    assert merged["images"][-70:] == [images[i] for i in range(70)]
    generated = [a for i in range(70) for a in annotations.get(i, [])]
    assert merged["annotations"][-len(generated) :] == generated


@pytest.mark.parametrize("earlier", [None, 3, 4])
def test_resume_of_a_run_with_shards_of_an_earlier_format_is_refused(reference, tmp_path, earlier):
    """A run interrupted under cpgen before one-file shards of outputs grouped by the images
    they share (its manifest has no ``shard_format``) would be merged wrongly, one under
    format 3 (sources drawn small decoded DCT-scaled) would mix two renderings, and one under
    format 4 (other outputs in each shard, index-prefixed lines) would be merged wrongly:
    refused, naming the difference."""
    src, _ = reference
    out = tmp_path / "out"
    assert copypaste(src, out, *ARGS).exit_code == 0
    crash(out, 2)
    manifest_path = out / ".cpgen" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shard_format"] = earlier
    manifest_path.write_text(json.dumps(manifest))
    result = copypaste(src, out, *ARGS, "--resume")
    assert result.exit_code == EXIT_USAGE
    assert f"shard_format was {json.dumps(earlier)}, now 5" in result.stderr


def test_resume_after_the_source_changed_is_refused(reference, tmp_path):
    src, _ = reference
    out = tmp_path / "out"
    assert copypaste(src, out, *ARGS).exit_code == 0
    (src / "annotations.json").write_text((src / "annotations.json").read_text() + " ")
    result = copypaste(src, out, *ARGS, "--resume")
    assert result.exit_code == EXIT_USAGE
    assert "source.sha256" in result.stderr


def test_resume_into_a_folder_cpgen_did_not_make_is_refused(reference, tmp_path):
    src, _ = reference
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = copypaste(src, out, *ARGS, "--resume")
    assert result.exit_code == EXIT_USAGE
    assert "holds no cpgen run" in result.stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_into_a_new_folder_is_a_fresh_run(reference, tmp_path):
    src, expected = reference
    out = tmp_path / "new"
    assert copypaste(src, out, *ARGS, "--resume").exit_code == 0
    assert tree_bytes(out) == expected


def test_resume_and_overwrite_exclude_each_other(reference, tmp_path):
    src, _ = reference
    result = copypaste(src, tmp_path / "o", *ARGS, "--resume", "--overwrite")
    assert result.exit_code == EXIT_USAGE


def _script() -> Path:
    script = Path(sys.executable).with_name("cpgen")
    if not script.exists():
        pytest.skip("console script not installed beside this interpreter")
    return script


def _start(src: Path, out: Path, num: int) -> subprocess.Popen:
    _script()
    args = ["--src", str(src), "--out", str(out), "--num-images", str(num), "-j", "2", "--quiet"]
    return start("copypaste", *args)


def _wait_for_shards(out: Path, proc: subprocess.Popen, count: int) -> None:
    wait_for_shards(out, proc, count)


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_output(tmp_path):
    src = make_coco(tmp_path / "src", n_images=6, size=(320, 240))
    num = 600
    reference = tmp_path / "reference"
    assert copypaste(src, reference, "--num-images", str(num), "-j", "2").exit_code == 0
    out = tmp_path / "out"
    proc = _start(src, out, num)
    _wait_for_shards(out, proc, 4)
    kill_group(proc)  # the parent and its workers, at once
    assert not (out / "annotations.json").exists()
    time.sleep(0.5)  # let orphaned workers notice
    result = copypaste(src, out, "--num-images", str(num), "-j", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert tree_bytes(out) == tree_bytes(reference)


def test_ctrl_c_stops_promptly_says_how_to_resume_and_exits_130(tmp_path):
    src = make_coco(tmp_path / "src", n_images=6, size=(320, 240))
    out = tmp_path / "out"
    proc = _start(src, out, 2000)
    _wait_for_shards(out, proc, 3)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert proc.returncode == EXIT_INTERRUPTED, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert not (out / "annotations.json").exists()
