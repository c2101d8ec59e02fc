"""Shard workers: small picklable payloads in, images and JSON-lines records out.

A shard writes its images, then one result file (last: the mark that it is done, which makes
``--resume`` exact) holding its status and its records as JSON lines. Workers assign every id,
so the merge only joins text.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpgen import images, masks, output
from cpgen.copypaste.compose import (
    CPU_PIXELS,
    Generated,
    Pixels,
    copy_paste,
    draw_params,
    forget_target_masks,
    source_reduction,
    trace,
)
from cpgen.copypaste.options import CopyPasteOptions
from cpgen.copypaste.sources import WORKER_IMAGES, ImageRef, Selection, ShardImages, image_path
from cpgen.copypaste.targets import load_background
from cpgen.datasets import coco
from cpgen.datasets.coco_checks import usable_record
from cpgen.files import naming
from cpgen.plan import CopyPasteTask

#: Masks traced in one call: outputs' records wait until this many need tracing (the tracer's
#: cost is mostly per call for a few masks; past a dozen its sorts cost more per mask)
TRACE_BATCH = 12


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
    """The tasks of one shard and what they read: target and source records (the sources are
    the pool's when ``pool`` is set), background names, and how instances are selected."""

    number: int
    tasks: list[CopyPasteTask]
    images: dict[int, ImageRef]
    annotations: dict[int, list[dict[str, Any]]]
    options: CopyPasteOptions
    images_dir: str
    out: str
    gen_dir: str
    ids: OutputIds
    selection: Selection = Selection()
    pool: bool = False
    source_images: dict[int, ImageRef] = field(default_factory=dict)
    source_annotations: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    backgrounds: dict[int, str] = field(default_factory=dict)
    backgrounds_dir: str = ""
    #: (run, bytes, store folder, store bytes): the worker's decoded-image cache across shards
    #: (``WorkerImages``), and the folder where the run's workers share decodes with what each
    #: may write there ("" and 0 for none; ``image_store``). They change no output byte, so
    #: are no option of the output (not in the manifest).
    cache: tuple[str, int, str, int] = ("", 0, "", 0)
    #: keys (``ImageRef.key``) of this shard's images that a later shard uses too
    later: frozenset[tuple[str, str, int, int]] = frozenset()


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
    broken_inputs: dict[str, str] = field(default_factory=dict)  # pool image/background -> why


def run_generate_shard(job: GenerateShard, pixels: Pixels = CPU_PIXELS) -> ShardResult:
    """Generate, encode and write a shard's outputs, then its result file (written last);
    ``pixels`` paints and writes the images (``cpgen.copypaste.device``: on a torch device)."""
    result = ShardResult(job.number)
    out = Path(job.out)
    image_lines: list[str] = []
    ann_lines: list[str] = []
    groups: list[list[int]] = []  # [output index, image lines, annotation lines]
    counts: dict[str, Any] = dict.fromkeys(
        ("generated", "generated_annotations", "pasted_instances", "dropped_target_annotations"), 0
    )
    per_category: Counter[str] = Counter()
    sources = job.source_images if job.pool else job.images
    run = job.cache[0] if job.cache[1] > 0 else None
    # targets' records are parsed whole; a source's polygons only where drawn (in copy_paste)
    targets = {t.target for t in job.tasks if t.background is None}
    target_anns = _usable(job.annotations, run and f"{run}:target", None if job.pool else targets)
    source_anns = target_anns
    if job.pool:
        source_anns = _usable(job.source_annotations, run and f"{run}:pool", set())
    uses: Counter[tuple[str, str, int, int]] = Counter()
    for t in job.tasks:
        if t.background is None:
            uses[job.images[t.target].key] += 1
        uses[sources[t.source].key] += 1
    if job.cache[1] > 0:
        WORKER_IMAGES.configure(*job.cache)
    worker = WORKER_IMAGES if job.cache[1] > 0 else None
    cache = ShardImages(uses, worker=worker, later=job.later, decode=pixels.decode)
    # written outputs' records and those of them still to trace
    waiting: list[tuple[list[dict[str, Any]], list[tuple[dict[str, Any], masks.Rle]]]] = []

    def flush() -> None:
        """Trace the waiting outputs' masks together, then write their records, in order."""
        untraced = [u for _, untraced in waiting for u in untraced]
        trace(untraced)
        traced = {id(record) for record, _ in untraced}
        ann_lines.extend(
            output.dumps_traced(ann) if id(ann) in traced else output.dumps(ann)
            for records, _ in waiting
            for ann in records
        )
        waiting.clear()

    for task in job.tasks:
        source_ref = sources[task.source]
        on_background = task.background is not None
        target_ref = None if on_background else job.images[task.target]
        failed = ""
        try:
            if target_ref is None:  # a background photo, turned upright
                failed = job.backgrounds[task.background]
                if failed in result.broken_inputs:
                    raise images.ImageError(result.broken_inputs[failed])
                target = load_background(job.backgrounds_dir, failed)
            else:
                failed = target_ref
                if target_ref.position in result.broken:
                    raise images.ImageError(result.broken[target_ref.position])
                target = cache.take(target_ref)  # pasted onto in place
            target_size = (target.shape[1], target.shape[0])
            params = draw_params(
                task.seed,
                source_anns[task.source],
                (source_ref.width, source_ref.height),
                target_size,
                job.options,
                job.selection,
                task.category,
            )
            failed = source_ref
            if job.pool and source_ref.file_name in result.broken_inputs:
                raise images.ImageError(result.broken_inputs[source_ref.file_name])
            if not job.pool and source_ref.position in result.broken:
                raise images.ImageError(result.broken[source_ref.position])
            source, reduction = cache.get(source_ref, source_reduction(params))
        except images.ImageError as exc:
            if isinstance(failed, str):
                result.broken_inputs.setdefault(failed, f"background {failed}: {exc}")
            elif job.pool and failed is source_ref:
                name = failed.file_name
                result.broken_inputs.setdefault(name, f"pool image {name}: {exc}")
            else:
                result.broken.setdefault(failed.position, f"{failed.file_name}: {exc}")
            result.skipped.append(f"{output_name(job.gen_dir, task.index)}: input image unusable")
            continue
        generated = copy_paste(
            params,
            target,
            [] if target_ref is None else target_anns[task.target],
            source,
            source_anns[task.source],
            job.options,
            (source_ref.width, source_ref.height),
            reduction,
            job.selection,
            pixels,
            trace_masks=False,
        )
        file_name = output_name(job.gen_dir, task.index)
        pixels.write(out / "images" / file_name, generated.image, job.options.quality)
        image_id = job.ids.image_base + task.index
        where: dict[str, Any] = (
            {"background": job.backgrounds[task.background]}
            if target_ref is None
            else {"target_id": target_ref.id}
        )
        image_lines.append(
            output.dumps(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": target_size[0],
                    "height": target_size[1],
                    "cpgen": {
                        **where,
                        "source_ids": [source_ref.id],
                        "seed": task.seed,
                        "params": params_record(generated, reduction, job.options, task),
                    },
                }
            )
        )
        for j, ann in enumerate(generated.annotations):
            ann["id"], ann["image_id"] = job.ids.annotation(task.index, j), image_id
            if ann["cpgen"]["from"] == "source":
                counts["pasted_instances"] += 1
                per_category[str(ann["category_id"])] += 1
        groups.append([task.index, 1, len(generated.annotations)])  # the merge orders by it
        waiting.append((generated.annotations, generated.untraced))
        if sum(len(untraced) for _, untraced in waiting) >= TRACE_BATCH:
            flush()
        counts["generated"] += 1
        counts["generated_annotations"] += len(generated.annotations)
        counts["dropped_target_annotations"] += generated.dropped
        result.done += 1
    flush()
    counts["pasted_per_category"] = dict(per_category)
    pixels.finish(
        lambda: write_shard(
            out, job.number, "generated", result, (image_lines, ann_lines, groups), counts
        )
    )
    return result


def params_record(
    generated: Generated, reduction: int, options: CopyPasteOptions, task: CopyPasteTask
) -> dict[str, Any]:
    """Every draw of an output, enough to regenerate it (with the options in ``info``)."""
    p = generated.params.placement
    record: dict[str, Any] = {
        "instances": generated.drawn_ids,
        "hflip": p.flip,
        "scale": p.scale,
        "offset": [p.offset_x, p.offset_y],
        "source_reduction": reduction,
    }
    if options.rotate > 0:
        record["rotation"] = p.angle
    if task.category is not None:
        record["category"] = task.category
    return record


def run_originals_shard(job: OriginalsShard) -> ShardResult:
    """Check originals' headers, place them in OUT, and recompute their annotations' area/bbox."""
    result = ShardResult(job.number)
    out = Path(job.out)
    image_lines: list[str] = []
    ann_lines: list[str] = []
    groups: list[list[int]] = []  # [image position, image lines, annotation lines]
    for ref in job.images:
        try:
            path = image_path(job.images_dir, ref)
            images.check_file(path, (ref.width, ref.height))
        except images.ImageError as exc:
            result.broken[ref.position] = f"{ref.file_name}: {exc}"
            continue
        if job.mode != "none":  # originals are written: place the file, recompute area and box
            output.link_or_copy(path, out / "images" / coco.safe_relative(ref.file_name), job.mode)
            # grouped by the image's position: the merge leaves out images found broken later
            image_lines.append(output.dumps(job.records[ref.position]))
            groups.append([ref.position, 1, len(job.annotations[ref.position])])
            for ann in map(usable_record, job.annotations[ref.position]):
                record = ann  # a box-only annotation is its box: written as it came
                if not masks.is_box_only(ann):
                    rle = masks.segmentation_to_rle(ann["segmentation"], ref.height, ref.width)
                    record = {**ann, "area": masks.area(rle), "bbox": masks.bbox(rle)}
                ann_lines.append(output.dumps(record))
        result.done += 1
    write_shard(out, job.number, "originals", result, (image_lines, ann_lines, groups), {})
    return result


#: Parsed records of the images a worker's recent shards touched: (run, position) -> records.
_USABLE: OrderedDict[tuple[str, int], list[dict[str, Any]]] = OrderedDict()
USABLE_KEPT = 4096  # images
_USABLE_LOCK = threading.Lock()  # --device runs shards in threads


def _usable(
    annotations: dict[int, list[dict[str, Any]]],
    run: str | None = None,
    parse: set[int] | None = None,
) -> dict[int, list[dict[str, Any]]]:
    """The shard's index records as the copy-paste code takes them (polygons parsed, cleaned).

    Only the images at positions in ``parse`` (all when None) are parsed; the others' records
    are given as they are (an image used only as a source: ``copy_paste`` parses the drawn
    instances, a handful of its records). With ``run`` (a name for the run and dataset) the
    parsed records of the last ``USABLE_KEPT`` images are kept across the worker's shards: an
    image used by many outputs is parsed once.
    """
    if run is None:
        return {
            p: [usable_record(a) for a in anns] if parse is None or p in parse else anns
            for p, anns in annotations.items()
        }
    usable = {}
    with _USABLE_LOCK:
        if _USABLE and next(iter(_USABLE))[0].split(":")[0] != run.split(":")[0]:
            _USABLE.clear()  # another run: its files may differ
        for p, anns in annotations.items():
            records = _USABLE.get((run, p))
            if records is None and parse is not None and p not in parse:
                usable[p] = anns
                continue
            if records is None:
                records = _USABLE[(run, p)] = [usable_record(a) for a in anns]
                if len(_USABLE) > USABLE_KEPT:
                    _USABLE.popitem(last=False)
            else:
                _USABLE.move_to_end((run, p))
            usable[p] = records
    return usable


def forget_usable() -> None:
    """Drop the records kept across shards, and their masks (the run is over)."""
    with _USABLE_LOCK:
        _USABLE.clear()
    forget_target_masks()


def output_name(gen_dir: str, index: int) -> str:
    return f"{gen_dir}/{index:06d}.jpg"


#: What a copy-paste shard holds and its result file says (recorded in the manifest, so
#: ``--resume`` refuses a run whose finished shards were made otherwise): 3 = the outputs of
#: ``plan.affinity_shards``; one file, its status on the first line, then its image records,
#: then its annotation records, each line led by its output's index (generated) or its image's
#: position (originals) and a tab. 4 = the same, with a source drawn small averaged down from
#: its whole decode (``images.reduce``; 3: decoded again, DCT-scaled): other pixels, so a run
#: interrupted under 3 is not finished under 4. 5 = the outputs grouped into shards otherwise
#: (``plan._affinity_order``), and the records without a prefix: the status's ``groups`` lists,
#: in the order written, each output's index (or original's position) and its count of image
#: and annotation lines.
SHARD_FORMAT = 5


def write_shard(
    out: Path,
    number: int,
    kind: str,
    result: ShardResult,
    records: tuple[list[str], list[str], list[list[int]]],
    counts: dict[str, int],
) -> None:
    """A shard's one result file, written atomically after its images (its presence marks the
    shard done): the status on the first line, then its records as JSON lines, images first.
    ``records`` holds the image lines, the annotation lines and the groups: ``[key, images,
    annotations]`` for each output (key: its index) or original (key: its position), in order.

    One file, not one per part: on some file systems each new file costs 0.2-0.8 ms of kernel
    time, and each fsync more (a 640x480 JPEG encodes in about 1 ms).
    """
    image_lines, ann_lines, groups = records
    status = {
        "kind": kind,
        "broken": {str(k): v for k, v in result.broken.items()},
        "broken_inputs": result.broken_inputs,
        "skipped": result.skipped,
        "counts": counts,
        "lines": {"images": len(image_lines), "annotations": len(ann_lines)},
        "groups": groups,
    }
    output.atomic_write_chunks(
        output.shard_path(out, number),
        (line + "\n" for line in (output.dumps(status), *image_lines, *ann_lines)),
    )


def shard_records(out: Path, number: int, status: dict[str, Any], part: str) -> Iterator[str]:
    """For each of a shard's groups in order, the text of its ``part`` ("images" or
    "annotations") records joined by commas, as a JSON array holds them ("" for none);
    ``status`` is the shard's (``output.read_shard``). One string per output, not per record:
    the merge joins 2,000 outputs' 28,000 lines in a few milliseconds."""
    lines = status["lines"]
    skip = 1 + (lines["images"] if part == "annotations" else 0)
    column = 1 if part == "images" else 2
    path = output.shard_path(out, number)
    with naming(path), path.open(encoding="utf-8") as f:
        records = itertools.islice(f, skip, skip + lines[part])
        for group in status["groups"]:
            # JSON text holds no raw newline: each record is one line
            yield "".join(itertools.islice(records, group[column]))[:-1].replace("\n", ",")
