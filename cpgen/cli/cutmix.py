"""`cpgen cutmix`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cpgen.cli.common import (
    BackendOpt,
    CacheMbOpt,
    DryRunOpt,
    JsonOpt,
    OutOpt,
    OverwriteOpt,
    QualityOpt,
    QuietOpt,
    ResumeOpt,
    SeedOpt,
    WorkersOpt,
    _finish,
    _run_options,
    _start_workers,
    _stderr,
    app,
    handle_errors,
)


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
    backend: BackendOpt = "fork",
    device: Annotated[
        str | None,
        typer.Option(
            help="Copy the boxes with PyTorch on this device (cpu, cuda, cuda:N) in batches, "
            "decoding and encoding in --workers threads; needs --size. Same bytes as without.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per --device batch.")] = 64,
    cache_mb: CacheMbOpt = None,
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
    check_out_path(out, [src])
    if not dry_run:
        check_out(out, overwrite=overwrite, resume=resume)
        _start_workers(run_options, "cpgen.cutmix.shard")
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
