"""Helpers shared by the tests of copy-paste's dataset options (boxes, backgrounds, pools,
categories, rotation): run the CLI, decode what it wrote, re-derive a pasted instance."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from typer.testing import CliRunner

from cpgen import masks, validate
from cpgen.cli import app
from cpgen.copypaste import CopyPasteOptions
from cpgen.copypaste.compose import Generated, copy_paste, draw_params
from cpgen.datasets import coco
from cpgen.datasets.coco_checks import usable_record
from cpgen.ops.paste import Placement

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "coco"

runner = CliRunner()


def invoke(*args: str) -> Any:
    """`cpgen copypaste ARGS` in this process (the CliRunner result)."""
    return runner.invoke(app, ["copypaste", *args])


def generate(*args: str) -> dict[str, Any]:
    """Run copypaste (must exit 0) and return its ``--json`` summary."""
    result = invoke(*args, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_valid(out: Path) -> None:
    """`cpgen validate` finds no problem in an output."""
    report = validate.validate(coco.CocoFiles(out / "annotations.json", out / "images"))
    assert report.valid, report.lines()


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def box_only_copy(src: Path, dst: Path, every: int = 1) -> Path:
    """A copy of a COCO dataset's annotation file whose every ``every``-th annotation lost its
    segmentation (removed, null or [], in turn); returns the file (images stay in ``src``)."""
    data = load(src / "annotations.json")
    for k, ann in enumerate(data["annotations"]):
        if k % every == 0:
            style = (k // every) % 3
            if style == 0:
                del ann["segmentation"]
            else:
                ann["segmentation"] = None if style == 1 else []
    dst.mkdir(parents=True, exist_ok=True)
    path = dst / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def mask_of(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """The decoded mask of an output or input annotation (a box-only one: its rectangle)."""
    if masks.is_box_only(ann):
        seg: Any = [masks.box_polygon(ann["bbox"], height, width)]
    else:
        seg = ann["segmentation"]
        if isinstance(seg, list):
            seg, _ = masks.clean_polygons(seg)
    return masks.decode(masks.segmentation_to_rle(seg, height, width)).astype(bool)


def placement_of(record: dict[str, Any], source: dict[str, Any]) -> Placement:
    """The placement an output's provenance records (``source``: the source image record)."""
    params = record["cpgen"]["params"]
    return Placement(
        params["hflip"],
        params["scale"],
        params["offset"][0],
        params["offset"][1],
        source["width"],
        source["height"],
        params.get("rotation", 0.0),
    )


def block_mean(pixels: np.ndarray, reduction: int) -> np.ndarray:
    """A source as cpgen takes it at 1/``reduction`` (``source_reduction``), computed here
    independently: halved until small enough, each 2x2 block's mean rounded half up, an odd
    side extended by its last row or column first."""
    while reduction > 1:
        h, w = pixels.shape[:2]
        even = np.pad(pixels.astype(np.float64), ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        blocks = even.reshape(even.shape[0] // 2, 2, even.shape[1] // 2, 2, -1)
        pixels = np.floor(blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)
        reduction //= 2
    return pixels


def source_pixels(path: Path, reduction: int) -> np.ndarray:
    """The pixels a source at ``path`` is pasted from at ``reduction`` (``source_reduction``)."""
    return block_mean(read_image(path), reduction)


def read_image(path: Path, oriented: bool = False) -> np.ndarray:
    flags = cv2.IMREAD_COLOR if oriented else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imread(str(path), flags)
    assert image is not None, path
    return image


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every output file but cpgen's own state folder (which records timings)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cpgen" not in p.parts
    }


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@dataclass
class ExamplePair:
    """A target and a source image of ``examples/coco``, decoded, with their records (the
    target's as copy-paste takes them, the source's as the index keeps them)."""

    seed: int
    target: np.ndarray
    source: np.ndarray
    target_size: tuple[int, int]
    source_size: tuple[int, int]
    target_anns: list[dict[str, Any]]
    source_records: list[dict[str, Any]]

    def paste(
        self, options: CopyPasteOptions, source_anns: list[dict[str, Any]], **kwargs: Any
    ) -> Generated:
        """``copy_paste`` onto a copy of the target, drawn with the pair's seed."""
        params = draw_params(self.seed, source_anns, self.source_size, self.target_size, options)
        return copy_paste(
            params,
            self.target.copy(),
            copy.deepcopy(self.target_anns),
            self.source,
            source_anns,
            options,
            self.source_size,
            **kwargs,
        )


def example_pairs() -> list[ExamplePair]:
    """Each example image with two or more annotations as a target, the next one as its
    source."""
    index = coco.load(coco.find_layout(EXAMPLES))
    refs = [p for p, anns in enumerate(index.anns_by_image) if len(anns) >= 2]
    pairs = []
    for seed, (target, source) in enumerate(zip(refs, refs[1:] + refs[:1], strict=True)):
        records = [index.images[target], index.images[source]]
        pixels = [cv2.imread(str(index.files.images / r["file_name"])) for r in records]
        target_size, source_size = [(r["width"], r["height"]) for r in records]
        pairs.append(
            ExamplePair(
                seed,
                pixels[0],
                pixels[1],
                target_size,
                source_size,
                [usable_record(a) for a in index.anns_by_image[target]],
                index.anns_by_image[source],
            )
        )
    return pairs


def unfinish_shards(out: Path, keep: int) -> list[Path]:
    """Leave OUT as a kill after its first ``keep`` shards could: the later shards' result files
    gone. Returns the generated images those shards had written, which a resume writes again
    (a shard's outputs are not consecutive: ``plan.affinity_shards``)."""
    unfinished: list[Path] = []
    for number, path in enumerate(sorted((out / ".cpgen" / "shards").glob("*.json"))):
        if number < keep:
            continue
        status_line, *records = path.read_text(encoding="utf-8").splitlines()
        status = json.loads(status_line)
        if status["kind"] == "generated":
            for record in records[: status["lines"]["images"]]:
                unfinished.append(out / "images" / json.loads(record)["file_name"])
        path.unlink()
    return sorted(unfinished)
