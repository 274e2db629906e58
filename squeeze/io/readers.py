"""Dataset readers: the bundled MNIST files and scikit-learn digits, tensor files (`.npz` without
pickle, `.pt` weights-only), image folders read with Pillow, and user factories. squeeze.io.data turns
what they read into split DataBundles."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from squeeze.errors import UserInputError

UNLABELLED = -1
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"  # shipped in the wheel (package data), not read from a checkout
MNIST_DIR = BUNDLED_DIR / "mnist"
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the usual MNIST constants; recorded in the InputSpec
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read a (gzipped) IDX file as published for MNIST; validate magic and size."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserInputError(f"cannot read MNIST file {path}: {exc}") from None
    if len(raw) < 8:
        raise UserInputError(f"MNIST file {path} is truncated")
    magic, count = struct.unpack(">II", raw[:8])
    if magic != expected_magic:
        raise UserInputError(f"{path} is not an IDX file of the expected kind (magic {magic})")
    if magic == 2051 and len(raw) < 16:
        raise UserInputError(f"MNIST file {path} is truncated")
    if magic == 2051:
        rows, cols = struct.unpack(">II", raw[8:16])
        data = np.frombuffer(raw, dtype=np.uint8, offset=16)
        shape: tuple[int, ...] = (count, rows, cols)
    else:
        data = np.frombuffer(raw, dtype=np.uint8, offset=8)
        shape = (count,)
    if data.size != int(np.prod(shape)):
        raise UserInputError(f"MNIST file {path} is truncated ({data.size} of {int(np.prod(shape))} values)")
    return data.reshape(shape)


def load_mnist(root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The real MNIST test set (10k images), normalised with the usual constants."""
    root = root or MNIST_DIR
    images_path, labels_path = (root / name for name in MNIST_FILES)
    images = _read_idx(images_path, 2051)
    labels = _read_idx(labels_path, 2049)
    if len(images) != len(labels):
        raise UserInputError(f"MNIST images ({len(images)}) and labels ({len(labels)}) differ in count")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    x = (x - MNIST_MEAN) / MNIST_STD
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    return x, torch.from_numpy(labels.astype(np.int64)), digest


DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760  # of load_digits().images / 16, rounded; fixed so inputs are reproducible


def load_digits() -> tuple[torch.Tensor, torch.Tensor, str]:
    """scikit-learn's offline digits dataset: 1797 real 8x8 handwritten digits, read from the CSV scikit-learn ships
    as its own `load_digits` does (importing scikit-learn costs a second of every command's start-up)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # where the package is, without importing it
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is not None and csv.is_file():
        data = np.loadtxt(csv, delimiter=",")
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    else:  # another layout: scikit-learn's own reader
        from sklearn.datasets import load_digits as sk_load_digits

        digits = sk_load_digits()
        images, target = digits.images, digits.target
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    x = (x - DIGITS_MEAN) / DIGITS_STD
    y = torch.from_numpy(target.astype(np.int64))
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes() + target.tobytes()).hexdigest()
    return x, y, digest


def _as_features(x: Any, source: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if x.dtype == torch.uint8:
        x = x.float() / 255.0  # raw 8-bit images
    elif not torch.is_floating_point(x):
        x = x.float()
    if x.ndim == 3:  # N x H x W grayscale images
        x = x.unsqueeze(1)
    if x.ndim < 2:
        raise UserInputError(f"{source}: inputs must have a batch dimension plus a sample shape, got shape {tuple(x.shape)}")
    return x.float().contiguous()


def target_kind(y: torch.Tensor) -> str:
    """'class' (N,) labels, 'pixel' (N, H, W) per-pixel class labels, or 'regression' (N, k) float targets."""
    return "class" if y.ndim == 1 else "pixel" if y.ndim == 3 else "regression"


def _as_labels(y: Any, n: int, source: str) -> torch.Tensor:
    """Class labels (N,), per-pixel class labels (N, H, W) of integers, or regression targets (N, k) of floats."""
    y = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
    floating = torch.is_floating_point(y)
    if y.ndim == 0 or len(y) != n:
        raise UserInputError(f"{source}: labels must be a 1-D array of {n} entries (or per-sample targets), got shape {tuple(y.shape)}")
    if y.ndim not in (1, 2, 3) or (y.ndim == 2 and not floating) or (y.ndim == 3 and floating):
        raise UserInputError(f"{source}: labels must be {n} class indices (N,), per-pixel class indices (N, H, W) of integers, or "
                             f"regression targets (N, k) of floats; got {y.dtype} of shape {tuple(y.shape)}")
    if y.ndim == 2:
        finite = torch.isfinite(y).all(dim=1)
        if not bool(finite.all()):
            raise UserInputError(f"{source}: the regression targets of {int((~finite).sum())} of {n} samples hold NaN or Inf values "
                                 f"(the first is sample {int((~finite).nonzero()[0])})")
        return y.float()
    if y.ndim == 3 and bool((y < 0).any()):
        raise UserInputError(f"{source}: {int((y < 0).sum())} per-pixel labels are negative; they are class indices 0..C-1")
    if floating and not torch.equal(y, y.round()):
        raise UserInputError(f"{source}: labels must be integer class indices")
    return y.long()


def load_tensor_file(path: Path) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """`.npz` with arrays x (and optionally y), or a `.pt` holding {'x':..., 'y':...}, (x, y) or x.

    `.pt` files are read with the safe weights-only loader; `.npz` without pickle support.
    """
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if "x" in archive:
                    x, y = archive["x"], archive["y"] if "y" in archive else None
                elif len(keys) == 1:
                    x, y = archive[keys[0]], None
                else:
                    raise UserInputError(f"{path}: expected arrays named 'x' (and optionally 'y'), found {keys}")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                if "x" not in obj:
                    raise UserInputError(f"{path}: expected a dict with key 'x' (and optionally 'y'), found {sorted(obj)}")
                x, y = obj["x"], obj.get("y")
            elif isinstance(obj, (tuple, list)) and len(obj) in (1, 2):
                x, y = obj[0], obj[1] if len(obj) == 2 else None
            elif isinstance(obj, torch.Tensor):
                x, y = obj, None
            else:
                raise UserInputError(f"{path}: expected a tensor, an (x, y) pair or a dict with 'x'/'y'")
    except UserInputError:
        raise
    except Exception as exc:  # zip/pickle/npz errors carry little a user can act on beyond "unreadable"
        raise UserInputError(f"cannot read dataset {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    features = _as_features(x, str(path))
    labels = _as_labels(y, len(features), str(path)) if y is not None else None
    digest = hashlib.sha256(features.numpy().tobytes() + (labels.numpy().tobytes() if labels is not None else b"")).hexdigest()
    return features, labels, digest


class ImageFolderDataset(Dataset):
    """Images in class subfolders (root/<class>/<image>), read with Pillow on access.

    Every image is converted to the first image's mode (L or RGB) and size so batches stack.
    """

    def __init__(self, root: Path, mean: float = 0.0, std: float = 1.0, like: ImageFolderDataset | None = None):
        from PIL import Image

        self.root = root
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if like is not None and self.classes != like.classes:
            extra, missing = sorted(set(self.classes) - set(like.classes)), sorted(set(like.classes) - set(self.classes))
            raise UserInputError(f"image folders {like.root} and {root} have different classes (only in {root.name}: {extra[:3]}, "
                                 f"only in {like.root.name}: {missing[:3]})")
        if not self.classes:
            raise UserInputError(f"image folder {root} has no class subfolders (expected root/<class>/<image>)")
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            for image in sorted((root / name).rglob("*")):
                if image.suffix.lower() in IMAGE_SUFFIXES:
                    self.samples.append((image, label))
        if not self.samples:
            raise UserInputError(f"image folder {root} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        first = self._open(self.samples[0][0])
        self.mode = "L" if first.mode in ("L", "1", "I", "I;16", "F") else "RGB"
        self.size = first.size
        if like is not None:  # a given val/test folder is read exactly as its train folder
            self.mode, self.size = like.mode, like.size
        self.mean, self.std = mean, std
        self._image = Image

    def _open(self, path: Path):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image.load()
                return image.copy()
        except (OSError, UnidentifiedImageError) as exc:
            raise UserInputError(f"cannot read image {path}: {exc}") from None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = self._open(path).convert(self.mode)
        if image.size != self.size:
            image = image.resize(self.size, self._image.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 255.0
        x = torch.from_numpy(array).unsqueeze(0) if array.ndim == 2 else torch.from_numpy(array).permute(2, 0, 1)
        return (x - self.mean) / self.std, label

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path, label in self.samples:
            stat = path.stat()
            digest.update(f"{path.relative_to(self.root)}|{label}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return digest.hexdigest()


class _PairDataset(Dataset):
    """Normalises a user dataset's items to (float tensor, int label or UNLABELLED)."""

    def __init__(self, inner: Dataset):
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.inner[index]
        if isinstance(item, (tuple, list)):
            x, y = item[0], (item[1] if len(item) > 1 else UNLABELLED)
        elif isinstance(item, dict):
            x, y = item["x"], item.get("y", UNLABELLED)
        else:
            x, y = item, UNLABELLED
        x = torch.as_tensor(x)
        return (x.float() if not torch.is_floating_point(x) else x), int(y)


def import_object(spec: str, what: str) -> Any:
    """Resolve `pkg.mod:attr` (the user's own code, named by the user)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserInputError(f"{what} must look like 'package.module:name', got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: the console script would not see ./mymodels.py
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UserInputError(f"cannot import {what} module {module_name!r}: {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserInputError(f"{what} {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj
