"""Milliseconds per batch of ``cpgen.functional.copypaste_batch`` on a synthetic batch.

A batch of N x 3 x H x W random uint8 (or float32) images, each with K elliptical instances
(axes 20..200 pixels), the params drawn from a seeded generator each call as in training.

    python -m bench.copypaste_batch_bench [--device cpu|cuda] [--batch-size 16] [--size 480x640]
        [--instances 10] [--dtype uint8|float32] [--threads T] [--repeats 15]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cpgen.functional import copypaste_batch


def synthetic_batch(
    n: int, height: int, width: int, instances: int, device: str, seed: int = 0
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Random pixels and ``instances`` filled ellipses per image."""
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (n, 3, height, width), dtype=np.uint8))
    yy, xx = np.ogrid[:height, :width]
    masks, labels = [], []
    for _ in range(n):
        m = np.zeros((instances, height, width), bool)
        for k in range(instances):
            cx, cy = rng.integers(0, width), rng.integers(0, height)
            rx, ry = rng.integers(20, 200, 2)
            m[k] = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        masks.append(torch.from_numpy(m).to(device))
        labels.append(torch.from_numpy(rng.integers(1, 91, instances)).to(device))
    return images.to(device), masks, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", default="480x640", help="HxW")
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--dtype", choices=("uint8", "float32"), default="uint8")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))
    images, masks, labels = synthetic_batch(
        args.batch_size, height, width, args.instances, args.device
    )
    if args.dtype == "float32":
        images = images.float() / 255
    generator = np.random.default_rng(0)

    def once() -> tuple[float, float, int]:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        out = copypaste_batch(images, masks, labels, generator=generator)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        return wall, cpu, sum(int(p.sum()) for p in out.pasted)

    once()  # warm-up: OpenCV probe, allocator, kernels
    runs = [once() for _ in range(args.repeats)]
    times = sorted(t for t, _, _ in runs)
    cpu_median = float(np.median([c for _, c, _ in runs]))
    pasted = np.mean([p for _, _, p in runs])
    median = times[len(times) // 2]
    print(
        f"copypaste_batch {args.device} {args.dtype} {args.batch_size}x3x{height}x{width}, "
        f"{args.instances} instances/image, torch threads {torch.get_num_threads()}: "
        f"median {median * 1e3:.1f} ms/batch (min {times[0] * 1e3:.1f}; "
        f"process CPU time median {cpu_median * 1e3:.1f} ms), "
        f"{args.batch_size / median:.0f} images/s, {pasted:.0f} pasted instances/batch"
    )


if __name__ == "__main__":
    main()
