"""Drawing for ``cpgen preview``: tiles (an image with its instances or its cutmix box, and a
caption), the legend, and the contact sheet that holds them. Pure: arrays in, arrays out.

Colours say where an instance came from: pasted instances (``cpgen.from == "source"``) in warm
colours (red to yellow), the target's own and a plain dataset's instances in cool colours (cyan
to blue), crowd regions grey and hatched. Masks are filled at :data:`FILL_ALPHA` and outlined;
box-only instances (no segmentation) are drawn as a thick box without fill. Images are BGR uint8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
Color = tuple[int, int, int]  # BGR

TILE_WIDTH = 320  # default width of a tile's image area, pixels (4:3; aspect of images kept)
LINE_HEIGHT = 16  # caption line, pixels
CAPTION_LINES = 3
CAPTION_HEIGHT = CAPTION_LINES * LINE_HEIGHT + 6
GAP = 8  # between tiles and around the grid
HEADER_HEIGHT = 28
LEGEND_HEIGHT = 30
FILL_ALPHA = 0.5

BACKGROUND: Color = (48, 48, 48)  # sheet
LETTERBOX: Color = (90, 90, 90)  # tile area outside the image
CAPTION_BG: Color = (255, 255, 255)  # exactly white: tests find captions by it
TEXT: Color = (20, 20, 20)
LIGHT_TEXT: Color = (235, 235, 235)
CROWD: Color = (150, 150, 150)
CUTMIX_BOX: Color = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.42


def _hsv(hue: int) -> Color:
    """A saturated BGR colour of OpenCV hue ``hue`` (0-179)."""
    pixel = np.array([[[hue, 230, 235]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


#: Warm hues for pasted instances, cool for the target's own; OpenCV hue units (0-179).
WARM_HUES = (0, 12, 22, 30, 6, 17, 26)
COOL_HUES = (90, 105, 120, 97, 112, 126, 84)
WARM = tuple(_hsv(h) for h in WARM_HUES)
COOL = tuple(_hsv(h) for h in COOL_HUES)


def color_of(category_id: int, pasted: bool) -> Color:
    palette = WARM if pasted else COOL
    return palette[abs(int(category_id)) % len(palette)]


@dataclass
class Instance:
    """One instance to draw: its mask at tile size (None: box only), box in tile pixels."""

    mask: npt.NDArray[np.bool_] | None
    box: tuple[float, float, float, float]  # x, y, w, h in tile pixels
    label: str
    category_id: int
    pasted: bool = False
    crowd: bool = False


@dataclass
class TileContent:
    """What a tile shows: its image at tile size (None: a placeholder), drawn parts, caption."""

    image: Image | None
    size: tuple[int, int]  # (width, height) at tile scale
    caption: list[str]
    instances: list[Instance] = field(default_factory=list)
    cutmix_box: tuple[int, int, int, int] | None = None  # left, top, right, bottom, tile px
    cutmix_labels: tuple[str, str] | None = None  # inside / outside the box
    problem: str | None = None  # why the image is a placeholder


@dataclass(frozen=True)
class Geometry:
    """A tile: an image area ``width`` x ``height`` pixels, a 2-pixel line, the caption."""

    width: int = TILE_WIDTH

    @property
    def height(self) -> int:
        return self.width * 3 // 4

    @property
    def caption_top(self) -> int:
        return self.height + 2

    @property
    def full_height(self) -> int:
        return self.caption_top + CAPTION_HEIGHT


def fit(width: int, height: int, tile: Geometry) -> tuple[float, int, int]:
    """Scale and size (w, h) that fit an image inside the tile's image area, aspect kept."""
    scale = min(tile.width / width, tile.height / height)
    return scale, max(1, round(width * scale)), max(1, round(height * scale))


def put_text(image: Image, text: str, x: int, y: int, color: Color, max_width: int) -> None:
    """Draw one line with its baseline at y, cut with '...' to fit ``max_width`` pixels."""
    text = text.encode("ascii", "replace").decode()
    if _width(text) > max_width:
        while text and _width("..." + text) > max_width:
            text = text[1:]
        text = "..." + text
    cv2.putText(image, text, (x, y), FONT, FONT_SCALE, color, 1, cv2.LINE_AA)


def _width(text: str) -> int:
    return cv2.getTextSize(text, FONT, FONT_SCALE, 1)[0][0]


def placeholder(width: int, height: int, problem: str) -> Image:
    """A grey image with a cross and the problem written on it."""
    image = np.full((height, width, 3), 70, dtype=np.uint8)
    cv2.line(image, (0, 0), (width - 1, height - 1), (120, 120, 120), 2)
    cv2.line(image, (0, height - 1), (width - 1, 0), (120, 120, 120), 2)
    put_text(image, "image unavailable", 6, 18, LIGHT_TEXT, width - 12)
    put_text(image, problem, 6, 36, LIGHT_TEXT, width - 12)
    return image


def _hatch(shape: tuple[int, int], period: int = 7) -> npt.NDArray[np.bool_]:
    rows, cols = np.indices(shape)
    return (rows + cols) % period < 2


def draw_instances(image: Image, instances: list[Instance]) -> Image:
    """Fill masks translucently, hatch crowd regions, outline, box and name every instance."""
    base = image
    overlay = base.copy()
    crowd = np.zeros(base.shape[:2], dtype=bool)
    ordered = sorted(instances, key=lambda i: (not i.crowd, i.pasted))  # crowd, target, pasted
    for inst in ordered:
        if inst.mask is None:
            continue
        if inst.crowd:
            crowd |= inst.mask
            overlay[inst.mask] = CROWD
        else:
            overlay[inst.mask] = color_of(inst.category_id, inst.pasted)
    out = cv2.addWeighted(overlay, FILL_ALPHA, base, 1 - FILL_ALPHA, 0)
    if crowd.any():
        out[crowd & _hatch(crowd.shape)] = (60, 60, 60)
    for inst in ordered:
        color = CROWD if inst.crowd else color_of(inst.category_id, inst.pasted)
        x, y, w, h = inst.box
        p1, p2 = (round(x), round(y)), (round(x + w) - 1, round(y + h) - 1)
        if inst.mask is None:  # box only
            cv2.rectangle(out, p1, p2, (0, 0, 0), 4)
            cv2.rectangle(out, p1, p2, color, 2)
        else:
            contours, _ = cv2.findContours(
                inst.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            cv2.drawContours(out, contours, -1, color, 1, cv2.LINE_AA)
            cv2.rectangle(out, p1, p2, color, 1)
    for inst in ordered:
        _label(out, inst)
    return out


def _label(image: Image, inst: Instance) -> None:
    """The category name on a chip of the instance's colour at its box's top-left corner."""
    color = CROWD if inst.crowd else color_of(inst.category_id, inst.pasted)
    (tw, th), base = cv2.getTextSize(inst.label, FONT, 0.36, 1)
    x = int(np.clip(round(inst.box[0]), 0, max(0, image.shape[1] - tw - 2)))
    y = int(np.clip(round(inst.box[1]) - th - base - 2, 0, max(0, image.shape[0] - th - base)))
    cv2.rectangle(image, (x, y), (x + tw + 2, y + th + base + 1), color, -1)
    cv2.putText(image, inst.label, (x + 1, y + th + 1), FONT, 0.36, TEXT, 1, cv2.LINE_AA)


def draw_cutmix(image: Image, box: tuple[int, int, int, int], labels: tuple[str, str]) -> Image:
    """Outline the pasted box (white on black) and name the classes inside and outside it."""
    out = image.copy()
    left, top, right, bottom = box
    if right > left and bottom > top:
        cv2.rectangle(out, (left, top), (right - 1, bottom - 1), (0, 0, 0), 3)
        cv2.rectangle(out, (left, top), (right - 1, bottom - 1), CUTMIX_BOX, 1)
        _chip(out, labels[0], left + 3, top + 3)
    _chip(out, labels[1], 3, out.shape[0] - 17)
    return out


def _chip(image: Image, text: str, x: int, y: int) -> None:
    (tw, th), base = cv2.getTextSize(text, FONT, 0.36, 1)
    x = int(np.clip(x, 0, max(0, image.shape[1] - tw - 2)))
    y = int(np.clip(y, 0, max(0, image.shape[0] - th - base - 1)))
    cv2.rectangle(image, (x, y), (x + tw + 2, y + th + base + 1), (0, 0, 0), -1)
    cv2.putText(image, text, (x + 1, y + th + 1), FONT, 0.36, LIGHT_TEXT, 1, cv2.LINE_AA)


def render_tile(content: TileContent, geometry: Geometry) -> tuple[Image, tuple[int, int]]:
    """A tile (image area + caption) and where the image sits in it (x, y offset)."""
    tile = np.full((geometry.full_height, geometry.width, 3), LETTERBOX, dtype=np.uint8)
    width, height = content.size
    x0, y0 = (geometry.width - width) // 2, (geometry.height - height) // 2
    if content.image is None:
        image = placeholder(width, height, content.problem or "")
    elif content.cutmix_box is not None and content.cutmix_labels is not None:
        image = draw_cutmix(content.image, content.cutmix_box, content.cutmix_labels)
    else:
        image = draw_instances(content.image, content.instances)
    tile[y0 : y0 + height, x0 : x0 + width] = image
    top = geometry.caption_top
    tile[top:] = CAPTION_BG
    for k, line in enumerate(content.caption[:CAPTION_LINES]):
        put_text(tile, line, 4, top + (k + 1) * LINE_HEIGHT, TEXT, geometry.width - 8)
    return tile, (x0, y0)


def grid(count: int) -> tuple[int, int]:
    """(columns, rows) for ``count`` tiles: near square, wider than tall."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return columns, max(1, math.ceil(count / columns))


def tile_origin(k: int, columns: int, geometry: Geometry) -> tuple[int, int]:
    """Top-left corner (x, y) of tile ``k`` on the sheet."""
    row, column = divmod(k, columns)
    return (
        GAP + column * (geometry.width + GAP),
        HEADER_HEIGHT + GAP + row * (geometry.full_height + GAP),
    )


LegendEntry = tuple[str, str]  # (kind, text); kind: warm, cool, crowd, box, cutmix


def compose(tiles: list[Image], title: str, legend: list[LegendEntry], geometry: Geometry) -> Image:
    """The sheet: a title line, tiles in a grid, and a legend line below."""
    columns, rows = grid(len(tiles))
    width = max(GAP + columns * (geometry.width + GAP), 640)
    height = HEADER_HEIGHT + GAP + rows * (geometry.full_height + GAP) + LEGEND_HEIGHT
    sheet = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    put_text(sheet, title, GAP, 19, LIGHT_TEXT, width - 2 * GAP)
    for k, tile in enumerate(tiles):
        x, y = tile_origin(k, columns, geometry)
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    _legend(sheet, legend, height - LEGEND_HEIGHT + 6)
    return sheet


def _legend(sheet: Image, entries: list[LegendEntry], y: int) -> None:
    x = GAP
    for kind, text in entries:
        swatch = sheet[y : y + 14, x : x + 28]
        if kind == "warm":
            for k in range(4):
                swatch[:, 7 * k : 7 * k + 7] = WARM[k]
        elif kind == "cool":
            for k in range(4):
                swatch[:, 7 * k : 7 * k + 7] = COOL[k]
        elif kind == "crowd":
            swatch[:] = CROWD
            swatch[_hatch(swatch.shape[:2], 5)] = (60, 60, 60)
        elif kind == "box":
            cv2.rectangle(sheet, (x + 1, y + 1), (x + 26, y + 12), COOL[1], 2)
        elif kind == "cutmix":
            cv2.rectangle(sheet, (x + 1, y + 1), (x + 26, y + 12), CUTMIX_BOX, 1)
        x += 34
        put_text(sheet, text, x, y + 11, LIGHT_TEXT, sheet.shape[1] - x - GAP)
        x += _width(text) + 18
