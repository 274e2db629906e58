"""Atomic file writes: an interrupted run never leaves a half file under a final name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from squeeze.errors import UserInputError


def check_output_path(path: Path) -> Path:
    """Fail early (before any work) when the output's directory does not exist or is not writable."""
    path = Path(path)
    parent = path.resolve().parent
    if not parent.is_dir():
        raise UserInputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise UserInputError(f"output directory is not writable: {parent}")
    if path.is_dir():
        raise UserInputError(f"output path is a directory, expected a file: {path}")
    return path


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds.

    The temporary name keeps `final`'s suffix last, since some writers check it (torch.export.save).
    """
    final = Path(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; final files get the usual permissions
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Stage a directory beside `final` and swap it in only when complete.

    An existing `final` is replaced only after the new one is fully written, so a failed run
    leaves the previous result (or nothing) in place, never a half-written directory.
    """
    final = Path(final)
    _remove_orphaned_staging(final)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.resolve().parent))
    (staging / OWNER_FILE).write_text(str(os.getpid()))
    try:
        yield staging
        (staging / OWNER_FILE).unlink()
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old)
        else:
            os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


OWNER_FILE = ".squeeze-owner-pid"


def _remove_orphaned_staging(final: Path) -> None:
    """Staging directories of runs that were killed (kill -9 skips cleanup): their owner process is gone."""
    for staging in final.resolve().parent.glob(f".{final.name}.*.staging"):
        try:
            pid = int((staging / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours to judge
        if not _alive(pid):
            shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
