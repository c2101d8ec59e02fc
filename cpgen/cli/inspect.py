"""Commands that only read: `cpgen validate`, `cpgen preview`, `cpgen stats`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cpgen.cli.common import (
    AnnOpt,
    ImagesOpt,
    JsonOpt,
    QuietOpt,
    SplitOpt,
    _coco_files,
    _finish,
    _stderr,
    app,
    handle_errors,
)
from cpgen.errors import EXIT_DATA, UsageError


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
    ann: AnnOpt = None,
    images: ImagesOpt = None,
    split: SplitOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a COCO dataset (JSON, masks, boxes, image files); print every problem found.

    Exit 0 when valid, 1 when problems were found.
    """
    from cpgen import validate as checks

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
