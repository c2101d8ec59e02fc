"""The whole run: plan, originals then generated shards, merge, summary.

read + validate (datasets.coco) -> plan (plan.py) -> shards in workers (shard.py) -> merge
-> summary.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cpgen import __version__, output
from cpgen.copypaste.inputs import Inputs, prepare
from cpgen.copypaste.options import CopyPasteOptions, options_record
from cpgen.copypaste.shard import (
    SHARD_FORMAT,
    GenerateShard,
    OriginalsShard,
    OutputIds,
    forget_usable,
    run_generate_shard,
    run_originals_shard,
    shard_records,
)
from cpgen.copypaste.sources import (
    WORKER_IMAGES,
    images_by_category,
    refs,
    usable_images,
)
from cpgen.datasets import coco, consumers
from cpgen.errors import DataError
from cpgen.image_store import reads_per_image
from cpgen.plan import AFFINITY_BLOCK, CopyPasteTask, affinity_shards, plan_copypaste, shard
from cpgen.runner import Lazy, RunOptions, run_jobs
from cpgen.worker_images import run_cache

SHARD_SIZE = 16

#: Phase 1 (originals) shards: 64 images each, or more so that there are at most this many
#: (each shard writes and syncs three small files; 50,000 images in 782 shards took 10 s).
MAX_ORIGINALS_SHARDS = 128


def originals_shard_size(num_images: int) -> int:
    """Images per originals shard: a function of the dataset alone, so a resume finds the
    same shards whatever the workers."""
    return max(64, -(-num_images // MAX_ORIGINALS_SHARDS))


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
    pasted_per_category: list[dict[str, Any]] = field(default_factory=list)  # id, name, pasted

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
        if self.pasted_per_category:
            text += "; pasted per category: " + ", ".join(
                f"{c['name']} {c['pasted']}" for c in self.pasted_per_category
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


def plan(
    index: coco.CocoIndex,
    options: CopyPasteOptions,
    broken: Collection[int] = (),
    inputs: Inputs | None = None,
) -> list[CopyPasteTask]:
    """The run's tasks over the usable images (those not in ``broken``).

    ``inputs`` (pool, categories, backgrounds) are read from the options when not given.
    """
    inputs = inputs if inputs is not None else prepare(index, options)
    if inputs.pool:  # targets need no instance of their own: the pool has them
        usable = [i for i in range(len(index.images)) if i not in broken]
        if not usable:
            raise DataError(f"{index.files.annotations}: no usable images")
        _, pasteable = usable_images(inputs.source_index, inputs.source_broken, inputs.selection)
    else:
        usable, pasteable = usable_images(index, broken, inputs.selection)
    by_category = None
    if options.balance == "category":
        by_category = images_by_category(inputs.source_index, pasteable, inputs.selection)
    num = options.num_images if options.num_images is not None else len(index.images)
    return plan_copypaste(
        usable,
        pasteable,
        num,
        options.seed,
        same_dataset=not inputs.pool,
        backgrounds=len(inputs.backgrounds),
        background_frac=options.background_fraction,
        by_category=by_category,
    )


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
    device = getattr(run_options, "device", None)  # --device: cpgen.copypaste.device
    if device is not None:
        from cpgen.copypaste import device as on_device

        on_device.check_device(device, options)
    inputs = prepare(index, options)  # a bad pool, category or background folder stops here
    if not inputs.pool:
        usable_images(index, (), inputs.selection)  # nothing to paste: fails before OUT is touched
    gen_dir = generated_dir(index)
    manifest: dict[str, Any] = {
        "tool": "cpgen",
        "version": __version__,
        "command": "copypaste",
        "source": {
            "annotations": str(index.files.annotations.resolve()),
            "images": str(index.files.images.resolve()),
            "sha256": output.file_digest(index.files.annotations),
        },
        "options": options_record(options),
        "shard_format": SHARD_FORMAT,
    }
    if device is not None:
        manifest["pixels"] = on_device.manifest_record(device)
    if inputs.pool:
        files = inputs.source_index.files
        manifest["pool"] = {
            "annotations": str(files.annotations.resolve()),
            "images": str(files.images.resolve()),
            "sha256": output.file_digest(files.annotations),
        }
    if inputs.backgrounds_dir is not None:
        manifest["backgrounds"] = {
            "folder": str(inputs.backgrounds_dir.resolve()),
            "files": len(inputs.backgrounds),
        }
    finished = output.begin_run(
        out, manifest, overwrite=run_options.overwrite, resume=run_options.resume
    )
    if report is not None:  # problems of the annotation file, before the long part
        for problem, where in index.problems:
            report(f"warning: {problem}: {where}")
        for line in consumers.index_warning_lines(index):  # once: what trips trainers
            report(line)
        for warning in inputs.warnings:
            report(warning)

    def execute(
        payloads: list[Any],
        job: Any,
        desc: str,
        size: Callable[[Any], int],
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
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
            meanwhile=meanwhile,
        )

    # phase 1: check every image's header, place the originals, recompute their areas and boxes
    originals = []
    for chunk in shard(range(len(index.images)), originals_shard_size(len(index.images))):
        originals.append(
            OriginalsShard(
                len(originals),
                list(refs(index, chunk).values()),
                {p: index.anns_by_image[p] if options.originals != "none" else [] for p in chunk},
                options.originals,
                {p: index.images[p] for p in chunk},
                str(index.files.images),
                str(out),
            )
        )
    # the plan is made while the workers place the originals, as if none is broken: made
    # again without those they find broken (rare), it fails where it fails (after the phase)
    ahead: list[list[CopyPasteTask]] = []

    def plan_ahead() -> None:
        with contextlib.suppress(DataError):
            ahead.append(plan(index, options, (), inputs))

    execute(originals, run_originals_shard, "checking images", lambda p: len(p.images), plan_ahead)
    broken = {int(p) for s in range(len(originals)) for p in output.read_shard(out, s)["broken"]}

    # phase 2: generate from the usable images only
    tasks = ahead[0] if ahead and not broken else plan(index, options, broken, inputs)
    first_generate = len(originals)
    most_annotations = max((len(a) for a in index.anns_by_image), default=0)
    most_pasted = max((len(a) for a in inputs.source_index.anns_by_image), default=0)
    ids = OutputIds(
        index.max_image_id() + 1,
        index.max_annotation_id() + 1,
        most_annotations + min(options.max_paste, most_pasted),
    )
    source = inputs.source_index
    chunks = affinity_shards(tasks, SHARD_SIZE, pool=inputs.pool)
    pending = [k for k in range(len(chunks)) if first_generate + k not in finished]
    # the shards not yet made that read each image: a shard's worker keeps those still to be
    # read (payloads are made in the order workers take them, not always the shards' order)
    reads_left = Counter(key for k in pending for key in images_read(chunks[k], inputs.pool))

    def build(k: int) -> GenerateShard:
        """The payload of generate shard ``k``, made when a worker is about to need it (once)."""
        chunk = chunks[k]
        reads_left.subtract(images_read(chunk, inputs.pool))
        targets = {t.target for t in chunk if t.background is None}
        sources = {t.source for t in chunk}
        touched = targets if inputs.pool else targets | sources
        pool_sources = sources if inputs.pool else set()
        dataset_refs = refs(index, touched)
        pool_refs = refs(source, sources) if inputs.pool else {}
        return GenerateShard(
            first_generate + k,
            chunk,
            dataset_refs,
            {p: index.anns_by_image[p] for p in touched},
            options,
            str(index.files.images),
            str(out),
            gen_dir,
            ids,
            inputs.selection,
            inputs.pool,
            pool_refs,
            {p: source.anns_by_image[p] for p in sources} if inputs.pool else {},
            {
                t.background: inputs.backgrounds[t.background]
                for t in chunk
                if t.background is not None
            },
            str(inputs.backgrounds_dir or ""),
            cache,
            frozenset(
                [dataset_refs[p].key for p in touched if reads_left[("t", p)] > 0]
                + [pool_refs[p].key for p in pool_sources if reads_left[("s", p)] > 0]
            ),
        )

    initial = len(tasks) - sum(len(chunks[k]) for k in pending)
    # workers on this machine share their decodes (image_store) where shards read the same images
    with run_cache(
        run_options, lambda: reads_per_image(images_read(c, inputs.pool) for c in chunks)
    ) as cache:
        try:
            if device is None:  # payloads made as workers take them: the main process stays small
                run_jobs(
                    run_generate_shard,
                    Lazy(build, pending),
                    workers=run_options.workers,
                    backend=run_options.backend,
                    progress=run_options.progress,
                    desc="copypaste",
                    on_result=lambda r: r.done,
                    total=len(tasks),
                    initial=initial,
                    reads=lambda i: images_read(chunks[pending[i]], inputs.pool),
                )
            else:
                payloads = [build(k) for k in pending]
                on_device.run_device(payloads, run_options, len(tasks), initial)
        finally:
            WORKER_IMAGES.clear()  # shards run in this process (one worker, --device) kept images
            forget_usable()
    summary = merge(index, out, options, len(originals) + len(chunks), inputs)
    summary.seconds = round(time.perf_counter() - started, 3)
    output.write_manifest(out, {**manifest, "state": "done", "summary": summary.to_json()})
    if report is not None:
        for name in summary.broken_images:
            report(f"skipped image {name}")
    return summary


def images_read(chunk: list[CopyPasteTask], pool: bool) -> set[tuple[str, int]]:
    """The images a shard reads: ``("t", position)`` for the dataset's, ``("s", position)``
    for the pool's."""
    read = {("t", t.target) for t in chunk if t.background is None}
    return read | {("s" if pool else "t", t.source) for t in chunk}


def merge(
    index: coco.CocoIndex,
    out: Path,
    options: CopyPasteOptions,
    num_shards: int,
    inputs: Inputs | None = None,
) -> Summary:
    """Write ``annotations.json`` atomically from the shards' JSON lines: the originals in
    shard order, then the generated records in output order (each affinity block's shards
    merged by the output indices their statuses list).

    Workers assigned every id, so this only joins text; originals found broken by any shard
    (even a later one) are left out, with their placed files. ``inputs`` gives the output's
    categories (with a pool's appended) and the inputs found broken before the run.
    """
    categories = inputs.categories if inputs is not None else index.categories
    broken_inputs = dict.fromkeys(inputs.broken if inputs is not None else [])
    per_category: dict[int, int] = {}
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
        broken_inputs.update(dict.fromkeys(status.get("broken_inputs", {}).values()))
        summary.skipped_outputs += len(status["skipped"])
        for key, value in status["counts"].items():
            if key == "pasted_per_category":
                for cat, n in value.items():
                    per_category[int(cat)] = per_category.get(int(cat), 0) + n
            else:
                setattr(summary, key, getattr(summary, key) + value)

    def records(part: str) -> Iterator[str]:
        """The ``part`` records, an original's or an output's at a time (joined by commas)."""
        # statuses are read again where needed (their groups are not all kept at once)
        for number in (n for n, kind in enumerate(kinds) if kind == "originals"):
            status = output.read_shard(out, number)
            texts = shard_records(out, number, status, part)
            for (position, *_), text in zip(status["groups"], texts, strict=True):
                if position not in broken:
                    summary.originals += part == "images"
                    if text:
                        yield text
        generated = [n for n, kind in enumerate(kinds) if kind == "generated"]
        per_block = AFFINITY_BLOCK // SHARD_SIZE  # a block's shards hold its outputs alone
        for first in range(0, len(generated), per_block):
            statuses = {n: output.read_shard(out, n) for n in generated[first:][:per_block]}
            texts = {n: shard_records(out, n, status, part) for n, status in statuses.items()}
            # each shard lists its outputs in order: taking them in output order reads each
            # shard's records in the order written
            for _, number in sorted((g[0], n) for n, s in statuses.items() for g in s["groups"]):
                text = next(texts[number])
                if text:
                    yield text

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
        categories=categories,
        images=records("images"),
        annotations=records("annotations"),
        extra={k: v for k, v in index.top.items() if k not in ("info", "licenses")},
    )
    summary.broken_images = [broken[p] for p in sorted(broken)] + list(broken_inputs)
    names = {c["id"]: str(c.get("name")) for c in categories}
    summary.pasted_per_category = [
        {"id": cat, "name": names.get(cat, str(cat)), "pasted": n}
        for cat, n in sorted(per_category.items())
    ]
    if options.originals != "none":  # a broken original leaves the output: its placed file too
        for p in broken:
            rel = coco.safe_relative(index.images[p]["file_name"])
            if rel is not None:
                (out / "images" / rel).unlink(missing_ok=True)
    summary.images = summary.originals + summary.generated
    return summary
