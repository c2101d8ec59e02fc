"""The cutmix output in standard loaders: Hugging Face's image folder, cpgen's torch Dataset
(with a real training step), and no stray folder for a folder-based loader to take."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from cpgen import images
from cpgen.errors import EXIT_USAGE
from tests.test_cutmix_cli import invoke, make_folder, output_files


def make_output(tmp_path: Path, *extra: str, name: str = "out") -> Path:
    src = tmp_path / "src"
    if not src.is_dir():
        make_folder(src, {"ants": 3, "bees": 2, "wasps": 3})
    out = tmp_path / name
    args = ["--src", str(src), "--out", str(out), "--num-images", "20", "--size", "16x20"]
    result = invoke(*args, "-j", "1", "-q", *extra)
    assert result.exit_code == 0, result.output
    return out


def labels(out: Path) -> list[dict[str, str]]:
    with (out / "labels.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_finished_output_holds_no_folder_but_images(tmp_path):
    out = make_output(tmp_path, "--soft-labels")
    # torchvision's find_classes: every sub-folder of the root, hidden ones too, is a class
    assert sorted(e.name for e in os.scandir(out) if e.is_dir()) == ["images"]
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    assert files == [
        ".cpgen.json",
        "classes.json",
        "labels.csv",
        "metadata.jsonl",
        "soft_labels.npy",
    ]
    manifest = json.loads((out / ".cpgen.json").read_text())
    assert manifest["state"] == "done" and manifest["summary"]["generated"] == 20


def test_a_finished_output_can_be_overwritten_and_resumed(tmp_path):
    out = make_output(tmp_path, "--soft-labels")
    first = output_files(out)
    make_output(tmp_path, "--soft-labels", "--overwrite")  # recognised as cpgen's
    assert output_files(out) == first
    make_output(tmp_path, "--soft-labels", "--resume")  # nothing kept to resume: redone
    assert output_files(out) == first and not (out / ".cpgen").exists()
    src = tmp_path / "src"
    refused = invoke("--src", str(src), "--out", str(out), "--num-images", "20", "--resume")
    assert refused.exit_code == EXIT_USAGE and "size" in refused.stderr


def test_hugging_face_imagefolder_gives_one_row_per_image_with_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    out = make_output(tmp_path, "--soft-labels")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf"))
    rows = loaded["train"]
    expected = labels(out)
    soft = np.load(out / "soft_labels.npy")
    assert len(rows) == len(expected) == 20
    assert set(rows.column_names) == {"image", "soft_label"} | set(expected[0]) - {"file"}
    for row, want, target in zip(rows, expected, soft, strict=True):
        assert {k: str(row[k]) for k in want if k != "file"} == {
            k: v for k, v in want.items() if k != "file"
        }
        assert isinstance(row["base_weight"], float) and isinstance(row["top"], int)
        with Image.open(out / want["file"]) as image:
            assert np.array_equal(np.asarray(row["image"]), np.asarray(image))
        assert np.array_equal(np.asarray(row["soft_label"], dtype=np.float32), target)

    plain = make_output(tmp_path, name="plain")  # no --soft-labels: the labels.csv columns
    rows = datasets.load_dataset(
        "imagefolder", data_dir=str(plain), cache_dir=str(tmp_path / "hf")
    )["train"]
    assert "soft_label" not in rows.column_names and len(rows) == 20


def test_cutmix_dataset_yields_images_and_soft_targets(tmp_path):
    torch = pytest.importorskip("torch")
    from cpgen.torch_data import CutMixDataset

    out = make_output(tmp_path, "--soft-labels")
    data = CutMixDataset(out)
    assert len(data) == 20 and data.classes == ["ants", "bees", "wasps"]
    soft = torch.from_numpy(np.load(out / "soft_labels.npy"))
    assert torch.equal(data.targets, soft)
    for k, row in enumerate(labels(out)):
        image, target = data[k]
        assert image.dtype == torch.float32 and image.shape == (3, 16, 20)
        rgb = images.load(out / row["file"])[:, :, ::-1].astype(np.float32) / 255
        assert np.allclose(image.permute(1, 2, 0).numpy(), rgb)
        assert torch.equal(target, soft[k]) and float(target.sum()) == pytest.approx(1)
    # without --soft-labels the same targets come from labels.csv
    plain = CutMixDataset(make_output(tmp_path, name="plain"))
    assert torch.equal(plain.targets, soft)
    shapes = CutMixDataset(out, transform=lambda image: (type(image).__name__, image.size))
    assert shapes[0][0] == ("Image", (20, 16))


def test_a_training_step_on_cutmix_targets_lowers_the_loss(tmp_path):
    torch = pytest.importorskip("torch")
    from torch import nn

    from cpgen.torch_data import CutMixDataset

    def soft_target_cross_entropy(logits, target):  # timm.loss.SoftTargetCrossEntropy
        return torch.sum(-target * torch.log_softmax(logits, dim=-1), dim=-1).mean()

    torch.manual_seed(0)
    data = CutMixDataset(make_output(tmp_path, "--soft-labels"))
    loader = torch.utils.data.DataLoader(data, batch_size=20, shuffle=True)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 20, len(data.classes)))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    criterion = nn.CrossEntropyLoss()  # class probabilities as targets (PyTorch >= 1.10)
    losses = []
    for _ in range(15):
        for batch, targets in loader:
            logits = model(batch)
            loss = criterion(logits, targets)
            assert torch.allclose(loss, soft_target_cross_entropy(logits, targets))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])  # 1.10 -> 0.53 here
