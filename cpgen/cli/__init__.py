"""The `cpgen` command line: thin commands that turn options into a config and run it.

Results go to stdout (``--json``); progress, warnings and errors go to stderr. Known failures
print ``Error: ...`` with a hint and no traceback (set CPGEN_DEBUG=1 to see one).
Exit codes: 0 ok, 1 data or I/O error, 2 usage error, 3 finished but items were skipped,
128 + N on signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from cpgen import __version__
from cpgen.cli import copypaste, cutmix, inspect  # noqa: F401  (the commands register on app)
from cpgen.cli.common import _stderr, app
from cpgen.errors import EXIT_INTERRUPTED, EXIT_USAGE, Terminated


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
    quiet_loky_tracker()
    one_blas_thread()
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


#: A warnings filter for loky's resource tracker (a process of its own, started with this
#: process's environment): after an interrupted run ends without finalising (:func:`_exit`), it
#: frees the semaphores the worker pool still had registered and says so on stderr, in two
#: warnings, though nothing is left behind.
LOKY_TRACKER_QUIET = "ignore:resource_tracker::joblib.externals.loky.backend.resource_tracker"


def quiet_loky_tracker() -> None:
    """Keep loky's resource tracker, started later by this process, from warning about the
    pool's semaphores after an interrupted run (``LOKY_TRACKER_QUIET``, added to
    ``PYTHONWARNINGS``, which it inherits); other warnings are untouched."""
    current = os.environ.get("PYTHONWARNINGS", "")
    if LOKY_TRACKER_QUIET not in current.split(","):
        os.environ["PYTHONWARNINGS"] = f"{current},{LOKY_TRACKER_QUIET}".lstrip(",")


#: The variable that sets how many threads OpenBLAS (numpy's linear algebra) starts.
BLAS_THREADS = "OPENBLAS_NUM_THREADS"


def one_blas_thread() -> None:
    """Have numpy's OpenBLAS start no threads of its own, unless the user chose a number
    (``BLAS_THREADS``). cpgen does no linear algebra worth a thread, but importing numpy starts
    one OpenBLAS thread per core, and each spins before it sleeps: 0.1 s of CPU on 2 cores,
    taken from the workers while they start; and those threads, idle or not, keep the ``fork``
    backend from forking (``fork_pool.single_threaded``). This process's children inherit it:
    loky's resource tracker, and the workers, which joblib would otherwise give
    ``cores // workers`` threads each."""
    os.environ.setdefault(BLAS_THREADS, "1")


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
