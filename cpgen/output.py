"""The output folder: preparing it, the run manifest, and atomic JSON writes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cpgen.errors import DataError, UsageError

STATE_DIR = ".cpgen"
MANIFEST = "manifest.json"
#: a finished run's manifest once its state folder is gone (:func:`finish_run`)
FINISHED_MANIFEST = ".cpgen.json"
SHARDS = "shards"
#: manifest keys that describe the run itself rather than what it must produce
_PROGRESS_KEYS = ("state", "summary")


def dumps(obj: Any) -> str:
    """Compact, deterministic JSON (key order as built, no NaN)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_chunks(path, [text])


def atomic_write_chunks(path: Path, chunks: Iterable[str]) -> None:
    """Write text pieces to a temp file beside ``path``, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for chunk in chunks:
                f.write(chunk)
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


def prepare_out(out: Path, overwrite: bool) -> None:
    """Make OUT ready for a fresh run.

    A non-empty OUT needs ``--overwrite``, and then it is emptied only if cpgen made it (it has
    a ``.cpgen`` folder, or a finished run's ``.cpgen.json``): cpgen never deletes a folder of
    someone else's.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(
                f"--out {out} is not empty", hint="pass --overwrite to replace a cpgen output"
            )
        if not ((out / STATE_DIR).is_dir() or (out / FINISHED_MANIFEST).is_file()):
            raise UsageError(
                f"--out {out} holds files cpgen did not write; refusing to delete them",
                hint="choose an empty or new folder",
            )
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(out / STATE_DIR / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def link_or_copy(src: Path, dst: Path, mode: str) -> None:
    """Place an original image in OUT: a hard link (copy where one cannot be made) or a copy."""
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
    """A finished shard's status file (written atomically, so complete when present)."""
    path = shard_path(out, number)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="start again with --overwrite") from None


def begin_run(out: Path, manifest: dict[str, Any], *, overwrite: bool, resume: bool) -> set[int]:
    """Make OUT ready and record the run's manifest; return the shards already finished.

    A fresh run needs an empty (or new) OUT, or ``overwrite`` of an earlier cpgen output.
    ``resume`` continues the run recorded in OUT: it must have been started by cpgen with the
    same command, inputs and options (else UsageError naming what differs); finished shards are
    kept and everything else (temp files, unfinished shards) is redone; a run finished with
    :func:`finish_run` kept no shards, so resuming it redoes it (to the same bytes).
    """
    if overwrite and resume:
        raise UsageError("--overwrite and --resume exclude each other")
    finished: set[int] = set()
    if resume and out.is_dir() and any(out.iterdir()):
        recorded_path = out / STATE_DIR / MANIFEST
        if not recorded_path.is_file():
            recorded_path = out / FINISHED_MANIFEST
        if not recorded_path.is_file():
            raise UsageError(
                f"--resume: {out} holds no cpgen run (no {STATE_DIR}/{MANIFEST})",
                hint="resume only into the folder of an interrupted cpgen run",
            )
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
        prepare_out(out, overwrite)
    write_manifest(out, {**manifest, "state": "running"})
    return finished


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
