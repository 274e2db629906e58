"""Atomic file writes: an interrupted run never leaves a half file under a final name."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from squeeze.errors import UserInputError

# errors that mean "this path cannot be written" (a user's disk, mount or permissions), not a bug
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


class WriteError(UserInputError):
    """A file could not be written (disk full, read-only, no permission): exit 2, naming the path."""


def _no_space(directory: Path) -> bool:
    try:
        return shutil.disk_usage(directory).free < 256 * 1024
    except OSError:
        return False


def write_failure(exc: BaseException, final: Path) -> WriteError | None:
    """The user-facing error for a failed write of `final`, or None if `exc` is not a write failure.
    torch.save and the ONNX exporter report a full disk as RuntimeError: free space tells."""
    if isinstance(exc, WriteError):
        return exc
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return WriteError(f"cannot write {final}: {exc.strerror or os.strerror(exc.errno)}")
    if isinstance(exc, (OSError, RuntimeError)) and _no_space(Path(final).parent):
        return WriteError(f"cannot write {final}: no space left on device")
    return None


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
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    except OSError as exc:
        raise write_failure(exc, final) or exc from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; final files get the usual permissions
        os.replace(tmp, final)
    except Exception as exc:
        failure = write_failure(exc, final)
        if failure is None:
            raise
        raise failure from None
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


def copy_atomic(src: Path, dest: Path) -> None:
    """Copy a file so that `dest` appears whole or not at all; a failed write names `dest`."""
    with atomic_path(Path(dest)) as tmp:
        shutil.copyfile(src, tmp)


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
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.resolve().parent))
        (staging / OWNER_FILE).write_text(str(os.getpid()))
    except OSError as exc:
        raise write_failure(exc, final) or exc from None
    try:
        try:
            yield staging
        except WriteError as exc:  # name the file as it would be in `final`, not its staging copy
            raise WriteError(str(exc).replace(str(staging), str(final))) from None
        except Exception as exc:
            name = getattr(exc, "filename", None)
            inside = final / Path(name).relative_to(staging) if name and Path(name).is_relative_to(staging) else final
            failure = write_failure(exc, inside) if isinstance(exc, OSError) or _no_space(staging) else None
            if failure is None:
                raise
            raise failure from None
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


def load_resume_state(path: Path, progress=lambda m: None, map_location: str = "cpu") -> Any | None:
    """A training pass's saved per-epoch state, read with the weights-only unpickler, or None.

    The state is our own file, but it lives in a cache a user or another process can write to:
    it is never unpickled beyond tensors and plain data, and an unreadable one (truncated,
    corrupt, or needing more than weights-only) is reported, removed, and training starts over.
    """
    import torch

    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"holds a {type(state).__name__}, not a training state")
        return state
    except Exception as exc:  # any failure means the same: the state cannot be trusted
        progress(f"discarding unreadable training state {path} ({type(exc).__name__}); starting that pass over")
        path.unlink(missing_ok=True)
        return None
