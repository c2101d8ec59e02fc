"""Image-folder datasets (torchvision's ImageFolder layout): ``SRC/<class>/<image>``.

* Classes are SRC's sub-folder names, sorted like torchvision's ``find_classes``; a class folder
  with no readable image still counts (so indices match torchvision's) and is reported.
* Images are files whose extension, in any case, is one of :data:`IMAGE_EXTENSIONS`, anywhere
  under a class folder, in torchvision's order (class by class, folders walked sorted, names
  sorted). Other files and files at SRC's root are ignored (and listed in ``ignored``). Names
  starting with ``.`` (hidden files and folders, macOS ``._x.jpg`` resource forks) are skipped
  silently, and symlinked folders inside a class are not followed (a link cycle cannot hang
  the walk).
* Each image's header is checked once here (:func:`cpgen.images.check_file`: size limit,
  recognisable format; a format whose header cpgen does not parse, such as TIFF, is decoded). An
  unreadable image is left out of the index and listed in ``broken``; it is never planned. A
  body corrupted past a good header is found when the image is decoded for an output: that
  output is skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpgen import images
from cpgen.errors import DataError, UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Hugging Face's image-folder metadata file: ``load_dataset("imagefolder", data_dir=OUT)``
#: reads one row per line, the image from ``file_name`` (relative to the file's folder)
METADATA = "metadata.jsonl"


@dataclass(frozen=True)
class FolderIndex:
    """The readable images of an image folder, with their class indices."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]  # readable images, POSIX paths relative to root
    labels: tuple[int, ...]  # class index of each file
    broken: tuple[tuple[str, str], ...] = ()  # (relative path, reason): left out
    ignored: tuple[str, ...] = ()  # files at the root, or not images by name; relative paths

    @property
    def empty_classes(self) -> list[str]:
        """Classes with no readable image."""
        used = set(self.labels)
        return [name for i, name in enumerate(self.classes) if i not in used]


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension (any case) and is not hidden."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def find_images(src: Path) -> tuple[list[str], list[tuple[str, int]], list[str]]:
    """Classes, (relative path, class index) of every image file, and ignored files."""
    if not src.is_dir():
        what = "does not exist" if not src.exists() else "is not a folder"
        raise UsageError(
            f"--src {src} {what}", hint="give an image folder laid out as SRC/<class>/<image>"
        )
    try:
        entries = sorted(os.scandir(src), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot list {src}: {exc.strerror or exc}") from None
    classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    ignored = [e.name for e in entries if not e.is_dir() and not e.name.startswith(".")]
    found: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        for root, _dirs, names in sorted(os.walk(src / name)):
            rel_root = Path(root).relative_to(src).as_posix()
            if any(part.startswith(".") for part in rel_root.split("/")):
                continue
            for file_name in sorted(names):
                rel = f"{rel_root}/{file_name}"
                if is_image_name(file_name):
                    found.append((rel, label))
                elif not file_name.startswith("."):
                    ignored.append(rel)
    return classes, found, ignored


def load(src: Path) -> FolderIndex:
    """Find and check an image folder's images. Raises UsageError when SRC is not a folder,
    DataError when it holds no class folder or fewer than two readable images."""
    classes, found, ignored = find_images(src)
    if not classes:
        raise DataError(
            f"{src} has no class folders",
            hint="cutmix reads SRC/<class>/<image> (torchvision ImageFolder layout)",
        )
    files: list[str] = []
    labels: list[int] = []
    broken: list[tuple[str, str]] = []
    for rel, label in found:
        try:
            images.check_file(src / rel)
        except images.ImageError as exc:
            broken.append((rel, str(exc)))
            continue
        files.append(rel)
        labels.append(label)
    if len(files) < 2:
        raise DataError(
            f"{src} holds {len(files)} readable image{'s' if len(files) != 1 else ''} in "
            f"{len(classes)} class folder{'s' if len(classes) != 1 else ''}; cutmix needs at "
            "least two",
            hint=f"images are recognised by extension: {', '.join(IMAGE_EXTENSIONS)}",
        )
    return FolderIndex(
        src, tuple(classes), tuple(files), tuple(labels), tuple(broken), tuple(ignored)
    )


def metadata_lines(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    soft_labels: Iterable[Sequence[float]] | None = None,
) -> Iterator[str]:
    """JSON lines of Hugging Face's image-folder metadata for an output dataset.

    ``columns[0]`` names each row's image path relative to OUT, written as ``file_name``; the
    other columns keep their names and JSON types; with ``soft_labels``, each row also gets its
    ``soft_label`` vector (one float per class). One line per row, in row order.
    """
    soft = iter(soft_labels) if soft_labels is not None else None
    for row in rows:
        record = {"file_name": row[0], **dict(zip(columns[1:], row[1:], strict=True))}
        if soft is not None:
            record["soft_label"] = [float(v) for v in next(soft)]
        yield json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
