#!/usr/bin/env python3
"""Rebuild the cpgen demo datasets from images bundled with scikit-image.

    python examples/make_examples.py [--out DIR]

Writes, under DIR (default: the folder holding this script):

* ``coco/annotations.json`` + ``coco/images/*.jpg`` -- a small COCO
  instance-segmentation set (polygons, one multi-part polygon and one
  ``iscrowd`` annotation stored as uncompressed RLE) for the copy-paste demo;
* ``folders/<class>/<name>.jpg`` -- a small ImageFolder classification set for
  the CutMix demo.

Only images that ship inside the scikit-image wheel are used (no download),
see ATTRIBUTION.md.  The script is deterministic: no randomness, fixed JPEG
quality, and the JSON is written with a fixed layout, so running it twice
gives byte-identical files (for the same library versions).

Needs numpy, opencv-python(-headless), pycocotools, scipy and scikit-image;
cpgen itself never needs scikit-image.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import skimage
import skimage.data
from scipy import ndimage as ndi
from skimage.filters import sobel
from skimage.measure import approximate_polygon, find_contours, label, regionprops
from skimage.segmentation import watershed

HERE = Path(__file__).resolve().parent

JPEG_QUALITY = 90
COCO_MAX_SIDE = 512
FOLDER_MAX_SIDE = 256

# --------------------------------------------------------------------------
# COCO tables
# --------------------------------------------------------------------------

INFO = {
    "description": "cpgen copy-paste demo set, built by examples/make_examples.py "
    "from images bundled with scikit-image (see examples/ATTRIBUTION.md)",
    "url": "",
    "version": "1.0",
    "year": 2026,
    "contributor": "cpgen",
    "date_created": "2026-11-23",
}

LICENSES = [
    {
        "id": 1,
        "name": "Public Domain / no known copyright restrictions",
        "url": "https://creativecommons.org/publicdomain/mark/1.0/",
    },
    {
        "id": 2,
        "name": "CC0 1.0 Universal",
        "url": "https://creativecommons.org/publicdomain/zero/1.0/",
    },
]

CATEGORIES = [
    {"id": 1, "name": "coin", "supercategory": "object"},
    {"id": 2, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "helmet", "supercategory": "accessory"},
    {"id": 4, "name": "cup", "supercategory": "kitchen"},
    {"id": 5, "name": "saucer", "supercategory": "kitchen"},
    {"id": 6, "name": "spoon", "supercategory": "kitchen"},
    {"id": 7, "name": "cat", "supercategory": "animal"},
    {"id": 8, "name": "rocket", "supercategory": "vehicle"},
]
CAT_ID = {c["name"]: c["id"] for c in CATEGORIES}

# --------------------------------------------------------------------------
# Hand-drawn polygons, in pixel coordinates of the ORIGINAL skimage.data
# arrays (x, y); they are scaled with the image.  Each object is a list of
# parts; more than one part makes a multi-part polygon.
# --------------------------------------------------------------------------

ASTRONAUT_PERSON = [
    [
        (238, 14),
        (262, 18),
        (282, 32),
        (296, 55),
        (300, 80),
        (298, 100),
        (290, 115),
        (280, 125),
        (273, 135),
        (270, 150),
        (262, 162),
        (256, 172),
        (265, 178),
        (280, 188),
        (292, 202),
        (300, 220),
        (303, 240),
        (305, 255),
        (320, 258),
        (340, 270),
        (347, 283),
        (355, 305),
        (359, 320),
        (362, 343),
        (359, 350),
        (329, 360),
        (305, 383),
        (290, 413),
        (280, 450),
        (278, 480),
        (278, 512),
        (30, 512),
        (22, 470),
        (22, 420),
        (25, 360),
        (30, 320),
        (40, 285),
        (55, 262),
        (75, 245),
        (100, 230),
        (115, 210),
        (120, 195),
        (130, 175),
        (150, 160),
        (182, 148),
        (175, 125),
        (165, 115),
        (155, 95),
        (153, 75),
        (160, 50),
        (175, 32),
        (200, 18),
        (225, 13),
    ]
]

ASTRONAUT_HELMET = [
    [
        (359, 350),
        (400, 342),
        (439, 347),
        (469, 360),
        (489, 383),
        (499, 410),
        (500, 437),
        (505, 455),
        (512, 468),
        (512, 512),
        (278, 512),
        (278, 480),
        (280, 450),
        (290, 413),
        (305, 383),
        (329, 360),
    ]
]

# Cup = body (rim included) + handle: a two-part polygon.
COFFEE_CUP = [
    [
        (275, 18),
        (310, 20),
        (345, 28),
        (375, 42),
        (395, 60),
        (406, 80),
        (408, 100),
        (405, 130),
        (400, 160),
        (393, 190),
        (385, 212),
        (378, 230),
        (365, 239),
        (350, 242),
        (337, 250),
        (329, 265),
        (327, 278),
        (300, 281),
        (275, 283),
        (255, 281),
        (235, 272),
        (215, 255),
        (200, 235),
        (188, 205),
        (180, 170),
        (175, 130),
        (173, 100),
        (176, 75),
        (190, 50),
        (215, 32),
        (245, 22),
    ],
    [
        (215, 238),
        (240, 236),
        (258, 245),
        (262, 265),
        (258, 290),
        (250, 305),
        (230, 310),
        (205, 305),
        (198, 285),
        (200, 260),
    ],
]

COFFEE_SPOON = [
    [
        (399, 69),
        (405, 67),
        (417, 65),
        (424, 72),
        (420, 90),
        (414, 112),
        (405, 150),
        (395, 190),
        (386, 222),
        (392, 240),
        (400, 255),
        (405, 275),
        (404, 295),
        (400, 307),
        (390, 320),
        (370, 325),
        (350, 320),
        (335, 305),
        (327, 285),
        (329, 265),
        (337, 250),
        (350, 242),
        (365, 239),
        (375, 230),
        (382, 215),
        (389, 190),
        (396, 150),
        (402, 112),
        (404, 82),
        (400, 71),
    ]
]

# Outer rim of the saucer; the visible saucer is this minus cup and spoon.
COFFEE_SAUCER_OUTLINE = [
    [
        (175, 75),
        (230, 70),
        (290, 68),
        (350, 72),
        (400, 82),
        (440, 110),
        (465, 150),
        (478, 200),
        (478, 240),
        (468, 290),
        (445, 330),
        (410, 360),
        (360, 380),
        (300, 388),
        (240, 385),
        (185, 372),
        (140, 350),
        (105, 320),
        (85, 285),
        (77, 245),
        (82, 200),
        (98, 160),
        (120, 125),
        (145, 95),
    ]
]

CHELSEA_CAT = [
    [
        (40, 0),
        (400, 0),
        (385, 20),
        (370, 45),
        (360, 67),
        (363, 83),
        (365, 117),
        (360, 150),
        (350, 173),
        (340, 200),
        (330, 233),
        (323, 267),
        (317, 300),
        (0, 300),
        (0, 125),
        (20, 110),
        (30, 83),
        (32, 33),
    ]
]

ROCKET_ROCKET = [
    [
        (323, 127),
        (327, 128),
        (330, 135),
        (333, 142),
        (334.5, 150),
        (335, 180),
        (334, 408),
        (311, 408),
        (311, 180),
        (311.5, 150),
        (313, 142),
        (315, 135),
        (318, 128),
    ]
]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def to_bgr(img: np.ndarray) -> np.ndarray:
    """skimage RGB / gray uint8 array -> 3-channel BGR uint8 for OpenCV."""
    if img.dtype != np.uint8:
        raise TypeError(f"expected uint8, got {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)


def fit(img: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so the longer side is <= max_side (never enlarges)."""
    h, w = img.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return img
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def write_jpeg(path: Path, bgr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    path.write_bytes(buf.tobytes())


def scale_polygons(parts, sx: float, sy: float, w: int, h: int) -> list[list[float]]:
    """Scale hand-drawn (x, y) parts to flat COCO polygons inside the image."""
    out = []
    for part in parts:
        flat = []
        for x, y in part:
            flat.append(round(min(max(x * sx, 0.0), float(w)), 2))
            flat.append(round(min(max(y * sy, 0.0), float(h)), 2))
        if len(flat) < 6:
            raise ValueError("a polygon needs at least 3 points")
        out.append(flat)
    return out


def polygons_to_rle(polys: list[list[float]], h: int, w: int) -> dict:
    return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))


def rle_to_mask(rle: dict) -> np.ndarray:
    return mask_utils.decode(rle).astype(bool)


def mask_to_polygons(mask: np.ndarray, min_area: int = 30, tolerance: float = 0.75):
    """Outlines of a binary mask as simplified flat COCO polygons.

    One polygon per connected component (components smaller than
    ``min_area`` pixels are dropped).  The outline is the 0.5 iso-line of the
    mask, i.e. it runs along pixel borders, shifted by +0.5 to COCO's
    convention that pixel (i, j) covers [j, j+1) x [i, i+1); so the polygon
    re-rasterises to (nearly) the same pixels.
    """
    comps, n = ndi.label(mask)
    polys = []
    for k in range(1, n + 1):
        comp = comps == k
        if comp.sum() < min_area:
            continue
        if ndi.binary_fill_holes(comp).sum() != comp.sum():
            raise ValueError("mask component has a hole; use RLE instead")
        padded = np.pad(comp, 1).astype(np.float64)
        outer = max(find_contours(padded, 0.5), key=len)
        outer = approximate_polygon(outer, tolerance)[:-1]  # drop closing point
        if len(outer) < 3:
            continue
        yx = outer - 1 + 0.5  # undo padding, shift to COCO pixel convention
        polys.append([round(float(v), 2) for v in yx[:, ::-1].ravel()])
    # deterministic part order: top-most, then left-most first
    polys.sort(key=lambda p: (min(p[1::2]), min(p[0::2])))
    return polys


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: column-major run lengths, starting with zeros."""
    h, w = mask.shape
    flat = mask.flatten(order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"counts": [int(r) for r in runs], "size": [int(h), int(w)]}


class CocoBuilder:
    def __init__(self) -> None:
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add_image(self, file_name: str, h: int, w: int, license_id: int) -> int:
        image_id = len(self.images) + 1
        self.images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": int(w),
                "height": int(h),
                "license": license_id,
            }
        )
        return image_id

    def add_annotation(self, image_id: int, category: str, segmentation, iscrowd: int) -> None:
        img = self.images[image_id - 1]
        h, w = img["height"], img["width"]
        if iscrowd:
            rle = mask_utils.frPyObjects(segmentation, h, w)
        else:
            rle = polygons_to_rle(segmentation, h, w)
        area = int(mask_utils.area(rle))
        if area <= 0:
            raise ValueError(f"empty {category} annotation on {img['file_name']}")
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        self.annotations.append(
            {
                "id": len(self.annotations) + 1,
                "image_id": image_id,
                "category_id": CAT_ID[category],
                "segmentation": segmentation,
                "area": area,
                "bbox": bbox,
                "iscrowd": int(iscrowd),
            }
        )

    def dump(self, path: Path) -> None:
        """One record per line: stable, readable and diff-friendly."""

        def enc(obj) -> str:
            return json.dumps(obj, separators=(", ", ": "), ensure_ascii=True)

        lines = ["{", f'"info": {enc(INFO)},']
        for key, rows in (
            ("licenses", LICENSES),
            ("categories", CATEGORIES),
            ("images", self.images),
            ("annotations", self.annotations),
        ):
            lines.append(f'"{key}": [')
            lines.extend(enc(r) + ("," if i < len(rows) - 1 else "") for i, r in enumerate(rows))
            lines.append("]," if key != "annotations" else "]")
        lines.append("}")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------
# COCO set
# --------------------------------------------------------------------------


def segment_coins(gray: np.ndarray) -> np.ndarray:
    """Label image of the coins (classic sobel + marker watershed)."""
    elevation = sobel(gray)
    markers = np.zeros(gray.shape, dtype=np.int32)
    markers[gray < 30] = 1
    markers[gray > 150] = 2
    fg = watershed(elevation, markers) == 2
    fg = ndi.binary_fill_holes(fg)
    fg = ndi.binary_opening(fg, structure=np.ones((3, 3), bool))
    lab = label(fg)
    keep = np.zeros(lab.max() + 1, dtype=bool)
    for r in regionprops(lab):
        keep[r.label] = r.area >= 200  # drop specks
    return label(keep[lab])


def add_coins(coco: CocoBuilder, img_dir: Path) -> None:
    gray = skimage.data.coins()
    h, w = gray.shape
    write_jpeg(img_dir / "coins.jpg", to_bgr(gray))
    image_id = coco.add_image("coins.jpg", h, w, license_id=1)

    lab = segment_coins(gray)
    regions = sorted(regionprops(lab), key=lambda r: r.centroid[0])
    # group the coins into their rows (the photo has 4 rows of 6 coins)
    rows: list[list] = []
    for r in regions:
        if rows and abs(r.centroid[0] - rows[-1][-1].centroid[0]) < 30:
            rows[-1].append(r)
        else:
            rows.append([r])
    rows = [sorted(row, key=lambda r: r.centroid[1]) for row in rows]
    if sum(len(row) for row in rows) < 12:
        raise RuntimeError("coin segmentation found too few coins")

    # every coin of the upper rows is one polygon instance ...
    for row in rows[:-1]:
        for r in row:
            polys = mask_to_polygons(lab == r.label)
            if len(polys) != 1:
                raise RuntimeError(f"coin {r.label}: expected one outline, got {len(polys)}")
            coco.add_annotation(image_id, "coin", polys, iscrowd=0)
    # ... and the whole bottom row is a single crowd region (uncompressed RLE)
    crowd = np.isin(lab, [r.label for r in rows[-1]])
    coco.add_annotation(image_id, "coin", uncompressed_rle(crowd), iscrowd=1)


def add_photo(coco: CocoBuilder, img_dir: Path, name: str, rgb: np.ndarray, license_id: int):
    """Resize, save, register; returns (image_id, sx, sy, h, w)."""
    h0, w0 = rgb.shape[:2]
    small = fit(rgb, COCO_MAX_SIDE)
    h, w = small.shape[:2]
    write_jpeg(img_dir / f"{name}.jpg", to_bgr(small))
    image_id = coco.add_image(f"{name}.jpg", h, w, license_id)
    return image_id, w / w0, h / h0, h, w


def build_coco(out: Path) -> None:
    root = out / "coco"
    if root.exists():
        shutil.rmtree(root)
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    coco = CocoBuilder()

    add_coins(coco, img_dir)

    iid, sx, sy, h, w = add_photo(coco, img_dir, "astronaut", skimage.data.astronaut(), 1)
    coco.add_annotation(iid, "person", scale_polygons(ASTRONAUT_PERSON, sx, sy, w, h), 0)
    coco.add_annotation(iid, "helmet", scale_polygons(ASTRONAUT_HELMET, sx, sy, w, h), 0)

    iid, sx, sy, h, w = add_photo(coco, img_dir, "coffee", skimage.data.coffee(), 2)
    cup = scale_polygons(COFFEE_CUP, sx, sy, w, h)
    spoon = scale_polygons(COFFEE_SPOON, sx, sy, w, h)
    outline = scale_polygons(COFFEE_SAUCER_OUTLINE, sx, sy, w, h)
    visible = (
        rle_to_mask(polygons_to_rle(outline, h, w))
        & ~rle_to_mask(polygons_to_rle(cup, h, w))
        & ~rle_to_mask(polygons_to_rle(spoon, h, w))
    )
    coco.add_annotation(iid, "cup", cup, 0)
    coco.add_annotation(iid, "saucer", mask_to_polygons(visible), 0)
    coco.add_annotation(iid, "spoon", spoon, 0)

    iid, sx, sy, h, w = add_photo(coco, img_dir, "chelsea", skimage.data.chelsea(), 2)
    coco.add_annotation(iid, "cat", scale_polygons(CHELSEA_CAT, sx, sy, w, h), 0)

    iid, sx, sy, h, w = add_photo(coco, img_dir, "rocket", skimage.data.rocket(), 1)
    coco.add_annotation(iid, "rocket", scale_polygons(ROCKET_ROCKET, sx, sy, w, h), 0)

    coco.dump(root / "annotations.json")


# --------------------------------------------------------------------------
# ImageFolder set
# --------------------------------------------------------------------------


def build_folders(out: Path) -> None:
    root = out / "folders"
    if root.exists():
        shutil.rmtree(root)

    chelsea = skimage.data.chelsea()  # (300, 451, 3)
    coffee = skimage.data.coffee()  # (400, 600, 3)
    rocket = skimage.data.rocket()  # (427, 640, 3)
    astronaut = skimage.data.astronaut()  # (512, 512, 3)

    items = {
        "cat": {
            "chelsea": chelsea,
            "chelsea_flip": chelsea[:, ::-1],
            "chelsea_face": chelsea[20:280, 100:360],
        },
        "coffee": {
            "coffee": coffee,
            "coffee_flip": coffee[:, ::-1],
            "coffee_cup": coffee[0:330, 150:440],
        },
        "spaceflight": {
            "rocket": rocket,
            "rocket_launchpad": rocket[100:427, 200:440],
            "shuttle_model": astronaut[0:300, 340:480],
        },
        "texture": {
            "brick": skimage.data.brick(),
            "grass": skimage.data.grass(),
            "gravel": skimage.data.gravel(),
        },
    }
    for cls, images in items.items():
        for name, img in images.items():
            bgr = to_bgr(np.ascontiguousarray(img))
            write_jpeg(root / cls / f"{name}.jpg", fit(bgr, FOLDER_MAX_SIDE))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: %(default)s)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    build_coco(args.out)
    build_folders(args.out)
    print(
        f"wrote {args.out / 'coco'} and {args.out / 'folders'} (scikit-image {skimage.__version__})"
    )


if __name__ == "__main__":
    main()
