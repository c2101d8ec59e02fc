"""Where pasted instances go: dataset images (the dataset's own records) or background photos.

A background is a photo with no annotations (``--backgrounds DIR``). It is decoded with its EXIF
orientation applied, since no annotation refers to its stored pixels; an output on it takes its
(oriented) size and carries only the pasted instances.
"""

from __future__ import annotations

from pathlib import Path

from cpgen import images
from cpgen.errors import DataError, UsageError

#: Extensions (any case) of the files taken as backgrounds.
BACKGROUND_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_backgrounds(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursive), as sorted POSIX paths relative to it."""
    if not folder.is_dir():
        raise UsageError(f"--backgrounds {folder} is not a folder")
    found = [
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in BACKGROUND_EXTENSIONS and p.is_file()
    ]
    return sorted(found)


def check_backgrounds(folder: Path) -> tuple[list[str], dict[str, str]]:
    """The usable backgrounds (header checked) and the broken ones (name -> reason).

    A folder without one readable image is a DataError, raised before any work.
    """
    names = list_backgrounds(folder)
    usable: list[str] = []
    broken: dict[str, str] = {}
    for name in names:
        try:
            images.check_file(folder / name)
        except images.ImageError as exc:
            broken[name] = f"background {name}: {exc}"
            continue
        usable.append(name)
    if not usable:
        found = f"{len(names)} image files, none readable" if names else "no image file"
        raise DataError(
            f"--backgrounds {folder}: {found}",
            hint=f"backgrounds are files ending in {', '.join(BACKGROUND_EXTENSIONS)} (any case)",
        )
    return usable, broken


def load_background(folder: str, name: str) -> images.Image:
    """A background's pixels, EXIF orientation applied (the caller may modify them)."""
    return images.load(Path(folder) / name, apply_orientation=True)
