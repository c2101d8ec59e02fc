"""The options of `cpgen copypaste` that decide its output (manifest and ``info``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cpgen.errors import UsageError


@dataclass(frozen=True)
class CopyPasteOptions:
    """Options that decide the output (recorded in the manifest and in ``info``)."""

    num_images: int | None = None
    seed: int = 0
    max_paste: int = 20
    scale: tuple[float, float] = (0.1, 2.0)
    hflip: float = 0.5
    blend: str = "none"
    sigma: float = 1.0
    min_visible_px: int = 10
    min_visible_frac: float = 0.1
    mask_format: str = "rle"
    originals: str = "link"
    quality: int = 95

    def __post_init__(self) -> None:
        def bad(option: str, why: str) -> UsageError:
            return UsageError(f"{option} {why}")

        if self.num_images is not None and self.num_images < 1:
            raise bad("--num-images", "must be at least 1")
        if not 0 <= self.seed < 2**63:
            raise bad("--seed", "must be in 0 .. 2**63 - 1")
        if self.max_paste < 1:
            raise bad("--max-paste", "must be at least 1")
        lo, hi = self.scale
        if not (0 < lo <= hi <= 100):
            raise bad("--scale", f"MIN MAX must satisfy 0 < MIN <= MAX <= 100, got {lo} {hi}")
        if not 0 <= self.hflip <= 1:
            raise bad("--hflip", "is a probability in [0, 1]")
        if self.blend not in ("gaussian", "none"):
            raise bad("--blend", "is gaussian or none")
        if not 0 <= self.sigma <= 100:
            raise bad("--sigma", "must be in [0, 100] pixels")
        if self.min_visible_px < 1:
            raise bad("--min-visible-px", "must be at least 1")
        if not 0 <= self.min_visible_frac <= 0.5:
            raise bad("--min-visible-frac", "must be in [0, 0.5] (mostly visible objects stay)")
        if self.mask_format not in ("rle", "polygon"):
            raise bad("--mask-format", "is rle or polygon")
        if self.originals not in ("link", "copy", "none"):
            raise bad("--originals", "is link, copy or none")
        if not 1 <= self.quality <= 100:
            raise bad("--quality", "must be in 1 .. 100")

    @property
    def blend_sigma(self) -> float:
        return self.sigma if self.blend == "gaussian" else 0.0


def options_record(options: CopyPasteOptions) -> dict[str, Any]:
    record = asdict(options)
    record["scale"] = list(options.scale)
    return record
