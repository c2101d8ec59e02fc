"""The output folder: preparing it, the run manifest, and atomic JSON writes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cpgen.errors import UsageError

STATE_DIR = ".cpgen"
MANIFEST = "manifest.json"


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
    a ``.cpgen`` folder): cpgen never deletes a folder of someone else's.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(
                f"--out {out} is not empty", hint="pass --overwrite to replace a cpgen output"
            )
        if not (out / STATE_DIR).is_dir():
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
