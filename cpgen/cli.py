"""The `cpgen` command line: thin commands that turn options into a config and run it.

Results go to stdout (``--json``); progress, warnings and errors go to stderr. Known failures
print ``Error: ...`` with a hint and no traceback (set CPGEN_DEBUG=1 to see one).
Exit codes: 0 ok, 1 data or I/O error, 2 usage error, 3 finished but items were skipped,
128 + N on signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from cpgen import __version__
from cpgen.errors import (
    EXIT_DATA,
    EXIT_INTERRUPTED,
    EXIT_SKIPPED,
    EXIT_USAGE,
    CpgenError,
    Terminated,
    UsageError,
    describe_os_error,
)

app = typer.Typer(
    name="cpgen",
    help="Offline dataset generation for computer vision: Simple Copy-Paste for COCO instance "
    "segmentation, CutMix for image folders. Exit codes: 0 ok, 1 data or I/O error, 2 usage error, "
    "3 finished but some items were skipped (named on stderr), 128+N on signal N (130 Ctrl-C, "
    "143 SIGTERM).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

# Options shared by the generating commands, declared once.
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.", show_default=False)]
SeedOpt = Annotated[int, typer.Option(help="Random seed; same inputs and seed, same bytes out.")]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers", "-j", help="Worker processes (default: all cores).", show_default=False
    ),
]
BackendOpt = Annotated[
    str, typer.Option(help="joblib backend: loky, threading, multiprocessing, dask, ...")
]
QualityOpt = Annotated[int, typer.Option(help="JPEG quality of generated images (1-100).")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an earlier cpgen output in --out.")
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume", help="Continue an interrupted run into the same --out (same options)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary line.")]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the plan (one line per output) and stop.")
]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def handle_errors(command: F) -> F:
    """Turn known failures, file-system faults and signals into one `Error:` line (or one
    message) and the exit code they carry; stop the workers; release the OUT lock."""
    writes = command.__name__ in ("copypaste", "cutmix")  # resumable commands

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from cpgen.output import release_locks
        from cpgen.runner import stop_workers, termination_signals

        try:
            with termination_signals():
                return command(*args, **kwargs)
        except CpgenError as exc:
            if os.environ.get("CPGEN_DEBUG"):
                raise
            _stderr(f"Error: {exc.message}")
            if exc.hint:
                _stderr(f"Hint: {exc.hint}")
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # a full disk, a read-only folder, too many open files, ...
            if os.environ.get("CPGEN_DEBUG"):
                raise
            stop_workers()
            message, hint = describe_os_error(exc, resumable=writes)
            _stderr(f"Error: {message}")
            _stderr(f"Hint: {hint}")
            raise typer.Exit(EXIT_DATA) from None
        except (KeyboardInterrupt, Terminated) as exc:
            stop_workers()
            code = exc.exit_code if isinstance(exc, Terminated) else EXIT_INTERRUPTED
            name = signal.Signals(code - 128).name if code > 128 else "a signal"
            message = f"Interrupted by {name}"
            if writes:
                message += (
                    ": the output is incomplete. Run the same command with --resume "
                    "to continue where it stopped."
                )
            _stderr(message)
            raise typer.Exit(code) from None
        finally:
            release_locks()

    return wrapper  # type: ignore[return-value]


def _workers(workers: int | None) -> int:
    from cpgen.runner import default_workers

    if workers is None:
        return default_workers()
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    return workers


def _progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _finish(summary: Any, as_json: bool, quiet: bool) -> None:
    """The one place a run's result is printed, and its exit code chosen."""
    if as_json:
        print(json.dumps(summary.to_json()), flush=True)
    if not quiet:
        _stderr(summary.line())
    if summary.skipped_items:
        raise typer.Exit(EXIT_SKIPPED)


@app.command()
@handle_errors
def copypaste(
    out: OutOpt,
    src: Annotated[
        Path | None,
        typer.Option(
            help="Dataset folder in a common COCO layout (annotations.json + images/, "
            "annotations/instances_<split>.json + <split>/, Roboflow, CVAT)."
        ),
    ] = None,
    ann: Annotated[Path | None, typer.Option(help="COCO annotation file (with --images).")] = None,
    images: Annotated[
        Path | None, typer.Option(help="Image folder the file_names are relative to.")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split to read when --src holds several (train2017...).")
    ] = None,
    num_images: Annotated[
        int | None,
        typer.Option(help="Images to generate (default: one per input image).", show_default=False),
    ] = None,
    seed: SeedOpt = 0,
    workers: WorkersOpt = None,
    backend: BackendOpt = "loky",
    max_paste: Annotated[int, typer.Option(help="Most instances pasted per image.")] = 20,
    scale: Annotated[
        tuple[float, float],
        typer.Option(help="Scale range MIN MAX, relative to fitting the source in the target."),
    ] = (0.1, 2.0),
    hflip: Annotated[float, typer.Option(help="Probability of flipping the source.")] = 0.5,
    blend: Annotated[
        str,
        typer.Option(
            help="Edge blending: none (the paper found blending makes no difference) or "
            "gaussian (edges softened inside the masks by --sigma)."
        ),
    ] = "none",
    sigma: Annotated[float, typer.Option(help="Gaussian blend sigma in pixels.")] = 1.0,
    min_visible_px: Annotated[
        int,
        typer.Option(
            help="Pasted instances with fewer visible pixels are not pasted; occluded "
            "target objects under half visible with fewer pixels are dropped."
        ),
    ] = 10,
    min_visible_frac: Annotated[
        float,
        typer.Option(
            help="Occluded target objects keeping less than this fraction of their "
            "area are dropped (0-0.5; objects half visible or more always stay)."
        ),
    ] = 0.1,
    mask_format: Annotated[
        str,
        typer.Option(
            help="Non-crowd generated masks as polygon (exact: they decode to the mask pixel for "
            "pixel; what Detectron2's and MMDetection's default pipelines load) or rle "
            "(compressed). Crowd regions are always RLE."
        ),
    ] = "polygon",
    originals: Annotated[
        str,
        typer.Option(
            help="Originals in the output: link (hard link, copy if impossible), copy, or none."
        ),
    ] = "link",
    quality: QualityOpt = 95,
    paste_by: Annotated[
        str,
        typer.Option(
            help="mask: paste each instance's mask (its box where it has no segmentation, as in "
            "a detection dataset); box: paste box rectangles even where masks exist.",
        ),
    ] = "mask",
    backgrounds: Annotated[
        Path | None,
        typer.Option(
            help="Folder of background photos (searched recursively; EXIF orientation applied): "
            "outputs on one take its size and carry only pasted instances.",
            show_default=False,
        ),
    ] = None,
    backgrounds_frac: Annotated[
        float | None,
        typer.Option(
            help="Fraction of outputs put on --backgrounds, drawn per output (default 1).",
            show_default=False,
        ),
    ] = None,
    paste_from: Annotated[
        Path | None,
        typer.Option(
            help="Paste instances of this second dataset (an object pool; same layouts as "
            "--src) onto the first; categories are matched by name, new ones appended.",
            show_default=False,
        ),
    ] = None,
    paste_ann: Annotated[
        Path | None,
        typer.Option(help="Object pool's COCO file (with --paste-images).", show_default=False),
    ] = None,
    paste_images: Annotated[
        Path | None,
        typer.Option(help="Object pool's image folder (with --paste-ann).", show_default=False),
    ] = None,
    categories: Annotated[
        str | None,
        typer.Option(
            help="Paste only these categories: names or ids, comma-separated (e.g. "
            "person,dog); targets keep all their annotations.",
            show_default=False,
        ),
    ] = None,
    balance: Annotated[
        str,
        typer.Option(
            help="none, or category: each output draws a category uniformly, then a source "
            "holding it, and pastes only instances of it (rare classes get pasted as often as "
            "common ones).",
        ),
    ] = "none",
    rotate: Annotated[
        float,
        typer.Option(
            help="Rotate the pasted instances together by an angle uniform in "
            "[-ROTATE, ROTATE] degrees (0: no rotation).",
        ),
    ] = 0.0,
    device: Annotated[
        str | None,
        typer.Option(
            help="Composite the pasted pixels with PyTorch on this device (cpu, cuda, cuda:N); "
            "same annotations, pixels within a grey level; no --rotate.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per --device encode batch.")] = 64,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Simple Copy-Paste: paste instances of one image onto another; write images + COCO JSON.

    Box-only (detection) datasets work as they are. Datasets you bring, e.g.:

    cpgen copypaste --src coco/ -o aug --paste-from pool/ --balance category --rotate 15

    cpgen copypaste --src coco/ -o aug --backgrounds photos/ --categories dog,horse
    """
    from cpgen import copypaste as job
    from cpgen.datasets import coco
    from cpgen.runner import check_backend

    options = job.CopyPasteOptions(
        num_images=num_images,
        seed=seed,
        max_paste=max_paste,
        scale=scale,
        hflip=hflip,
        blend=blend,
        sigma=sigma,
        min_visible_px=min_visible_px,
        min_visible_frac=min_visible_frac,
        mask_format=mask_format,
        originals=originals,
        quality=quality,
        paste_by=paste_by,
        backgrounds=None if backgrounds is None else str(backgrounds),
        backgrounds_frac=backgrounds_frac,
        paste_from=None if paste_from is None else str(paste_from),
        paste_ann=None if paste_ann is None else str(paste_ann),
        paste_images=None if paste_images is None else str(paste_images),
        categories=None if categories is None else tuple(categories.split(",")),
        balance=balance,
        rotate=rotate,
    )
    run_options = job.RunOptions(
        workers=_workers(workers),
        backend=backend,
        overwrite=overwrite,
        progress=_progress(quiet),
        resume=resume,
        device=device,
        batch_size=batch_size,
    )
    check_backend(backend)
    if device is not None:
        job.check_device(device, options)
    files = _coco_files(src, ann, images, split)
    from cpgen.output import check_out, check_out_path

    extra_inputs = [Path(p) for p in (options.paste_from, options.paste_images) if p is not None]
    if backgrounds is not None:
        extra_inputs.append(backgrounds)
    check_out_path(out, [src if src is not None else files.images, *extra_inputs])
    if not dry_run:  # before reading a large file: a refused OUT needs no parse
        check_out(out, overwrite=overwrite, resume=resume)
    index = coco.load(
        files,
        report=None if quiet else _stderr,
        progress=_progress(quiet),
        map_jobs=None if dry_run else run_options.map_jobs("checking annotations", "ann"),
    )
    if dry_run:
        broken = job.check_images(index)
        for reason in broken.values():
            _stderr(f"would skip image {reason}")
        inputs = job.prepare(index, options)
        for reason in inputs.broken:
            _stderr(f"would skip image {reason}")
        _print_plan(inputs, job.plan(index, options, broken, inputs), as_json)
        return
    summary = job.run(index, out, options, run_options, report=_stderr)
    _finish(summary, as_json, quiet)


@app.command()
@handle_errors
def validate(
    path: Annotated[
        Path | None,
        typer.Argument(
            metavar="PATH",
            help="Dataset folder in a common COCO layout (as --src of copypaste).",
            show_default=False,
        ),
    ] = None,
    ann: Annotated[Path | None, typer.Option(help="COCO annotation file (with --images).")] = None,
    images: Annotated[
        Path | None, typer.Option(help="Image folder the file_names are relative to.")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split to read when PATH holds several (train2017...).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a COCO dataset (JSON, masks, boxes, image files); print every problem found.

    Exit 0 when valid, 1 when problems were found.
    """
    from cpgen import validate as checks
    from cpgen.errors import EXIT_DATA

    if path is not None and (ann is not None or images is not None):
        raise UsageError("give either PATH, or --ann with --images, not both")
    if path is None and (ann is None or images is None):
        raise UsageError("give a dataset folder PATH, or --ann FILE with --images DIR")
    if path is not None and not path.is_dir():
        raise UsageError(f"{path} is not a folder", hint="or name the files with --ann --images")
    report = checks.validate(_coco_files(path, ann, images, split), report_line=_stderr)
    if as_json:
        print(json.dumps(report.to_json()), flush=True)
    else:
        print("\n".join(report.lines()), flush=True)
    if not report.valid:
        raise typer.Exit(EXIT_DATA)


@app.command()
@handle_errors
def cutmix(
    out: OutOpt,
    src: Annotated[
        Path,
        typer.Option(
            help="Image folder laid out as SRC/<class>/<image> (torchvision ImageFolder); "
            "classes are the sub-folder names, sorted.",
            show_default=False,
        ),
    ],
    num_images: Annotated[
        int | None,
        typer.Option(help="Images to generate (default: one per input image).", show_default=False),
    ] = None,
    alpha: Annotated[
        float,
        typer.Option(
            help="lambda ~ Beta(alpha, alpha) is the base's nominal share; the box cuts "
            "sqrt(1 - lambda) of each side. 0 cuts the full frame, as in Composer."
        ),
    ] = 1.0,
    uniform_sampling: Annotated[
        bool,
        typer.Option(
            "--uniform-sampling",
            help="Draw the box centre over the frame widened by half the box, so every pixel "
            "is equally likely to be mixed.",
        ),
    ] = False,
    length: Annotated[
        float | None,
        typer.Option(
            help="Fixed relative side length in (0, 1]: a box of length*H by length*W (as "
            "Composer's docs describe it; Composer's code computes a different size). "
            "Replaces --alpha.",
            show_default=False,
        ),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(
            help="Resize every output to HxW pixels, e.g. 224x224 (default: keep the base "
            "image's size).",
            show_default=False,
        ),
    ] = None,
    soft_labels: Annotated[
        bool,
        typer.Option(
            "--soft-labels",
            help="Also write soft_labels.npy: N x C float32, aligned with labels.csv rows.",
        ),
    ] = False,
    seed: SeedOpt = 0,
    workers: WorkersOpt = None,
    backend: BackendOpt = "loky",
    device: Annotated[
        str | None,
        typer.Option(
            help="Copy the boxes with PyTorch on this device (cpu, cuda, cuda:N) in batches, "
            "decoding and encoding in --workers threads; needs --size. Same bytes as without.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per --device batch.")] = 64,
    quality: QualityOpt = 95,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """CutMix: paste a box of one image into another; write images + labels.csv + classes.json."""
    from cpgen import cutmix as job
    from cpgen.datasets import folders
    from cpgen.output import check_out, check_out_path
    from cpgen.runner import check_backend

    options = job.CutMixOptions(
        num_images=num_images,
        seed=seed,
        alpha=alpha,
        length=length,
        uniform_sampling=uniform_sampling,
        size=job.parse_size(size) if size is not None else None,
        quality=quality,
        soft_labels=soft_labels,
    )
    run_options = job.RunOptions(
        workers=_workers(workers),
        backend=backend,
        overwrite=overwrite,
        progress=_progress(quiet),
        resume=resume,
        device=device,
        batch_size=batch_size,
    )
    check_backend(backend)
    if device is not None:
        job.check_device(device, options)
    check_out_path(out, [src])
    if not dry_run:
        check_out(out, overwrite=overwrite, resume=resume)
    index = folders.load(src)
    if dry_run:
        for line in job.warnings(index):
            _stderr(line)
        rows = job.plan_rows(index, job.plan(index, options))
        if as_json:
            print(json.dumps({"plan": rows}))
        else:
            for r in rows:
                print(f"{r['index']}\t{r['base']}\t{r['patch']}\t{r['seed']}")
        return
    summary = job.run(index, out, options, run_options, report=_stderr)
    _finish(summary, as_json, quiet)


# Read-only commands: preview and stats.
PathArg = Annotated[
    Path | None,
    typer.Argument(
        metavar="PATH",
        help="A COCO dataset folder (any layout --src takes) or annotation file, a cpgen "
        "copy-paste output, or a cpgen cutmix output.",
        show_default=False,
    ),
]
ReadAnnOpt = Annotated[
    Path | None, typer.Option("--ann", help="COCO annotation file (instead of PATH).")
]
ReadImagesOpt = Annotated[
    Path | None,
    typer.Option(
        "--images",
        help="Image folder of --ann (default: images/ beside the file if any, else its folder).",
    ),
]
ReadSplitOpt = Annotated[
    str | None, typer.Option(help="Split to read when PATH holds several (train2017...).")
]


@app.command()
@handle_errors
def preview(
    path: PathArg = None,
    ann: ReadAnnOpt = None,
    images: ReadImagesOpt = None,
    split: ReadSplitOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="PNG to write (default: <PATH>-preview.png beside PATH, never inside it).",
            show_default=False,
        ),
    ] = None,
    num: Annotated[int, typer.Option(help="Tiles to draw.")] = 16,
    seed: Annotated[int, typer.Option(help="Random seed that chooses the tiles.")] = 0,
    ids: Annotated[
        str | None,
        typer.Option(
            help="Image ids to draw instead, e.g. 12,40 (for a cutmix output: labels.csv rows, "
            "from 0).",
            show_default=False,
        ),
    ] = None,
    tile_width: Annotated[
        int, typer.Option(help="Width of a tile's image in pixels (tiles are 4:3).")
    ] = 320,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Draw a contact sheet (one PNG) of a dataset or a cpgen output.

    Masks, boxes and names; pasted instances warm, the target's own cool, crowd hatched; captions
    give the target and source ids and the drawn parameters. By default the tiles are the
    generated images of a cpgen output (any images otherwise). Exit 3 when an image could not be
    read (drawn as a placeholder).
    """
    from cpgen import preview as job
    from cpgen.datasets import lazy

    options = job.PreviewOptions(
        num=num,
        seed=seed,
        ids=job.parse_ids(ids) if ids is not None else None,
        tile_width=tile_width,
    )
    dataset = lazy.locate(path, ann, images, split)
    target = out if out is not None else job.default_out(path if path is not None else ann)
    named = str(path if path is not None else ann)
    result = job.preview(dataset, target, options, named, report=_stderr)
    _finish(result, as_json, quiet)


@app.command()
@handle_errors
def stats(
    path: PathArg = None,
    ann: ReadAnnOpt = None,
    split: ReadSplitOpt = None,
    compare: Annotated[
        Path | None,
        typer.Option(
            help="Another dataset to count beside PATH, e.g. the source (a COCO folder or "
            "annotation file; for a cutmix output, an image folder).",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Also write the main charts to this PNG (needs matplotlib: "
            "pip install 'cpgen\\[plot]').",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout instead of the table.")
    ] = False,
) -> None:
    """Count what a dataset or a cpgen output holds, per category.

    Instances and images (original vs generated part, or vs --compare), pasted and dropped
    instances, COCO size buckets, how visible occluded targets stayed; for a cutmix output,
    classes as base and as patch and the base weight's distribution.
    """
    from cpgen import stats as job
    from cpgen.datasets import lazy

    if plot is not None:
        from cpgen import stats_plot

        stats_plot.check_available()
        if plot.suffix.lower() != ".png":
            raise UsageError(f"--plot {plot} must name a .png file")
    if compare is not None and not compare.exists():
        raise UsageError(f"--compare {compare} does not exist")
    result = job.stats(lazy.locate(path, ann, None, split), compare)
    if plot is not None:
        stats_plot.plot(result, plot)
    if as_json:
        print(json.dumps(result), flush=True)
    else:
        print("\n".join(job.lines(result)), flush=True)
    if plot is not None:
        _stderr(f"cpgen stats: charts -> {plot}")


def _coco_files(src: Path | None, ann: Path | None, images: Path | None, split: str | None):
    from cpgen.datasets import coco

    if src is not None:
        if ann is not None or images is not None:
            raise UsageError("give either --src, or --ann with --images, not both")
        return coco.find_layout(src, split)
    if ann is None or images is None:
        raise UsageError("give --src DIR, or --ann FILE with --images DIR")
    if not ann.is_file():
        raise UsageError(f"--ann {ann} is not a file")
    if not images.is_dir():
        raise UsageError(f"--images {images} is not a folder")
    return coco.CocoFiles(ann, images)


def _print_plan(inputs: Any, tasks: list[Any], as_json: bool) -> None:
    rows = [
        {
            "index": t.index,
            "target": inputs.index.images[t.target]["file_name"]
            if t.background is None
            else f"background:{inputs.backgrounds[t.background]}",
            "source": inputs.source_index.images[t.source]["file_name"],
            "seed": t.seed,
        }
        for t in tasks
    ]
    if as_json:
        print(json.dumps({"plan": rows}))
    else:
        for r in rows:
            print(f"{r['index']}\t{r['target']}\t{r['source']}\t{r['seed']}")


def _version(value: bool) -> None:
    if value:
        print(f"cpgen {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """Offline dataset generation for computer vision."""


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a command body
        _stderr("Interrupted.")
        _exit(EXIT_INTERRUPTED)
    except Terminated as exc:
        _exit(exc.exit_code)
    except SystemExit as exc:
        if isinstance(exc.code, int) and exc.code > 128:
            _exit(exc.code)
        raise


def _exit(code: int) -> None:
    """Exit an interrupted run at once. Threads of ``--backend threading`` may still be inside
    OpenCV; letting the interpreter finalise under them aborts the process (exit 134), so the
    exit handlers run here and the process ends without finalising."""
    import atexit
    import threading

    if threading.active_count() > 1:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


__all__ = ["app", "main", "EXIT_USAGE"]
