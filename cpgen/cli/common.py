"""What every command shares: the app, option declarations, error handling, output."""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from cpgen.errors import (
    EXIT_DATA,
    EXIT_INTERRUPTED,
    EXIT_SKIPPED,
    RESUME_HINT,
    CpgenError,
    Terminated,
    UsageError,
    WorkerLost,
    describe_os_error,
)

app = typer.Typer(
    name="cpgen",
    help="Offline dataset generation for computer vision: Simple Copy-Paste for COCO instance "
    "segmentation, CutMix for image folders; validate, preview and stats to look at any "
    "dataset. Exit codes: 0 ok, 1 data or I/O error, 2 usage error, "
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
    str,
    typer.Option(
        help="fork (cpgen's own: workers forked from this process, ready at once, each given "
        "the shards that read the images it decoded; loky where forking is unsafe, as on "
        "macOS), or a joblib backend: loky, threading, multiprocessing, dask, ..."
    ),
]
CacheMbOpt = Annotated[
    int | None,
    typer.Option(
        help="MiB of decoded images each worker keeps across shards, counting those it "
        "shares with the other workers through /dev/shm (0: none; default: a quarter of "
        "the memory shared by the workers, at most 2048). Changes no output byte; a "
        "--resume may use another value.",
        show_default=False,
    ),
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
# Where a COCO dataset is, when not given as one folder (copypaste --src, validate PATH).
AnnOpt = Annotated[Path | None, typer.Option(help="COCO annotation file (with --images).")]
ImagesOpt = Annotated[
    Path | None, typer.Option(help="Image folder the file_names are relative to.")
]
SplitOpt = Annotated[
    str | None,
    typer.Option(help="Split to read when the dataset folder holds several (train2017...)."),
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
            hint = exc.hint
            if writes and isinstance(exc, WorkerLost):
                hint += f"; {RESUME_HINT}"
            if hint:
                _stderr(f"Hint: {hint}")
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
            stop_workers()  # a command's workers are killed when it ends, not left to finalise
            release_locks()
            gc.unfreeze()  # what ``loading_for_the_run`` set aside is collectable again

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def loading_for_the_run() -> Iterator[None]:
    """Load a command's dataset (millions of records for a large COCO file) with the garbage
    collector paused, then set it aside from the collector until the command ends
    (``gc.freeze``; ``handle_errors`` puts it back).

    Parsed JSON holds no cycles and the records live as long as the command, so every full
    collection that walks them finds nothing: the first one after the load alone took 0.7 s
    on a 280 MB file. ``coco.load`` pauses the collector itself; this also keeps it from
    running as the load ends, before the freeze.
    """
    from cpgen.datasets import paused_gc

    with paused_gc():
        yield
        gc.freeze()


def _workers(workers: int | None) -> int:
    from cpgen.runner import default_workers

    if workers is None:
        return default_workers()
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    return workers


def _run_options(job: Any, options: Any, **run: Any) -> Any:
    """A job's ``RunOptions`` from the shared options (``workers``, ``backend``, ``overwrite``,
    ``quiet``, ``resume``, ``device``, ``batch_size``), checked before any work: the backend,
    and the device (torch installed, CUDA present) for these ``options``."""
    from cpgen.runner import check_backend

    progress = _progress(run.pop("quiet"))
    workers = _workers(run.pop("workers"))
    run_options = job.RunOptions(**run, workers=workers, progress=progress)
    check_backend(run_options.backend)
    if run_options.device is not None:
        job.check_device(run_options.device, options)
    return run_options


def _start_workers(run_options: Any, *modules: str) -> None:
    """Start the worker processes while this one reads the input (``runner.start_workers``);
    ``--device`` runs its shards in threads instead."""
    from cpgen.runner import start_workers

    if getattr(run_options, "device", None) is None:
        start_workers(run_options.workers, run_options.backend, modules)


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
