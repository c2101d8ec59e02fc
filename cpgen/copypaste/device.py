"""`cpgen copypaste --device cpu|cuda[:N]`: the pasted pixels composited with PyTorch.

Everything but the pixels runs the CPU path's own code: :func:`cpgen.copypaste.shard.
run_generate_shard` draws, reads, builds the masks, occlusion and records, and hands the pixel
steps to a :class:`DevicePixels`:

* decode: with the ``nvjpeg`` codec (below) JPEGs are decoded by nvJPEG on the device
  (``torchvision.io.decode_jpeg``) and their pixels brought to host memory for the mask code;
  otherwise, and for whatever nvJPEG cannot decode, by OpenCV in the shard's thread. Shards ask
  for every image whole and reduce a source drawn small themselves (``images.reduce``), as on
  the CPU path;
* paint: the placed source is warped over the CPU path's rects (``compose.paint_rects``) with
  :func:`cpgen.functional_copypaste.warp_rect` (OpenCV's sampling coordinates, bit for bit; the
  bilinear weights in float32) and composited through the union on the device, blended like
  :func:`cpgen.ops.paste.composite` with ``--blend gaussian`` (the soft mask is blurred on the
  CPU with OpenCV, the blend is done on the device);
* write: outputs are queued and encoded in batches of ``--batch-size`` across shards, in
  ``--workers`` threads with OpenCV, or with nvJPEG (``torchvision.io.encode_jpeg`` of CUDA
  tensors) on CUDA when torchvision loads and encodes and decodes there (the ``nvjpeg`` codec,
  recorded in the manifest); a shard's result file is written
  once all its images are, exactly as a worker writes it, so ``--resume`` stays exact.

Shards run in ``--workers`` threads of this process (OpenCV releases the GIL while decoding).
``annotations.json`` is byte-identical to the CPU path's. With OpenCV's codec pixels differ
from it by at most one grey level before JPEG (the same float32 formula, unfused; measured in
the tests); nvJPEG's decoder adds its own small differences (not measured yet: no GPU was
lent). ``--rotate`` is refused: the device warp does not turn instances.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cpgen import images, masks, runner
from cpgen.copypaste.compose import CPU_PIXELS, Pixels, paint_rects, sub_mask
from cpgen.copypaste.options import CopyPasteOptions
from cpgen.copypaste.shard import GenerateShard, run_generate_shard
from cpgen.errors import UsageError
from cpgen.ops import opencv_own_kernels
from cpgen.ops.paste import FULL_ALPHA, Placement

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import torch

#: The codecs a device run may use (recorded in the manifest: they write different bytes).
CODECS = ("opencv", "nvjpeg")


@dataclass(frozen=True)
class RunOptions(runner.RunOptions):
    """How a copy-paste run executes: the runner's options, and the torch device (None: the
    numpy path in worker processes) with its batch size (outputs per encode batch)."""

    device: str | None = None
    batch_size: int = 64
    #: decoded images each worker keeps across shards, in MiB (None: ``default_cache_mb``; 0: off)
    cache_mb: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.cache_mb is not None and self.cache_mb < 0:
            raise UsageError("--cache-mb must be 0 or more")
        if self.device is not None and re.fullmatch(r"cpu|cuda(:\d+)?", self.device) is None:
            raise UsageError(f"--device {self.device!r} is not cpu, cuda or cuda:N")


def check_device(device: str, options: CopyPasteOptions) -> None:
    """Refuse ``--device`` before any work when it cannot run: --rotate, no torch, no CUDA."""
    if options.rotate > 0:
        raise UsageError(
            f"--device {device} does not support --rotate",
            hint="leave --device out to rotate with OpenCV",
        )
    try:
        import torch
    except ImportError:
        raise UsageError(
            f"--device {device} needs PyTorch, which is not installed",
            hint="pip install 'cpgen[gpu]', or leave --device out to paste with OpenCV",
        ) from None
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {device}: CUDA is not available to PyTorch {torch.__version__}",
                hint="leave --device out (OpenCV) or use --device cpu",
            )
        number = int(device.partition(":")[2] or 0)
        if number >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA devices")


def codec(device: str) -> str:
    """``nvjpeg`` when ``device`` is CUDA and torchvision encodes and decodes a JPEG there, else
    ``opencv`` (CPU threads). torchvision is optional and often absent or built for another
    torch."""
    if not device.startswith("cuda"):
        return "opencv"
    try:
        import torch
        from torchvision.io import decode_jpeg, encode_jpeg

        probe = torch.zeros((3, 16, 16), dtype=torch.uint8, device=device)
        (encoded,) = encode_jpeg([probe], quality=90)
        decode_jpeg([encoded.cpu()], device=device)
    except Exception:  # noqa: BLE001 - any failure to load or run means: the CPU codec
        return "opencv"
    return "nvjpeg"


def decode_nvjpeg(data: bytes, expected: tuple[int, int], device: str) -> images.Image:
    """:data:`cpgen.copypaste.sources.Decoder` by nvJPEG on ``device`` (torchvision): the whole
    image, brought back to host memory, where masks and records are made (a source drawn small
    is averaged down there, as on the CPU path, so the recorded reduction, and so
    ``annotations.json``, is the CPU path's). What nvJPEG cannot decode (not a JPEG, CMYK, a
    corrupt file) goes to OpenCV, which also names the problem."""
    size = images.header_size(data) if data.startswith(b"\xff\xd8") else None
    if size is None:
        return images.decode(data, expected)
    images.check_size(size, expected)
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        (rgb,) = decode_jpeg(
            [torch.frombuffer(bytearray(data), dtype=torch.uint8)],
            mode=ImageReadMode.RGB,
            device=device,
        )
    except RuntimeError:
        return images.decode(data, expected)
    return to_bgr_host(rgb)


def to_bgr_host(rgb: torch.Tensor) -> images.Image:
    """A 3xHxW RGB uint8 tensor as the HxWx3 BGR array OpenCV gives, in host memory."""
    return rgb.flip(0).permute(1, 2, 0).contiguous().cpu().numpy()


def manifest_record(device: str) -> dict[str, str]:
    """What the manifest records of a device run: the device kind and codec decide the bytes,
    so ``--resume`` with another (or without ``--device``) is refused. Not in ``info``:
    ``annotations.json`` is the same whichever paints."""
    return {"device": device.partition(":")[0], "codec": codec(device)}


@dataclass
class _Shard:
    queued: int = 0  # images given and not yet written
    done: Callable[[], None] | None = None  # writes the shard's result file


@dataclass
class Batcher:
    """Paints on ``device`` and encodes queued outputs in batches, across shards."""

    device: str
    batch_size: int
    encoder: ThreadPoolExecutor
    codec: str = "opencv"
    on_written: Callable[[int], None] = lambda n: None
    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: list[tuple[int, Path, images.Image, int]] = field(default_factory=list)
    shards: dict[int, _Shard] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from cpgen.ops.warp_coords import opencv_vector_block

        self.block = opencv_vector_block()

    def decode(self, data: bytes, expected: tuple[int, int]) -> images.Image:
        """An input image's whole pixels: by nvJPEG on the device when the codec is
        ``nvjpeg``, else by OpenCV in this (shard) thread."""
        if self.codec == "nvjpeg":
            return decode_nvjpeg(data, expected, self.device)
        return images.decode(data, expected)

    def paint(
        self,
        target: images.Image,
        source: images.Image,
        placement: Placement,
        rect: tuple[int, int, int, int],
        crop_mask: masks.Mask,
        sigma: float,
        boxes: Sequence[Sequence[int]] = (),
    ) -> None:
        """:meth:`cpgen.copypaste.compose.Pixels.paint` on the device, now (the source array
        may be another task's target later in the shard), over the same rects."""
        import torch

        source_t = torch.from_numpy(source).to(self.device).permute(2, 0, 1)
        for part in paint_rects(rect, sigma, boxes):
            self._paint_rect(
                target, source_t, placement, part, sub_mask(crop_mask, rect, part), sigma
            )

    def _paint_rect(
        self,
        target: images.Image,
        source_t: torch.Tensor,
        placement: Placement,
        rect: tuple[int, int, int, int],
        crop_mask: masks.Mask,
        sigma: float,
    ) -> None:
        import torch

        from cpgen.functional_copypaste import warp_rect

        x, y, w, h = rect
        on_cpu = self.device == "cpu"
        roi_np = target[y : y + h, x : x + w]
        if on_cpu:  # a view of the target: written in place
            roi = torch.from_numpy(target).permute(2, 0, 1)[:, y : y + h, x : x + w]
        else:
            roi = torch.from_numpy(np.ascontiguousarray(roi_np)).to(self.device).permute(2, 0, 1)
        union = torch.from_numpy(np.ascontiguousarray(crop_mask)).to(self.device).bool()
        pasted = warp_rect(source_t, placement, rect, self.block, torch.uint8)
        painted = torch.where(union, pasted, roi)
        if sigma > 0:
            painted = _blend(painted, pasted, roi, union, crop_mask, sigma, self.device)
        if on_cpu:
            roi.copy_(painted)
        else:
            roi_np[...] = painted.permute(1, 2, 0).cpu().numpy()

    def add(self, shard: int, path: Path, image: images.Image, quality: int) -> None:
        """Queue one output of ``shard``; encode and write a batch once ``batch_size`` wait."""
        with self.lock:
            self.shards.setdefault(shard, _Shard()).queued += 1
            self.queue.append((shard, path, image, quality))
            batch = self._take(self.batch_size)
        self._write(batch)

    def finish(self, shard: int, done: Callable[[], None]) -> None:
        """Write what is queued (this shard's last outputs with it), then ``done`` once all the
        shard's images are written, by whichever thread writes its last one."""
        with self.lock:
            state = self.shards.setdefault(shard, _Shard())
            state.done = done
            batch = self._take(1)
            ready = state.queued == 0
            if ready:
                del self.shards[shard]
        self._write(batch)
        if ready:
            done()

    def _take(self, least: int) -> list[tuple[int, Path, images.Image, int]]:
        if len(self.queue) < least:
            return []
        batch, self.queue = self.queue, []
        return batch

    def _write(self, batch: list[tuple[int, Path, images.Image, int]]) -> None:
        if not batch:
            return
        if self.codec == "nvjpeg":
            data = self._encode_nvjpeg(batch)
            list(self.encoder.map(images.write_output_image, [b[1] for b in batch], data))
        else:
            list(self.encoder.map(lambda b: CPU_PIXELS.write(*b[1:]), batch))
        self.on_written(len(batch))
        finished = []
        with self.lock:
            for shard, *_ in batch:
                state = self.shards[shard]
                state.queued -= 1
                if state.queued == 0 and state.done is not None:
                    finished.append(state.done)
                    del self.shards[shard]
        for done in finished:
            done()

    def _encode_nvjpeg(self, batch: list[tuple[int, Path, images.Image, int]]) -> list[bytes]:
        """JPEGs of the batch encoded by nvJPEG (torchvision), one call per quality."""
        import torch
        from torchvision.io import encode_jpeg

        tensors = [
            torch.from_numpy(np.ascontiguousarray(b[2][..., ::-1])).to(self.device).permute(2, 0, 1)
            for b in batch
        ]
        encoded = encode_jpeg(tensors, quality=batch[0][3])  # one run: one --quality
        return [e.cpu().numpy().tobytes() for e in encoded]


def _blend(
    painted: torch.Tensor,
    pasted: torch.Tensor,
    under: torch.Tensor,
    union: torch.Tensor,
    crop_mask: masks.Mask,
    sigma: float,
    device: str,
) -> torch.Tensor:
    """:func:`cpgen.ops.paste.composite`'s soft edge: inside the union where the blurred mask is
    under :data:`FULL_ALPHA`, ``rint(alpha * pasted + (1 - alpha) * under)`` in float32."""
    import cv2
    import torch

    opencv_own_kernels()
    alpha_np = cv2.GaussianBlur(crop_mask.astype(np.float32), (0, 0), sigmaX=sigma)
    alpha = torch.from_numpy(alpha_np).to(device)
    band = (alpha < FULL_ALPHA) & union
    mixed = torch.round(pasted.float() * alpha + under.float() * (1.0 - alpha))
    return torch.where(band, mixed.to(torch.uint8), painted)


@dataclass
class DevicePixels(Pixels):
    """One shard's :class:`~cpgen.copypaste.compose.Pixels` on the shared :class:`Batcher`."""

    batcher: Batcher
    shard: int

    def decode(self, data: bytes, expected: tuple[int, int]) -> images.Image:
        return self.batcher.decode(data, expected)

    def paint(self, *args: Any) -> None:
        self.batcher.paint(*args)

    def write(self, path: Path, image: images.Image, quality: int) -> None:
        self.batcher.add(self.shard, path, image, quality)

    def finish(self, done: Callable[[], None]) -> None:
        self.batcher.finish(self.shard, done)


def run_device(
    payloads: list[GenerateShard], run_options: RunOptions, total: int, initial: int
) -> None:
    """Run the shards in ``--workers`` threads of this process, painting on the device and
    encoding in batches of ``--batch-size``; progress counts to ``total`` from ``initial``."""
    import torch
    from tqdm import tqdm

    runner.setup_worker()
    device = run_options.device
    assert device is not None
    threads = torch.get_num_threads()
    if device == "cpu":  # the workers are the parallelism: torch's own pool only contends
        torch.set_num_threads(1)  # (measured 2.8x slower with 2 on 2 cores)
    bar = tqdm(
        desc="copypaste",
        total=total,
        initial=initial,
        unit="img",
        disable=not run_options.progress,
        dynamic_ncols=True,
    )
    workers = max(1, run_options.workers)
    with runner.thread_pool(workers) as encoder, runner.thread_pool(workers) as shards:
        batcher = Batcher(device, run_options.batch_size, encoder, codec(device), bar.update)
        futures = [
            shards.submit(run_generate_shard, job, DevicePixels(batcher, job.number))
            for job in payloads
        ]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)  # a failed shard stops the run at once
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            bar.close()
            torch.set_num_threads(threads)
