"""CutMix options and the files it writes."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from cpgen import images, runner
from cpgen.errors import UsageError

SHARD_SIZE = 16
LABELS = "labels.csv"
CLASSES = "classes.json"
SOFT_LABELS = "soft_labels.npy"
COLUMNS = (
    "file",
    "base_class",
    "patch_class",
    "base_weight",
    "top",
    "left",
    "bottom",
    "right",
    "base_file",
    "patch_file",
    "seed",
)


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (height by width, pixels) as ``(height, width)``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise UsageError(f"--size {text!r} is not HxW", hint="for example --size 224x224")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class CutMixOptions:
    """Options that decide the output (recorded in the manifest)."""

    num_images: int | None = None
    seed: int = 0
    alpha: float = 1.0
    length: float | None = None
    uniform_sampling: bool = False
    size: tuple[int, int] | None = None  # (height, width) of every output, pixels
    quality: int = 95
    soft_labels: bool = False

    def __post_init__(self) -> None:
        if self.num_images is not None and self.num_images < 1:
            raise UsageError("--num-images must be at least 1")
        if not 0 <= self.seed < 2**63:
            raise UsageError("--seed must be in 0 .. 2**63 - 1")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise UsageError(f"--alpha must be a finite number >= 0, got {self.alpha}")
        if self.length is not None and not 0 < self.length <= 1:
            raise UsageError(
                f"--length must be in (0, 1] (a side relative to the image), got {self.length}"
            )
        if self.size is not None:
            height, width = self.size
            if height < 1 or width < 1:
                raise UsageError(f"--size {height}x{width} must be at least 1x1")
            if height * width > images.MAX_PIXELS:
                raise UsageError(f"--size {height}x{width} is over {images.MAX_PIXELS:,} pixels")
        if not 1 <= self.quality <= 100:
            raise UsageError("--quality must be in 1 .. 100")


@dataclass(frozen=True)
class RunOptions(runner.RunOptions):
    """How a cutmix run executes; never changes what it writes."""

    device: str | None = None  # torch device for the box copies; None: numpy in the workers
    batch_size: int = 64
    #: decoded images each worker keeps across shards, in MiB (None: ``default_cache_mb``; 0: off)
    cache_mb: int | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.cache_mb is not None and self.cache_mb < 0:
            raise UsageError("--cache-mb must be 0 or more")
        if self.device is not None and re.fullmatch(r"cpu|cuda(:\d+)?", self.device) is None:
            raise UsageError(f"--device {self.device!r} is not cpu, cuda or cuda:N")


def check_device(device: str, options: CutMixOptions) -> None:
    """Refuse ``--device`` before any work when it cannot run: no --size, no torch, no CUDA."""
    if options.size is None:
        raise UsageError(f"--device {device} needs --size HxW", hint="a device batch is one tensor")
    try:
        import torch
    except ImportError:
        raise UsageError(
            f"--device {device} needs PyTorch, which is not installed",
            hint="pip install 'cpgen[gpu]', or leave --device out to mix with numpy",
        ) from None
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {device}: CUDA is not available to PyTorch {torch.__version__}",
                hint="leave --device out (numpy) or use --device cpu",
            )
        number = int(device.partition(":")[2] or 0)
        if number >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA devices")
