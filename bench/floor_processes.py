"""The codec floor as whole processes: what two processes gain over one on this machine at best.

cpgen's two-worker speed-up, measured as a user runs the console script, includes starting
the interpreter, the imports and the workers. This runs the floor's own loop (decode each
output's target and source, encode the output) as 1 or N fresh interpreters, each taking every
N-th output and writing its JPEG into one shared folder, as a tool must: its speed-up is the
machine's, with no planning, pasting or pool of cpgen's, so cpgen's figure can be read against
it on any machine.

    python -m bench.floor_processes PAIRS OUT K N QUALITY   # one process: outputs K, K+N, ...

PAIRS is a JSON list of [target path, source path], one per output (``write_pairs``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text(json.dumps(pairs))
    return path


def floor_processes(pairs: Path, out: Path, processes: int, quality: int) -> float:
    """Wall seconds from starting ``processes`` fresh interpreters to the last one's exit."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.floor_processes", str(pairs), str(out), str(k)]
            + [str(processes), str(quality)],
            cwd=Path(__file__).resolve().parents[1],
        )
        for k in range(processes)
    ]
    codes = [p.wait() for p in running]
    seconds = time.perf_counter() - start
    if any(codes):
        sys.exit(f"a floor process failed ({codes})")
    return seconds


def main() -> None:
    import cv2
    import numpy as np

    pairs_file, out, k, n, quality = sys.argv[1:6]
    cv2.setNumThreads(1)  # as in a cpgen worker
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    pairs = json.loads(Path(pairs_file).read_text())
    for i in range(int(k), len(pairs), int(n)):
        target_path, source_path = pairs[i]
        target = cv2.imdecode(np.fromfile(target_path, np.uint8), flags)
        cv2.imdecode(np.fromfile(source_path, np.uint8), flags)
        ok, data = cv2.imencode(".jpg", target, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        Path(out, f"{i:06d}.jpg").write_bytes(data.tobytes())


if __name__ == "__main__":
    main()
