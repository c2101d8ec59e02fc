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
    mask_format: str = "polygon"
    originals: str = "link"
    quality: int = 95
    # options for the datasets people bring (recorded only when set: see options_record)
    paste_by: str = "mask"
    backgrounds: str | None = None
    backgrounds_frac: float | None = None
    paste_from: str | None = None
    paste_ann: str | None = None
    paste_images: str | None = None
    categories: tuple[str, ...] | None = None
    balance: str = "none"
    rotate: float = 0.0

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
        if self.paste_by not in ("mask", "box"):
            raise bad("--paste-by", "is mask (box where an annotation has no mask) or box")
        if self.backgrounds_frac is not None:
            if self.backgrounds is None:
                raise bad("--backgrounds-frac", "needs --backgrounds DIR")
            if not 0 <= self.backgrounds_frac <= 1:
                raise bad("--backgrounds-frac", "is a fraction in [0, 1]")
        if self.paste_from is not None and (self.paste_ann or self.paste_images):
            raise bad("--paste-from", "excludes --paste-ann/--paste-images (give one or the other)")
        if (self.paste_ann is None) != (self.paste_images is None):
            raise bad("--paste-ann", "and --paste-images go together")
        if self.categories is not None and not [c for c in self.categories if c.strip()]:
            raise bad("--categories", "names no category")
        if self.balance not in ("none", "category"):
            raise bad("--balance", "is none or category")
        if not 0 <= self.rotate <= 180:
            raise bad("--rotate", "must be in [0, 180] degrees")

    @property
    def background_fraction(self) -> float:
        """The share of outputs on backgrounds (1 when --backgrounds is given alone)."""
        if self.backgrounds is None:
            return 0.0
        return 1.0 if self.backgrounds_frac is None else self.backgrounds_frac

    @property
    def pool(self) -> bool:
        """Whether instances come from a second dataset (an object pool)."""
        return self.paste_from is not None or self.paste_ann is not None

    @property
    def blend_sigma(self) -> float:
        return self.sigma if self.blend == "gaussian" else 0.0


#: Options added with box-only datasets, backgrounds, pools, categories and rotation: recorded
#: only when they differ from their default, so a plain run's ``info`` stays what it was.
LATER_OPTIONS = (
    "paste_by",
    "backgrounds",
    "backgrounds_frac",
    "paste_from",
    "paste_ann",
    "paste_images",
    "categories",
    "balance",
    "rotate",
)


def options_record(options: CopyPasteOptions) -> dict[str, Any]:
    """The options as JSON (manifest and ``info``); a resume with other values is refused."""
    record = asdict(options)
    record["scale"] = list(options.scale)
    defaults = CopyPasteOptions()
    for key in LATER_OPTIONS:
        if getattr(options, key) == getattr(defaults, key):
            del record[key]
    if options.categories is not None:
        record["categories"] = list(options.categories)
    if options.backgrounds is not None:
        record["backgrounds_frac"] = options.background_fraction
    return record
