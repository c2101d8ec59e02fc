"""Where the pixels and instances of a run come from: dataset images, read once per shard."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from cpgen import images
from cpgen.datasets import coco
from cpgen.errors import DataError


@dataclass(frozen=True)
class ImageRef:
    """What a worker needs to read one dataset image."""

    position: int
    id: int
    file_name: str
    width: int
    height: int


def image_path(images_dir: str, ref: ImageRef) -> Path:
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
        data = images.read_bytes(image_path(self.images_dir, ref))
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
    return {
        p: ImageRef(p, r["id"], r["file_name"], r["width"], r["height"])
        for p, r in ((p, index.images[p]) for p in sorted(positions))
    }
