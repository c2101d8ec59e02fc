"""`cpgen preview`: one contact-sheet PNG of a few images of a dataset, to look before training.

PATH is a COCO dataset (any layout ``--src`` takes, or ``--ann`` + ``--images``), a cpgen
copy-paste output, or a cpgen cutmix output. Tiles are chosen by ``--seed`` among the generated
images of a cpgen output (image records carrying a ``cpgen`` key), else among all images, or given
by ``--ids``. Only the chosen images are decoded (JPEGs at a reduced size when they are much larger
than a tile) and only their annotation records are parsed (:mod:`cpgen.datasets.lazy`): 16 tiles of
a 50,000-image, 250 MB COCO file take ~2 s. Drawing is in :mod:`cpgen.sheet`.

The sheet is written next to PATH (``<PATH>-preview.png``), never inside it, where a folder-based
loader would take it for data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cpgen import images, masks, sheet
from cpgen.datasets import coco, lazy
from cpgen.errors import DataError, UsageError

MAX_TILES = 256
Report = Callable[[str], None]


@dataclass(frozen=True)
class PreviewOptions:
    """Which tiles: ``num`` chosen with ``seed``, or exactly ``ids`` (image ids; for a cutmix
    output, row numbers of labels.csv, which are the output indices)."""

    num: int = 16
    seed: int = 0
    ids: tuple[int, ...] | None = None
    tile_width: int = sheet.TILE_WIDTH  # pixels; tiles are 4:3

    def __post_init__(self) -> None:
        if not 120 <= self.tile_width <= 2048:
            raise UsageError("--tile-width must be in 120 .. 2048 pixels")
        if not 1 <= self.num <= MAX_TILES:
            raise UsageError(f"--num must be in 1 .. {MAX_TILES}")
        if not 0 <= self.seed < 2**63:
            raise UsageError("--seed must be in 0 .. 2**63 - 1")
        if self.ids is not None and not 1 <= len(self.ids) <= MAX_TILES:
            raise UsageError(f"--ids must name 1 .. {MAX_TILES} images")


@dataclass
class PreviewResult:
    """What was drawn: printed as a line on stderr, or as JSON (``--json``) on stdout."""

    out: str
    kind: str  # "coco", "cpgen" (a copy-paste output) or "cutmix"
    candidates: int  # images the tiles were chosen from
    tile_width: int = sheet.TILE_WIDTH
    tiles: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def skipped_items(self) -> int:
        return len(self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "kind": self.kind,
            "candidates": self.candidates,
            "tile_width": self.tile_width,
            "tiles": self.tiles,
            "problems": self.problems,
            "skipped_items": self.skipped_items,
            "seconds": self.seconds,
        }

    def line(self) -> str:
        text = f"cpgen preview: {len(self.tiles)} tiles in {self.seconds:.1f} s -> {self.out}"
        if self.problems:
            text += f" ({len(self.problems)} drawn as placeholders)"
        return text


def parse_ids(text: str) -> tuple[int, ...]:
    """``"3,17 42"`` -> (3, 17, 42)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(
            f"--ids {text!r} is not a list of integers", hint="e.g. --ids 12,40"
        ) from None


def default_out(path: Path) -> Path:
    """``<name>-preview.png`` beside a dataset folder or annotation file, never inside it."""
    path = path.resolve()
    name = path.stem if path.is_file() else path.name
    return path.parent / f"{name or 'dataset'}-preview.png"


def check_out(out: Path, image_folder: Path) -> None:
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out} must name a .png file")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name a .png file")
    if out.resolve().is_relative_to(image_folder.resolve()):
        raise UsageError(
            f"--out {out} is inside the image folder {image_folder}",
            hint="a folder-based loader would take the preview for data; write it elsewhere",
        )


def choose(count: int, options: PreviewOptions) -> list[int]:
    """Positions of the tiles among ``count`` candidates, in their order (seeded)."""
    rng = np.random.default_rng(options.seed)
    take = min(options.num, count)
    return sorted(int(i) for i in rng.choice(count, size=take, replace=False)) if take else []


def load_tile_image(path: Path, expected: tuple[int, int] | None, width: int) -> images.Image:
    """Decode an image for a tile ``width`` pixels wide; a JPEG much larger than that is
    decoded at 1/2, 1/4 or 1/8 size (DCT scaling, several times faster)."""
    data = images.read_bytes(path)
    reduction = 1
    if expected is not None and data[:2] == b"\xff\xd8":
        while reduction < 8 and expected[0] / (2 * reduction) >= width:
            reduction *= 2
    if reduction > 1 and expected is not None:
        return images.decode_reduced(data, expected, reduction)
    return images.decode(data, expected)


def _fitted(image: images.Image, size: tuple[int, int]) -> images.Image:
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _number(value: Any, digits: int = 2) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, list) and value:
            return "/".join(_number(v, digits) for v in value[:3])
        return str(value)
    return f"{value:.{digits}f}"


# ---------------------------------------------------------------------------------------------
# COCO datasets and copy-paste outputs


def coco_caption(record: dict[str, Any], annotations: list[dict[str, Any]]) -> list[str]:
    """File name; for a generated image its target and sources, then the drawn parameters."""
    provenance = record.get("cpgen")
    lines = [str(record.get("file_name"))]
    if isinstance(provenance, dict):
        if "target_id" in provenance:
            target = f"target {provenance['target_id']}"
        else:
            target = f"background {provenance.get('background', '?')}"
        sources = ",".join(str(s) for s in provenance.get("source_ids") or []) or "-"
        lines.append(f"id {record.get('id')}: {target} <- source {sources}")
        params = provenance.get("params") if isinstance(provenance.get("params"), dict) else {}
        drawn = []
        if "scale" in params:
            drawn.append(f"scale {_number(params['scale'])}")
        if "hflip" in params:
            drawn.append("flipped" if params["hflip"] else "not flipped")
        if "rotation" in params:
            drawn.append(f"rotation {_number(params['rotation'], 1)} deg")
        pasted = sum(1 for a in annotations if _origin(a) == "source")
        drawn.append(f"{pasted} pasted")
        lines.append(", ".join(drawn))
    else:
        crowd = sum(1 for a in annotations if a.get("iscrowd"))
        boxes = sum(1 for a in annotations if not a.get("iscrowd") and _box_only(a))
        counts = [f"{len(annotations)} instance{'' if len(annotations) == 1 else 's'}"]
        counts += [f"{crowd} crowd"] if crowd else []
        counts += [f"{boxes} box-only"] if boxes else []
        lines += [f"id {record.get('id')}", ", ".join(counts)]
    return lines


def _origin(ann: dict[str, Any]) -> str | None:
    provenance = ann.get("cpgen")
    return provenance.get("from") if isinstance(provenance, dict) else None


def _box_only(ann: dict[str, Any]) -> bool:
    seg = ann.get("segmentation")
    return seg is None or seg == [] or (isinstance(seg, list) and not masks.clean_polygons(seg)[0])


def coco_instances(
    annotations: list[dict[str, Any]],
    size: tuple[int, int],
    tile_size: tuple[int, int],
    names: dict[int, str],
    problems: list[str],
) -> list[sheet.Instance]:
    """Masks scaled to the tile (area-averaged, so thin parts survive) and scaled boxes."""
    width, height = size
    scale_x, scale_y = tile_size[0] / width, tile_size[1] / height
    drawn = []
    for ann in annotations:
        seg, mask, rle = ann.get("segmentation"), None, None
        try:
            if isinstance(seg, dict):
                rle = masks.segmentation_to_rle(seg, height, width)
            elif isinstance(seg, list) and seg:
                parts = masks.clean_polygons(seg)[0]
                rle = masks.polygons_to_rle(parts, height, width) if parts else None
        except masks.MaskError as exc:
            problems.append(f"annotation {ann.get('id')}: {exc}")
            continue
        if rle is not None:
            full = np.ascontiguousarray(masks.decode(rle)) * np.uint8(255)
            mask = cv2.resize(full, tile_size, interpolation=cv2.INTER_AREA) >= 96
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4):
            if rle is None:
                continue
            box = masks.bbox(rle)
        x, y, w, h = (float(v) for v in box)
        category = ann.get("category_id")
        drawn.append(
            sheet.Instance(
                mask=mask,
                box=(x * scale_x, y * scale_y, w * scale_x, h * scale_y),
                label=names.get(category, str(category)),
                category_id=category if isinstance(category, int) else 0,
                pasted=_origin(ann) == "source",
                crowd=bool(ann.get("iscrowd")),
            )
        )
    return drawn


def preview_coco(
    files: coco.CocoFiles, out: Path, options: PreviewOptions, title_path: str, report: Report
) -> PreviewResult:
    dataset = lazy.LazyCoco.open(files)
    generated = [r for r in dataset.images if "cpgen" in r]
    kind = "cpgen" if generated else "coco"
    if options.ids is not None:
        by_id = {r["id"]: r for r in dataset.images}
        unknown = [i for i in options.ids if i not in by_id]
        if unknown:
            raise UsageError(f"--ids: no image with id {', '.join(map(str, unknown[:5]))}")
        chosen, candidates = [by_id[i] for i in options.ids], dataset.images
    else:
        candidates = generated or dataset.images
        chosen = [candidates[i] for i in choose(len(candidates), options)]
    if not chosen:
        raise DataError(f"{files.annotations} has no images to preview")
    annotations = dataset.annotations_of([r["id"] for r in chosen])
    names = {c["id"]: str(c.get("name")) for c in dataset.categories}
    result = PreviewResult(str(out), kind, len(candidates))
    tiles = []
    geometry = sheet.Geometry(options.tile_width)
    for record in chosen:
        anns = annotations[record["id"]]
        content, problem = _coco_tile(record, anns, files.images, names, geometry, report)
        if problem:
            result.problems.append(problem)
        tiles.append(content)
    what = "generated images" if options.ids is None and generated else "images"
    title = f"cpgen preview: {title_path} - {len(chosen)} of {len(candidates)} {what}"
    legend: list[sheet.LegendEntry] = []
    if kind == "cpgen":
        legend.append(("warm", "pasted (from the source image)"))
    legend += [("cool", "target's own" if kind == "cpgen" else "instance"), ("crowd", "crowd")]
    legend.append(("box", "box only (no mask)"))
    return _write(result, tiles, [r["id"] for r in chosen], title, legend, options)


def _coco_tile(
    record: dict[str, Any],
    anns: list[dict[str, Any]],
    image_folder: Path,
    names: dict[int, str],
    geometry: sheet.Geometry,
    report: Report,
) -> tuple[tuple[sheet.TileContent, str, float], str | None]:
    width, height = record.get("width"), record.get("height")
    valid_size = all(isinstance(v, int) and v > 0 for v in (width, height))
    scale, tw, th = sheet.fit(width, height, geometry) if valid_size else sheet.fit(4, 3, geometry)
    caption = coco_caption(record, anns)
    name = str(record.get("file_name"))
    where = f"image {record.get('id')} ({name})"
    rel = coco.safe_relative(name) if isinstance(record.get("file_name"), str) else None
    try:
        if not valid_size:
            raise images.ImageError("no valid width/height in the annotations")
        if rel is None:
            raise images.ImageError("file_name is missing, absolute or leaves the image folder")
        image = _fitted(load_tile_image(image_folder / rel, (width, height), tw), (tw, th))
    except images.ImageError as exc:
        report(f"warning: {where}: {exc}; drawn as a placeholder")
        content = sheet.TileContent(None, (tw, th), caption, problem=str(exc))
        return (content, name, scale), f"{where}: {exc}"
    problems: list[str] = []
    instances = coco_instances(anns, (width, height), (tw, th), names, problems)
    for problem in problems:
        report(f"warning: {where}: {problem}; not drawn")
    return (sheet.TileContent(image, (tw, th), caption, instances), name, scale), None


# ---------------------------------------------------------------------------------------------
# cutmix outputs


def preview_cutmix(
    output: lazy.CutmixOutput, out: Path, options: PreviewOptions, title_path: str, report: Report
) -> PreviewResult:
    rows = output.rows
    if options.ids is not None:
        unknown = [i for i in options.ids if not 0 <= i < len(rows)]
        if unknown:
            raise UsageError(
                f"--ids: no row {', '.join(map(str, unknown[:5]))} in labels.csv",
                hint=f"a cutmix output's ids are row numbers 0 .. {len(rows) - 1}",
            )
        positions = list(options.ids)
    else:
        positions = choose(len(rows), options)
    if not positions:
        raise DataError(f"{output.root / lazy.CUTMIX_LABELS} has no rows to preview")
    result = PreviewResult(str(out), "cutmix", len(rows))
    geometry = sheet.Geometry(options.tile_width)
    tiles = []
    for position in positions:
        row = rows[position]
        weight = row["base_weight"]
        caption = [
            row["file"],
            f"base {row['base_class']}: {weight:.3f}",
            f"patch {row['patch_class']}: {1 - weight:.3f} (in the box)",
        ]
        where = f"row {position} ({row['file']})"
        rel = coco.safe_relative(row["file"])
        try:
            if rel is None:
                raise images.ImageError("file leaves the output folder")
            full = load_tile_image(output.root / rel, None, geometry.width)
        except images.ImageError as exc:
            report(f"warning: {where}: {exc}; drawn as a placeholder")
            result.problems.append(f"{where}: {exc}")
            _, tw, th = sheet.fit(4, 3, geometry)
            tiles.append((sheet.TileContent(None, (tw, th), caption, problem=str(exc)), "", 1.0))
            continue
        scale, tw, th = sheet.fit(full.shape[1], full.shape[0], geometry)
        box = (
            round(row["left"] * scale),
            round(row["top"] * scale),
            round(row["right"] * scale),
            round(row["bottom"] * scale),
        )
        labels = (f"{row['patch_class']} {1 - weight:.2f}", f"{row['base_class']} {weight:.2f}")
        content = sheet.TileContent(
            _fitted(full, (tw, th)), (tw, th), caption, cutmix_box=box, cutmix_labels=labels
        )
        tiles.append((content, row["file"], scale))
    title = f"cpgen preview: {title_path} - {len(positions)} of {len(rows)} cutmix images"
    legend: list[sheet.LegendEntry] = [
        ("cutmix", "box pasted from the patch image; captions: each class with its label weight")
    ]
    return _write(result, tiles, positions, title, legend, options)


# ---------------------------------------------------------------------------------------------


def _write(
    result: PreviewResult,
    tiles: list[tuple[sheet.TileContent, str, float]],
    ids: list[int],
    title: str,
    legend: list[sheet.LegendEntry],
    options: PreviewOptions,
) -> PreviewResult:
    if options.ids is None:
        title += f" (seed {options.seed})"
    columns, _ = sheet.grid(len(tiles))
    geometry = sheet.Geometry(options.tile_width)
    result.tile_width = geometry.width
    rendered = []
    for k, ((content, name, scale), image_id) in enumerate(zip(tiles, ids, strict=True)):
        tile, (x0, y0) = sheet.render_tile(content, geometry)
        rendered.append(tile)
        x, y = sheet.tile_origin(k, columns, geometry)
        result.tiles.append(
            {
                "id": image_id,
                "file_name": name,
                "x": x + x0,  # where the image sits on the sheet, pixels
                "y": y + y0,
                "width": content.size[0],
                "height": content.size[1],
                "scale": scale,
                "caption_y": y + geometry.caption_top,
                "placeholder": content.image is None,
            }
        )
    image = sheet.compose(rendered, title, legend, geometry)
    ok, png = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise DataError("PNG encoding of the sheet failed")
    try:
        images.atomic_write_bytes(Path(result.out), png.tobytes())
    except OSError as exc:
        raise DataError(f"cannot write {result.out}: {exc.strerror or exc}") from None
    return result


def preview(
    files: coco.CocoFiles | lazy.CutmixOutput,
    out: Path,
    options: PreviewOptions,
    title_path: str,
    report: Report,
) -> PreviewResult:
    """Draw the sheet for a COCO dataset or a cutmix output and write it to ``out``."""
    started = time.perf_counter()
    check_out(out, files.images)
    if isinstance(files, lazy.CutmixOutput):
        result = preview_cutmix(files, out, options, title_path, report)
    else:
        result = preview_coco(files, out, options, title_path, report)
    result.seconds = round(time.perf_counter() - started, 3)
    return result
