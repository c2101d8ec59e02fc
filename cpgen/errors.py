"""Errors that carry the process exit code the CLI reports."""

from __future__ import annotations

EXIT_OK = 0
EXIT_DATA = 1  # data or runtime error: the input is broken, nothing final written
EXIT_USAGE = 2  # usage or option error
EXIT_SKIPPED = 3  # the run finished and its output is valid, but some items were skipped
EXIT_INTERRUPTED = 130  # Ctrl-C


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
