"""The output folder: preparing it, the run manifest, and atomic JSON writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cpgen.errors import DataError, UsageError
from cpgen.files import file_mode, naming

STATE_DIR = ".cpgen"
MANIFEST = "manifest.json"
#: a finished run's manifest once its state folder is gone (:func:`finish_run`)
FINISHED_MANIFEST = ".cpgen.json"
SHARDS = "shards"
#: manifest keys that describe the run itself rather than what it must produce
_PROGRESS_KEYS = ("state", "summary")


#: one encoder for every record (``json.dumps`` with options builds a new one per call)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(obj: Any) -> str:
    """Compact, deterministic JSON (key order as built, no NaN)."""
    return _ENCODER.encode(obj)


#: decimal text of the numbers 0 .. 8191, for traced polygons (pixel corners of a frame)
_CORNERS = [str(i) for i in range(8192)]


def dumps_traced(record: dict[str, Any]) -> str:
    """``dumps(record)`` for a record whose segmentation is a traced polygon: parts of ints in
    its frame (0 .. width and 0 .. height, the ``bbox`` says where), written by table lookup
    at half the encoder's cost (a traced outline holds hundreds of corners), the record's
    other keys by the encoder, in their order. Other records go to ``dumps``."""
    x, y, w, h = record["bbox"]
    if not (x >= 0 and y >= 0 and x + w < len(_CORNERS) and y + h < len(_CORNERS)):
        return dumps(record)
    text = _CORNERS.__getitem__
    parts = ",".join(["[" + ",".join(map(text, part)) + "]" for part in record["segmentation"]])
    keys = list(record)
    at = keys.index("segmentation")
    head = _ENCODER.encode({k: record[k] for k in keys[:at]})[:-1]  # "{...", no closing brace
    tail = _ENCODER.encode({k: record[k] for k in keys[at + 1 :]})[1:]  # "...}"
    return f'{head}{"," if at else ""}"segmentation":[{parts}]{"," if tail != "}" else ""}{tail}'


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_chunks(path, [text])


WRITE_BATCH = 1 << 20  # characters joined before a write


def atomic_write_chunks(path: Path, chunks: Iterable[str]) -> None:
    """Write text pieces to a temp file beside ``path``, fsync, then rename over ``path``.

    The file gets the mode a plain ``open()`` would give it (0666 less the umask), not the
    0600 of ``mkstemp``: a trainer running as another user must be able to read the dataset.
    An ``OSError`` names ``path``; the temp file is removed. Pieces are joined up to about a
    MiB per write (a text file's ``write`` costs some microseconds a call: 0.1 s for the lines
    of a 2,000-output ``annotations.json``).
    """
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, file_mode())
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                batch: list[str] = []
                size = 0
                for chunk in chunks:
                    batch.append(chunk)
                    size += len(chunk)
                    if size >= WRITE_BATCH:
                        f.write("".join(batch))
                        batch.clear()
                        size = 0
                f.write("".join(batch))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def check_out_path(out: Path, inputs: Iterable[Path]) -> None:
    """OUT may not be, or lie inside, an input folder, nor contain one."""
    out_abs = out.resolve()
    for src in inputs:
        src_abs = src.resolve()
        if out_abs == src_abs or src_abs in out_abs.parents:
            raise UsageError(f"--out {out} lies inside the input {src}", hint="write elsewhere")
        if out_abs in src_abs.parents:
            raise UsageError(f"--out {out} contains the input {src}", hint="write elsewhere")


def check_out(out: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse an OUT this run may not use, before anything in it is written or deleted.

    A fresh run needs an empty or new OUT, or ``overwrite`` of an earlier cpgen output (one with
    a ``.cpgen`` folder, or a finished run's ``.cpgen.json``: cpgen never deletes a folder of
    someone else's); ``resume`` needs the folder of a cpgen run, or an empty or new one.
    """
    if overwrite and resume:
        raise UsageError("--overwrite and --resume exclude each other")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    _refuse_if_locked(out)
    if not (out.is_dir() and any(out.iterdir())):
        return
    made_by_cpgen = (out / STATE_DIR).is_dir() or (out / FINISHED_MANIFEST).is_file()
    if resume and recorded_manifest(out) is None:
        raise UsageError(
            f"--resume: {out} holds no cpgen run (no {STATE_DIR}/{MANIFEST})",
            hint="resume only into the folder of an interrupted cpgen run",
        )
    if not resume and not overwrite:
        raise UsageError(
            f"--out {out} is not empty", hint="pass --overwrite to replace a cpgen output"
        )
    if overwrite and not made_by_cpgen:
        raise UsageError(
            f"--out {out} holds files cpgen did not write; refusing to delete them",
            hint="choose an empty or new folder",
        )


def prepare_out(out: Path) -> None:
    """Empty OUT (already checked by ``check_out`` and locked) for a fresh run; keep the lock."""
    if out.is_dir():
        for child in out.iterdir():
            if child.name == STATE_DIR and child.is_dir() and not child.is_symlink():
                for state in child.iterdir():
                    if state.name != LOCK:
                        _remove(state)
            else:
                _remove(child)
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


# ---------------------------------------------------------------------------------------------
# One run per OUT at a time

LOCK = "lock"
_held_locks: dict[str, int] = {}


def lock_out(out: Path) -> None:
    """Hold an exclusive lock on OUT for the rest of this process (or ``release_locks``).

    An ``flock`` on ``OUT/.cpgen/lock``: the kernel drops it when the process dies, however it
    dies, so a killed run never blocks the next one. The file names the holder (pid, host,
    command) for the error a second run prints. Taken again by the same process, it is a no-op.
    """
    key = str(out.resolve())
    if key in _held_locks:
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return
    path = out / STATE_DIR / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _in_use(out, path) from None
    except OSError:
        os.close(fd)
        raise
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(holder) + "\n").encode())
    _held_locks[key] = fd


def _refuse_if_locked(out: Path) -> None:
    """UsageError naming the holder if another process holds OUT's lock (nothing written)."""
    path = out / STATE_DIR / LOCK
    if str(out.resolve()) in _held_locks or not path.is_file():
        return
    try:
        import fcntl

        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (ImportError, OSError):
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(out, path) from None
    except OSError:
        pass
    finally:
        os.close(fd)  # releases the probe's shared lock


def _in_use(out: Path, path: Path) -> UsageError:
    return UsageError(
        f"--out {out} is in use by another cpgen run ({_holder(path)})",
        hint="wait for it to finish or stop it; two runs must not share one --out",
    )


def _holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return (
            f"pid {holder['pid']} on {holder['host']}, started {holder['started']}: "
            f"{holder['command']}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "its process could not be named"


def release_locks() -> None:
    """Drop every OUT lock this process holds (the end of a command)."""
    while _held_locks:
        _, fd = _held_locks.popitem()
        os.close(fd)


def forget_locks() -> None:
    """In a child forked from a process holding OUT locks: close the child's copies of their
    files. The parent keeps its locks (an ``flock`` lasts while any copy is open), and they end
    when it releases them, not when its workers exit."""
    while _held_locks:
        _, fd = _held_locks.popitem()
        with contextlib.suppress(OSError):
            os.close(fd)


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(out / STATE_DIR / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def link_or_copy(src: Path, dst: Path, mode: str) -> None:
    """Place an original image in OUT: a hard link (copy where one cannot be made) or a copy."""
    with naming(dst):
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            dst.unlink()
        if mode == "link":
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copyfile(src, dst)


def file_digest(path: Path) -> str:
    """sha256 of a file, so a resume can tell that its input changed."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_path(out: Path, number: int) -> Path:
    """A shard's result file: written last, after its images, so it marks the shard done."""
    return out / STATE_DIR / SHARDS / f"{number:06d}.json"


def read_shard(out: Path, number: int) -> dict[str, Any]:
    """A finished shard's status: its result file's first line (the file is written
    atomically, so complete when present; copy-paste shards' records follow that line)."""
    path = shard_path(out, number)
    try:
        with path.open(encoding="utf-8") as f:
            return json.loads(f.readline())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="start again with --overwrite") from None


def begin_run(out: Path, manifest: dict[str, Any], *, overwrite: bool, resume: bool) -> set[int]:
    """Check and lock OUT, make it ready, record the run's manifest; return the finished shards.

    A fresh run needs an empty (or new) OUT, or ``overwrite`` of an earlier cpgen output.
    ``resume`` continues the run recorded in OUT: it must have been started by cpgen with the
    same command, inputs and options (else UsageError naming what differs); finished shards are
    kept and everything else (temp files, unfinished shards) is redone; a run finished with
    :func:`finish_run` kept no shards, so resuming it redoes it (to the same bytes). The lock is
    taken after the read-only checks and before anything in OUT is written or deleted.
    """
    check_out(out, overwrite=overwrite, resume=resume)
    lock_out(out)
    finished: set[int] = set()
    recorded_path = recorded_manifest(out)
    if resume and recorded_path is not None:
        try:
            recorded = json.loads(recorded_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"--resume: cannot read {recorded_path}: {exc}") from None
        differences = manifest_differences(recorded, manifest)
        if differences:
            raise UsageError(
                f"--resume: {out} was made by a different run: {'; '.join(differences[:5])}",
                hint="resume with the same options, or start again with --overwrite",
            )
        _remove_temp_files(out)
        (out / FINISHED_MANIFEST).unlink(missing_ok=True)
        shards = out / STATE_DIR / SHARDS
        if shards.is_dir():
            finished = {int(p.stem) for p in shards.glob("*.json") if p.stem.isdigit()}
    else:
        prepare_out(out)
    write_manifest(out, {**manifest, "state": "running"})
    return finished


def recorded_manifest(out: Path) -> Path | None:
    """The manifest of the run recorded in OUT: a running or interrupted run's, else a finished
    one's (:func:`finish_run`); None when OUT holds neither."""
    for path in (out / STATE_DIR / MANIFEST, out / FINISHED_MANIFEST):
        if path.is_file():
            return path
    return None


def finish_run(out: Path, manifest: dict[str, Any]) -> None:
    """Record a finished run as ``OUT/.cpgen.json`` and remove the state folder ``OUT/.cpgen/``
    (its shard results are merged), so that OUT holds no folder but the output's own:
    torchvision's ``ImageFolder`` takes every sub-folder, hidden ones too, for a class.
    ``--overwrite`` and ``--resume`` recognise the file as they do the folder."""
    atomic_write_text(out / FINISHED_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)


def manifest_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two manifests, ignoring progress keys."""
    differences: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in dict.fromkeys([*a, *b]):
                if key in _PROGRESS_KEYS and not where:
                    continue
                walk(a.get(key), b.get(key), f"{where}.{key}" if where else key)
        elif a != b:
            differences.append(f"{where} was {json.dumps(a)}, now {json.dumps(b)}")

    walk(recorded, current, "")
    return differences


def _remove_temp_files(out: Path) -> None:
    """Leftovers of writes a killed run never renamed into place."""
    for tmp in out.rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink()
