"""`cpgen copypaste --device`: the CPU path's annotations byte for byte, its pixels within a
grey level, the same bytes on a rerun and after a crash or a SIGKILL, refusals before any work."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cpgen.copypaste.compose import Pixels
from cpgen.errors import EXIT_USAGE
from cpgen.ops.paste import Placement
from tests.conftest import kill_group, make_coco, shared_dataset
from tests.copypaste_helpers import assert_valid, box_only_copy, generate, invoke, tree_bytes
from tests.test_resume import crash

torch = pytest.importorskip("torch")

#: Documented tolerance: a pasted pixel differs from OpenCV's by at most 1 grey level before
#: JPEG; decoded outputs by at most this much (a 1-level change moves a JPEG block's decode).
DECODED_TOLERANCE = 4
CUDA = torch.cuda.is_available()


def generated_images(out: Path) -> dict[str, np.ndarray]:
    return {p.name: cv2.imread(str(p)) for p in sorted((out / "images").glob("cpgen*/*.jpg"))}


def decoded_difference(a: Path, b: Path) -> int:
    """Largest per-pixel difference between the decoded generated images of two outputs."""
    first, second = generated_images(a), generated_images(b)
    assert first.keys() == second.keys() and first
    return max(int(np.abs(first[k].astype(int) - second[k].astype(int)).max()) for k in first)


def test_device_cpu_writes_the_cpu_paths_annotations_and_pixels(tmp_path, tiny80):
    args = ["--src", str(tiny80), "--num-images", "40", "-j", "2"]
    generate(*args, "-o", str(tmp_path / "cpu"))
    generate(*args, "-o", str(tmp_path / "dev"), "--device", "cpu", "--batch-size", "5")
    cpu, dev = tmp_path / "cpu" / "annotations.json", tmp_path / "dev" / "annotations.json"
    assert cpu.read_bytes() == dev.read_bytes()
    assert decoded_difference(tmp_path / "cpu", tmp_path / "dev") <= DECODED_TOLERANCE
    assert_valid(tmp_path / "dev")


@pytest.fixture(scope="module")
def combos(tmp_path_factory) -> dict[str, list[str]]:
    tiny = shared_dataset("coco_val2017_tiny80")
    voc = shared_dataset("labelme_voc2011_coco3")
    photos = shared_dataset("hymenoptera_val")
    mixed = box_only_copy(tiny, tmp_path_factory.mktemp("mixed"), every=2)
    return {
        "pool-backgrounds-categories": ["--src", str(tiny), "--paste-from", str(voc),
            "--categories", "person,car,bus", "--balance", "category",
            "--backgrounds", str(photos), "--backgrounds-frac", "0.4"],
        "boxes-gaussian-polygons": ["--ann", str(mixed), "--images", str(tiny / "images"),
            "--paste-by", "box", "--blend", "gaussian", "--sigma", "2",
            "--mask-format", "polygon"],
    }  # fmt: skip


@pytest.mark.parametrize("combo", ["pool-backgrounds-categories", "boxes-gaussian-polygons"])
def test_device_cpu_matches_the_cpu_path_with_dataset_options(combos, tmp_path, combo):
    args = [*combos[combo], "--num-images", "30", "-j", "2"]
    generate(*args, "-o", str(tmp_path / "cpu"))
    generate(*args, "-o", str(tmp_path / "dev"), "--device", "cpu", "--batch-size", "7")
    cpu, dev = tmp_path / "cpu" / "annotations.json", tmp_path / "dev" / "annotations.json"
    assert cpu.read_bytes() == dev.read_bytes()
    assert decoded_difference(tmp_path / "cpu", tmp_path / "dev") <= DECODED_TOLERANCE


@pytest.mark.parametrize("sigma", [0.0, 2.0])
def test_device_paint_is_within_one_grey_level_of_opencv_and_only_under_the_mask(sigma):
    from cpgen.copypaste.device import Batcher

    rng = np.random.default_rng(7)
    batcher = Batcher("cpu", 4, None)  # type: ignore[arg-type]  # paint needs no encoder
    worst = 0
    for trial in range(12):
        source = rng.integers(0, 256, (70 + trial, 90, 3), dtype=np.uint8)
        source = cv2.GaussianBlur(source, (0, 0), 1.5)  # smooth: interpolation matters
        target = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
        placement = Placement(
            bool(trial % 2), float(rng.uniform(0.3, 1.7)), float(rng.uniform(-20, 30)),
            float(rng.uniform(-20, 30)), 90, 70 + trial,
        )  # fmt: skip
        rect = (5 + trial, 3, 50, 40)
        crop_mask = np.zeros((40, 50), np.uint8)
        cv2.circle(crop_mask, (25, 20), 12 + trial, 1, -1)
        on_opencv, on_device = target.copy(), target.copy()
        Pixels().paint(on_opencv, source, placement, rect, crop_mask, sigma)
        batcher.paint(on_device, source, placement, rect, crop_mask, sigma)
        difference = np.abs(on_opencv.astype(int) - on_device.astype(int))
        worst = max(worst, int(difference.max()))
        outside = np.ones(target.shape[:2], bool)
        outside[3:43, 5 + trial : 55 + trial] = crop_mask == 0
        assert np.array_equal(on_device[outside], target[outside])
        assert not np.array_equal(on_device, target)
    assert worst <= 1


def test_device_rerun_and_resume_after_a_crash_give_the_same_bytes(tmp_path):
    src = make_coco(tmp_path / "src", n_images=6)
    args = ["--src", str(src), "--num-images", "70", "-j", "2", "--device", "cpu",
            "--batch-size", "10"]  # fmt: skip
    generate(*args, "-o", str(tmp_path / "first"))
    reference = tree_bytes(tmp_path / "first")
    out = tmp_path / "out"
    generate(*args, "-o", str(out))
    assert tree_bytes(out) == reference
    crash(out, 3)
    generate(*args, "-o", str(out), "--resume")
    assert tree_bytes(out) == reference
    assert not list(out.rglob("*.tmp"))


def test_resume_with_another_device_or_without_is_refused(tmp_path):
    src = make_coco(tmp_path / "src", n_images=6)
    args = ["--src", str(src), "-o", str(tmp_path / "out"), "--num-images", "70"]
    generate(*args, "--device", "cpu")
    crash(tmp_path / "out", 2)
    result = invoke(*args, "--resume")
    assert result.exit_code == EXIT_USAGE
    assert 'pixels was {"device": "cpu", "codec": "opencv"}, now null' in result.stderr


def test_sigkill_mid_device_run_then_resume_gives_the_uninterrupted_output(tmp_path):
    script = Path(sys.executable).with_name("cpgen")
    if not script.exists():
        pytest.skip("console script not installed beside this interpreter")
    src = make_coco(tmp_path / "src", n_images=6, size=(320, 240))
    args = ["--src", str(src), "--num-images", "600", "-j", "2", "--device", "cpu", "--quiet"]
    generate(*args, "-o", str(tmp_path / "reference"))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [str(script), "copypaste", *args, "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    shards = out / ".cpgen" / "shards"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if shards.is_dir() and len(list(shards.glob("*.json"))) >= 4:
            break
        time.sleep(0.02)
    else:
        pytest.fail("the run finished or stalled before it could be killed")
    kill_group(proc)
    assert not (out / "annotations.json").exists()
    generate(*args, "-o", str(out), "--resume")
    assert tree_bytes(out) == tree_bytes(tmp_path / "reference")


@pytest.mark.skipif(CUDA, reason="CUDA is available here")
def test_device_cuda_without_cuda_is_one_error_line_and_exit_2(tmp_path, tiny80):
    out = tmp_path / "out"
    result = invoke("--src", str(tiny80), "-o", str(out), "--device", "cuda")
    assert result.exit_code == EXIT_USAGE
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Error: --device cuda: CUDA is not available")
    assert [line for line in lines if line.startswith("Error:")] == lines[:1]
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "cpu", "--rotate", "10"], "does not support --rotate"),
        (["--device", "tpu"], "is not cpu, cuda or cuda:N"),
        (["--device", "cpu", "--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_device_usage_errors_come_before_any_work(tmp_path, tiny80, extra, message):
    out = tmp_path / "out"
    result = invoke("--src", str(tiny80), "-o", str(out), *extra)
    assert result.exit_code == EXIT_USAGE
    assert message in result.stderr
    assert not out.exists()


def test_device_without_torch_says_how_to_install_it(tmp_path, tiny80, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    result = invoke("--src", str(tiny80), "-o", str(tmp_path / "out"), "--device", "cpu")
    assert result.exit_code == EXIT_USAGE
    assert "needs PyTorch" in result.stderr and "pip install" in result.stderr


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_device_cuda_matches_the_cpu_annotations_and_reruns_to_the_same_bytes(tmp_path, tiny80):
    from cpgen.copypaste.device import codec

    args = ["--src", str(tiny80), "--num-images", "40", "-j", "4"]
    generate(*args, "-o", str(tmp_path / "cpu"))
    generate(*args, "-o", str(tmp_path / "gpu"), "--device", "cuda")
    generate(*args, "-o", str(tmp_path / "again"), "--device", "cuda")
    cpu, gpu = tmp_path / "cpu" / "annotations.json", tmp_path / "gpu" / "annotations.json"
    assert cpu.read_bytes() == gpu.read_bytes()
    assert tree_bytes(tmp_path / "gpu") == tree_bytes(tmp_path / "again")
    if codec("cuda") == "opencv":  # nvJPEG is another encoder: only the paint is bounded
        assert decoded_difference(tmp_path / "cpu", tmp_path / "gpu") <= DECODED_TOLERANCE
