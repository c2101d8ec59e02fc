"""PyTorch API: Composer-style CutMix on tensors, the per-sample box copy ``--device`` uses, and
Simple Copy-Paste for batches (:func:`copypaste_batch`, from :mod:`cpgen.functional_copypaste`).

Only these two modules import torch; the CLI imports them only with ``--device``.

:func:`cutmix_batch` follows Composer 0.32's ``composer.functional.cutmix_batch``: one box for
the whole batch, filled from ``input[indices]``. Its bbox is Composer's tuple whose first pair
indexes dim 2: ``(top, left, bottom, right)`` in pixels, rows ``[top, bottom)``, columns
``[left, right)``. Given the same ``bbox`` and ``indices`` the result is exactly Composer's. As
in Composer's code, ``alpha`` 0 draws no lambda and uses 0: a full-frame nominal cut.

Differences, all about drawing (nothing drawn when ``bbox`` and ``indices`` are given):

* Random numbers come from ``generator``, a :class:`numpy.random.Generator` (a fresh unseeded
  one if None), never from numpy's or torch's global state: first the permutation, then lambda
  and the box centre as :func:`cpgen.sampling.sample_cutmix` draws them.
* ``length`` gives a box of ``int(length * H)`` by ``int(length * W)`` pixels (nominal, before
  the ``cut // 2`` edges and clipping), as Composer's documentation describes it. Composer's own
  code instead uses lambda = that box's area fraction and cuts ``sqrt(1 - lambda)`` of each
  side, a different (for small ``length``, much larger) box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from cpgen.functional_copypaste import CopyPasteBatch, copypaste_batch, masks_to_boxes
from cpgen.sampling import sample_cutmix


def cutmix_batch(
    input: Tensor,
    target: Tensor,
    length: float | None = None,
    alpha: float = 1.0,
    bbox: tuple[Any, Any, Any, Any] | None = None,
    indices: Tensor | Sequence[int] | None = None,
    uniform_sampling: bool = False,
    *,
    generator: np.random.Generator | None = None,
) -> tuple[Tensor, Tensor, float, tuple[Any, Any, Any, Any]]:
    """CutMix a batch: ``input[:, :, top:bottom, left:right]`` is taken from ``input[indices]``.

    ``input`` is ``(N, C, H, W)`` of any dtype; ``target`` has N rows. Returns the mixed batch
    (a new tensor), ``target[indices]``, lambda (the unmixed share of the frame,
    ``1 - box_area / (H * W)``) and the bbox ``(top, left, bottom, right)``.
    Raises ValueError when both ``length`` and ``bbox`` are given, as Composer does.
    """
    if bbox is not None and length is not None:
        raise ValueError(f"Cannot provide both length and bbox; got {length} and {bbox}")
    rng = generator if generator is not None else np.random.default_rng()
    if indices is None:
        indices = torch.from_numpy(rng.permutation(input.shape[0]))
    if bbox:
        top, left, bottom, right = bbox[0], bbox[1], bbox[2], bbox[3]
    else:
        box = sample_cutmix(
            rng, input.shape[2], input.shape[3], alpha, length, uniform_sampling
        ).box
        top, left, bottom, right = box
        bbox = (top, left, bottom, right)
    mixed = torch.clone(input)
    mixed[:, :, top:bottom, left:right] = mixed[indices, :, top:bottom, left:right]
    lam = 1 - ((bottom - top) * (right - left) / (input.size()[-1] * input.size()[-2]))
    return mixed, target[indices], lam, bbox


def cutmix_soft_targets(
    target: Tensor, target_perm: Tensor, lam: float, num_classes: int
) -> Tensor:
    """Composer's soft labels: ``lam * onehot(target) + (1 - lam) * onehot(target_perm)``.

    Integer class targets of shape ``(N,)`` give an ``(N, num_classes)`` float32 tensor; dense
    targets ``(N, num_classes)`` are mixed as they are.
    """
    lam = float(lam)
    if target.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        target = F.one_hot(target.long(), num_classes=num_classes)
        target_perm = F.one_hot(target_perm.long(), num_classes=num_classes)
    return lam * target + (1 - lam) * target_perm


def paste_boxes(base: Tensor, patch: Tensor, boxes: Tensor | Sequence[Sequence[int]]) -> Tensor:
    """Per-sample CutMix: sample ``i`` takes ``patch[i]``'s pixels inside its own box.

    ``base`` and ``patch`` are ``(N, C, H, W)`` on one device; ``boxes`` is ``(N, 4)``
    ``(top, left, bottom, right)`` per sample, clipped to the frame (``0 <= top <= bottom <= H``,
    ``0 <= left <= right <= W``). Returns a new tensor; values are copied, never computed.
    """
    if base.shape != patch.shape:
        raise ValueError(f"base {tuple(base.shape)} and patch {tuple(patch.shape)} differ")
    boxes = torch.as_tensor(boxes, dtype=torch.long, device=base.device).reshape(-1, 4)
    if boxes.shape[0] != base.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes for a batch of {base.shape[0]}")
    rows = torch.arange(base.shape[2], device=base.device)
    cols = torch.arange(base.shape[3], device=base.device)
    in_rows = (rows >= boxes[:, 0:1]) & (rows < boxes[:, 2:3])  # (N, H)
    in_cols = (cols >= boxes[:, 1:2]) & (cols < boxes[:, 3:4])  # (N, W)
    inside = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (N, 1, H, W)
    return torch.where(inside, patch, base)


__all__ = [
    "CopyPasteBatch",
    "copypaste_batch",
    "cutmix_batch",
    "cutmix_soft_targets",
    "masks_to_boxes",
    "paste_boxes",
]
