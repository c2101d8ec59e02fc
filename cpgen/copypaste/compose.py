"""One output in memory: paste the drawn instances of a source onto a target (no I/O).

``draw_params`` draws the output's parameters from its task seed; ``copy_paste`` is the pure
composition (pixels, occluded target masks, pasted masks) and ``_annotation`` builds the
output records with their provenance.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cpgen import images, masks
from cpgen.copypaste.options import CopyPasteOptions
from cpgen.copypaste.sources import Selection, target_segmentation
from cpgen.datasets.coco_checks import usable_record
from cpgen.ops.paste import (
    Placement,
    blur_radius,
    composite,
    keep_occluded,
    padded_rect,
    warp_crop,
    warp_mask,
)
from cpgen.plan import PARAMS_STREAM, task_rng
from cpgen.sampling import CopyPasteParams, sample_copypaste

Polygon = list[list[float]]


@dataclass
class Generated:
    """A generated image and its annotations (ids not yet assigned)."""

    image: images.Image
    annotations: list[dict[str, Any]]
    params: CopyPasteParams
    drawn_ids: list[Any]  # ids of the source annotations drawn for pasting
    dropped: int  # target annotations dropped as hidden
    #: records still to trace, with their masks (``copy_paste(..., trace_masks=False)``): pass them
    #: to :func:`trace` before the records are used
    untraced: list[tuple[dict[str, Any], masks.Rle]] = field(default_factory=list)


class Pixels:
    """How outputs' pixels are decoded, painted and written: here at once, with OpenCV on the
    CPU.

    ``cpgen.copypaste.device`` paints on a torch device, writes in batches, and may decode with
    nvJPEG; masks and records never go through this, so they are the same whichever paints.
    """

    def decode(self, data: bytes, expected: tuple[int, int]) -> images.Image:
        """An input image's whole pixels from its file's bytes (``sources.Decoder``)."""
        return images.decode(data, expected)

    def paint(
        self,
        target: images.Image,
        source: images.Image,
        placement: Placement,
        rect: tuple[int, int, int, int],
        crop_mask: masks.Mask,
        sigma: float,
        boxes: Sequence[Sequence[int]] = (),
    ) -> None:
        """Composite the placed ``source`` onto ``target`` in place through ``crop_mask`` (the
        pasted union's crop at ``rect`` = (x, y, w, h), pixels), blended with ``sigma``, over
        the rects :func:`paint_rects` chooses (the pasted instances' ``boxes`` or ``rect``)."""
        for part in paint_rects(rect, sigma, boxes):
            mask = sub_mask(crop_mask, rect, part)
            composite(target, warp_crop(source, placement, part), mask, part, sigma)

    def write(self, path: Path, image: images.Image, quality: int) -> None:
        """Encode ``image`` as a JPEG of ``quality`` and write it to ``path``."""
        images.write_output_image(path, images.encode_jpeg(image, quality))

    def finish(self, done: Callable[[], None]) -> None:
        """Call ``done`` (which marks a shard finished) once every image given is written."""
        done()


CPU_PIXELS = Pixels()


def paint_rects(
    rect: tuple[int, int, int, int], sigma: float, boxes: Sequence[Sequence[int]]
) -> list[tuple[int, int, int, int]]:
    """Where the placed source is resampled: the pasted union's ``rect``, or, unblended, the
    pasted instances' own ``boxes`` (inside ``rect``) one after the other when they add up to
    less than it (a few instances spread over the frame span a rect mostly not pasted on).

    OpenCV's fixed-point sampling coordinates depend on where a crop starts, so a rare pixel
    differs by one level between the two renderings; the choice is made from the boxes alone,
    so it is repeatable. A blend needs the whole union's soft edge: always ``rect``.
    """
    if sigma <= 0 and len(boxes) > 1 and sum(b[2] * b[3] for b in boxes) < rect[2] * rect[3]:
        return [(int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b in boxes]
    return [rect]


def sub_mask(
    crop_mask: masks.Mask, rect: tuple[int, ...], part: tuple[int, int, int, int]
) -> masks.Mask:
    """The part of ``crop_mask`` (a crop at ``rect``) that lies at ``part``, inside ``rect``."""
    x, y, w, h = part
    return crop_mask[y - rect[1] : y - rect[1] + h, x - rect[0] : x - rect[0] + w]


def draw_params(
    task_seed: int,
    source_anns: list[dict[str, Any]],
    source_size: tuple[int, int],
    target_size: tuple[int, int],
    options: CopyPasteOptions,
    selection: Selection | None = None,
    category: int | None = None,
) -> CopyPasteParams:
    """The task's paste parameters, drawn from its own generator (sizes are (width, height)).

    With ``category`` (``--balance category``) the drawn subset holds only instances of it.
    """
    pasteable = (selection or Selection()).pasteable(source_anns)
    required = None
    if category is not None:
        required = [i for i, a in enumerate(pasteable) if a["category_id"] == category]
    rng = task_rng(task_seed, PARAMS_STREAM)
    return sample_copypaste(
        rng,
        len(pasteable),
        source_size,
        target_size,
        options.max_paste,
        options.scale,
        options.hflip,
        required,
        options.rotate,
    )


def source_reduction(params: CopyPasteParams) -> int:
    """How much smaller (1, 2, 4 or 8) the source is taken: never below the paste's scale.

    The source is averaged down that much (``images.reduce``, from its whole decode) before the
    bilinear warp: a better start for a strong shrink than sampling the full image, whose
    pixels between the samples would be skipped (aliasing).
    """
    reduction = 1
    while reduction < 8 and params.placement.scale * reduction * 2 <= 1.0:
        reduction *= 2
    return reduction


def copy_paste(
    params: CopyPasteParams,
    target: images.Image,
    target_anns: list[dict[str, Any]],
    source: images.Image,
    source_anns: list[dict[str, Any]],
    options: CopyPasteOptions,
    source_size: tuple[int, int] | None = None,
    reduction: int = 1,
    selection: Selection | None = None,
    pixels: Pixels = CPU_PIXELS,
    *,
    trace_masks: bool = True,
) -> Generated:
    """Paste the drawn subset of the source's non-crowd instances onto the target.

    ``target`` is modified in place and returned as the output image. ``source`` may be decoded
    ``reduction`` times smaller than its ``source_size`` (width, height); masks always come from
    the full-size annotations. Annotations are full records: the target's (occluded, possibly
    dropped) then the pasted ones, each with its ``cpgen`` provenance; ``id`` and ``image_id``
    are left for the merge to assign. ``selection`` says which source instances can be pasted
    and how (default: every non-crowd one, by its mask). ``pixels`` paints the pasted pixels.
    With ``trace_masks`` False, the records whose polygon must be traced are left in
    ``Generated.untraced`` for the caller to :func:`trace` (several outputs' at once cost less).
    """
    th, tw = target.shape[:2]
    sw, sh = source_size if source_size is not None else (source.shape[1], source.shape[0])
    selection = selection or Selection()
    pasteable = selection.pasteable(source_anns)
    placement = params.placement

    drawn = []
    for pos in params.instances:
        ann = pasteable[pos]
        if isinstance(ann.get("segmentation"), bytes):  # a source's polygons are parsed here
            ann = usable_record(ann)
        drawn.append((ann, selection.source_segmentation(ann, sh, sw)))
    # the drawn polygons are placed and rasterised together (an RLE's mask is warped)
    segs = [seg for _, seg in drawn if isinstance(seg, list)]
    flat = iter(placement.polygons([part for seg in segs for part in seg]))
    placed_segs = [[next(flat) for _ in seg] for seg in segs]
    placed_rles = iter(
        zip(placed_segs, masks.segmentations_to_rles(placed_segs, th, tw), strict=True)
    )
    pasted: list[tuple[dict[str, Any], masks.Rle, int, Polygon | None]] = []
    for ann, seg in drawn:
        polygon = None
        if isinstance(seg, list):
            placed, rle = next(placed_rles)
            polygon = placed if _inside(placed, tw, th) else None
        else:
            mask = masks.decode(masks.segmentation_to_rle(seg, sh, sw))
            rle = masks.encode(warp_mask(mask, placement, th, tw))
        area = masks.area(rle)
        if area >= options.min_visible_px:
            pasted.append((ann, rle, area, polygon))

    union: masks.Rle | None = None
    union_runs = None  # decoded once: for the crop to paint and for the complement
    union_box = rect = (0, 0, 0, 0)
    crop_mask = np.zeros((0, 0), np.uint8)
    boxes: list[list[int]] = []  # the pasted instances'
    if pasted:
        union = masks.union([p[1] for p in pasted])
        union_runs = masks.run_lengths(union["counts"])
        union_box = tuple(masks.bbox(union))
        rect = padded_rect(union_box, blur_radius(options.blend_sigma), tw, th)
        crop_mask = masks.decode_box(union, rect, union_runs)
        boxes = masks.bboxes([p[1] for p in pasted])
        pixels.paint(
            target,
            source,
            placement.reduced(reduction),
            rect,
            crop_mask,
            options.blend_sigma,
            boxes,
        )

    annotations: list[dict[str, Any]] = []
    untraced: list[tuple[dict[str, Any], masks.Rle]] = []  # records whose polygon is traced
    not_pasted: masks.Rle | None = None
    dropped = 0
    target_rles, target_boxes, target_areas = target_masks(target_anns, th, tw)
    for ann, rle, box, area in zip(
        target_anns, target_rles, target_boxes, target_areas, strict=True
    ):
        polygon = ann.get("segmentation")  # its own polygon while untouched
        # only a target that meets a pasted instance's box can lose pixels (the union lies
        # in those boxes, which leave more of the frame out than the union's own box)
        if (
            union is not None
            and _boxes_overlap(box, union_box)
            and any(_boxes_overlap(box, b) for b in boxes)
        ):
            original_px = area
            if not_pasted is None:
                not_pasted = masks.complement(union, union_runs)
            visible = masks.intersect(rle, not_pasted)
            area = masks.area(visible)
            if area < original_px:
                if not keep_occluded(
                    original_px, area, options.min_visible_px, options.min_visible_frac
                ):
                    dropped += 1
                    continue
                rle, box, polygon = visible, masks.bbox(visible), None
        annotations.append(
            _annotation(ann, rle, "target", options.mask_format, area, box, polygon, untraced)
        )
    for (ann, rle, area, polygon), box in zip(pasted, boxes, strict=True):
        record = _annotation(ann, rle, "source", options.mask_format, area, box, polygon, untraced)
        if selection.dataset is not None:
            record["category_id"] = selection.output_category(ann["category_id"])
            record["cpgen"]["dataset"] = selection.dataset
        annotations.append(record)
    if trace_masks:
        trace(untraced)
        untraced = []
    drawn_ids = [pasteable[i]["id"] for i in params.instances]
    return Generated(target, annotations, params, drawn_ids, dropped, untraced)


#: Targets' masks kept across outputs: ``id(records)`` -> (records, size, RLEs, boxes, areas)
_TARGET_MASKS: OrderedDict[int, tuple[Any, tuple[int, int], list[masks.Rle], Any, Any]]
_TARGET_MASKS = OrderedDict()
_TARGET_MASKS_LOCK = threading.Lock()

#: How many targets' masks a process keeps (a few hundred bytes of RLE per annotation).
TARGET_MASKS_KEPT = 1024


def target_masks(
    records: list[dict[str, Any]], height: int, width: int
) -> tuple[list[masks.Rle], list[list[int]], list[int]]:
    """The masks of a target's annotation records (RLEs, boxes, areas), rasterised once per
    list of records: a worker hands the same parsed list to every output of an image it keeps
    (``shard._usable``), so a small set multiplied rasterises each target once, not once per
    output. The RLEs are only read; each box is a new list (records may be changed)."""
    if not records:  # a background: nothing to keep
        return [], [], []
    key = id(records)
    with _TARGET_MASKS_LOCK:
        hit = _TARGET_MASKS.get(key)
        if hit is not None and hit[0] is records and hit[1] == (height, width):
            _TARGET_MASKS.move_to_end(key)
            return hit[2], [list(b) for b in hit[3]], hit[4]
    rles = masks.segmentations_to_rles(
        [target_segmentation(a, height, width) for a in records], height, width
    )
    boxes, areas = masks.bboxes(rles), masks.areas(rles)
    with _TARGET_MASKS_LOCK:  # the entry holds ``records``: its id names no other list
        _TARGET_MASKS[key] = (records, (height, width), rles, boxes, areas)
        if len(_TARGET_MASKS) > TARGET_MASKS_KEPT:
            _TARGET_MASKS.popitem(last=False)
    return rles, [list(b) for b in boxes], areas


def forget_target_masks() -> None:
    """Drop the kept masks (the run is over)."""
    with _TARGET_MASKS_LOCK:
        _TARGET_MASKS.clear()


def trace(untraced: Sequence[tuple[dict[str, Any], masks.Rle]]) -> None:
    """Give each record its RLE's exact polygon, traced along pixel edges; all in one numpy
    pass (the tracer's cost is mostly per call below a dozen masks)."""
    if untraced:
        traced = masks.rles_to_polygons([rle for _, rle in untraced])
        for (record, _), parts in zip(untraced, traced, strict=True):
            record["segmentation"] = parts


def _boxes_overlap(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _inside(parts: Polygon, width: int, height: int) -> bool:
    """Whether every vertex of ``parts`` lies in the frame ``[0, width] x [0, height]``."""
    for part in parts:
        if min(part) < 0 or max(part[0::2]) > width or max(part[1::2]) > height:
            return False
    return True


def _annotation(
    ann: dict[str, Any],
    rle: masks.Rle,
    origin: str,
    mask_format: str,
    area: int | None,
    box: list[int] | None,
    polygon: Any,
    untraced: list[tuple[dict[str, Any], masks.Rle]],
) -> dict[str, Any]:
    """An output record: the original's keys, new mask, area and box, and provenance.

    ``area`` and ``box`` are the mask's when the caller already has them. A box-only
    annotation keeps its segmentation as it came (missing, null or []). Non-crowd masks are
    written as polygons (``mask_format`` "polygon") that decode with pycocotools to exactly the
    mask: ``polygon``, when it is a list of parts, is one whose rasterisation *is* the mask (a
    target annotation the paste left whole, or a pasted one's placed source polygon, all inside
    the frame) and is written as it is; any other mask is traced along pixel edges
    (:mod:`cpgen.polygons`) by the caller: the record and its RLE are added to ``untraced``.
    Crowd regions, and every mask with ``mask_format`` "rle", are compressed RLE.
    """
    box_only = masks.is_box_only(ann)
    record = dict(ann)  # its keys in order, then id and image_id (the merge assigns them)
    del record["id"], record["image_id"]
    record.pop("cpgen", None)
    record.update(id=None, image_id=None)
    if not box_only:
        if mask_format == "polygon" and not ann["iscrowd"]:
            if isinstance(polygon, list):
                record["segmentation"] = polygon
            else:
                record["segmentation"] = None
                untraced.append((record, rle))
        else:
            record["segmentation"] = masks.rle_to_json(rle)
    record.update(
        area=masks.area(rle) if area is None else area,
        bbox=masks.bbox(rle) if box is None else box,
        iscrowd=ann["iscrowd"],
        cpgen={"from": origin, "image_id": ann["image_id"], "ann_id": ann["id"]},
    )
    return record
