"""PyTorch Simple Copy-Paste for a batch in a training loop, on any device (re-exported by
:mod:`cpgen.functional`; torch is imported here and nowhere on the CLI path).

Each image ``i`` of a batch gets a random subset of the instances of its partner
``indices[i]`` pasted on it with the semantics of ``cpgen copypaste`` (a batch shares one frame
size, so the partner is scaled relative to fitting that frame): flip, scale, offset, cut at the
frame; a pasted instance left with fewer than ``min_visible_px`` pixels is not pasted; the
image's own masks lose the pasted union and are dropped by :func:`cpgen.ops.paste.keep_occluded`.

Given the same parameters the result equals cpgen's numpy ops run image by image
(:func:`~cpgen.ops.paste.warp_mask` for masks, :func:`~cpgen.ops.paste.warp_crop` over the
union's tight box and :func:`~cpgen.ops.paste.composite` without blending for pixels): masks
bit for bit, and pixels within one grey level (the same float32 bilinear formula, unfused where
OpenCV's SIMD loop fuses), because the sampled coordinates are OpenCV's own
(:mod:`cpgen.ops.warp_coords`). float64 images are computed in float64 (OpenCV's float64 warp
quantises positions to 1/32 pixel and is not matched). Not offered here: Gaussian blending
(``--blend gaussian``) and turned placements (``--rotate``; a placement's ``angle`` must be 0).

Per image: a few small host computations (coordinates, the drop rule) and host syncs (areas,
the union's box); the pixel and mask work is gathers and elementwise ops over the region the
pasted masks can reach, on the tensors' device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cpgen.ops.paste import Placement, keep_occluded
from cpgen.ops.warp_coords import (
    column_coords,
    linear_taps,
    nearest_index,
    opencv_vector_block,
    placement_inverse,
    row_coords,
)
from cpgen.sampling import CopyPasteParams, sample_copypaste

BOX_FORMATS = ("xyxy", "xywh")


@dataclass(frozen=True)
class CopyPasteBatch:
    """The result of :func:`copypaste_batch`; per image ``i`` (lists have one entry per image):

    * ``images``: ``(N, C, H, W)``, the input's dtype and device (a new tensor);
    * ``masks[i]``: ``(M_i, H, W)`` bool: the image's kept instances (what stays visible), in
      their input order, then the pasted ones in the order of ``params[i].instances``;
    * ``labels[i]``: ``(M_i,)``, the labels' dtype; ``boxes[i]``: ``(M_i, 4)`` float32 tight
      boxes of the masks in pixels, ``xyxy`` = ``[x0, y0, x1, y1]`` with exclusive ``x1``,
      ``y1`` (pixel ``i`` covers ``[i, i + 1)``) or COCO ``xywh``; an empty mask has ``0 0 0 0``;
    * ``pasted[i]``: ``(M_i,)`` bool, True for rows taken from the partner;
    * ``indices``: ``(N,)`` int64 partner of each image; ``params``: what was used per image
      (None where nothing was to be pasted: a partner without instances).
    """

    images: Tensor
    masks: list[Tensor]
    labels: list[Tensor]
    boxes: list[Tensor]
    pasted: list[Tensor]
    indices: Tensor
    params: tuple[CopyPasteParams | None, ...]


def copypaste_batch(
    images: Tensor,
    masks: Sequence[Tensor],
    labels: Sequence[Tensor],
    indices: Tensor | Sequence[int] | None = None,
    params: Sequence[CopyPasteParams | None] | None = None,
    *,
    max_paste: int = 20,
    scale: tuple[float, float] = (0.1, 2.0),
    hflip: float = 0.5,
    min_visible_px: int = 10,
    min_visible_frac: float = 0.1,
    box_format: str = "xyxy",
    generator: torch.Generator | np.random.Generator | None = None,
) -> CopyPasteBatch:
    """Paste instances of ``images[indices[i]]`` onto ``images[i]`` for every image of a batch.

    ``images`` is ``(N, C, H, W)``, uint8 or floating point; ``masks[i]`` is ``(K_i, H, W)``
    (bool, or 0/1 of any dtype) and ``labels[i]`` ``(K_i,)``, on the images' device. Pass only
    instances that may be pasted (the CLI never pastes crowd regions).

    ``indices`` pairs each image with a partner (any sequence of N positions; drawn as a
    permutation when None). ``params[i]`` (a :class:`cpgen.sampling.CopyPasteParams`: positions
    in the partner's instance list and a :class:`cpgen.ops.paste.Placement` from the partner's
    frame to image ``i``'s) says what to paste; None pastes nothing. When ``params`` is None they
    are drawn per image, in image order, by :func:`cpgen.sampling.sample_copypaste` with
    ``max_paste``, ``scale`` (fraction of the fit to the frame) and ``hflip`` (probability), as
    the CLI draws them; ``params`` needs ``indices``. Draws come from ``generator`` (a torch or
    numpy generator; a torch one seeds a numpy generator with one draw), else from fresh
    entropy: first the permutation, then the params. Nothing is drawn for what is given.

    ``min_visible_px`` (pixels) and ``min_visible_frac`` (fraction of the original area) are the
    CLI's drop thresholds. ``box_format`` is ``"xyxy"`` (torchvision detection models; note
    ``torchvision.ops.masks_to_boxes`` gives ``x1``/``y1`` one less) or ``"xywh"`` (COCO).
    """
    count, _, height, width = _check_batch(images, masks, labels, box_format)
    _check_options(max_paste, scale, hflip, min_visible_px, min_visible_frac)
    rng = _numpy_rng(generator) if indices is None or params is None else None
    if indices is None:
        if params is not None:
            raise ValueError("params refer to partners' instances: give the indices with them")
        assert rng is not None
        indices = rng.permutation(count)
    if isinstance(indices, Tensor):
        partners = indices.detach().cpu().long().reshape(-1)
    else:
        partners = torch.as_tensor(np.asarray(indices, dtype=np.int64)).reshape(-1)
    if partners.shape != (count,) or bool(((partners < 0) | (partners >= count)).any()):
        raise ValueError(f"indices must be {count} positions in 0..{count - 1}")
    if params is None:
        assert rng is not None
        drawn: list[CopyPasteParams | None] = []
        for j in partners.tolist():
            k = int(masks[j].shape[0])
            drawn.append(
                sample_copypaste(rng, k, (width, height), (width, height), max_paste, scale, hflip)
                if k
                else None
            )
        params = drawn
    if len(params) != count:
        raise ValueError(f"{len(params)} params for a batch of {count}")
    if any(p is not None and p.placement.angle for p in params):
        raise ValueError("copypaste_batch does not turn instances: every angle must be 0")

    block = opencv_vector_block()
    out = images.clone()
    result_masks, result_labels, result_boxes, result_pasted = [], [], [], []
    for i, (j, paste) in enumerate(zip(partners.tolist(), params, strict=True)):
        own = masks[i].bool()
        pasted_masks, pasted_labels = _pasted(
            masks[j].bool(), labels[j], paste, height, width, min_visible_px, block
        )
        kept, kept_labels = own, labels[i]
        if paste is not None and pasted_masks.shape[0]:
            union_frame = _bytes(pasted_masks).amax(0)  # (H, W) 0/1
            x, y, w, h = rect = _tight_box(union_frame)
            union = union_frame[y : y + h, x : x + w].bool()
            _composite(out[i], images[j], union, paste.placement, rect, block)
            kept, keep = _occlude(own, union, rect, min_visible_px, min_visible_frac)
            kept_labels = labels[i].index_select(0, keep)
        instance_masks = torch.cat([kept, pasted_masks])
        result_masks.append(instance_masks)
        result_labels.append(torch.cat([kept_labels, pasted_labels.to(kept_labels.dtype)]))
        result_boxes.append(masks_to_boxes(instance_masks, box_format))
        flags = torch.zeros(instance_masks.shape[0], dtype=torch.bool, device=images.device)
        flags[kept.shape[0] :] = True
        result_pasted.append(flags)
    return CopyPasteBatch(
        out, result_masks, result_labels, result_boxes, result_pasted, partners, tuple(params)
    )


def masks_to_boxes(masks: Tensor, box_format: str = "xyxy") -> Tensor:
    """Tight boxes ``(M, 4)`` float32 of ``(M, H, W)`` masks in pixels (see CopyPasteBatch);
    the same numbers as pycocotools' ``toBbox`` for ``xywh``."""
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format is one of {BOX_FORMATS}, got {box_format!r}")
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks.device)
    as_bytes = _bytes(masks)
    rows, cols = as_bytes.amax(2), as_bytes.amax(1)  # (M, H), (M, W): 0 or 1
    y0, x0 = rows.argmax(1), cols.argmax(1)  # the first 1 (argmax returns the first maximum)
    y1 = masks.shape[1] - rows.flip(1).argmax(1)
    x1 = masks.shape[2] - cols.flip(1).argmax(1)
    if box_format == "xywh":
        boxes = torch.stack([x0, y0, x1 - x0, y1 - y0], 1)
    else:
        boxes = torch.stack([x0, y0, x1, y1], 1)
    nonempty = rows.amax(1, keepdim=True) > 0
    return torch.where(nonempty, boxes, torch.zeros_like(boxes)).to(torch.float32)


def _bytes(masks: Tensor) -> Tensor:
    """A uint8 view of bool masks (0/1 of other dtypes compared): reductions over bool tensors
    are many times slower on CPU torch."""
    return (masks if masks.dtype == torch.bool else masks != 0).view(torch.uint8)


def _count(masks: Tensor) -> list[int]:
    """Pixels in each of ``(M, h, w)`` masks."""
    return _bytes(masks).sum((1, 2), dtype=torch.int32).tolist()  # int64 is 4x slower


def _pasted(
    source_masks: Tensor,
    source_labels: Tensor,
    params: CopyPasteParams | None,
    height: int,
    width: int,
    min_visible_px: int,
    block: int,
) -> tuple[Tensor, Tensor]:
    """The chosen instances placed on the frame, less those with under ``min_visible_px``."""
    device = source_masks.device
    empty = torch.zeros((0, height, width), dtype=torch.bool, device=device)
    if params is None or not params.instances:
        return empty, source_labels[:0]
    count = source_masks.shape[0]
    if any(not 0 <= p < count for p in params.instances):
        raise ValueError(f"instance positions {params.instances} outside 0..{count - 1}")
    chosen = torch.as_tensor(params.instances, dtype=torch.long, device=device)
    warped = _warp_masks(
        source_masks.index_select(0, chosen), params.placement, height, width, block
    )
    if warped is None:
        return empty, source_labels[:0]
    part, (r0, c0) = warped
    areas = _count(part)
    keep = [k for k, area in enumerate(areas) if area >= min_visible_px]
    keep_at = torch.as_tensor(keep, dtype=torch.long, device=device)
    out = torch.zeros((len(keep), height, width), dtype=torch.bool, device=device)
    out[:, r0 : r0 + part.shape[1], c0 : c0 + part.shape[2]] = part.index_select(0, keep_at)
    return out, source_labels.index_select(0, chosen[keep_at])


def _warp_masks(
    masks: Tensor, placement: Placement, height: int, width: int, block: int
) -> tuple[Tensor, tuple[int, int]] | None:
    """``(K, Hs, Ws)`` bool masks placed on a ``height x width`` frame: OpenCV's nearest warp
    with a zero border (:func:`cpgen.ops.paste.warp_mask`), exactly. Returns the part of the
    frame that can be non-zero and its top-left ``(row, col)``, or None when nothing lands."""
    sx0, sy0, sw, sh = _tight_box(_bytes(masks).amax(0))  # only these source pixels can land
    if sw == 0:
        return None
    sx1, sy1 = sx0 + sw, sy0 + sh
    inverse = placement_inverse(placement)
    cols, cols_in = nearest_index(column_coords(inverse, width, block), masks.shape[2])
    rows, rows_in = nearest_index(row_coords(inverse, height), masks.shape[1])
    cols_in &= (cols >= sx0) & (cols < sx1)
    rows_in &= (rows >= sy0) & (rows < sy1)
    row_hits, col_hits = np.flatnonzero(rows_in), np.flatnonzero(cols_in)
    if row_hits.size == 0 or col_hits.size == 0:
        return None
    r0, r1 = int(row_hits[0]), int(row_hits[-1]) + 1
    c0, c1 = int(col_hits[0]), int(col_hits[-1]) + 1
    device = masks.device
    part_rows = torch.from_numpy(rows[r0:r1]).to(device)
    part_cols = torch.from_numpy(cols[c0:c1]).to(device)
    inside = torch.from_numpy(rows_in[r0:r1, None] & cols_in[None, c0:c1]).to(device)
    part = _gather(_bytes(masks), part_rows, part_cols).view(torch.bool) & inside
    return part, (r0, c0)


def _gather(planes: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``planes[:, rows][:, :, cols]`` of ``(P, H, W)`` planes, as a transposed view: gathering
    whole rows of the transposed band is ~3x faster on CPU than ``index_select`` on the last
    dim, which copies element by element."""
    band = planes.index_select(1, rows).transpose(1, 2).contiguous()
    return band.index_select(1, cols).transpose(1, 2)


def _composite(
    target: Tensor,
    source: Tensor,
    union: Tensor,
    placement: Placement,
    rect: tuple[int, int, int, int],
    block: int,
) -> None:
    """Write the placed ``source`` (C, Hs, Ws) into ``target`` (C, H, W) where ``union`` (the
    (h, w) crop of the pasted masks at ``rect`` = (x, y, w, h)) is set, in place: OpenCV's
    bilinear warp with a replicated border over ``rect``, as :func:`cpgen.ops.paste.warp_crop`
    renders it, then a binary paste."""
    x, y, w, h = rect
    roi = target[:, y : y + h, x : x + w]
    roi.copy_(torch.where(union, warp_rect(source, placement, rect, block, target.dtype), roi))


def warp_rect(
    source: Tensor,
    placement: Placement,
    rect: tuple[int, int, int, int],
    block: int,
    dtype: torch.dtype,
) -> Tensor:
    """The placed ``source`` (C, Hs, Ws) rendered inside target ``rect`` = (x, y, w, h), as
    ``(C, h, w)`` of ``dtype`` (integers rounded and clamped): OpenCV's bilinear warp with a
    replicated border, as :func:`cpgen.ops.paste.warp_crop` renders it (within one grey
    level); ``block`` is :func:`cpgen.ops.warp_coords.opencv_vector_block`'s."""
    x, y, w, h = rect
    device = source.device
    inverse = placement_inverse(placement, x, y)
    x0, x1, fx = linear_taps(column_coords(inverse, w, block), source.shape[2])
    y0, y1, fy = linear_taps(row_coords(inverse, h), source.shape[1])
    work = torch.float64 if source.dtype == torch.float64 else torch.float32
    fx_t = torch.from_numpy(fx).to(device=device, dtype=work)
    fy_t = torch.from_numpy(fy).to(device=device, dtype=work)[:, None]
    rows = torch.from_numpy(np.concatenate([y0, y1])).to(device)
    cols = torch.from_numpy(np.concatenate([x0, x1])).to(device)
    taps = _gather(source, rows, cols).to(work)  # (C, 2h, 2w)
    p00, p01, p10, p11 = taps[:, :h, :w], taps[:, :h, w:], taps[:, h:, :w], taps[:, h:, w:]
    top = p00 + fx_t * (p01 - p00)
    bottom = p10 + fx_t * (p11 - p10)
    value = top + fy_t * (bottom - top)
    if not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        value = value.round().clamp(info.min, info.max)
    return value.to(dtype)


def _occlude(
    masks: Tensor,
    union: Tensor,
    rect: tuple[int, int, int, int],
    min_visible_px: int,
    min_visible_frac: float,
) -> tuple[Tensor, Tensor]:
    """What stays visible of each mask under ``union`` (its (h, w) crop at ``rect``) and the
    positions of the masks kept (:func:`cpgen.ops.paste.keep_occluded`)."""
    x, y, w, h = rect
    covered_px = _count(masks[:, y : y + h, x : x + w] & union)
    touched = [k for k, covered in enumerate(covered_px) if covered]
    at = torch.as_tensor(touched, dtype=torch.long, device=masks.device)
    original_px = dict(zip(touched, _count(masks.index_select(0, at)), strict=True))
    keep = [
        k
        for k, covered in enumerate(covered_px)
        if not covered
        or keep_occluded(original_px[k], original_px[k] - covered, min_visible_px, min_visible_frac)
    ]
    positions = torch.as_tensor(keep, dtype=torch.long, device=masks.device)
    visible = masks.index_select(0, positions)
    visible[:, y : y + h, x : x + w] &= ~union
    return visible, positions


def _tight_box(mask: Tensor) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` of an (H, W) mask in pixels (zeros when empty), with one host sync."""
    x0, y0, x1, y1 = masks_to_boxes(mask[None], "xyxy")[0].long().tolist()
    return x0, y0, x1 - x0, y1 - y0


def _numpy_rng(generator: torch.Generator | np.random.Generator | None) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    if generator is None:
        return np.random.default_rng()
    seed = torch.randint(2**62, (1,), generator=generator, device=generator.device)
    return np.random.default_rng(int(seed.item()))


def _check_batch(
    images: Tensor, masks: Sequence[Tensor], labels: Sequence[Tensor], box_format: str
) -> tuple[int, int, int, int]:
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    count, channels, height, width = (int(v) for v in images.shape)
    if len(masks) != count or len(labels) != count:
        raise ValueError(f"{len(masks)} masks and {len(labels)} labels for {count} images")
    for i, (m, lab) in enumerate(zip(masks, labels, strict=True)):
        if m.dim() != 3 or tuple(m.shape[1:]) != (height, width):
            raise ValueError(f"masks[{i}] must be (K, {height}, {width}), got {tuple(m.shape)}")
        if tuple(lab.shape) != (m.shape[0],):
            raise ValueError(f"labels[{i}] must be ({m.shape[0]},), got {tuple(lab.shape)}")
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format is one of {BOX_FORMATS}, got {box_format!r}")
    return count, channels, height, width


def _check_options(
    max_paste: int,
    scale: tuple[float, float],
    hflip: float,
    min_visible_px: int,
    min_visible_frac: float,
) -> None:
    if max_paste < 1:
        raise ValueError("max_paste must be at least 1")
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale must satisfy 0 < min <= max, got {scale}")
    if not 0 <= hflip <= 1:
        raise ValueError("hflip is a probability in [0, 1]")
    if min_visible_px < 1:
        raise ValueError("min_visible_px must be at least 1")
    if not 0 <= min_visible_frac <= 0.5:
        raise ValueError("min_visible_frac must be in [0, 0.5]")


__all__ = ["CopyPasteBatch", "copypaste_batch", "masks_to_boxes"]
