"""`cpgen copypaste`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cpgen.cli.common import (
    AnnOpt,
    BackendOpt,
    CacheMbOpt,
    DryRunOpt,
    ImagesOpt,
    JsonOpt,
    OutOpt,
    OverwriteOpt,
    QualityOpt,
    QuietOpt,
    ResumeOpt,
    SeedOpt,
    SplitOpt,
    WorkersOpt,
    _coco_files,
    _finish,
    _progress,
    _run_options,
    _start_workers,
    _stderr,
    app,
    handle_errors,
    loading_for_the_run,
)


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
    ann: AnnOpt = None,
    images: ImagesOpt = None,
    split: SplitOpt = None,
    num_images: Annotated[
        int | None,
        typer.Option(help="Images to generate (default: one per input image).", show_default=False),
    ] = None,
    seed: SeedOpt = 0,
    workers: WorkersOpt = None,
    backend: BackendOpt = "fork",
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
    cache_mb: CacheMbOpt = None,
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
    run_options = _run_options(
        job,
        options,
        workers=workers,
        backend=backend,
        overwrite=overwrite,
        quiet=quiet,
        resume=resume,
        device=device,
        batch_size=batch_size,
        cache_mb=cache_mb,
    )
    files = _coco_files(src, ann, images, split)
    from cpgen.output import check_out, check_out_path

    extra_inputs = [Path(p) for p in (options.paste_from, options.paste_images) if p is not None]
    if backgrounds is not None:
        extra_inputs.append(backgrounds)
    check_out_path(out, [src if src is not None else files.images, *extra_inputs])
    if not dry_run:  # before reading a large file: a refused OUT needs no parse
        check_out(out, overwrite=overwrite, resume=resume)
        _start_workers(run_options, "cpgen.copypaste.shard", "cpgen.datasets.coco_checks")
    with loading_for_the_run():
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
