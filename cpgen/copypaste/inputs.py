"""Read and check everything a run takes besides the dataset, before any work starts.

The object pool (``--paste-from`` or ``--paste-ann``/``--paste-images``), the categories to
paste (``--categories``) and the background photos (``--backgrounds``) are resolved here into
one ``Inputs``; bad ones stop the run with a one-line error (UsageError for options, DataError
for data) before OUT is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpgen import images
from cpgen.copypaste.options import CopyPasteOptions
from cpgen.copypaste.sources import (
    POOL,
    Selection,
    by_name,
    image_path,
    merge_categories,
    refs,
    resolve_categories,
    usable_images,
)
from cpgen.copypaste.targets import check_backgrounds
from cpgen.datasets import coco
from cpgen.errors import DataError, UsageError


@dataclass
class Inputs:
    """What a run reads: targets from ``index``, instances from ``source_index`` (the pool's
    or the same), and backgrounds; ``broken`` names pool images and backgrounds found unusable
    before the run (each skipped and counted)."""

    index: coco.CocoIndex
    source_index: coco.CocoIndex
    selection: Selection
    categories: list[dict[str, Any]]
    backgrounds: list[str] = field(default_factory=list)
    backgrounds_dir: Path | None = None
    source_broken: dict[int, str] = field(default_factory=dict)  # pool position -> reason
    broken: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def pool(self) -> bool:
        return self.source_index is not self.index


def pool_files(options: CopyPasteOptions) -> coco.CocoFiles | None:
    """Where the object pool is, from ``--paste-from`` or ``--paste-ann``/``--paste-images``."""
    if options.paste_from is not None:
        folder = Path(options.paste_from)
        if not folder.is_dir():
            raise UsageError(f"--paste-from {folder} is not a folder")
        return coco.find_layout(folder)
    if options.paste_ann is not None and options.paste_images is not None:
        ann, folder = Path(options.paste_ann), Path(options.paste_images)
        if not ann.is_file():
            raise UsageError(f"--paste-ann {ann} is not a file")
        if not folder.is_dir():
            raise UsageError(f"--paste-images {folder} is not a folder")
        return coco.CocoFiles(ann, folder)
    return None


def prepare(index: coco.CocoIndex, options: CopyPasteOptions) -> Inputs:
    """Load the pool, resolve the categories, check the backgrounds (all before any work)."""
    files = pool_files(options)
    source_index = coco.load(files) if files is not None else index
    where = f"the pool {files.annotations}" if files is not None else "the dataset"
    wanted = None
    if options.categories is not None:
        wanted = resolve_categories(options.categories, source_index.categories, where)
    warnings: list[str] = []
    categories, mapping, dataset = index.categories, {}, None
    if files is not None:
        mapping, categories, warnings = merge_categories(
            index.categories, source_index.categories, wanted
        )
        dataset = POOL
        warnings += [f"warning: {p}: {w} (pool)" for p, w in source_index.problems]
    elif options.balance == "category":
        _, repeated = by_name(index.categories)
        warnings += [f"warning: category name {n!r} repeats; balanced by id" for n in repeated]
    selection = Selection(wanted, options.paste_by, dataset, mapping)
    inputs = Inputs(index, source_index, selection, categories, warnings=warnings)
    if inputs.pool:
        root = str(source_index.files.images)
        for ref in refs(source_index, range(len(source_index.images))).values():
            try:
                images.check_file(image_path(root, ref), (ref.width, ref.height))
            except images.ImageError as exc:
                inputs.source_broken[ref.position] = f"pool image {ref.file_name}: {exc}"
        inputs.broken += list(inputs.source_broken.values())
    usable_images(source_index, inputs.source_broken, selection)  # DataError: nothing to paste
    if wanted is not None:
        pasteable = {
            a["category_id"]
            for anns in source_index.anns_by_image
            for a in selection.pasteable(anns)
        }
        absent = [
            c for c in options.categories if c.strip() and not _has(c, source_index, pasteable)
        ]
        if absent:
            raise DataError(
                f"--categories: no pasteable instance of {', '.join(map(repr, absent))} "
                f"in {source_index.files.annotations}"
            )
    if options.backgrounds is not None:
        inputs.backgrounds_dir = Path(options.backgrounds)
        usable, broken = check_backgrounds(inputs.backgrounds_dir)
        inputs.backgrounds = usable
        inputs.broken += list(broken.values())
    return inputs


def _has(entry: str, index: coco.CocoIndex, pasteable: set[int]) -> bool:
    """Whether a ``--categories`` entry (a name or an id) has a pasteable instance."""
    entry = entry.strip()
    ids = {c["id"] for c in index.categories if str(c.get("name")) == entry}
    if not ids and entry.lstrip("-").isdigit():
        ids = {int(entry)}
    return bool(ids & pasteable)
