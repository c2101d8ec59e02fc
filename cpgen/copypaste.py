"""`cpgen copypaste`: Simple Copy-Paste (Ghiasi et al., CVPR 2021) over a COCO dataset.

read + validate (datasets.coco) -> plan (plan.py) -> shards in workers (this module's
``run_generate_shard`` / ``run_originals_shard``) -> merge -> summary.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cpgen import __version__, images, masks, output
from cpgen.datasets import coco, consumers
from cpgen.errors import DataError, UsageError
from cpgen.ops.paste import (
    Placement,
    blur_radius,
    composite,
    keep_occluded,
    padded_rect,
    warp_crop,
    warp_mask,
)
from cpgen.plan import PARAMS_STREAM, CopyPasteTask, plan_copypaste, shard, task_rng
from cpgen.runner import RunOptions, run_jobs
from cpgen.sampling import CopyPasteParams, sample_copypaste

SHARD_SIZE = 16


@dataclass(frozen=True)
class CopyPasteOptions:
    """Options that decide the output (recorded in the manifest and in ``info``)."""

    num_images: int | None = None
    seed: int = 0
    max_paste: int = 20
    scale: tuple[float, float] = (0.1, 2.0)
    hflip: float = 0.5
    blend: str = "none"
    sigma: float = 1.0
    min_visible_px: int = 10
    min_visible_frac: float = 0.1
    mask_format: str = "rle"
    originals: str = "link"
    quality: int = 95

    def __post_init__(self) -> None:
        def bad(option: str, why: str) -> UsageError:
            return UsageError(f"{option} {why}")

        if self.num_images is not None and self.num_images < 1:
            raise bad("--num-images", "must be at least 1")
        if not 0 <= self.seed < 2**63:
            raise bad("--seed", "must be in 0 .. 2**63 - 1")
        if self.max_paste < 1:
            raise bad("--max-paste", "must be at least 1")
        lo, hi = self.scale
        if not (0 < lo <= hi <= 100):
            raise bad("--scale", f"MIN MAX must satisfy 0 < MIN <= MAX <= 100, got {lo} {hi}")
        if not 0 <= self.hflip <= 1:
            raise bad("--hflip", "is a probability in [0, 1]")
        if self.blend not in ("gaussian", "none"):
            raise bad("--blend", "is gaussian or none")
        if not 0 <= self.sigma <= 100:
            raise bad("--sigma", "must be in [0, 100] pixels")
        if self.min_visible_px < 1:
            raise bad("--min-visible-px", "must be at least 1")
        if not 0 <= self.min_visible_frac <= 0.5:
            raise bad("--min-visible-frac", "must be in [0, 0.5] (mostly visible objects stay)")
        if self.mask_format not in ("rle", "polygon"):
            raise bad("--mask-format", "is rle or polygon")
        if self.originals not in ("link", "copy", "none"):
            raise bad("--originals", "is link, copy or none")
        if not 1 <= self.quality <= 100:
            raise bad("--quality", "must be in 1 .. 100")

    @property
    def blend_sigma(self) -> float:
        return self.sigma if self.blend == "gaussian" else 0.0


# ---------------------------------------------------------------------------------------------
# One output, in memory (no I/O)


@dataclass
class Generated:
    """A generated image and its annotations (ids not yet assigned)."""

    image: images.Image
    annotations: list[dict[str, Any]]
    params: CopyPasteParams
    drawn_ids: list[Any]  # ids of the source annotations drawn for pasting
    dropped: int  # target annotations dropped as hidden


def draw_params(
    task_seed: int,
    source_anns: list[dict[str, Any]],
    source_size: tuple[int, int],
    target_size: tuple[int, int],
    options: CopyPasteOptions,
) -> CopyPasteParams:
    """The task's paste parameters, drawn from its own generator (sizes are (width, height))."""
    count = sum(1 for a in source_anns if not a["iscrowd"])
    rng = task_rng(task_seed, PARAMS_STREAM)
    return sample_copypaste(
        rng, count, source_size, target_size, options.max_paste, options.scale, options.hflip
    )


def source_reduction(params: CopyPasteParams) -> int:
    """How much smaller (1, 2, 4 or 8) the source may be decoded: never below the paste's scale.

    JPEG decodes at 1/2, 1/4 and 1/8 size for a fraction of the cost (DCT scaling), and the
    reduced image is a better start for a strong shrink than bilinear sampling of the full one.
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
) -> Generated:
    """Paste the drawn subset of the source's non-crowd instances onto the target.

    ``target`` is modified in place and returned as the output image. ``source`` may be decoded
    ``reduction`` times smaller than its ``source_size`` (width, height); masks always come from
    the full-size annotations. Annotations are full records: the target's (occluded, possibly
    dropped) then the pasted ones, each with its ``cpgen`` provenance; ``id`` and ``image_id``
    are left for the merge to assign.
    """
    th, tw = target.shape[:2]
    sw, sh = source_size if source_size is not None else (source.shape[1], source.shape[0])
    pasteable = [a for a in source_anns if not a["iscrowd"]]
    placement = params.placement

    pasted: list[tuple[dict[str, Any], masks.Rle, int]] = []
    for pos in params.instances:
        ann = pasteable[pos]
        seg = ann["segmentation"]
        if isinstance(seg, list):
            rle = masks.polygons_to_rle([placement.polygon(p) for p in seg], th, tw)
        else:
            mask = masks.decode(masks.segmentation_to_rle(seg, sh, sw))
            rle = masks.encode(warp_mask(mask, placement, th, tw))
        area = masks.area(rle)
        if area >= options.min_visible_px:
            pasted.append((ann, rle, area))

    union: masks.Rle | None = None
    union_box = rect = (0, 0, 0, 0)
    crop_mask = np.zeros((0, 0), np.uint8)
    if pasted:
        union = masks.union([rle for _, rle, _ in pasted])
        union_box = tuple(masks.bbox(union))
        rect = padded_rect(union_box, blur_radius(options.blend_sigma), tw, th)
        x, y, w, h = rect
        crop_mask = np.ascontiguousarray(masks.decode(union)[y : y + h, x : x + w])
        pixels_placement = Placement(
            placement.flip,
            placement.scale * reduction,
            placement.offset_x,
            placement.offset_y,
            placement.source_width / reduction,
        )
        composite(
            target,
            warp_crop(source, pixels_placement, rect),
            crop_mask,
            rect,
            options.blend_sigma,
        )

    annotations: list[dict[str, Any]] = []
    not_pasted: masks.Rle | None = None
    dropped = 0
    target_rles = masks.segmentations_to_rles([a["segmentation"] for a in target_anns], th, tw)
    target_boxes = masks.bboxes(target_rles)
    for ann, rle, box in zip(target_anns, target_rles, target_boxes, strict=True):
        area = None
        if union is not None and _boxes_overlap(box, union_box):
            original_px = masks.area(rle)
            if not_pasted is None:
                not_pasted = _complement(crop_mask, rect, th, tw)
            visible = masks.intersect(rle, not_pasted)
            area = masks.area(visible)
            if area < original_px:
                if not keep_occluded(
                    original_px, area, options.min_visible_px, options.min_visible_frac
                ):
                    dropped += 1
                    continue
                rle, box = visible, masks.bbox(visible)
        annotations.append(_annotation(ann, rle, "target", options.mask_format, area, box))
    for ann, rle, area in pasted:
        annotations.append(_annotation(ann, rle, "source", options.mask_format, area))
    drawn_ids = [pasteable[i]["id"] for i in params.instances]
    return Generated(target, annotations, params, drawn_ids, dropped)


def _complement(crop_mask: masks.Mask, rect: tuple[int, ...], height: int, width: int) -> masks.Rle:
    """Everything but the pasted union, as an RLE over the frame, from the union's crop."""
    x, y, w, h = rect
    frame = np.ones((height, width), dtype=np.uint8, order="F")
    frame[y : y + h, x : x + w] = 1 - crop_mask
    return masks.encode(frame)


def _boxes_overlap(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _annotation(
    ann: dict[str, Any],
    rle: masks.Rle,
    origin: str,
    mask_format: str,
    area: int | None = None,
    box: list[int] | None = None,
) -> dict[str, Any]:
    """An output record: the original's keys, new mask, area and box, and provenance.

    ``area`` and ``box`` are the mask's when the caller already has them.
    """
    segmentation: Any = masks.rle_to_json(rle)
    if mask_format == "polygon" and not ann["iscrowd"]:
        h, w = rle["size"]
        parts = masks.mask_to_polygons(masks.decode(rle))
        as_polygon = masks.polygons_to_rle(parts, h, w) if parts else None
        if as_polygon is not None and masks.area(as_polygon) > 0:
            segmentation, rle, area, box = parts, as_polygon, None, None
    record = {k: v for k, v in ann.items() if k not in ("id", "image_id", "cpgen")}
    record.update(
        id=None,
        image_id=None,
        segmentation=segmentation,
        area=masks.area(rle) if area is None else area,
        bbox=masks.bbox(rle) if box is None else box,
        iscrowd=ann["iscrowd"],
        cpgen={"from": origin, "image_id": ann["image_id"], "ann_id": ann["id"]},
    )
    return record


# ---------------------------------------------------------------------------------------------
# Shards (run in workers: small picklable payloads, small results)


@dataclass(frozen=True)
class ImageRef:
    """What a worker needs to read one dataset image."""

    position: int
    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class OutputIds:
    """Ids of generated records, fixed by the output index alone (so workers assign them).

    Output ``i`` is image ``image_base + i``; its ``j``-th annotation is
    ``ann_base + i * ann_stride + j``, where ``ann_stride`` bounds the annotations of one output
    (the most any image has, plus the most that can be pasted). Unique, deterministic, above the
    originals' ids; not consecutive.
    """

    image_base: int
    ann_base: int
    ann_stride: int

    def annotation(self, index: int, j: int) -> int:
        return self.ann_base + index * self.ann_stride + j


@dataclass(frozen=True)
class GenerateShard:
    number: int
    tasks: list[CopyPasteTask]
    images: dict[int, ImageRef]
    annotations: dict[int, list[dict[str, Any]]]
    options: CopyPasteOptions
    images_dir: str
    out: str
    gen_dir: str
    ids: OutputIds


@dataclass(frozen=True)
class OriginalsShard:
    number: int
    images: list[ImageRef]
    annotations: dict[int, list[dict[str, Any]]]
    mode: str  # link | copy | none (check only)
    records: dict[int, dict[str, Any]]  # the original image records, written as given
    images_dir: str
    out: str


@dataclass
class ShardResult:
    number: int
    done: int = 0  # outputs written (or originals placed)
    broken: dict[int, str] = field(default_factory=dict)  # image position -> reason
    skipped: list[str] = field(default_factory=list)  # output files not written, with reason


def _image_path(images_dir: str, ref: ImageRef) -> Path:
    rel = coco.safe_relative(ref.file_name)
    if rel is None:
        raise images.ImageError("file_name is absolute or leaves the image folder")
    return Path(images_dir) / rel


class ShardImages:
    """The images one shard reads, each decoded at most once per size while it fits a budget.

    Within a shard a source is often another task's target or an earlier task's source; keeping
    the decoded pixels (least recently used out past ``budget_bytes``) saves those decodes.
    ``uses`` counts how often the shard will ask for each image position, so an image is dropped
    after its last use, and the last user of a target may paste onto the cached array itself.
    """

    def __init__(
        self, images_dir: str, uses: Counter[int], budget_bytes: int = 256 * 1024 * 1024
    ) -> None:
        self.images_dir = images_dir
        self.remaining = uses
        self.budget = budget_bytes
        self.used = 0
        self.decoded: OrderedDict[tuple[int, int], images.Image] = OrderedDict()

    def take(self, ref: ImageRef) -> images.Image:
        """Full-size pixels of ``ref`` that the caller may modify."""
        pixels = self.get(ref)[0]
        return pixels if (ref.position, 1) not in self.decoded else pixels.copy()

    def get(self, ref: ImageRef, reduction: int = 1) -> tuple[images.Image, int]:
        """Pixels of ``ref`` (not to be modified) and the reduction they were decoded at."""
        self.remaining[ref.position] -= 1
        last = self.remaining[ref.position] <= 0
        for key in ((ref.position, reduction), (ref.position, 1)):
            if key in self.decoded:
                pixels = self.decoded.pop(key) if last else self.decoded[key]
                if last:
                    self.used -= pixels.nbytes
                else:
                    self.decoded.move_to_end(key)
                return pixels, key[1]
        data = images.read_bytes(_image_path(self.images_dir, ref))
        expected = (ref.width, ref.height)
        try:
            if reduction == 1:
                raise ValueError
            pixels = images.decode_reduced(data, expected, reduction)
        except ValueError:
            pixels, reduction = images.decode(data, expected), 1
        if not last:
            self.decoded[(ref.position, reduction)] = pixels
            self.used += pixels.nbytes
            while self.used > self.budget and len(self.decoded) > 1:
                self.used -= self.decoded.popitem(last=False)[1].nbytes
        return pixels, reduction


def run_generate_shard(job: GenerateShard) -> ShardResult:
    """Generate, encode and write a shard's outputs, then its result file (written last)."""
    result = ShardResult(job.number)
    out = Path(job.out)
    image_lines: list[str] = []
    ann_lines: list[str] = []
    counts = dict.fromkeys(
        ("generated", "generated_annotations", "pasted_instances", "dropped_target_annotations"), 0
    )
    cache = ShardImages(job.images_dir, Counter(p for t in job.tasks for p in (t.target, t.source)))
    for task in job.tasks:
        target_ref, source_ref = job.images[task.target], job.images[task.source]
        params = draw_params(
            task.seed,
            job.annotations[task.source],
            (source_ref.width, source_ref.height),
            (target_ref.width, target_ref.height),
            job.options,
        )
        try:
            for ref in (target_ref, source_ref):
                failed = ref
                if ref.position in result.broken:
                    raise images.ImageError(result.broken[ref.position])
                if ref is target_ref:
                    target = cache.take(ref)  # pasted onto in place
                else:
                    source, reduction = cache.get(ref, source_reduction(params))
        except images.ImageError as exc:
            result.broken.setdefault(failed.position, f"{failed.file_name}: {exc}")
            result.skipped.append(f"{_output_name(job.gen_dir, task.index)}: input image unusable")
            continue
        generated = copy_paste(
            params,
            target,
            job.annotations[task.target],
            source,
            job.annotations[task.source],
            job.options,
            (source_ref.width, source_ref.height),
            reduction,
        )
        file_name = _output_name(job.gen_dir, task.index)
        data = images.encode_jpeg(generated.image, job.options.quality)
        images.write_output_image(out / "images" / file_name, data)
        p = generated.params.placement
        image_id = job.ids.image_base + task.index
        image_lines.append(
            output.dumps(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": target_ref.width,
                    "height": target_ref.height,
                    "cpgen": {
                        "target_id": target_ref.id,
                        "source_ids": [source_ref.id],
                        "seed": task.seed,
                        "params": {
                            "instances": generated.drawn_ids,
                            "hflip": p.flip,
                            "scale": p.scale,
                            "offset": [p.offset_x, p.offset_y],
                            "source_reduction": reduction,
                        },
                    },
                }
            )
        )
        for j, ann in enumerate(generated.annotations):
            ann["id"], ann["image_id"] = job.ids.annotation(task.index, j), image_id
            ann_lines.append(output.dumps(ann))
            counts["pasted_instances"] += ann["cpgen"]["from"] == "source"
        counts["generated"] += 1
        counts["generated_annotations"] += len(generated.annotations)
        counts["dropped_target_annotations"] += generated.dropped
        result.done += 1
    _write_shard(out, job.number, "generated", result, image_lines, ann_lines, counts)
    return result


def run_originals_shard(job: OriginalsShard) -> ShardResult:
    """Check originals' headers, place them in OUT, and recompute their annotations' area/bbox."""
    result = ShardResult(job.number)
    out = Path(job.out)
    image_lines: list[str] = []
    ann_lines: list[str] = []
    for ref in job.images:
        try:
            path = _image_path(job.images_dir, ref)
            images.check_file(path, (ref.width, ref.height))
        except images.ImageError as exc:
            result.broken[ref.position] = f"{ref.file_name}: {exc}"
            continue
        if job.mode != "none":  # originals are written: place the file, recompute area and box
            output.link_or_copy(path, out / "images" / coco.safe_relative(ref.file_name), job.mode)
            # lines carry the image's position: the merge leaves out images found broken later
            image_lines.append(f"{ref.position}\t{output.dumps(job.records[ref.position])}")
            for ann in job.annotations[ref.position]:
                rle = masks.segmentation_to_rle(ann["segmentation"], ref.height, ref.width)
                record = {**ann, "area": masks.area(rle), "bbox": masks.bbox(rle)}
                ann_lines.append(f"{ref.position}\t{output.dumps(record)}")
        result.done += 1
    _write_shard(out, job.number, "originals", result, image_lines, ann_lines, {})
    return result


def _output_name(gen_dir: str, index: int) -> str:
    return f"{gen_dir}/{index:06d}.jpg"


def _part_path(out: Path, number: int, part: str) -> Path:
    return output.shard_path(out, number).with_suffix(f".{part}.jsonl")


def _write_shard(
    out: Path,
    number: int,
    kind: str,
    result: ShardResult,
    image_lines: list[str],
    ann_lines: list[str],
    counts: dict[str, int],
) -> None:
    """A shard's records as JSON lines, then its status file, last: the mark that it is done."""
    for part, lines in (("images", image_lines), ("annotations", ann_lines)):
        output.atomic_write_chunks(_part_path(out, number, part), (line + "\n" for line in lines))
    status = {
        "kind": kind,
        "broken": {str(k): v for k, v in result.broken.items()},
        "skipped": result.skipped,
        "counts": counts,
    }
    output.atomic_write_text(output.shard_path(out, number), output.dumps(status))


# ---------------------------------------------------------------------------------------------
# The whole run


@dataclass
class Summary:
    """What a run did; printed as one line, or as one JSON object with ``--json``."""

    command: str
    out: str
    annotations: str
    images: int = 0
    generated: int = 0
    generated_annotations: int = 0
    pasted_instances: int = 0
    dropped_target_annotations: int = 0
    originals: int = 0
    skipped_outputs: int = 0
    broken_images: list[str] = field(default_factory=list)
    skipped_annotations: int = 0
    seconds: float = 0.0

    @property
    def skipped_items(self) -> int:
        return self.skipped_outputs + len(self.broken_images) + self.skipped_annotations

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "skipped_items": self.skipped_items}

    def line(self) -> str:
        text = (
            f"cpgen {self.command}: {self.generated} images generated "
            f"({self.pasted_instances} instances pasted, {self.dropped_target_annotations} "
            f"hidden target annotations dropped), {self.originals} originals kept, "
            f"in {self.seconds:.1f} s -> {self.annotations}"
        )
        if self.skipped_items:
            text += (
                f"; skipped: {self.skipped_outputs} outputs, {len(self.broken_images)} broken "
                f"images, {self.skipped_annotations} annotations"
            )
        return text


def generated_dir(index: coco.CocoIndex) -> str:
    """A folder name for generated images that no original file_name starts with."""
    taken = {
        n.split("/", 1)[0].lower()
        for n in (r["file_name"].replace("\\", "/") for r in index.images)
    }
    name, k = "cpgen", 0
    while name.lower() in taken:
        k += 1
        name = f"cpgen-{k}"
    return name


def usable_images(
    index: coco.CocoIndex, broken: Collection[int] = ()
) -> tuple[list[int], list[int]]:
    """Positions of the usable images and of those with an instance to paste (DataError if
    there are none)."""
    usable = [i for i in range(len(index.images)) if i not in broken]
    if not usable:
        raise DataError(f"{index.files.annotations}: no usable images")
    pasteable = [i for i in usable if any(not a["iscrowd"] for a in index.anns_by_image[i])]
    if not pasteable:
        raise DataError(f"{index.files.annotations}: no image has a non-crowd instance to paste")
    return usable, pasteable


def plan(
    index: coco.CocoIndex, options: CopyPasteOptions, broken: Collection[int] = ()
) -> list[CopyPasteTask]:
    """The run's tasks over the usable images (those not in ``broken``)."""
    usable, pasteable = usable_images(index, broken)
    num = options.num_images if options.num_images is not None else len(index.images)
    return plan_copypaste(usable, pasteable, num, options.seed)


def check_images(index: coco.CocoIndex) -> dict[int, str]:
    """Header checks of every image in this process (for ``--dry-run``): position -> reason."""
    broken = {}
    for ref in _refs(index, range(len(index.images))).values():
        try:
            images.check_file(_image_path(str(index.files.images), ref), (ref.width, ref.height))
        except images.ImageError as exc:
            broken[ref.position] = f"{ref.file_name}: {exc}"
    return broken


def _refs(index: coco.CocoIndex, positions: Iterable[int]) -> dict[int, ImageRef]:
    return {
        p: ImageRef(p, r["id"], r["file_name"], r["width"], r["height"])
        for p, r in ((p, index.images[p]) for p in sorted(positions))
    }


def run(
    index: coco.CocoIndex,
    out: Path,
    options: CopyPasteOptions,
    run_options: RunOptions,
    report: Any = None,
) -> Summary:
    """Generate the dataset into ``out`` and return the summary.

    ``report(message)`` receives one line per skipped item (stderr in the CLI).
    """
    started = time.perf_counter()
    usable_images(index)  # a dataset with nothing to paste fails before OUT is touched
    gen_dir = generated_dir(index)
    manifest = {
        "tool": "cpgen",
        "version": __version__,
        "command": "copypaste",
        "source": {
            "annotations": str(index.files.annotations.resolve()),
            "images": str(index.files.images.resolve()),
            "sha256": output.file_digest(index.files.annotations),
        },
        "options": options_record(options),
    }
    finished = output.begin_run(
        out, manifest, overwrite=run_options.overwrite, resume=run_options.resume
    )
    if report is not None:  # problems of the annotation file, before the long part
        for problem, where in index.problems:
            report(f"warning: {problem}: {where}")
        for line in consumers.index_warning_lines(index):  # once: what trips trainers
            report(line)

    def execute(payloads: list[Any], job: Any, desc: str, size: Callable[[Any], int]) -> None:
        run_jobs(
            job,
            [p for p in payloads if p.number not in finished],
            workers=run_options.workers,
            backend=run_options.backend,
            progress=run_options.progress,
            desc=desc,
            on_result=lambda r: r.done,
            total=sum(size(p) for p in payloads),
            initial=sum(size(p) for p in payloads if p.number in finished),
        )

    # phase 1: check every image's header, place the originals, recompute their areas and boxes
    originals = []
    for chunk in shard(range(len(index.images)), 64):
        originals.append(
            OriginalsShard(
                len(originals),
                list(_refs(index, chunk).values()),
                {p: index.anns_by_image[p] for p in chunk},
                options.originals,
                {p: index.images[p] for p in chunk},
                str(index.files.images),
                str(out),
            )
        )
    execute(originals, run_originals_shard, "checking images", lambda p: len(p.images))
    broken = {int(p) for s in range(len(originals)) for p in output.read_shard(out, s)["broken"]}

    # phase 2: generate from the usable images only
    tasks = plan(index, options, broken)
    first_generate = len(originals)
    most_annotations = max((len(a) for a in index.anns_by_image), default=0)
    ids = OutputIds(
        index.max_image_id() + 1,
        index.max_annotation_id() + 1,
        most_annotations + min(options.max_paste, most_annotations),
    )
    generate = []
    for chunk in shard(tasks, SHARD_SIZE):
        touched = {t.target for t in chunk} | {t.source for t in chunk}
        generate.append(
            GenerateShard(
                first_generate + len(generate),
                chunk,
                _refs(index, touched),
                {p: index.anns_by_image[p] for p in touched},
                options,
                str(index.files.images),
                str(out),
                gen_dir,
                ids,
            )
        )
    execute(generate, run_generate_shard, "copypaste", lambda p: len(p.tasks))
    summary = merge(index, out, options, len(originals) + len(generate))
    summary.seconds = round(time.perf_counter() - started, 3)
    output.write_manifest(out, {**manifest, "state": "done", "summary": summary.to_json()})
    if report is not None:
        for name in summary.broken_images:
            report(f"skipped image {name}")
    return summary


def options_record(options: CopyPasteOptions) -> dict[str, Any]:
    record = asdict(options)
    record["scale"] = list(options.scale)
    return record


def merge(index: coco.CocoIndex, out: Path, options: CopyPasteOptions, num_shards: int) -> Summary:
    """Write ``annotations.json`` atomically from the shards' JSON lines, in shard order.

    Workers assigned every id, so this only joins text; originals found broken by any shard
    (even a later one) are left out, with their placed files.
    """
    summary = Summary("copypaste", str(out), str(out / "annotations.json"))
    summary.skipped_annotations = sum(
        1 for problem, _ in index.problems if not problem.startswith("polygon parts dropped")
    )
    broken: dict[int, str] = {}
    kinds = []
    for number in range(num_shards):
        status = output.read_shard(out, number)
        kinds.append(status["kind"])
        broken.update({int(k): v for k, v in status["broken"].items()})
        summary.skipped_outputs += len(status["skipped"])
        for key, value in status["counts"].items():
            setattr(summary, key, getattr(summary, key) + value)

    def lines(part: str) -> Iterator[str]:
        for kind in ("originals", "generated"):
            for number in (n for n in range(num_shards) if kinds[n] == kind):
                with _part_path(out, number, part).open(encoding="utf-8") as f:
                    for line in f:
                        if kind == "originals":
                            position, _, line = line.partition("\t")
                            if int(position) in broken:
                                continue
                            summary.originals += part == "images"
                        yield line.rstrip("\n")

    info = {
        "description": "generated by cpgen copypaste (Simple Copy-Paste)",
        "version": __version__,
        "cpgen": {
            "tool": "cpgen",
            "version": __version__,
            "command": "copypaste",
            "options": options_record(options),
        },
    }
    if "info" in index.top:
        info["source_info"] = index.top["info"]
    coco.write(
        out / "annotations.json",
        info=info,
        licenses=index.top.get("licenses") or [],
        categories=index.categories,
        images=lines("images"),
        annotations=lines("annotations"),
        extra={k: v for k, v in index.top.items() if k not in ("info", "licenses")},
    )
    summary.broken_images = [broken[p] for p in sorted(broken)]
    if options.originals != "none":  # a broken original leaves the output: its placed file too
        for p in broken:
            rel = coco.safe_relative(index.images[p]["file_name"])
            if rel is not None:
                (out / "images" / rel).unlink(missing_ok=True)
    summary.images = summary.originals + summary.generated
    return summary
