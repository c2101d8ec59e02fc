"""A whole CutMix run: shards, merge (labels.csv, classes.json, soft labels), summary."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cpgen import __version__, images, output
from cpgen.cutmix.options import (
    CLASSES,
    COLUMNS,
    LABELS,
    SHARD_SIZE,
    SOFT_LABELS,
    CutMixOptions,
    RunOptions,
    check_device,
)
from cpgen.cutmix.plan import plan
from cpgen.cutmix.shard import (
    WORKER_IMAGES,
    CutMixShard,
    ImageRef,
    run_cutmix_shard,
    run_device,
)
from cpgen.datasets import folders
from cpgen.image_store import reads_per_image
from cpgen.plan import shard
from cpgen.runner import run_jobs
from cpgen.worker_images import run_cache

# ---------------------------------------------------------------------------------------------
# The whole run


@dataclass
class Summary:
    """What a run did; printed as one line, or as one JSON object with ``--json``."""

    command: str
    out: str
    labels: str
    images: int = 0  # readable input images
    classes: int = 0
    generated: int = 0
    skipped_outputs: int = 0
    broken_images: list[str] = field(default_factory=list)
    ignored_files: int = 0
    empty_classes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def skipped_items(self) -> int:
        return self.skipped_outputs + len(self.broken_images)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "skipped_items": self.skipped_items}

    def line(self) -> str:
        text = (
            f"cpgen {self.command}: {self.generated} images generated from {self.images} images "
            f"in {self.classes} classes, in {self.seconds:.1f} s -> {self.labels}"
        )
        if self.skipped_items:
            text += (
                f"; skipped: {self.skipped_outputs} outputs, {len(self.broken_images)} broken "
                "images"
            )
        return text


def options_record(options: CutMixOptions) -> dict[str, Any]:
    record = asdict(options)
    record["size"] = list(options.size) if options.size is not None else None
    return record


def warnings(index: folders.FolderIndex) -> list[str]:
    """Things about the input worth a line on stderr that are not skipped items."""
    lines = [
        f"warning: class folder {name!r} holds no readable image" for name in index.empty_classes
    ]
    if len(index.classes) == 1:
        lines.append(f"warning: a single class ({index.classes[0]!r}): every label is that class")
    at_root = [rel for rel in index.ignored if "/" not in rel and folders.is_image_name(rel)]
    if at_root:
        lines.append(
            f"warning: {_count(len(at_root), 'image')} at the root of SRC ignored (not in a "
            f"class folder): {_some(at_root)}"
        )
    in_classes = [rel for rel in index.ignored if "/" in rel]
    if in_classes:
        kinds = ", ".join(folders.IMAGE_EXTENSIONS)
        lines.append(
            f"warning: {_count(len(in_classes), 'file')} in class folders ignored (not {kinds}): "
            f"{_some(in_classes)}"
        )
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _some(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def run(
    index: folders.FolderIndex,
    out: Path,
    options: CutMixOptions,
    run_options: RunOptions,
    report: Callable[[str], None] | None = None,
) -> Summary:
    """Generate the dataset into ``out`` (or, with ``resume``, finish it) and return the summary.

    ``report(message)`` receives the warnings and one line per broken image (stderr in the CLI).
    """
    started = time.perf_counter()
    if run_options.device is not None:
        check_device(run_options.device, options)
    tasks = plan(index, options)
    manifest = {
        "tool": "cpgen",
        "version": __version__,
        "command": "cutmix",
        "source": {"src": str(index.root.resolve()), "sha256": index_digest(index)},
        "options": options_record(options),
    }
    finished = output.begin_run(
        out, manifest, overwrite=run_options.overwrite, resume=run_options.resume
    )
    if report is not None:
        for line in warnings(index):
            report(line)

    chunks = shard(tasks, SHARD_SIZE)
    touched = [sorted({t.base for t in chunk} | {t.patch for t in chunk}) for chunk in chunks]
    last_use = {p: k for k, read in enumerate(touched) for p in read}
    # workers on this machine share their decodes (image_store) where shards read the same images
    with run_cache(run_options, lambda: reads_per_image(touched)) as cache:
        payloads = [
            CutMixShard(
                k,
                chunk,
                {p: ImageRef(p, index.files[p], index.labels[p]) for p in touched[k]},
                index.classes,
                options,
                str(index.root),
                str(out),
                cache,
                frozenset(p for p in touched[k] if last_use[p] > k),
            )
            for k, chunk in enumerate(chunks)
        ]
        pending = [p for p in payloads if p.number not in finished]
        try:
            if run_options.device is None:
                run_jobs(
                    run_cutmix_shard,
                    pending,
                    workers=run_options.workers,
                    backend=run_options.backend,
                    progress=run_options.progress,
                    desc="cutmix",
                    on_result=lambda r: len(payloads[r.number].tasks),
                    total=len(tasks),
                    initial=sum(len(p.tasks) for p in payloads if p.number in finished),
                )
            else:
                run_device(pending, run_options)
        finally:
            WORKER_IMAGES.clear()  # shards run in this process (one worker, --device) kept images

    summary = merge(index, out, options, len(payloads))
    summary.seconds = round(time.perf_counter() - started, 3)
    output.finish_run(out, {**manifest, "state": "done", "summary": summary.to_json()})
    if report is not None:
        for name in summary.broken_images:
            report(f"skipped image {name}")
    return summary


def index_digest(index: folders.FolderIndex) -> str:
    """sha256 of the classes and readable files, so a resume can tell that SRC changed."""
    text = "\n".join(
        [*index.classes, "", *(f"{f}\t{c}" for f, c in zip(index.files, index.labels, strict=True))]
    )
    return hashlib.sha256(text.encode()).hexdigest()


def merge(
    index: folders.FolderIndex, out: Path, options: CutMixOptions, num_shards: int
) -> Summary:
    """Read shard results in order; write ``labels.csv``, ``classes.json``, with soft labels
    ``soft_labels.npy`` (N x C float32, aligned with the rows), and ``metadata.jsonl`` (the
    same rows, and soft labels, for Hugging Face's image-folder loader), each atomically."""
    summary = Summary("cutmix", str(out), str(out / LABELS))
    summary.images = len(index.files)
    summary.classes = len(index.classes)
    summary.ignored_files = len(index.ignored)
    summary.empty_classes = index.empty_classes
    broken = {rel: reason for rel, reason in index.broken}

    def rows() -> Iterator[list[Any]]:
        for number in range(num_shards):
            data = output.read_shard(out, number)
            for rel, reason in data["broken"].items():
                broken.setdefault(rel, reason)
            summary.skipped_outputs += len(data["skipped"])
            yield from data["rows"]

    all_rows = list(rows())
    summary.generated = len(all_rows)
    summary.broken_images = [f"{rel}: {reason}" for rel, reason in sorted(broken.items())]

    output.atomic_write_chunks(out / LABELS, _csv_chunks(all_rows))
    output.atomic_write_text(
        out / CLASSES, json.dumps(list(index.classes), ensure_ascii=False) + "\n"
    )
    soft: np.ndarray | None = None
    if options.soft_labels:
        class_of = {name: i for i, name in enumerate(index.classes)}
        weights = [(class_of[r[1]], class_of[r[2]], r[3]) for r in all_rows]
        soft = soft_labels(weights, len(index.classes))
        buffer = io.BytesIO()
        np.save(buffer, soft)
        images.atomic_write_bytes(out / SOFT_LABELS, buffer.getvalue())
    output.atomic_write_chunks(
        out / folders.METADATA, folders.metadata_lines(COLUMNS, all_rows, soft)
    )
    return summary


def soft_labels(rows: list[tuple[int, int, float]], num_classes: int) -> np.ndarray:
    """N x C float32 soft labels from (base class, patch class, base weight) rows, computed as
    Composer does: ``float32(w) * onehot(base) + float32(1 - w) * onehot(patch)``."""
    labels = np.zeros((len(rows), num_classes), dtype=np.float32)
    for i, (base, patch, weight) in enumerate(rows):
        labels[i, base] = np.float32(weight)
        labels[i, patch] += np.float32(1 - weight)
    return labels


def _csv_chunks(rows: list[list[Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for i, row in enumerate(rows):
        writer.writerow(row)
        if i % 1024 == 1023:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
