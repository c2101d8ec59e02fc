"""A COCO-sized annotation file: how long and how much memory before and during a small run.

Builds (once, in a temp folder, nothing committed) a dataset of ``--copies`` x the shared COCO
sample: the sample's images hard-linked under new names and its annotations repeated with new
ids (625 copies: 50,000 images, about 509,000 polygon annotations, a 280 MB JSON), then times
the whole command

    cpgen copypaste --src BIG --out OUT --num-images 200 --originals none -j 2

as a user runs it, and prints its wall time and the peak RSS of the largest process, and how
long the first parse of the file alone takes (``json.load``) for comparison.

    python -m bench.big_annotations [--copies 625] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "coco_val2017_tiny80"


def build(root: Path, copies: int, source: Path = SAMPLE) -> Path:
    """Write the big dataset under ``root`` (annotations.json + images/): ``copies`` x the COCO
    dataset ``source`` (the shared sample), its images hard-linked; return ``root``."""
    sample = json.loads((source / "annotations.json").read_text())
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    image_ids = {r["id"]: k for k, r in enumerate(sample["images"])}
    n_images, n_anns = len(sample["images"]), len(sample["annotations"])
    with (root / "annotations.json").open("w") as f:
        f.write('{"info":{"description":"bench: the COCO sample repeated"},"licenses":[],')
        f.write('"categories":' + json.dumps(sample["categories"]) + ',"images":[')
        for copy in range(copies):
            for k, record in enumerate(sample["images"]):
                name = f"{copy:04d}_{record['file_name']}"
                os.link(source / "images" / record["file_name"], images_dir / name)
                new = {**record, "id": copy * n_images + k + 1, "file_name": name}
                f.write(("," if copy or k else "") + json.dumps(new))
        f.write('],"annotations":[')
        for copy in range(copies):
            for k, ann in enumerate(sample["annotations"]):
                new = {
                    **ann,
                    "id": copy * n_anns + k + 1,
                    "image_id": copy * n_images + image_ids[ann["image_id"]] + 1,
                }
                f.write(("," if copy or k else "") + json.dumps(new))
        f.write("]}\n")
    return root


#: Runs a command and prints its exit code and the peak RSS (KiB) of its largest process,
#: from a fresh process so that earlier measurements do not count.
_PEAK = (
    "import resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def measure(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the largest process of ``command`` and its children."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, *command], capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - start
    code, peak_kib = (int(v) for v in done.stdout.split())
    if code not in (0, 3):
        sys.exit(f"failed ({code}): {done.stderr[-2000:]}")
    return seconds, peak_kib / 1024


def cpgen_command(src: Path, out: Path, num_images: int, workers: int = 2) -> list[str]:
    """The measured command: ``cpgen copypaste`` as a user runs it on a big file."""
    cpgen = Path(sys.executable).with_name("cpgen")
    command = [str(cpgen), "copypaste", "--src", str(src), "--out", str(out)]
    command += ["--num-images", str(num_images), "--originals", "none"]
    return command + ["-j", str(workers), "--quiet"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=625)
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="build here and keep it (reused if present)")
    args = parser.parse_args()
    if not SAMPLE.is_dir():
        sys.exit(f"{SAMPLE} is absent: this bench needs the shared COCO sample")
    work = args.keep or Path(tempfile.mkdtemp(prefix="cpgen-big-"))
    try:
        src = work / "big"
        if not (src / "annotations.json").is_file():
            started = time.perf_counter()
            build(src, args.copies)
            print(f"built {src} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        size = (src / "annotations.json").stat().st_size / 2**20
        parse_s, parse_mib = measure(
            [
                sys.executable,
                "-c",
                f"import json; json.load(open({str(src / 'annotations.json')!r}))",
            ]
        )
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        run_s, run_mib = measure(cpgen_command(src, out, args.num_images))
        print(f"big annotation file: {size:.0f} MiB, {args.copies} copies of the COCO sample")
        print(f"  json.load alone              {parse_s:6.1f} s  {parse_mib:7.0f} MiB peak")
        print(
            f"  cpgen copypaste, {args.num_images} outputs  {run_s:6.1f} s  {run_mib:7.0f} MiB peak"
            "  (-j 2, --originals none; target <= 15 s and <= 2 GiB)"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
