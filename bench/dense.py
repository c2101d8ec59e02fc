"""Dense high-resolution images: 1024x1024 tiles with about 30 polygons each.

Builds (once, in a temp folder, nothing committed) ``count`` distinct tiles from the shared COCO
sample: each tile is a 2x2 mosaic of four sample images resized to 512x512, with their polygons
scaled and moved along (about 7 polygons per sample image, so about 30 per tile, as in a
building-facade or aerial set). Used by ``make bench`` (``bench.bench``).

    python -m bench.dense --keep DIR [--count 600]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from bench.big_annotations import SAMPLE

HALF = 512  # each quarter of a tile


def build(root: Path, count: int, seed: int = 0) -> Path:
    """Write ``count`` mosaic tiles under ``root`` (annotations.json + images/); return it."""
    sample = json.loads((SAMPLE / "annotations.json").read_text())
    records = sample["images"]
    by_image: dict[int, list[dict]] = {}
    for ann in sample["annotations"]:
        if not ann.get("iscrowd") and isinstance(ann.get("segmentation"), list):
            by_image.setdefault(ann["image_id"], []).append(ann)
    quarters = [
        cv2.resize(cv2.imread(str(SAMPLE / "images" / r["file_name"])), (HALF, HALF))
        for r in records
    ]
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    tiles, anns = [], []
    for tile_id in range(1, count + 1):
        picks = rng.choice(len(records), size=4, replace=False)
        canvas = np.empty((2 * HALF, 2 * HALF, 3), np.uint8)
        for quarter, k in enumerate(picks):
            ox, oy = HALF * (quarter % 2), HALF * (quarter // 2)
            canvas[oy : oy + HALF, ox : ox + HALF] = quarters[k]
            sx, sy = HALF / records[k]["width"], HALF / records[k]["height"]
            for ann in by_image.get(records[k]["id"], []):
                parts = [
                    [
                        round(v * (sx if i % 2 == 0 else sy) + (ox if i % 2 == 0 else oy), 2)
                        for i, v in enumerate(part)
                    ]
                    for part in ann["segmentation"]
                ]
                xy = np.concatenate([np.reshape(p, (-1, 2)) for p in parts])
                x0, y0 = xy.min(axis=0)
                x1, y1 = xy.max(axis=0)
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": tile_id,
                        "category_id": ann["category_id"],
                        "segmentation": parts,
                        "area": float(ann["area"] * sx * sy),
                        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                        "iscrowd": 0,
                    }
                )
        name = f"tile_{tile_id:05d}.jpg"
        cv2.imwrite(str(root / "images" / name), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
        tiles.append({"id": tile_id, "file_name": name, "width": 2 * HALF, "height": 2 * HALF})
    dataset = {"images": tiles, "annotations": anns, "categories": sample["categories"]}
    (root / "annotations.json").write_text(json.dumps(dataset))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, required=True, help="folder to build the tiles in")
    parser.add_argument("--count", type=int, default=600)
    args = parser.parse_args()
    src = build(args.keep, args.count)
    n = len(json.loads((src / "annotations.json").read_text())["annotations"])
    print(f"{args.count} tiles, {n} polygon annotations ({n / args.count:.1f} per tile) in {src}")


if __name__ == "__main__":
    main()
