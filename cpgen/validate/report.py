"""What validation found: problem kinds, their counts and examples, and the warnings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cpgen.datasets.consumers import KINDS as CONSUMER_KINDS
from cpgen.datasets.consumers import ConsumerWarning

MAX_EXAMPLES = 5

KINDS: dict[str, str] = {
    "json": "the annotation file cannot be read as JSON",
    "json_shape": "records or fields missing or of the wrong type",
    "duplicate_id": "ids used by more than one record",
    "duplicate_file_name": "image records sharing a file_name",
    "unknown_image": "annotations pointing at a missing image",
    "unknown_category": "annotations pointing at a missing category",
    "segmentation_undecodable": "segmentations that do not decode",
    "polygon_part_short": "polygon parts with fewer than 6 numbers or an odd count",
    "empty_mask": "annotations whose mask has no pixel",
    "area_mismatch": "area disagrees with the mask's pixel count",
    "bbox_mismatch": "bbox disagrees with the mask's tight box",
    "bbox_outside": "boxes reaching outside the image",
    "file_name_unsafe": "file names that are absolute or escape the image folder (not read)",
    "image_missing": "image files missing",
    "image_undecodable": "image files that cannot be read or decoded",
    "image_too_large": "image files whose header is over the pixel limit (not decoded)",
    "image_size_mismatch": "image files of another size than recorded",
    "polygon_unsafe": "polygons with a coordinate that is not finite or far outside the image "
    "(not rasterised)",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong: its kind (a key of ``KINDS``) and a line saying where and what."""

    kind: str
    example: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}")


@dataclass
class Finding:
    """All problems of one kind: how many, and the first ``MAX_EXAMPLES`` of them."""

    count: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class Report:
    """What validation found, with the sizes of the tables it read."""

    images: int = 0
    annotations: int = 0
    categories: int = 0
    findings: dict[str, Finding] = field(default_factory=dict)
    #: what trips common consumers (``datasets.consumers``): reported, never invalid
    warnings: list[ConsumerWarning] = field(default_factory=list)

    def add(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            finding = self.findings.setdefault(problem.kind, Finding())
            finding.count += 1
            if len(finding.examples) < MAX_EXAMPLES:
                finding.examples.append(problem.example)

    @property
    def valid(self) -> bool:
        return not self.findings

    @property
    def num_problems(self) -> int:
        return sum(f.count for f in self.findings.values())

    def ordered(self) -> list[tuple[str, Finding]]:
        return [(kind, self.findings[kind]) for kind in KINDS if kind in self.findings]

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
            "problems": {
                kind: {"count": f.count, "examples": list(f.examples)} for kind, f in self.ordered()
            },
            "warnings": {
                w.kind: {"count": w.count, "example": w.example, "why": CONSUMER_KINDS[w.kind]}
                for w in self.warnings
            },
        }

    def lines(self) -> list[str]:
        """The human report: a heading per kind with its count, examples indented, a total;
        then the warnings, one line each."""
        warnings = [f"warning: {w.line()}" for w in self.warnings]
        if self.valid:
            return [
                f"valid: {self.images} images, {self.annotations} annotations, "
                f"{self.categories} categories",
                *warnings,
            ]
        out: list[str] = []
        for kind, finding in self.ordered():
            out.append(f"{kind} ({finding.count}): {KINDS[kind]}")
            out.extend(f"  {example}" for example in finding.examples)
            if finding.count > len(finding.examples):
                out.append(f"  ... and {finding.count - len(finding.examples)} more")
        n, m = self.num_problems, len(self.findings)
        out.append(f"{n} problem{'s' if n != 1 else ''} in {m} kind{'s' if m != 1 else ''}")
        return out + warnings
