"""Decoded images a worker process keeps across its shards, within a budget in bytes.

A small dataset multiplied many times reads each image in many shards; a worker that keeps
what it decoded (``--cache-mb``) decodes each image about once instead of once or twice per
output. The cached arrays are exactly the decode's, so which worker ran which shard changes no
output byte. Copy-paste keys its images by ``ImageRef.key`` (and shares them between workers
through ``image_store``); cutmix by its source folder and file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from cpgen import images
from cpgen.image_store import ImageStore, open_store, shares_decodes

#: An image's identity in the cache: (root folder, file, width, height); copy-paste checks a
#: decode against the size its annotations give, so one file read at two sizes is two entries.
Key = tuple[str, str, int, int]

#: An image and whether the array is shared (held by the cache: not to be modified).
Shared = tuple[images.Image, bool]


class WorkerImages:
    """Decoded images kept by one worker process across its shards, least recently used out
    past a budget in bytes (``--cache-mb``): a small dataset multiplied many times is decoded
    about once per worker instead of twice per output.

    Entries are keyed by the image (``Key``) and hold its whole decode, exactly what decoding
    gives, so which shard ran where changes no byte. The arrays are shared: a caller copies one
    before it modifies it (copy-paste's ``ShardImages.take``; cutmix's base, pasted into).
    ``run`` names the run: a new one empties the cache (files may have changed between runs
    served by the same worker).
    Thread-safe (``--device`` shards run in threads of one process).

    With a ``store`` folder (``image_store``), an image this worker lacks is first looked for
    among those the other workers of the run published, and one it decodes that a later shard
    reads is published. The budget covers what this worker holds in its own memory and what it
    published (in RAM too, until the run ends); the images it keeps mapped from the store count
    against a second budget of the same size (their pages count in its resident size).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.run = ""
        self.budget = 0
        self.used = 0  # bytes of this process's own arrays in ``decoded``, plus ``published``
        self.published = 0
        self.maps = 0  # arrays in ``decoded`` mapped from the store
        self.mapped = 0  # and their bytes
        self.store: ImageStore | None = None
        self.decoded: OrderedDict[Key, images.Image] = OrderedDict()

    def configure(self, run: str, budget_bytes: int, store: str = "", store_bytes: int = 0) -> None:
        with self.lock:
            if run != self.run:
                self.decoded.clear()
                self.used, self.published, self.maps, self.mapped = 0, 0, 0, 0
                self.run = run
                self.store = ImageStore(store, store_bytes) if store else None
            self.budget = budget_bytes
            self._shrink()
        allow_cache_growth(budget_bytes * (2 if store else 1))  # maps: a second budget

    def clear(self) -> None:
        """Forget everything (the run is over; frees the memory)."""
        self.configure("", 0)

    def take(self, key: Key, load: Callable[[], images.Image], keep: bool = True) -> Shared:
        """The image named ``key``: from the cache when it holds it, else ``load()`` (its
        decode, which raises as the decode does; nothing is kept then). The second item says
        whether the array is shared (the caller must not modify it). ``keep``: a later use
        follows (else the image is not kept, or leaves the cache)."""
        with self.lock:
            hit = self.decoded.get(key)
            if hit is not None:
                if keep:
                    self.decoded.move_to_end(key)
                else:
                    self._forget(key)
                return hit, True
            store = self.store
        pixels = store.read(key) if store is not None else None
        if pixels is None:
            pixels = load()
            if keep and store is not None:
                pixels = self._publish(store, key, pixels)
        if not keep:
            return pixels, not pixels.flags.writeable  # one from the store is shared
        with self.lock:
            if key in self.decoded or pixels.nbytes > self.budget:
                return pixels, not pixels.flags.writeable
            self._add(key, pixels)
            self._shrink()
        return pixels, True

    def _publish(self, store: ImageStore, key: Key, pixels: images.Image) -> images.Image:
        """The store's copy of ``pixels`` once written, within the budget; else ``pixels``."""
        with self.lock:
            if self.published + pixels.nbytes > self.budget or store is not self.store:
                return pixels
            self.published += pixels.nbytes
            self.used += pixels.nbytes
            self._shrink()
        shared = store.write(key, pixels)
        if shared is not None:
            return shared
        with self.lock:
            if store is self.store:
                self.published -= pixels.nbytes
                self.used -= pixels.nbytes
        return pixels

    def _add(self, key: Key, pixels: images.Image) -> None:
        self.decoded[key] = pixels
        if pixels.flags.writeable:
            self.used += pixels.nbytes
        else:
            self.maps += 1
            self.mapped += pixels.nbytes

    def _forget(self, key: Key) -> None:
        pixels = self.decoded.pop(key)
        if pixels.flags.writeable:
            self.used -= pixels.nbytes
        else:
            self.maps -= 1
            self.mapped -= pixels.nbytes

    def _maps_over(self) -> bool:
        return self.maps > MAX_MAPS or self.mapped > self.budget

    def _shrink(self) -> None:
        """Least recently used first, drop own arrays past the budget, and maps past the budget
        too (their pages count in this process's resident size, which loky watches) or past
        ``MAX_MAPS`` (each map is one of the process's memory areas, which the kernel caps)."""
        if self.used <= self.budget and not self._maps_over():
            return
        for key, pixels in list(self.decoded.items()):
            over, maps_over = self.used > self.budget, self._maps_over()
            if not over and not maps_over:
                break
            if (over and pixels.flags.writeable) or (maps_over and not pixels.flags.writeable):
                self._forget(key)


#: The most images a worker keeps mapped from the store (Linux allows 65,530 maps a process).
MAX_MAPS = 4096


def default_cache_mb(workers: int) -> int:
    """``--cache-mb`` by default: a quarter of the machine's memory shared by the workers, at
    most 2 GiB each (0 where the memory size is unknown)."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0
    return int(min(total // 4 // max(1, workers), 2 * 1024**3) // 2**20)


@contextlib.contextmanager
def run_cache(
    run_options: Any, reads_per_image: Callable[[], float]
) -> Iterator[tuple[str, int, str, int]]:
    """What a run's shards carry for ``WorkerImages.configure``: a new name for the run, each
    worker's budget in bytes (``--cache-mb``, by default ``default_cache_mb`` for the processes
    that decode: this one alone with ``--device``), and the folder where the workers share
    their decodes with what each may write there (``image_store.shares_decodes``, given the
    shards' ``reads_per_image()``; "" and 0 for none), removed when the block ends."""
    device = getattr(run_options, "device", None)
    cache_mb = getattr(run_options, "cache_mb", None)
    if cache_mb is None:
        cache_mb = default_cache_mb(1 if device is not None else run_options.workers)
    share = shares_decodes(run_options.backend, device, cache_mb, reads_per_image)
    with open_store(run_options.workers if share else 1) as (store, store_bytes):
        yield uuid.uuid4().hex, cache_mb * 2**20, store, store_bytes


def allow_cache_growth(budget_bytes: int) -> None:
    """Tell loky that this worker may grow by the cache's budget: loky replaces a worker whose
    memory grew 300 MB past its size after its first job (taking it for a leak), which would
    throw the cache away and start a new process."""
    executor = sys.modules.get("joblib.externals.loky.process_executor")
    limit = getattr(executor, "_MAX_MEMORY_LEAK_SIZE", None)
    if isinstance(limit, int) and limit < int(3e8) + budget_bytes:
        executor._MAX_MEMORY_LEAK_SIZE = int(3e8) + budget_bytes  # type: ignore[union-attr]
