"""CutMix shards: the worker job, and the device path that mixes batches with PyTorch."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cpgen import images, output
from cpgen.cutmix.options import COLUMNS, CutMixOptions, RunOptions
from cpgen.cutmix.plan import CutMixTask, Prepared, prepare
from cpgen.ops.cutmix import paste_box, resize
from cpgen.runner import setup_worker, thread_pool
from cpgen.worker_images import Shared, WorkerImages

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
    #: the run's name, the bytes of decoded images each worker keeps across shards
    #: (``worker_images``; 0: none), and the folder where the run's workers share decodes with
    #: what each may write there ("" and 0 for none; ``image_store``); no output byte changes
    cache: tuple[str, int, str, int] = ("", 0, "", 0)
    #: positions of the images a later shard reads too: kept by the worker while they fit
    later: frozenset[int] = frozenset()


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


#: The decoded images of this worker process, kept across shards (``worker_images``).
WORKER_IMAGES = WorkerImages()

#: Reads one of a shard's images: the pixels, and whether the array is shared (held by the
#: worker's cache: not to be modified).
Reader = Callable[[ImageRef], Shared]


def _load(src: str, ref: ImageRef) -> images.Image:
    return images.load(Path(src) / ref.file, apply_orientation=True)


def shard_reader(job: CutMixShard) -> Reader:
    """How ``job`` reads its images: through this worker's cache where the run keeps one
    (an image stays while this shard or a later one reads it again, and is shared with the
    run's other workers where it has a store), else decoded each time.

    With ``--size`` the cache holds each image at that size: every use resizes it to the size
    (a base to ``--size``, a patch to its base's), so the resize is made once and a large photo
    takes the memory of a small one; the pixels are those the use would make.
    Thread-safe: ``--device`` reads a batch in threads."""
    run, budget, store, store_bytes = job.cache
    if budget <= 0:
        return lambda ref: (_load(job.src, ref), False)
    WORKER_IMAGES.configure(run, budget, store, store_bytes)
    left = Counter(p for t in job.tasks for p in (t.base, t.patch))
    lock = threading.Lock()
    size = job.options.size
    height, width = size if size is not None else (0, 0)

    def load(ref: ImageRef) -> images.Image:
        decoded = _load(job.src, ref)
        return decoded if size is None else resize(decoded, height, width)

    def read(ref: ImageRef) -> Shared:
        with lock:
            left[ref.position] -= 1
            keep = left[ref.position] > 0 or ref.position in job.later
        key = (job.src, ref.file, width, height)  # (0, 0): at its own size
        return WORKER_IMAGES.take(key, lambda: load(ref), keep)

    return read


def _load_task(job: CutMixShard, task: CutMixTask, read: Reader) -> Prepared | tuple[str, str]:
    """Decode and prepare a task's images, or (file, reason) for the first unusable one."""
    loaded: list[Shared] = []
    for ref in (job.images[task.base], job.images[task.patch]):
        try:
            loaded.append(read(ref))
        except images.ImageError as exc:
            return ref.file, str(exc)
    (base, shared), (patch, _) = loaded
    prepared = prepare(task.seed, base, patch, job.options)
    if shared and prepared.base is base:  # kept at its size: the box is pasted into a copy
        prepared.base = base.copy()
    return prepared


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
    read = shard_reader(job)
    for task in job.tasks:
        prepared = _load_task(job, task, read)
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
    readers = {job.number: shard_reader(job) for job in payloads}
    work = [(job, task) for job in payloads for task in job.tasks]
    results = {job.number: ShardResult(job.number) for job in payloads}
    rows: dict[int, list[list[Any]]] = {job.number: [] for job in payloads}
    left = {job.number: len(job.tasks) for job in payloads}
    bar = tqdm(desc="cutmix", unit="img", disable=not run_options.progress, dynamic_ncols=True)
    try:
        with thread_pool(run_options.workers) as pool:
            for start in range(0, len(work), run_options.batch_size):
                batch = work[start : start + run_options.batch_size]
                loaded = list(pool.map(lambda w: _load_task(*w, readers[w[0].number]), batch))
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
