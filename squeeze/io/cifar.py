"""CIFAR-10 readers: squeeze's `.npz` pair, the standard binary release, and the python release
through an unpickler that builds nothing but plain containers, bytes and numbers.

Each reader returns the official split as given (50k train, 10k test) as uint8 NCHW arrays.
The test set is the held-out eval split; calibration is carved from train by the caller.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from squeeze.errors import UserInputError

# Per-channel statistics of the 50k train images on 0-1 pixels (of squeeze's JPEG-decoded copy; the
# original release gives 0.4914/0.4822/0.4465 and 0.2470/0.2435/0.2616). Fixed, so inputs reproduce.
CIFAR10_MEAN = (0.4913, 0.4821, 0.4465)
CIFAR10_STD = (0.2452, 0.2428, 0.2606)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NPZ_FILES = ("cifar10-train.npz", "cifar10-test.npz")
BIN_DIR, BIN_TRAIN, BIN_TEST = "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"
PY_DIR, PY_TRAIN, PY_TEST = "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch"
_RECORD = 1 + 3 * 32 * 32  # binary release: one label byte, then 3072 pixel bytes (R, G, B planes)


@dataclass(frozen=True)
class CifarSplits:
    """The official split, uint8 images (N, 3, 32, 32) and int64 labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str
    layout: str  # npz | binary | python

    def digest(self) -> str:
        h = hashlib.sha256()
        for array in (self.train_x, self.train_y, self.test_x, self.test_y):
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()


def candidate_roots(root: Path | None) -> list[Path]:
    """Where `--data cifar10` looks: the folder the user named, else $SQUEEZE_DATA(/cifar10)."""
    if root is not None:
        return [root, root / "cifar10"]
    env = os.environ.get("SQUEEZE_DATA")
    return [Path(env) / "cifar10", Path(env)] if env else []


def detect_layout(root: Path) -> str | None:
    """Which CIFAR-10 release a folder holds, by its file names, or None."""
    if all((root / name).is_file() for name in NPZ_FILES):
        return "npz"
    for base in (root / BIN_DIR, root):
        if all((base / name).is_file() for name in (*BIN_TRAIN, BIN_TEST)):
            return "binary"
    for base in (root / PY_DIR, root):
        if all((base / name).is_file() for name in (*PY_TRAIN, PY_TEST)):
            return "python"
    return None


def find_cifar10(root: Path | None) -> tuple[Path, str]:
    for candidate in candidate_roots(root):
        layout = detect_layout(candidate) if candidate.is_dir() else None
        if layout:
            return candidate, layout
    if root is None and not os.environ.get("SQUEEZE_DATA"):
        raise UserInputError("--data cifar10 needs the dataset's folder: pass --data /path/to/cifar10 or set SQUEEZE_DATA")
    looked = ", ".join(str(p) for p in candidate_roots(root))
    raise UserInputError(f"no CIFAR-10 release found in {looked} (expected {' + '.join(NPZ_FILES)}, {BIN_DIR}/ or {PY_DIR}/)")


def _check(x: np.ndarray, y: np.ndarray, n: int | None, where: str) -> None:
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] not in ((3, 32, 32), (32, 32, 3)):
        raise UserInputError(f"{where}: images must be uint8 (N, 32, 32, 3) or (N, 3, 32, 32), got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise UserInputError(f"{where}: labels must be 1-D with one per image, got {y.shape} for {len(x)} images")
    if n is not None and len(x) != n:
        raise UserInputError(f"{where}: expected {n} images, found {len(x)}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        bad = np.unique(y[(y < 0) | (y > 9)])[:5].tolist()
        raise UserInputError(f"{where}: {int(((y < 0) | (y > 9)).sum())} labels outside 0..9 (e.g. {bad})")


def _nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.shape[-1] == 3 else x


def read_npz_pair(train_path: Path, test_path: Path, expect_full: bool = False) -> CifarSplits:
    arrays = []
    for path, n in ((train_path, 50_000), (test_path, 10_000)):
        try:
            with np.load(path, allow_pickle=False) as archive:
                if "x" not in archive or "y" not in archive:
                    raise UserInputError(f"{path}: expected arrays 'x' and 'y', found {sorted(archive.keys())}")
                x, y = archive["x"], archive["y"].astype(np.int64)
        except UserInputError:
            raise
        except Exception as exc:  # a pickle-bearing or corrupt npz: allow_pickle=False raises ValueError
            raise UserInputError(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
        _check(x, y, n if expect_full else None, str(path))
        arrays += [_nchw(x), y]
    return CifarSplits(*arrays, source=str(train_path.parent), layout="npz")


def _read_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise UserInputError(f"{path}: not a CIFAR-10 binary batch ({raw.size} bytes is not a multiple of {_RECORD})")
    records = raw.reshape(-1, _RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), records[:, 0].astype(np.int64)


class _PlainUnpickler(pickle.Unpickler):
    """Builds dicts, lists, tuples, bytes, str and numbers only: any class or function is refused,
    so a crafted batch file cannot run code (numpy arrays in the release are pickled as bytes)."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle's hook
        raise UserInputError(f"refusing to unpickle {module}.{name} from a CIFAR-10 python batch (only plain data is allowed)")


def _read_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _PlainUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except UserInputError:
        raise
    except Exception as exc:
        raise UserInputError(f"cannot read CIFAR-10 python batch {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if not isinstance(batch, dict):
        raise UserInputError(f"{path}: a CIFAR-10 python batch is a dict, found {type(batch).__name__}")
    data, labels = batch.get(b"data", batch.get("data")), batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, (bytes, bytearray)) or not isinstance(labels, list):
        raise UserInputError(f"{path}: expected raw image bytes under 'data' and a label list under 'labels'")
    x = np.frombuffer(bytes(data), dtype=np.uint8)
    if x.size % 3072:
        raise UserInputError(f"{path}: image bytes are not a multiple of 3072")
    return x.reshape(-1, 3, 32, 32).copy(), np.asarray(labels, dtype=np.int64)


def read_release(root: Path, layout: str, expect_full: bool = False) -> CifarSplits:
    """Any of the three layouts; `expect_full` also insists on 50,000 + 10,000 images (a subset is fine otherwise)."""
    if layout == "npz":
        return read_npz_pair(root / NPZ_FILES[0], root / NPZ_FILES[1], expect_full)
    base_dir, train_names, test_name, reader = (
        (BIN_DIR, BIN_TRAIN, BIN_TEST, _read_binary_batch) if layout == "binary" else (PY_DIR, PY_TRAIN, PY_TEST, _read_python_batch)
    )
    base = root / base_dir if (root / base_dir).is_dir() else root
    parts = [reader(base / name) for name in train_names]
    train_x, train_y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    test_x, test_y = reader(base / test_name)
    _check(train_x, train_y, 50_000 if expect_full else None, str(base))
    _check(test_x, test_y, 10_000 if expect_full else None, str(base / test_name))
    return CifarSplits(train_x, train_y, test_x, test_y, source=str(base), layout=layout)


def load_cifar10(root: Path | None = None) -> CifarSplits:
    """The official CIFAR-10 split from `root` (or $SQUEEZE_DATA), whichever release it holds."""
    found, layout = find_cifar10(root)
    return read_release(found, layout)
