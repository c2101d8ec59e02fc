"""Where the pixels and instances of a run come from.

Instances come from the dataset itself or from an object pool (``--paste-from``), all of them
or those of some categories (``--categories``), pasted by mask or by box (``--paste-by``; a
box-only annotation is always its box). ``Selection`` says which and how; ``merge_categories``
merges a pool's categories into the dataset's by name. Pixels are read by ``ShardImages``,
at most once per size within a shard.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpgen import images, masks, worker_images
from cpgen.datasets import coco
from cpgen.errors import DataError, UsageError

#: The ``dataset`` an instance of the object pool is recorded with in its provenance.
POOL = "pool"


@dataclass(frozen=True)
class Selection:
    """Which source instances can be pasted, how, and how their records change.

    ``categories`` holds source category ids (None: all); ``paste_by`` is ``mask`` (box where an
    annotation has no mask) or ``box``; ``dataset`` names a pool in provenance; ``category_map``
    maps a pool's category ids to the output's.
    """

    categories: frozenset[int] | None = None
    paste_by: str = "mask"
    dataset: str | None = None
    category_map: Mapping[int, int] = field(default_factory=dict)

    def pasteable(self, anns: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The instances of an image that can be pasted, in record order (never crowds)."""
        if self.categories is None:
            return [a for a in anns if not a["iscrowd"]]
        return [a for a in anns if not a["iscrowd"] and a["category_id"] in self.categories]

    def source_segmentation(self, ann: dict[str, Any], height: int, width: int) -> Any:
        """The segmentation pasted for ``ann`` (of a ``height`` x ``width`` source): its own, or
        its box as one rectangle polygon (box-only annotations, ``--paste-by box``)."""
        if masks.is_box_only(ann):
            return [masks.box_polygon(ann["bbox"], height, width)]
        if self.paste_by == "box":
            box = masks.bbox(masks.segmentation_to_rle(ann["segmentation"], height, width))
            return [masks.box_polygon(box, height, width)]
        return ann["segmentation"]

    def output_category(self, category_id: int) -> int:
        return self.category_map.get(category_id, category_id)


def target_segmentation(ann: dict[str, Any], height: int, width: int) -> Any:
    """The mask of a target annotation as a segmentation: a box-only one is its rectangle."""
    if masks.is_box_only(ann):
        return [masks.box_polygon(ann["bbox"], height, width)]
    return ann["segmentation"]


def by_name(categories: Sequence[dict[str, Any]]) -> tuple[dict[str, int], list[str]]:
    """Name -> the first id with that name (in file order), and the names that repeat."""
    first: dict[str, int] = {}
    repeated: list[str] = []
    for cat in categories:
        name = str(cat.get("name"))
        if name in first:
            if name not in repeated:
                repeated.append(name)
            continue
        first[name] = cat["id"]
    return first, repeated


def merge_categories(
    dataset: Sequence[dict[str, Any]],
    pool: Sequence[dict[str, Any]],
    only: Collection[int] | None = None,
) -> tuple[dict[int, int], list[dict[str, Any]], list[str]]:
    """Merge a pool's categories into the dataset's by name.

    Returns (pool id -> output id, the output's categories, warnings about repeated names). A
    pool category whose name the dataset has maps to the dataset's first id with that name;
    the others (only those in ``only``, when given: the ``--categories`` chosen) are appended
    in the pool's order, one per name, with ids above the dataset's.
    """
    ids, repeated = by_name(dataset)
    _, pool_repeated = by_name(pool)
    warnings = [
        f"warning: category name {name!r} repeats in the {which}; {what}"
        for which, names, what in (
            ("dataset", repeated, "pool instances of it take its first id"),
            ("pool", pool_repeated, "its ids all map to one output category"),
        )
        for name in names
    ]
    categories = [dict(c) for c in dataset]
    next_id = max((c["id"] for c in dataset), default=0) + 1
    mapping: dict[int, int] = {}
    for cat in pool:
        if only is not None and cat["id"] not in only:
            continue
        name = str(cat.get("name"))
        if name not in ids:
            ids[name] = next_id
            categories.append({**cat, "id": next_id})
            next_id += 1
        mapping[cat["id"]] = ids[name]
    return mapping, categories, warnings


def resolve_categories(
    wanted: Sequence[str], categories: Sequence[dict[str, Any]], where: str
) -> frozenset[int]:
    """Category ids named by ``--categories`` (names, all ids of a repeated one, or ids).

    An unknown entry is a UsageError that lists the known names.
    """
    ids: set[int] = set()
    for entry in (w.strip() for w in wanted):
        if not entry:
            continue
        named = {c["id"] for c in categories if str(c.get("name")) == entry}
        if not named and entry.lstrip("-").isdigit():
            named = {c["id"] for c in categories if c["id"] == int(entry)}
        if not named:
            known = ", ".join(dict.fromkeys(str(c.get("name")) for c in categories))
            raise UsageError(
                f"--categories: {entry!r} is no category of {where}", hint=f"known: {known}"
            )
        ids |= named
    return frozenset(ids)


@dataclass(frozen=True)
class ImageRef:
    """What a worker needs to read one dataset image (``root``: its dataset's image folder)."""

    position: int
    id: int
    file_name: str
    width: int
    height: int
    root: str = ""

    @property
    def key(self) -> tuple[str, str, int, int]:
        """The decoded image's identity in the caches: its file (an object pool may share the
        dataset's image folder, with other positions for the same or other files) and the size
        it is checked against."""
        return self.root, self.file_name, self.width, self.height


def image_path(images_dir: str, ref: ImageRef) -> Path:
    rel = coco.safe_relative(ref.file_name)
    if rel is None:
        raise images.ImageError("file_name is absolute or leaves the image folder")
    return Path(images_dir) / rel


#: Decodes an image file's bytes of the expected (width, height), in full; returns the pixels
#: (HxWx3 BGR). :func:`cpgen.images.decode` is OpenCV's; ``cpgen.copypaste.device`` may give
#: nvJPEG's. A source drawn small is averaged down afterwards (``ShardImages.get``), whichever
#: decoded it.
Decoder = Callable[[bytes, tuple[int, int]], images.Image]


class WorkerImages(worker_images.WorkerImages):
    """The dataset images a worker keeps across its shards (``worker_images.WorkerImages``),
    read by ``ImageRef``."""

    def get(
        self, ref: ImageRef, keep: bool = True, decode: Decoder = images.decode
    ) -> tuple[images.Image, bool]:
        """``decode_image(ref)``, from the cache when it holds it (``take``)."""
        return self.take(ref.key, lambda: decode_image(ref, decode), keep)


#: The decoded images of this worker process, kept across shards (``WorkerImages``).
WORKER_IMAGES = WorkerImages()


def decode_image(ref: ImageRef, decode: Decoder = images.decode) -> images.Image:
    """Read ``ref``'s file and ``decode`` it in full."""
    return decode(images.read_bytes(image_path(ref.root, ref)), (ref.width, ref.height))


class ShardImages:
    """The images one shard reads, each decoded at most once per size while it fits a budget.

    Within a shard a source is often another task's target or an earlier task's source; keeping
    the decoded pixels (least recently used out past ``budget_bytes``) saves those decodes.
    ``uses`` counts how often the shard will ask for each image (``ImageRef.key``), so an image
    is dropped after its last use, and the last user of a target may paste onto the cached
    array itself.
    """

    def __init__(
        self,
        uses: Counter[tuple[str, str, int, int]],
        budget_bytes: int = 256 * 1024 * 1024,
        worker: WorkerImages | None = None,
        later: Collection[tuple[str, str, int, int]] = (),
        decode: Decoder = images.decode,
    ) -> None:
        self.remaining = uses
        self.decode = decode
        self.budget = budget_bytes
        self.used = 0
        self.decoded: OrderedDict[tuple[str, str, int, int], images.Image] = OrderedDict()
        self.worker = worker
        self.later = later  # keys of the images later shards use: kept by ``worker``
        self.shared: set[int] = set()  # ids of arrays the worker cache holds too

    def take(self, ref: ImageRef) -> images.Image:
        """Full-size pixels of ``ref`` that the caller may modify."""
        pixels = self._whole(ref)
        kept = ref.key in self.decoded or id(pixels) in self.shared
        return pixels.copy() if kept else pixels

    def get(self, ref: ImageRef, reduction: int = 1) -> tuple[images.Image, int]:
        """Pixels of ``ref`` (not to be modified) at 1/``reduction`` of its size, and that
        reduction: a reduced source is the full-size decode averaged down (``images.reduce``),
        so it is the same pixels whether or not the shard or worker had that decode already."""
        pixels = self._whole(ref)
        if reduction > 1:
            return images.reduce(pixels, reduction), reduction
        return pixels, 1

    def _whole(self, ref: ImageRef) -> images.Image:
        """The full-size decode of ``ref``: from this shard's cache, the worker's, or decoded."""
        self.remaining[ref.key] -= 1
        last = self.remaining[ref.key] <= 0
        if ref.key in self.decoded:
            pixels = self.decoded.pop(ref.key) if last else self.decoded[ref.key]
            if last:
                self.used -= pixels.nbytes
            else:
                self.decoded.move_to_end(ref.key)
            return pixels
        if self.worker is None:
            pixels = decode_image(ref, self.decode)
        else:
            later = ref.key in self.later
            pixels, shared = self.worker.get(ref, later, self.decode)
            if shared:
                self.shared.add(id(pixels))
        if not last:
            self.decoded[ref.key] = pixels
            self.used += pixels.nbytes
            while self.used > self.budget and len(self.decoded) > 1:
                self.used -= self.decoded.popitem(last=False)[1].nbytes
        return pixels


def usable_images(
    index: coco.CocoIndex, broken: Collection[int] = (), selection: Selection | None = None
) -> tuple[list[int], list[int]]:
    """Positions of the usable images and of those with an instance to paste (DataError if
    there are none)."""
    usable = [i for i in range(len(index.images)) if i not in broken]
    if not usable:
        raise DataError(f"{index.files.annotations}: no usable images")
    selection = selection or Selection()
    pasteable = [i for i in usable if selection.pasteable(index.anns_by_image[i])]
    if not pasteable:
        which = "" if selection.categories is None else " of the chosen --categories"
        raise DataError(
            f"{index.files.annotations}: no image has a non-crowd instance{which} to paste"
        )
    return usable, pasteable


def images_by_category(
    index: coco.CocoIndex, positions: Sequence[int], selection: Selection
) -> dict[int, list[int]]:
    """Category id -> the positions (ascending) of the images holding a pasteable instance."""
    holders: dict[int, list[int]] = {}
    for p in positions:
        for cat in sorted({a["category_id"] for a in selection.pasteable(index.anns_by_image[p])}):
            holders.setdefault(cat, []).append(p)
    return dict(sorted(holders.items()))


def check_images(index: coco.CocoIndex) -> dict[int, str]:
    """Header checks of every image in this process (for ``--dry-run``): position -> reason."""
    broken = {}
    for ref in refs(index, range(len(index.images))).values():
        try:
            images.check_file(image_path(str(index.files.images), ref), (ref.width, ref.height))
        except images.ImageError as exc:
            broken[ref.position] = f"{ref.file_name}: {exc}"
    return broken


def refs(index: coco.CocoIndex, positions: Iterable[int]) -> dict[int, ImageRef]:
    root = str(index.files.images)
    return {
        p: ImageRef(p, r["id"], r["file_name"], r["width"], r["height"], root)
        for p, r in ((p, index.images[p]) for p in sorted(positions))
    }
