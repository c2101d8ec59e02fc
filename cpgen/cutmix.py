"""`cpgen cutmix`: CutMix (Yun et al., ICCV 2019) over an image folder, Composer-exact.

read + check (datasets.folders) -> plan (pure, seeded: :func:`plan`) -> shards in workers
(:func:`run_cutmix_shard`), or batches mixed by PyTorch on a device (:func:`run_device`) ->
merge (``labels.csv``, ``classes.json``, ``soft_labels.npy``) -> summary.

One output, given its task seed:

1. The base is the next input image (cycling through SRC in torchvision's order); the patch is a
   random other image (``PLAN_STREAM`` of the task's generator).
2. Both are decoded with their EXIF orientation applied (a phone photo comes out upright, like
   its class mates), as 8-bit BGR. The base keeps its size, or is resized to ``--size``; the
   patch is resized to the base's size: INTER_AREA when shrinking both sides, INTER_LINEAR
   otherwise (:func:`cpgen.ops.cutmix.resize`).
3. lambda ~ Beta(alpha, alpha) and the box centre are drawn with numpy from ``PARAMS_STREAM``
   (:func:`cpgen.sampling.sample_cutmix`); the box is Composer's ``_rand_bbox`` box, clipped.
4. The box's pixels are copied from the patch; the base class weight is
   ``1 - box_area / image_area``. The image is written as ``OUT/images/<index:06d>.jpg``.

Because all randomness is drawn per task with numpy, and decoding, resizing and encoding happen
the same way on both paths, ``-j 1``, ``-j N``, any backend and ``--device cpu|cuda`` write the
same bytes: the device only does the box copy.

Output: ``images/<index:06d>.jpg``; ``labels.csv`` (:data:`COLUMNS`; the box in output pixels,
rows ``[top, bottom)``, columns ``[left, right)``; ``file`` relative to OUT, ``base_file`` and
``patch_file`` relative to SRC); ``classes.json``, a JSON list (index -> class name, torchvision's
``dataset.classes``); with ``soft_labels``, ``soft_labels.npy`` (N x C float32, row i for
labels.csv row i); ``metadata.jsonl``, the same rows (``file`` as ``file_name``) and soft labels
for Hugging Face's ``load_dataset("imagefolder", data_dir=OUT)``. Shards of 16 outputs write
their result file last, whatever the path, so ``--resume`` keeps finished shards, and may even
switch between the numpy and device paths. A finished run keeps only its manifest, as
``.cpgen.json``: no folder but ``images/`` is left for a folder-based loader to take for a class.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cpgen import __version__, images, output, runner
from cpgen.datasets import folders
from cpgen.errors import UsageError
from cpgen.ops.cutmix import Box, base_weight, paste_box, resize
from cpgen.plan import PARAMS_STREAM, PLAN_STREAM, shard, task_rng, task_seed
from cpgen.runner import run_jobs, setup_worker
from cpgen.sampling import choose_other, sample_cutmix

SHARD_SIZE = 16
LABELS = "labels.csv"
CLASSES = "classes.json"
SOFT_LABELS = "soft_labels.npy"
COLUMNS = (
    "file",
    "base_class",
    "patch_class",
    "base_weight",
    "top",
    "left",
    "bottom",
    "right",
    "base_file",
    "patch_file",
    "seed",
)


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (height by width, pixels) as ``(height, width)``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise UsageError(f"--size {text!r} is not HxW", hint="for example --size 224x224")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class CutMixOptions:
    """Options that decide the output (recorded in the manifest)."""

    num_images: int | None = None
    seed: int = 0
    alpha: float = 1.0
    length: float | None = None
    uniform_sampling: bool = False
    size: tuple[int, int] | None = None  # (height, width) of every output, pixels
    quality: int = 95
    soft_labels: bool = False

    def __post_init__(self) -> None:
        if self.num_images is not None and self.num_images < 1:
            raise UsageError("--num-images must be at least 1")
        if not 0 <= self.seed < 2**63:
            raise UsageError("--seed must be in 0 .. 2**63 - 1")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise UsageError(f"--alpha must be a finite number >= 0, got {self.alpha}")
        if self.length is not None and not 0 < self.length <= 1:
            raise UsageError(
                f"--length must be in (0, 1] (a side relative to the image), got {self.length}"
            )
        if self.size is not None:
            height, width = self.size
            if height < 1 or width < 1:
                raise UsageError(f"--size {height}x{width} must be at least 1x1")
            if height * width > images.MAX_PIXELS:
                raise UsageError(f"--size {height}x{width} is over {images.MAX_PIXELS:,} pixels")
        if not 1 <= self.quality <= 100:
            raise UsageError("--quality must be in 1 .. 100")


@dataclass(frozen=True)
class RunOptions(runner.RunOptions):
    """How a cutmix run executes; never changes what it writes."""

    device: str | None = None  # torch device for the box copies; None: numpy in the workers
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.device is not None and re.fullmatch(r"cpu|cuda(:\d+)?", self.device) is None:
            raise UsageError(f"--device {self.device!r} is not cpu, cuda or cuda:N")


def check_device(device: str, options: CutMixOptions) -> None:
    """Refuse ``--device`` before any work when it cannot run: no --size, no torch, no CUDA."""
    if options.size is None:
        raise UsageError(f"--device {device} needs --size HxW", hint="a device batch is one tensor")
    try:
        import torch
    except ImportError:
        raise UsageError(
            f"--device {device} needs PyTorch, which is not installed",
            hint="pip install 'cpgen[gpu]', or leave --device out to mix with numpy",
        ) from None
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {device}: CUDA is not available to PyTorch {torch.__version__}",
                hint="leave --device out (numpy) or use --device cpu",
            )
        number = int(device.partition(":")[2] or 0)
        if number >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA devices")


# ---------------------------------------------------------------------------------------------
# Plan


@dataclass(frozen=True)
class CutMixTask:
    """One output: positions of its base and patch images in the index, and its seed."""

    index: int
    base: int
    patch: int
    seed: int


def plan_tasks(num_inputs: int, num_outputs: int, seed: int) -> list[CutMixTask]:
    """Bases cycle through the inputs; each patch is a uniform random other input."""
    if num_inputs < 2:
        raise ValueError("cutmix needs at least two inputs")
    tasks = []
    for index in range(num_outputs):
        base = index % num_inputs
        seed_i = task_seed(seed, index)
        patch = choose_other(task_rng(seed_i, PLAN_STREAM), num_inputs, base)
        tasks.append(CutMixTask(index, base, patch, seed_i))
    return tasks


def plan(index: folders.FolderIndex, options: CutMixOptions) -> list[CutMixTask]:
    num = options.num_images if options.num_images is not None else len(index.files)
    return plan_tasks(len(index.files), num, options.seed)


def plan_rows(index: folders.FolderIndex, tasks: list[CutMixTask]) -> list[dict[str, Any]]:
    """The plan for ``--dry-run``: output index, base and patch files, seed."""
    return [
        {
            "index": t.index,
            "base": index.files[t.base],
            "patch": index.files[t.patch],
            "seed": t.seed,
        }
        for t in tasks
    ]


# ---------------------------------------------------------------------------------------------
# One output, in memory


@dataclass
class Prepared:
    """A base and its patch at the output size, and the box to copy (not yet mixed)."""

    base: images.Image
    patch: images.Image
    box: Box
    base_weight: float


def prepare(
    task_seed: int, base: images.Image, patch: images.Image, options: CutMixOptions
) -> Prepared:
    """Resize the base (to ``--size``) and the patch (to the base), and draw the box."""
    if options.size is not None:
        base = resize(base, *options.size)
    height, width = base.shape[:2]
    patch = resize(patch, height, width)
    params = sample_cutmix(
        task_rng(task_seed, PARAMS_STREAM),
        height,
        width,
        options.alpha,
        options.length,
        options.uniform_sampling,
    )
    return Prepared(base, patch, params.box, base_weight(params.box, height, width))


# ---------------------------------------------------------------------------------------------
# Shards (run in workers: small picklable payloads, small results)


@dataclass(frozen=True)
class ImageRef:
    """What a worker needs to read one input image."""

    position: int
    file: str  # relative to SRC, POSIX
    label: int


@dataclass(frozen=True)
class CutMixShard:
    """One worker job: consecutive tasks and the refs of the images they touch (no pixels)."""

    number: int
    tasks: list[CutMixTask]
    images: dict[int, ImageRef]
    classes: tuple[str, ...]
    options: CutMixOptions
    src: str
    out: str


@dataclass
class ShardResult:
    """What a shard did; the same content goes to its result file with the label rows."""

    number: int
    done: int = 0  # outputs written
    broken: dict[str, str] = field(default_factory=dict)  # input file -> reason
    skipped: list[str] = field(default_factory=list)  # outputs not written, with reason


def output_name(index: int) -> str:
    """An output's file, relative to OUT."""
    return f"images/{index:06d}.jpg"


def _load(src: str, ref: ImageRef) -> images.Image:
    return images.load(Path(src) / ref.file, apply_orientation=True)


def _load_task(job: CutMixShard, task: CutMixTask) -> Prepared | tuple[str, str]:
    """Decode and prepare a task's images, or (file, reason) for the first unusable one."""
    loaded: list[images.Image] = []
    for ref in (job.images[task.base], job.images[task.patch]):
        try:
            loaded.append(_load(job.src, ref))
        except images.ImageError as exc:
            return ref.file, str(exc)
    return prepare(task.seed, loaded[0], loaded[1], job.options)


def _record_unusable(result: ShardResult, task: CutMixTask, problem: tuple[str, str]) -> None:
    result.broken[problem[0]] = problem[1]
    result.skipped.append(f"{output_name(task.index)}: input image {problem[0]} unusable")


def _write_output(job: CutMixShard, task: CutMixTask, mixed: images.Image) -> None:
    data = images.encode_jpeg(mixed, job.options.quality)
    images.write_output_image(Path(job.out) / output_name(task.index), data)


def _row(job: CutMixShard, task: CutMixTask, prepared: Prepared) -> list[Any]:
    base, patch = job.images[task.base], job.images[task.patch]
    return [
        output_name(task.index),
        job.classes[base.label],
        job.classes[patch.label],
        prepared.base_weight,
        *prepared.box,
        base.file,
        patch.file,
        task.seed,
    ]


def run_cutmix_shard(job: CutMixShard) -> ShardResult:
    """Mix, encode and write a shard's outputs with numpy, then its result file (written last)."""
    result = ShardResult(job.number)
    rows: list[list[Any]] = []
    for task in job.tasks:
        prepared = _load_task(job, task)
        if not isinstance(prepared, Prepared):
            _record_unusable(result, task, prepared)
            continue
        mixed = paste_box(prepared.base, prepared.patch, prepared.box)
        _write_output(job, task, mixed)
        rows.append(_row(job, task, prepared))
        result.done += 1
    _write_shard(Path(job.out), job.number, rows, result)
    return result


def run_device(payloads: list[CutMixShard], run_options: RunOptions) -> None:
    """Run shards in this process as device batches of ``--batch-size`` outputs: decode and
    resize in ``--workers`` threads (OpenCV releases the GIL; no pixels are pickled), copy the
    boxes with PyTorch, encode and write in the threads. A batch may span shards; a shard's
    result file is written once all its outputs are, with the same content as a worker's."""
    from tqdm import tqdm

    setup_worker()
    device = run_options.device
    assert device is not None
    work = [(job, task) for job in payloads for task in job.tasks]
    results = {job.number: ShardResult(job.number) for job in payloads}
    rows: dict[int, list[list[Any]]] = {job.number: [] for job in payloads}
    left = {job.number: len(job.tasks) for job in payloads}
    bar = tqdm(desc="cutmix", unit="img", disable=not run_options.progress, dynamic_ncols=True)
    try:
        with ThreadPoolExecutor(max_workers=run_options.workers) as pool:
            for start in range(0, len(work), run_options.batch_size):
                batch = work[start : start + run_options.batch_size]
                loaded = list(pool.map(lambda w: _load_task(*w), batch))
                ready = [
                    (job, task, p)
                    for (job, task), p in zip(batch, loaded, strict=True)
                    if isinstance(p, Prepared)
                ]
                if ready:
                    _mix_on_device(ready, device, pool)
                for (job, task), outcome in zip(batch, loaded, strict=True):
                    result = results[job.number]
                    if isinstance(outcome, Prepared):
                        rows[job.number].append(_row(job, task, outcome))
                        result.done += 1
                    else:
                        _record_unusable(result, task, outcome)
                    left[job.number] -= 1
                    if left[job.number] == 0:
                        _write_shard(Path(job.out), job.number, rows.pop(job.number), result)
                bar.update(len(batch))
    finally:
        bar.close()


def _mix_on_device(
    ready: list[tuple[CutMixShard, CutMixTask, Prepared]], device: str, pool: ThreadPoolExecutor
) -> None:
    """Copy each output's box on ``device`` in one batch; encode and write in ``pool``."""
    import torch

    from cpgen.functional import paste_boxes

    base = torch.from_numpy(np.stack([p.base for _, _, p in ready])).to(device)
    patch = torch.from_numpy(np.stack([p.patch for _, _, p in ready])).to(device)
    boxes = torch.tensor([list(p.box) for _, _, p in ready], dtype=torch.long)
    # NHWC -> NCHW views, the layout of Composer's batches
    mixed = paste_boxes(base.permute(0, 3, 1, 2), patch.permute(0, 3, 1, 2), boxes)
    mixed_images = mixed.permute(0, 2, 3, 1).cpu().numpy()

    def write(k: int) -> None:
        job, task, _ = ready[k]
        _write_output(job, task, np.ascontiguousarray(mixed_images[k]))

    list(pool.map(write, range(len(ready))))


def _write_shard(out: Path, number: int, rows: list[list[Any]], result: ShardResult) -> None:
    content = {
        "kind": "cutmix",
        "columns": list(COLUMNS),
        "rows": rows,
        "broken": result.broken,
        "skipped": result.skipped,
    }
    output.atomic_write_text(output.shard_path(out, number), output.dumps(content))


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

    payloads = []
    for chunk in shard(tasks, SHARD_SIZE):
        touched = sorted({t.base for t in chunk} | {t.patch for t in chunk})
        refs = {p: ImageRef(p, index.files[p], index.labels[p]) for p in touched}
        payloads.append(
            CutMixShard(
                len(payloads), chunk, refs, index.classes, options, str(index.root), str(out)
            )
        )
    pending = [p for p in payloads if p.number not in finished]
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
