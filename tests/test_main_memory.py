"""The main process's memory stays flat in ``--num-images`` (issue 9): generate payloads are
made as the workers take them (``runner.Lazy``), each shard's status is read again where its
records are joined, and the merge holds one affinity block's shards at a time. What the main
process keeps per output is then the plan alone (its tasks and their shards: about 0.3 KB).
Made wrong, each costs more: all payloads made at once about 0.8 KB more an output here, the
merge holding every shard at once about 1.3 KB.

Measured with ``tracemalloc`` in a fresh process for each size, with the two workers forked
before tracing starts (as the command forks them before it reads the input), so that the peak
is the main process's own Python allocations: planning, dispatch, results and the merge. Blocks
of 64 outputs instead of 4,096, so that a small run spans many blocks, and writes of 64 KiB
instead of 1 MiB, so that the write buffer does not hide what grows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.big_annotations import build
from tests.copypaste_helpers import EXAMPLES

MEASURE = """
import functools, importlib, sys, tracemalloc
from pathlib import Path
from cpgen import copypaste, fork_pool, output, runner
from cpgen.datasets import coco
from cpgen.plan import affinity_shards

run_module = importlib.import_module("cpgen.copypaste.run")
run_module.AFFINITY_BLOCK = 64
run_module.affinity_shards = functools.partial(affinity_shards, block=64)
output.WRITE_BATCH = 1 << 16
index = coco.load(coco.find_layout(Path(sys.argv[1])))
runner.start_workers(2, "fork", ["cpgen.copypaste.shard"])
assert fork_pool.pids(), "the workers were not forked"
options = copypaste.CopyPasteOptions(num_images=int(sys.argv[3]), originals="none")
tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
copypaste.run(index, Path(sys.argv[2]), options, runner.RunOptions(workers=2))
print(tracemalloc.get_traced_memory()[1] - base)
"""


def main_process_peak(src: Path, out: Path, outputs: int) -> int:
    """Bytes: the main process's peak Python allocations over a run of ``outputs`` outputs."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # one thread: the pool can fork
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(src), str(out), str(outputs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    images = json.loads((out / "annotations.json").read_text())["images"]
    assert len(images) == outputs  # the run made them all (no originals)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pool forks on Linux only")
def test_main_process_memory_is_flat_in_the_number_of_outputs(tmp_path: Path) -> None:
    src = build(tmp_path / "src", 128, EXAMPLES)  # 640 images: a shard reads about 30
    small = main_process_peak(src, tmp_path / "small", 256)
    large = main_process_peak(src, tmp_path / "large", 2560)
    per_output = (large - small) / (2560 - 256)
    # measured: 13-14 bytes an output (the plan's 0.3 KB stays under the peak of other steps);
    # all payloads made at once: 790; the merge holding every shard at once: 1,280
    assert per_output < 400, f"{per_output:.0f} bytes more an output ({small} -> {large})"
    assert small < 4 << 20
