"""A PyTorch ``Dataset`` over a ``cpgen cutmix`` output: ``(image, soft_target)`` pairs.

Imports torch when used (``pip install 'cpgen[gpu]'`` or any torch); never on the CLI path.

    from cpgen.torch_data import CutMixDataset

    data = CutMixDataset("out/cutmix")
    image, target = data[0]  # float32 3xHxW in [0, 1]; float32 (num_classes,), sums to 1
    loss = torch.nn.CrossEntropyLoss()(model(image[None]), target[None])

The target is the row of ``soft_labels.npy`` (computed from ``labels.csv`` and
``classes.json`` the same way when the run had no ``--soft-labels``): class probabilities, the
form timm's ``SoftTargetCrossEntropy`` and ``nn.CrossEntropyLoss`` (PyTorch >= 1.10) take.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cpgen import images
from cpgen.cutmix import CLASSES, LABELS, soft_labels


class CutMixDataset:
    """Images of a cutmix output with their soft targets, in ``labels.csv`` order.

    ``transform``, if given, is called on each image as an RGB ``PIL.Image`` (what torchvision
    and timm transforms take; needs Pillow) and its result is returned as the image; without
    it the image is a float32 tensor, channels first, scaled to [0, 1]. ``classes`` are the
    class names (index -> name, like torchvision's ``ImageFolder.classes``) and ``targets`` the
    N x C float32 tensor of soft targets.
    """

    def __init__(self, root: str | Path, transform: Callable[[Any], Any] | None = None) -> None:
        import torch

        self.root = Path(root)
        self.transform = transform
        self.classes: list[str] = json.loads((self.root / CLASSES).read_text(encoding="utf-8"))
        with (self.root / LABELS).open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        self.files = [row["file"] for row in rows]
        class_of = {name: i for i, name in enumerate(self.classes)}
        weights = [
            (class_of[r["base_class"]], class_of[r["patch_class"]], float(r["base_weight"]))
            for r in rows
        ]
        self.targets = torch.from_numpy(soft_labels(weights, len(self.classes)))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch

        rgb = np.ascontiguousarray(images.load(self.root / self.files[index])[:, :, ::-1])
        if self.transform is not None:
            from PIL import Image

            image: Any = self.transform(Image.fromarray(rgb))
        else:
            image = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)
        return image, self.targets[index]
