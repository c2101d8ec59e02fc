"""Errors that carry the process exit code the CLI reports."""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_DATA = 1  # data or runtime error: the input is broken, nothing final written
EXIT_USAGE = 2  # usage or option error
EXIT_SKIPPED = 3  # the run finished and its output is valid, but some items were skipped
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); any signal N exits 128 + N


class CpgenError(Exception):
    """A known failure: printed as one `Error: ...` line plus an optional hint, no traceback."""

    exit_code = EXIT_DATA

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(CpgenError):
    """Bad options or option combinations (exit 2)."""

    exit_code = EXIT_USAGE


class DataError(CpgenError):
    """The dataset cannot be read or is not valid enough to work on (exit 1)."""

    exit_code = EXIT_DATA


class WorkerLost(CpgenError):
    """A worker process died in the middle of the run (killed by a signal, or by the kernel when
    memory ran out): the run stops (exit 1); what finished is kept for ``--resume``."""

    exit_code = EXIT_DATA


class Terminated(BaseException):
    """A termination signal (SIGTERM, SIGHUP) arrived: stop like Ctrl-C, exit 128 + signal.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


#: What a stopped run that wrote its finished work says to do once the cause is fixed.
RESUME_HINT = "then run the same command with --resume to finish (finished work is kept)"

#: Errors of the file system that stop a run rather than skip one item, with what to do.
_OS_HINTS: dict[int, str] = {
    errno.ENOSPC: "the disk is full: free space on it",
    errno.EDQUOT: "the disk quota is used up: free space or raise the quota",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "permission denied: check who owns the folder and its mode",
    errno.EPERM: "operation not permitted: check who owns the folder and its mode",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or use fewer --workers",
    errno.ENFILE: "the system ran out of open files: use fewer --workers",
    errno.EIO: "the disk reported an I/O error: check it",
}


def describe_os_error(exc: OSError, resumable: bool) -> tuple[str, str]:
    """One-line message (file and the system's reason) and hint for an ``OSError``."""
    reason = exc.strerror or str(exc)
    code = errno.errorcode.get(exc.errno or 0)
    if code:
        reason = f"{reason} ({code})"
    where = exc.filename if exc.filename is not None else "a file"
    message = f"{where}: {reason}"
    hint = _OS_HINTS.get(exc.errno or 0, "fix the cause")
    if resumable:
        hint += f"; {RESUME_HINT}"
    return message, hint
