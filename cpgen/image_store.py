"""Decoded images shared by the workers of one run on one machine, as files in RAM.

Each worker keeps the images it decoded (``worker_images.WorkerImages``), but with two or more
workers every worker decodes the images its own shards read: on a small set multiplied many
times each image is decoded once per worker instead of once. Here a worker that decodes an
image a later shard reads too writes its pixels to a folder in ``/dev/shm`` (a RAM-backed
tmpfs on Linux); another worker that needs that image maps the file instead of decoding it
(about 0.1 ms against 2 ms for a 640x480 JPEG). The pixels are exactly the decode's, so which
worker decoded an image changes no output byte.

The main process makes a store where the shards read each image 1.5 times or more on average
(``SHARE_FROM_READS``: a small set multiplied, not each image used about once, where
writing the images costs what the few saved decodes do). It makes the folder before the
generate shards and removes it after them, also after an error or a signal (``open_store``); a
folder left by a killed run is removed by the next run on the machine (``sweep``). The store is
used only where the workers share this machine's ``/dev/shm`` (``SHARED_MEMORY``: the fork,
loky and multiprocessing backends; no ``--device``, a non-zero ``--cache-mb``). A worker's
writes count against its ``--cache-mb`` and all of them together fill at most half of the
space ``/dev/shm`` had free (``SHARE_OF_FREE``); a write that fails anyway (the space taken
meanwhile) stops that worker's writes, never the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import shutil
import uuid
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator
from pathlib import Path

import numpy as np

#: Where the stores live: a tmpfs on Linux. No store where it is absent.
SHM = Path("/dev/shm")
PREFIX = "cpgen-images-"


def _folder_pid(name: str) -> int | None:
    """The pid of the process that made store folder ``name`` (``cpgen-images-<pid>-<hex>``)."""
    parts = name[len(PREFIX) :].split("-")
    return int(parts[0]) if len(parts) == 2 and parts[0].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep(root: Path = SHM) -> None:
    """Remove the stores of this user's runs that were killed before removing their own.

    A run is taken for dead when no process has its pid. One this process cannot see (another
    pid namespace on a shared ``/dev/shm``) loses its store, never its output: its workers find
    no file and decode, their writes fail and stop, and maps already made stay valid."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            pid = _folder_pid(entry.name) if entry.name.startswith(PREFIX) else None
            if pid is None or pid == os.getpid() or _alive(pid):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid == os.getuid():
                    shutil.rmtree(entry.path, ignore_errors=True)


#: The share of ``/dev/shm``'s free space a run's store may fill: the rest stays for other
#: programs (a trainer's data loader shares tensors there; a container's is often 64 MB).
SHARE_OF_FREE = 0.5


#: joblib backends whose workers all run on this machine, so can share ``/dev/shm``
SHARED_MEMORY = ("fork", "loky", "multiprocessing")

#: Workers share their decodes where the shards read each image this many times on average:
#: a small set multiplied reads each of its images in many shards (8.3 times for 800 copy-paste
#: outputs of the 80-image sample), each image used about once in 1.1 (a tenth of the images
#: are read by two shards). There, writing the images to the store costs about what the few
#: decodes it saves do (measured: the same time with and without), so it is left out.
SHARE_FROM_READS = 1.5


def reads_per_image(reads: Iterable[Collection[Hashable]]) -> float:
    """How many shards read each image they read, on average: ``reads`` holds each shard's
    images (any keys naming them)."""
    total, seen = 0, set[Hashable]()
    for read in reads:
        total += len(read)
        seen.update(read)
    return total / max(1, len(seen))


def shares_decodes(
    backend: str, device: str | None, cache_mb: int, reads_per_image: Callable[[], float]
) -> bool:
    """Whether a run's workers share their decodes: on this machine's ``/dev/shm``
    (``SHARED_MEMORY``, no ``--device``), with a cache, where its shards read each image
    ``SHARE_FROM_READS`` times or more on average (``reads_per_image()``)."""
    local = device is None and cache_mb > 0 and backend in SHARED_MEMORY
    return local and reads_per_image() >= SHARE_FROM_READS


@contextlib.contextmanager
def open_store(workers: int, root: Path = SHM) -> Iterator[tuple[str, int]]:
    """A new store folder for one run's generate shards and the bytes each of its ``workers``
    may write there (``SHARE_OF_FREE`` of the free space, divided): ("", 0) where ``workers``
    is below 2 or no folder can be made. The folder is removed when the block ends, however it
    ends. Stores that killed runs left are removed first (``sweep``), also for one worker."""
    folder, each = "", 0
    if root.is_dir():
        sweep(root)  # whatever this run does: a killed run's store goes with the next run
        if workers > 1:
            path = root / f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:16]}"
            with contextlib.suppress(OSError):
                stats = os.statvfs(root)
                each = int(stats.f_bavail * stats.f_frsize * SHARE_OF_FREE) // workers
                path.mkdir(mode=0o700)
                folder = str(path)
    try:
        yield folder, each if folder else 0
    finally:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


#: A store file's header: the image's height and width (two little-endian uint32), before its
#: raw HxWx3 pixels. Copy-paste's keys carry the size the annotations give; cutmix's do not
#: (an image folder's index reads no sizes), so a reader takes the shape from the file.
HEADER = np.dtype("<u4")
HEADER_BYTES = 2 * HEADER.itemsize


class ImageStore:
    """One worker's view of a store folder: ``read`` maps an image another worker wrote,
    ``write`` publishes one. Files hold the image's size (``HEADER``) and its raw HxWx3 pixels,
    named by the image's key; each is written under a temporary name and renamed, so a reader
    sees a whole file or none. A key's width and height, where not 0, are checked too."""

    def __init__(self, folder: str, limit: int) -> None:
        self.folder = folder
        self.limit = limit  # bytes this worker may write
        self.written = 0

    def _path(self, key: tuple[str, str, int, int]) -> str:
        digest = hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()
        return os.path.join(self.folder, digest)

    def read(self, key: tuple[str, str, int, int]) -> np.ndarray | None:
        """The pixels of image ``key`` (root, file, width, height), read-only, or None."""
        try:
            with open(self._path(key), "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # absent (not yet written), or empty
            return None
        if len(mapped) < HEADER_BYTES:
            mapped.close()
            return None
        height, width = (int(n) for n in np.frombuffer(mapped, HEADER, 2))
        if not _fits(key, height, width) or len(mapped) != HEADER_BYTES + height * width * 3:
            mapped.close()
            return None
        return np.frombuffer(mapped, np.uint8, offset=HEADER_BYTES).reshape(height, width, 3)

    def write(self, key: tuple[str, str, int, int], pixels: np.ndarray) -> np.ndarray | None:
        """Publish ``pixels``; the store's read-only copy, or None: not an 8-bit HxWx3 decode of
        the key's size, past this worker's limit, or the write failed (then it writes no
        more)."""
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            return None
        if not _fits(key, *pixels.shape[:2]):
            return None
        if self.written + pixels.nbytes > self.limit:
            return None
        path = self._path(key)
        temporary = f"{path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "wb") as f:
                f.write(np.array(pixels.shape[:2], HEADER).tobytes())
                f.write(np.ascontiguousarray(pixels).data)
            os.replace(temporary, path)
        except OSError:  # full, or the folder is gone (the run is ending)
            self.limit = 0
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            return None
        self.written += pixels.nbytes
        return self.read(key)


def _fits(key: tuple[str, str, int, int], height: int, width: int) -> bool:
    """Whether an image of ``height`` x ``width`` is the one ``key`` names: its size where the
    key gives one (copy-paste checks decodes against the annotations' size)."""
    return (key[2], key[3]) in ((0, 0), (width, height)) and height > 0 and width > 0
