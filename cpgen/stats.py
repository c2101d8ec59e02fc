"""`cpgen stats`: what a dataset or a cpgen output holds, per category, as a table or JSON.

For a COCO dataset: per category, instances (annotations) and images holding one; for a cpgen
copy-paste output the same in its original part (image records without a ``cpgen`` key) and its
generated part, the pasted instances (``cpgen.from == "source"``) and the target annotations
dropped; with ``--compare SRC`` the same counts in SRC. Instance sizes in COCO's buckets by
``area`` (small < 32^2 <= medium < 96^2 <= large, pixels; crowd regions not counted). For the
target objects of generated images (crowd regions aside): visible area / original area (the
area of the original annotation named by ``cpgen.ann_id``), as a histogram of the occluded ones,
and the dropped count (the target image's original annotations that no annotation of the
generated image names).
Both need the originals in the output (not ``--originals none``).

For a cutmix output: per class, images where it is the base and where it is the patch, and the
label mass it gets (sum of its weights); the distribution of the base weight.

The annotation file is read by :class:`cpgen.datasets.lazy.LazyCoco` without parsing polygon
coordinates (~5 s for 500k polygons).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cpgen.datasets import folders, lazy, paused_gc
from cpgen.datasets.coco import CocoFiles

SMALL, MEDIUM = 32**2, 96**2  # COCO's area thresholds, pixels
SIZES = ("small", "medium", "large")
BINS = 10  # histogram bins over [0, 1]


def size_of(ann: dict[str, Any]) -> str | None:
    """COCO's size bucket of an annotation by its ``area`` (box area when there is none)."""
    area = ann.get("area")
    if not isinstance(area, (int, float)) or isinstance(area, bool):
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4):
            return None
        area = float(box[2]) * float(box[3])
    return "small" if area < SMALL else "medium" if area < MEDIUM else "large"


def histogram(values: list[float]) -> dict[str, Any]:
    """Counts of ``values`` in :data:`BINS` equal bins over [0, 1] (1.0 in the last)."""
    counts, edges = np.histogram(np.clip(values, 0, 1), bins=BINS, range=(0, 1))
    summary: dict[str, Any] = {
        "bins": [round(float(e), 3) for e in edges],
        "counts": counts.tolist(),
    }
    if values:
        summary.update(
            mean=round(float(np.mean(values)), 4),
            median=round(float(np.median(values)), 4),
            min=round(float(np.min(values)), 4),
            max=round(float(np.max(values)), 4),
        )
    return summary


@dataclass
class Part:
    """Counts over one set of images."""

    images: int = 0
    annotations: int = 0

    def __post_init__(self) -> None:
        self.instances: Counter[int] = Counter()
        self.holding: dict[int, set[int]] = defaultdict(set)
        self.crowd: Counter[int] = Counter()
        self.sizes: dict[int, Counter[str]] = defaultdict(Counter)

    def add(self, ann: dict[str, Any]) -> None:
        category = ann.get("category_id")
        self.annotations += 1
        self.instances[category] += 1
        self.holding[category].add(ann.get("image_id"))
        if ann.get("iscrowd"):
            self.crowd[category] += 1
        else:
            bucket = size_of(ann)
            if bucket is not None:
                self.sizes[category][bucket] += 1

    def size_totals(self) -> dict[str, int]:
        return {s: sum(c[s] for c in self.sizes.values()) for s in SIZES}

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "annotations": self.annotations, "sizes": self.size_totals()}


def count(images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> Part:
    part = Part(images=len(images))
    for ann in annotations:
        part.add(ann)
    return part


def _from(ann: dict[str, Any]) -> str | None:
    provenance = ann.get("cpgen")
    return provenance.get("from") if isinstance(provenance, dict) else None


def coco_stats(dataset: lazy.LazyCoco, compare: lazy.LazyCoco | None = None) -> dict[str, Any]:
    """Everything ``cpgen stats`` reports on a COCO dataset, as one JSON-ready object."""
    annotations = dataset.annotations()
    generated_ids = {r["id"] for r in dataset.images if "cpgen" in r}
    is_cpgen = bool(generated_ids)
    everything = count(dataset.images, annotations)
    result: dict[str, Any] = {
        "kind": "cpgen" if is_cpgen else "coco",
        "path": str(dataset.files.annotations),
        "images": len(dataset.images),
        "annotations": len(annotations),
        "sizes": everything.size_totals(),
    }
    parts: dict[str, Part] = {}
    dropped: Counter[int] = Counter()
    if is_cpgen:
        original_anns = [a for a in annotations if a.get("image_id") not in generated_ids]
        generated_anns = [a for a in annotations if a.get("image_id") in generated_ids]
        parts["original"] = count(
            [r for r in dataset.images if r["id"] not in generated_ids], original_anns
        )
        parts["generated"] = count(
            [r for r in dataset.images if r["id"] in generated_ids], generated_anns
        )
        pasted = Counter(a.get("category_id") for a in generated_anns if _from(a) == "source")
        result["pasted"] = sum(pasted.values())
        occlusion = _occlusion(dataset.images, original_anns, generated_anns, generated_ids)
        dropped = occlusion.pop("dropped_by_category")
        result.update(occlusion)
    if compare is not None:
        parts["compare"] = count(compare.images, compare.annotations())
        result["compare"] = str(compare.files.annotations)
    result["parts"] = {name: part.to_json() for name, part in parts.items()}

    categories = list(dataset.categories)
    known = {c["id"] for c in categories}
    if compare is not None:
        categories += [c for c in compare.categories if c["id"] not in known]
    rows = []
    for cat in categories:
        cid = cat["id"]
        row: dict[str, Any] = {
            "id": cid,
            "name": cat.get("name"),
            "instances": everything.instances[cid],
            "images": len(everything.holding.get(cid, ())),
            "crowd": everything.crowd[cid],
            **{s: everything.sizes[cid][s] for s in SIZES},
        }
        for name, part in parts.items():
            row[f"{name}_instances"] = part.instances[cid]
            row[f"{name}_images"] = len(part.holding.get(cid, ()))
        if is_cpgen:
            row["pasted"] = pasted[cid]
            if result["dropped"]["available"]:
                row["dropped"] = dropped[cid]
        rows.append(row)
    result["categories"] = rows
    unknown = sum(1 for a in annotations if a.get("category_id") not in known)
    if unknown:
        result["unknown_category_annotations"] = unknown
    return result


def _occlusion(
    images: list[dict[str, Any]],
    original_anns: list[dict[str, Any]],
    generated_anns: list[dict[str, Any]],
    generated_ids: set[int],
) -> dict[str, Any]:
    """Visibility of the target objects of generated images and the annotations dropped."""
    if not original_anns and not any(r["id"] not in generated_ids for r in images):
        why = "the output holds no originals (made with --originals none)"
        return {
            "visibility": {"available": False, "reason": why},
            "dropped": {"available": False, "reason": why},
            "dropped_by_category": Counter(),
        }
    original = {a.get("id"): a for a in original_anns}
    by_image: dict[int, list[Any]] = defaultdict(list)
    for a in original_anns:
        by_image[a.get("image_id")].append(a.get("id"))
    kept: dict[int, set[Any]] = defaultdict(set)
    ratios, unoccluded, unmatched = [], 0, 0
    for ann in generated_anns:
        provenance = ann.get("cpgen")
        if _from(ann) != "target":
            continue
        kept[ann.get("image_id")].add(provenance.get("ann_id"))
        if ann.get("iscrowd"):
            continue  # a crowd region is not an object
        source = original.get(provenance.get("ann_id"))
        area, full = ann.get("area"), source.get("area") if source else None
        if not (isinstance(area, (int, float)) and isinstance(full, (int, float)) and full > 0):
            unmatched += 1
        elif area < full:
            ratios.append(float(area) / float(full))
        else:
            unoccluded += 1
    dropped_by_category: Counter[Any] = Counter()
    targets = 0
    for record in images:
        provenance = record.get("cpgen")
        if not isinstance(provenance, dict) or provenance.get("target_id") not in by_image:
            continue
        targets += 1
        for ann_id in set(by_image[provenance["target_id"]]) - kept[record["id"]]:
            dropped_by_category[original[ann_id].get("category_id")] += 1
    visibility = {"available": True, **histogram(ratios)}
    visibility.update(occluded=len(ratios), unoccluded=unoccluded, unmatched=unmatched)
    return {
        "visibility": visibility,
        "dropped": {
            "available": True,
            "total": sum(dropped_by_category.values()),
            "generated_images_with_target": targets,
        },
        "dropped_by_category": dropped_by_category,
    }


def cutmix_stats(output: lazy.CutmixOutput, compare: Path | None = None) -> dict[str, Any]:
    """Per class: images as base and as patch, label mass; the base weight's distribution."""
    base, patch, holding = Counter(), Counter(), Counter()
    mass: dict[str, float] = defaultdict(float)
    for row in output.rows:
        weight = row["base_weight"]
        base[row["base_class"]] += 1
        patch[row["patch_class"]] += 1
        mass[row["base_class"]] += weight
        mass[row["patch_class"]] += 1 - weight
        for name in {row["base_class"], row["patch_class"]}:
            holding[name] += 1
    compared: Counter[str] | None = None
    if compare is not None:
        classes, found, _ = folders.find_images(compare)
        compared = Counter(classes[label] for _, label in found)
    rows = []
    for k, name in enumerate(output.classes):
        row = {
            "id": k,
            "name": name,
            "instances": base[name] + patch[name],
            "images": holding[name],
            "base": base[name],
            "patch": patch[name],
            "label_mass": round(mass[name], 4),
        }
        if compared is not None:
            row["compare_images"] = compared[name]
        rows.append(row)
    result = {
        "kind": "cutmix",
        "path": str(output.root),
        "images": len(output.rows),
        "classes": len(output.classes),
        "categories": rows,
        "base_weight": histogram([r["base_weight"] for r in output.rows]),
    }
    if compare is not None:
        result["compare"] = str(compare)
    return result


def stats(dataset: CocoFiles | lazy.CutmixOutput, compare: Path | None) -> dict[str, Any]:
    """Read PATH (and ``compare``) and compute its statistics."""
    if isinstance(dataset, lazy.CutmixOutput):
        if compare is not None and not compare.is_dir():
            from cpgen.errors import UsageError

            raise UsageError(f"--compare {compare} is not a folder (an image folder, for cutmix)")
        return cutmix_stats(dataset, compare)
    with paused_gc():  # every annotation record at once, and no cycles among them
        other = None
        if compare is not None:
            other = lazy.LazyCoco.open(lazy.coco_files(compare, None, None, None))
        return coco_stats(lazy.LazyCoco.open(dataset), other)


# ---------------------------------------------------------------------------------------------
# The table


def table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """Aligned columns: text left, numbers right."""
    cells = [[str(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[k]) for r in cells)]) for k, h in enumerate(headers)]
    numeric = [all(isinstance(r[k], (int, float)) for r in rows) for k in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)]


def bars(summary: dict[str, Any], label: str) -> list[str]:
    """A histogram as text, one line per bin."""
    counts, edges = summary["counts"], summary["bins"]
    top = max(counts, default=0) or 1
    lines = [label]
    for k, n in enumerate(counts):
        closing = "]" if k == len(counts) - 1 else ")"
        bar = "#" * round(40 * n / top)
        lines.append(f"  [{edges[k]:.1f}, {edges[k + 1]:.1f}{closing} {n:>8}  {bar}")
    if "mean" in summary:
        lines.append(
            f"  mean {summary['mean']:.3f}, median {summary['median']:.3f}, "
            f"min {summary['min']:.3f}, max {summary['max']:.3f}"
        )
    return lines


def lines(result: dict[str, Any]) -> list[str]:
    """The human-readable report of :func:`coco_stats` or :func:`cutmix_stats`."""
    rows = result["categories"]
    if result["kind"] == "cutmix":
        head = [
            f"cutmix output {result['path']}: {result['images']} images, "
            f"{result['classes']} classes"
        ]
        columns = ["id", "class", "base", "patch", "images", "label mass"]
        keys = ["id", "name", "base", "patch", "images", "label_mass"]
        if "compare" in result:
            columns.append("compare images")
            keys.append("compare_images")
        body = table(columns, [[r[k] for k in keys] for r in rows])
        return [*head, "", *body, "", *bars(result["base_weight"], "base weight:")]

    parts = result["parts"]
    describe = ", ".join(
        f"{name} {p['images']} images / {p['annotations']} annotations" for name, p in parts.items()
    )
    head = [
        f"{'cpgen output' if result['kind'] == 'cpgen' else 'COCO dataset'} {result['path']}: "
        f"{result['images']} images, {result['annotations']} annotations"
        + (f" ({describe})" if describe else "")
    ]
    columns, keys = ["id", "category", "instances", "images"], ["id", "name", "instances", "images"]
    short = {"original": "orig", "generated": "gen", "compare": "cmp"}
    for name in parts:
        columns += [f"{short[name]} inst", f"{short[name]} imgs"]
        keys += [f"{name}_instances", f"{name}_images"]
    if result["kind"] == "cpgen":
        columns.append("pasted")
        keys.append("pasted")
        if result["dropped"]["available"]:
            columns.append("dropped")
            keys.append("dropped")
    columns += ["crowd", *SIZES]
    keys += ["crowd", *SIZES]
    out = [*head, "", *table(columns, [[r.get(k, "") for k in keys] for r in rows]), ""]
    if result.get("unknown_category_annotations"):
        out += [f"annotations of unknown categories: {result['unknown_category_annotations']}", ""]
    size_rows = [["all", *result["sizes"].values()]]
    size_rows += [[name, *p["sizes"].values()] for name, p in parts.items()]
    out.append(
        f"sizes by area (small < {SMALL} <= medium < {MEDIUM} <= large px; crowd not counted):"
    )
    out += ["  " + s for s in table(["part", *SIZES], size_rows)]
    if result["kind"] == "cpgen":
        out.append(f"pasted instances: {result['pasted']}")
        visibility, dropped = result["visibility"], result["dropped"]
        if visibility["available"]:
            out += bars(
                visibility,
                "visible share of occluded target objects (visible area / original area):",
            )
            out.append(
                f"  occluded {visibility['occluded']}, not occluded "
                f"{visibility['unoccluded']}, without an original {visibility['unmatched']}"
            )
            out.append(
                f"dropped target annotations: {dropped['total']} (over "
                f"{dropped['generated_images_with_target']} generated images)"
            )
        else:
            out.append(f"visibility and dropped counts unavailable: {visibility['reason']}")
    return out
