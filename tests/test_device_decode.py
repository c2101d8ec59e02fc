"""`--device` decoding: the decode step goes through the pixels' hook, which decodes whole
images (a source drawn small is averaged down afterwards, on either path), so the recorded
reduction and `annotations.json` are the CPU path's.

nvJPEG itself needs a CUDA build of torchvision and a GPU, which CI has neither of: here the
full decode it would do is OpenCV's (``nvjpeg_stand_in``), and everything after it is the code
the CUDA run uses (``to_bgr_host`` on a torch tensor, the hook, the shard code)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cpgen import images
from cpgen.copypaste import device
from tests.copypaste_helpers import generate
from tests.test_copypaste_device import DECODED_TOLERANCE, decoded_difference, generated_images

torch = pytest.importorskip("torch")


def nvjpeg_stand_in(data: bytes, expected: tuple[int, int]) -> images.Image:
    """``device.decode_nvjpeg`` with OpenCV's full decode in place of nvJPEG's."""
    full = images.decode(data, expected)
    rgb = torch.from_numpy(np.ascontiguousarray(full[..., ::-1])).permute(2, 0, 1)
    return device.to_bgr_host(rgb)


def jpeg(width: int, height: int) -> bytes:
    rng = np.random.default_rng(width * height)
    noise = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    smooth = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.imencode(".jpg", smooth, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def test_to_bgr_host_of_a_full_decode_is_opencvs_array() -> None:
    data = jpeg(97, 61)
    full = images.decode(data, (97, 61))
    rgb = torch.from_numpy(np.ascontiguousarray(full[..., ::-1])).permute(2, 0, 1)
    host = device.to_bgr_host(rgb)
    assert host.dtype == np.uint8 and host.flags.c_contiguous
    assert np.array_equal(host, full)


def test_what_is_not_a_jpeg_falls_back_to_opencv() -> None:
    png = cv2.imencode(".png", np.full((9, 11, 3), 200, np.uint8))[1].tobytes()
    decoded = device.decode_nvjpeg(png, (11, 9), "cpu")  # never reaches torchvision
    assert decoded.shape == (9, 11, 3) and int(decoded.min()) == int(decoded.max()) == 200
    with pytest.raises(images.ImageError):
        device.decode_nvjpeg(b"\xff\xd8 not really", (11, 9), "cpu")


def test_device_decoding_through_the_hook_keeps_the_cpu_paths_annotations(
    tmp_path: Path, tiny80: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device run whose decoder is nvJPEG's stand-in writes the CPU path's annotations.json,
    provenance included, and pixels close to it; every image it read went through the hook,
    whole (shards reduce a source drawn small from its whole decode, on either path)."""
    args = ["--src", str(tiny80), "--num-images", "30", "-j", "2", "--seed", "4"]
    generate(*args, "-o", str(tmp_path / "cpu"))
    seen: list[bool] = []

    def decode(self, data, expected):
        pixels = nvjpeg_stand_in(data, expected)
        seen.append(pixels.shape == (expected[1], expected[0], 3))
        return pixels

    monkeypatch.setattr(device.Batcher, "decode", decode)
    generate(*args, "-o", str(tmp_path / "dev"), "--device", "cpu", "--batch-size", "4")
    cpu, dev = tmp_path / "cpu" / "annotations.json", tmp_path / "dev" / "annotations.json"
    assert cpu.read_bytes() == dev.read_bytes()
    assert len(seen) >= 30 and all(seen)
    records = json.loads(cpu.read_text())["images"]
    assert any(r["cpgen"]["params"]["source_reduction"] > 1 for r in records if "cpgen" in r)
    assert decoded_difference(tmp_path / "cpu", tmp_path / "dev") <= DECODED_TOLERANCE
    cpu_images, dev_images = generated_images(tmp_path / "cpu"), generated_images(tmp_path / "dev")
    means = [
        np.abs(cpu_images[k].astype(int) - dev_images[k].astype(int)).mean() for k in cpu_images
    ]
    assert max(means) < 0.2


def test_the_cpu_decoder_is_the_default_hook(tmp_path: Path) -> None:
    data = jpeg(64, 48)
    pixels = device.Batcher("cpu", 4, None).decode(data, (64, 48))  # type: ignore[arg-type]
    assert np.array_equal(pixels, images.decode(data, (64, 48)))
