"""Reading datasets: COCO (``coco``, checked in workers by ``coco_checks``), image folders
(``folders``), and lazily for the read-only commands (``lazy``)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cyclic garbage collector off while a large file becomes millions of objects.

    Each collection of the oldest generation walks every object alive, and building a COCO
    file's records triggers one after every few hundred thousand new ones: on a 280 MB file,
    20 of them took 3.6 s of a 16 s load. Parsed JSON holds no reference cycles, so there is
    nothing for them to find. The collector is back as it was when the block ends; its next
    collection walks the new objects once (the CLI sets a loaded dataset aside first, with
    ``gc.freeze``). A worker's batch of annotations is checked paused too: its objects are freed
    by their reference counts when it ends, so nothing is left to walk.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
