"""Shard workers: small picklable payloads in, images and JSON-lines records out.

A shard writes its images, then its records as JSON lines, then its status file (last: the mark
that it is done, which makes ``--resume`` exact). Workers assign every id, so the merge only
joins text.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpgen import images, masks, output
from cpgen.copypaste.compose import copy_paste, draw_params, source_reduction
from cpgen.copypaste.options import CopyPasteOptions
from cpgen.copypaste.sources import ImageRef, ShardImages, image_path
from cpgen.datasets import coco
from cpgen.plan import CopyPasteTask


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
            result.skipped.append(f"{output_name(job.gen_dir, task.index)}: input image unusable")
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
        file_name = output_name(job.gen_dir, task.index)
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
    write_shard(out, job.number, "generated", result, image_lines, ann_lines, counts)
    return result


def run_originals_shard(job: OriginalsShard) -> ShardResult:
    """Check originals' headers, place them in OUT, and recompute their annotations' area/bbox."""
    result = ShardResult(job.number)
    out = Path(job.out)
    image_lines: list[str] = []
    ann_lines: list[str] = []
    for ref in job.images:
        try:
            path = image_path(job.images_dir, ref)
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
    write_shard(out, job.number, "originals", result, image_lines, ann_lines, {})
    return result


def output_name(gen_dir: str, index: int) -> str:
    return f"{gen_dir}/{index:06d}.jpg"


def part_path(out: Path, number: int, part: str) -> Path:
    return output.shard_path(out, number).with_suffix(f".{part}.jsonl")


def write_shard(
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
        output.atomic_write_chunks(part_path(out, number, part), (line + "\n" for line in lines))
    status = {
        "kind": kind,
        "broken": {str(k): v for k, v in result.broken.items()},
        "skipped": result.skipped,
        "counts": counts,
    }
    output.atomic_write_text(output.shard_path(out, number), output.dumps(status))
