"""Shared test fixtures: real datasets from ../shared/data (skipped when absent) and small
datasets built by the tests themselves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLES = REPO / "examples"


def shared_dataset(name: str) -> Path:
    """A third-party dataset beside the clone; the test is skipped where it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not present (third-party test data lives beside the clone)")
    return path


@pytest.fixture
def tiny80() -> Path:
    return shared_dataset("coco_val2017_tiny80")


@pytest.fixture
def labelme3() -> Path:
    return shared_dataset("labelme_voc2011_coco3")


def square(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def make_coco(root: Path, n_images: int = 4, size: tuple[int, int] = (96, 64)) -> Path:
    """A small COCO dataset of textured images with square instances and one crowd RLE.

    Images are noise-textured so that pasted pixels differ from the target's; instance k of
    image i is a square at a position that depends on (i, k). Returns ``root``.
    """
    width, height = size
    rng = np.random.default_rng(7)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = 0  # ids from 0 on purpose: ids must never be tested for truth
    for i in range(n_images):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pixels = cv2.GaussianBlur(pixels, (0, 0), 2)
        name = f"img {i}.jpg"  # a space in the name on purpose
        cv2.imwrite(str(root / "images" / name), pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": i, "file_name": name, "width": width, "height": height})
        for k in range(2):
            x, y = 6 + 30 * k + 3 * i, 8 + 4 * i
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": i,
                    "category_id": 1 + k,
                    "segmentation": [square(x, y, 20, 24)],
                    "area": 480.0,
                    "bbox": [x, y, 20, 24],
                    "iscrowd": 0,
                }
            )
            ann_id += 1
    # one crowd region (uncompressed RLE) on image 0: rows 40..49 of columns 70..79
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[40:50, 70:80] = 1
    annotations.append(
        {
            "id": ann_id,
            "image_id": 0,
            "category_id": 1,
            "segmentation": {"counts": rle_counts(mask), "size": [height, width]},
            "area": 100,
            "bbox": [70, 40, 10, 10],
            "iscrowd": 1,
        }
    )
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": 1, "name": "square", "supercategory": "shape"},
            {"id": 2, "name": "square", "supercategory": "other"},  # repeated name on purpose
        ],
        "extra_key": {"kept": True},
    }
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a binary mask (column-major runs, starting with 0s)."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return counts


@pytest.fixture
def small_coco(tmp_path: Path) -> Path:
    return make_coco(tmp_path / "src")


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group (a crash: no handler runs, the workers and loky's
    resource tracker die with it), wait for it, and remove what the tracker would have: the
    named semaphores and joblib folders in /dev/shm that carry the killed process's pid, which
    would otherwise pile up on the machine that runs the tests."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return
    for left in [*shm.glob(f"sem.loky-{proc.pid}-*"), *shm.glob(f"joblib_*_{proc.pid}_*")]:
        if left.is_dir():
            for inner in left.iterdir():
                inner.unlink(missing_ok=True)
            left.rmdir()
        else:
            left.unlink(missing_ok=True)


def after_entry_point(code: str, env: dict[str, str], entry: bool = True) -> str:
    """The stdout of a fresh process that runs the console script's entry point (``cpgen
    --version``, where ``entry``), then ``code``: what the entry point leaves set for what the
    process does next."""
    run = (
        "import sys\n"
        f"if {entry}:\n"
        "    from cpgen.cli import main\n"
        "    sys.argv = ['cpgen', '--version']\n"
        "    try:\n        main()\n    except SystemExit:\n        pass\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", run + code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
