"""File-system helpers every writer shares: modes under the umask, OSErrors naming their file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def _read_umask() -> int:
    """The process umask, read without changing it where the kernel reports it (Linux 4.7+):
    ``os.umask`` can only be read by setting it, which races with threads creating files."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new file under the current umask, as ``open()`` creates it."""
    return 0o666 & ~_read_umask()


@contextmanager
def naming(path: object) -> Iterator[None]:
    """Make an ``OSError`` raised inside name ``path`` (a failed ``write`` names no file)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
