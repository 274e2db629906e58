"""Datasets: bundled samples (MNIST test set, scikit-learn digits), tensor files, image folders,
and user factories, with deterministic train / calibration / eval splits.

Every dataset yields `(x, y)` pairs of a float tensor and an int64 label; label-free data uses
y = -1 (UNLABELLED) and `DataBundle.has_labels` is False.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import os
import struct
import sys
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from squeeze.augment import random_shift  # noqa: F401 - re-exported: older callers import it from here
from squeeze.errors import UserInputError

UNLABELLED = -1
PROJECT_ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = PROJECT_ROOT / "samples" / "data" / "mnist"
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the usual MNIST constants; recorded in the InputSpec
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
BUNDLED = ("mnist", "digits", "cifar10-mini")
CIFAR_MINI_DIR = PROJECT_ROOT / "samples" / "data" / "cifar10-mini"  # 2000 train / 1000 test real images, for tests


@dataclass(frozen=True)
class SplitConfig:
    """How a dataset is cut into train / calibration / eval. The seed is recorded in every result."""

    seed: int = 0
    eval_fraction: float = 0.2
    calibration_fraction: float = 0.05

    def __post_init__(self) -> None:
        if not (0 < self.eval_fraction < 1 and 0 <= self.calibration_fraction < 1):
            raise UserInputError("split fractions must be in (0, 1)")
        if self.eval_fraction + self.calibration_fraction >= 1:
            raise UserInputError("eval + calibration fractions must leave some training data")


@dataclass
class DataBundle:
    """A dataset and its deterministic splits."""

    name: str
    source: str
    full: Dataset
    train: Dataset
    calibration: Dataset
    eval: Dataset
    has_labels: bool
    num_classes: int | None
    sample_shape: tuple[int, ...]
    split: SplitConfig
    fingerprint: str
    normalization: dict[str, list[float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "samples": len(self.full),
            "train": len(self.train),
            "calibration": len(self.calibration),
            "eval": len(self.eval),
            "has_labels": self.has_labels,
            "num_classes": self.num_classes,
            "sample_shape": list(self.sample_shape),
            "split": asdict(self.split),
            "fingerprint": self.fingerprint,
            "normalization": self.normalization,
        }

    def loader(self, split: str, batch_size: int = 256, shuffle: bool = False, seed: int | None = None, drop_last: bool = False) -> DataLoader:
        dataset = {"train": self.train, "calibration": self.calibration, "eval": self.eval, "full": self.full}[split]
        generator = torch.Generator().manual_seed(self.split.seed if seed is None else seed) if shuffle else None
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last)

    def batch(self, split: str = "eval", n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` samples of a split as one batch: a fixed, reproducible batch."""
        dataset = {"train": self.train, "calibration": self.calibration, "eval": self.eval}[split]
        n = min(n, len(dataset))
        xs, ys = zip(*(dataset[i] for i in range(n)))
        return torch.stack(xs), torch.as_tensor(ys, dtype=torch.long)


# ----------------------------------------------------------------------------------------------
# Readers


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
    """scikit-learn's offline digits dataset: 1797 real 8x8 handwritten digits."""
    from sklearn.datasets import load_digits as sk_load_digits

    digits = sk_load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = (x - DIGITS_MEAN) / DIGITS_STD
    y = torch.from_numpy(digits.target.astype(np.int64))
    digest = hashlib.sha256(digits.images.tobytes() + digits.target.tobytes()).hexdigest()
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


def _as_labels(y: Any, n: int, source: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
    if y.ndim != 1 or len(y) != n:
        raise UserInputError(f"{source}: labels must be a 1-D array of {n} entries, got shape {tuple(y.shape)}")
    if torch.is_floating_point(y) and not torch.equal(y, y.round()):
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

    def __init__(self, root: Path, mean: float = 0.0, std: float = 1.0):
        from PIL import Image

        self.root = root
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
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


# ----------------------------------------------------------------------------------------------
# Entry point


def _split(n: int, cfg: SplitConfig) -> tuple[list[int], list[int], list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    n_eval = max(1, int(round(n * cfg.eval_fraction)))
    n_cal = int(round(n * cfg.calibration_fraction))
    if n - n_eval - n_cal < 1:
        raise UserInputError(f"dataset of {n} samples is too small to split (eval {n_eval}, calibration {n_cal})")
    return order[n_eval + n_cal :], order[n_eval : n_eval + n_cal], order[:n_eval]


def checked_labels(labels: torch.Tensor | None, source: str) -> torch.Tensor | None:
    """Labels as given, or None when the data has none. A dataset is label-free only when no
    sample has a label (or the user says --label-free): a stray negative label is an error,
    not a reason to ignore every label."""
    if labels is None:
        return None
    missing = labels == UNLABELLED
    if bool(missing.all()):
        return None
    if bool(missing.any()):
        raise UserInputError(f"{source}: {int(missing.sum())} of {len(labels)} samples have no label; label every sample, or none (label-free)")
    bad = labels < 0
    if bool(bad.any()):
        values = sorted(set(labels[bad].tolist()))[:5]
        raise UserInputError(f"{source}: {int(bad.sum())} labels are negative (values {values}); labels are class indices 0..C-1")
    return labels


def check_finite(x: torch.Tensor, source: str) -> None:
    """NaN/Inf inputs are a data error: name the first sample that has one."""
    finite = torch.isfinite(x.reshape(len(x), -1)).all(dim=1) if len(x) else torch.ones(0, dtype=torch.bool)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        raise UserInputError(f"{source}: {int((~finite).sum())} samples hold NaN or Inf values (the first is sample {first})")


def _bundle(name: str, source: str, full: Dataset, labels: torch.Tensor | None, digest: str, cfg: SplitConfig, **kw: Any) -> DataBundle:
    n = len(full)  # type: ignore[arg-type]
    if n == 0:
        raise UserInputError(f"dataset {source} is empty")
    train, cal, ev = _split(n, cfg)
    sample = full[0][0]
    labels = checked_labels(labels, source)
    has_labels = labels is not None
    num_classes = int(labels.max()) + 1 if labels is not None else None
    fingerprint = hashlib.sha256(f"{digest}|{cfg.seed}|{cfg.eval_fraction}|{cfg.calibration_fraction}".encode()).hexdigest()[:16]
    return DataBundle(
        name=name,
        source=source,
        full=full,
        train=Subset(full, train),
        calibration=Subset(full, cal),
        eval=Subset(full, ev),
        has_labels=has_labels,
        num_classes=num_classes,
        sample_shape=tuple(sample.shape),
        split=cfg,
        fingerprint=fingerprint,
        **kw,
    )


def _bundle_given(name: str, source: str, train: TensorDataset, held_out: TensorDataset, digest: str, cfg: SplitConfig, **kw: Any) -> DataBundle:
    """A dataset that comes with its own split: the given test set is the eval split (never trained
    on or selected on); calibration is carved from the given train set by the seed."""
    n = len(train)
    if n == 0 or len(held_out) == 0:
        raise UserInputError(f"dataset {source}: both the train and the test part must be non-empty")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    n_cal = max(1, int(round(n * cfg.calibration_fraction)))
    if n - n_cal < 1:
        raise UserInputError(f"dataset {source}: {n} training samples are too few to carve a calibration split")
    labels = torch.cat([train.tensors[1], held_out.tensors[1]])
    fingerprint = hashlib.sha256(f"{digest}|given|{cfg.seed}|{cfg.calibration_fraction}".encode()).hexdigest()[:16]
    bundle = DataBundle(
        name=name,
        source=source,
        full=torch.utils.data.ConcatDataset([train, held_out]),
        train=Subset(train, order[n_cal:]),
        calibration=Subset(train, order[:n_cal]),
        eval=held_out,
        has_labels=bool((labels >= 0).all()),
        num_classes=int(labels.max()) + 1,
        sample_shape=tuple(train.tensors[0].shape[1:]),
        split=cfg,
        fingerprint=fingerprint,
        **kw,
    )
    bundle.extra["given_split"] = True
    return bundle


def _normalised(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    t = torch.from_numpy(x).float().div_(255.0)
    return t.sub_(torch.tensor(mean).view(1, -1, 1, 1)).div_(torch.tensor(std).view(1, -1, 1, 1))


def load_cifar_bundle(root: Path | None, cfg: SplitConfig, name: str = "cifar10", mini: bool = False) -> DataBundle:
    from squeeze import cifar

    if mini:
        splits = cifar.read_npz_pair(CIFAR_MINI_DIR / cifar.NPZ_FILES[0], CIFAR_MINI_DIR / cifar.NPZ_FILES[1], expect_full=False)
    else:
        splits = cifar.load_cifar10(root)
    train = TensorDataset(_normalised(splits.train_x, cifar.CIFAR10_MEAN, cifar.CIFAR10_STD), torch.from_numpy(splits.train_y))
    test = TensorDataset(_normalised(splits.test_x, cifar.CIFAR10_MEAN, cifar.CIFAR10_STD), torch.from_numpy(splits.test_y))
    norm = {"mean": list(cifar.CIFAR10_MEAN), "std": list(cifar.CIFAR10_STD)}
    bundle = _bundle_given(name, f"{splits.layout}:{splits.source}", train, test, splits.digest(), cfg, normalization=norm)
    bundle.extra["classes"] = list(cifar.CIFAR10_CLASSES)
    return bundle


def all_labels(bundle: DataBundle) -> torch.Tensor:
    """Every label of the dataset (train, calibration and eval), for error messages and checks."""
    full = bundle.full
    if isinstance(full, TensorDataset):
        return full.tensors[1]
    if isinstance(full, torch.utils.data.ConcatDataset) and all(isinstance(d, TensorDataset) for d in full.datasets):
        return torch.cat([d.tensors[1] for d in full.datasets])
    return torch.tensor([int(full[i][1]) for i in range(len(full))])


def split_tensors(bundle: DataBundle, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (x, y) tensors of a split when the data is in memory (fast batch indexing), else None."""
    dataset = {"train": bundle.train, "calibration": bundle.calibration, "eval": bundle.eval}[split]
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0], dataset.tensors[1]
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorDataset):
        index = torch.as_tensor(dataset.indices, dtype=torch.long)
        return dataset.dataset.tensors[0][index], dataset.dataset.tensors[1][index]
    return None


def load_data(spec: str, split: SplitConfig | None = None) -> DataBundle:
    """Open a dataset from a CLI-style spec: 'mnist', 'digits', a .npz/.pt file, an image folder, or pkg.mod:fn."""
    cfg = split or SplitConfig()
    if spec == "cifar10-mini":
        return load_cifar_bundle(None, cfg, name=spec, mini=True)
    if spec == "cifar10" or (spec.startswith("cifar10:") and len(spec) > 8):
        return load_cifar_bundle(Path(spec[8:]) if ":" in spec else None, cfg)
    if spec in BUNDLED:
        x, y, digest = load_mnist() if spec == "mnist" else load_digits()
        mean, std = (MNIST_MEAN, MNIST_STD) if spec == "mnist" else (DIGITS_MEAN, DIGITS_STD)
        return _bundle(spec, f"bundled:{spec}", TensorDataset(x, y), y, digest, cfg, normalization={"mean": [mean], "std": [std]})

    path = Path(spec)
    if path.suffix in (".npz", ".pt", ".pth") or path.is_file():
        if not path.exists():
            raise UserInputError(f"dataset file not found: {path}")
        if path.suffix not in (".npz", ".pt", ".pth"):
            raise UserInputError(f"unsupported dataset file {path}: expected .npz or .pt, an image folder, 'mnist', 'digits' or pkg.mod:fn")
        x, y, digest = load_tensor_file(path)
        check_finite(x, str(path))
        if y is not None and bool((y < 0).any()):
            raise UserInputError(f"{path}: {int((y < 0).sum())} labels are negative (values {sorted(set(y[y < 0].tolist()))[:5]}); "
                                 "labels are class indices 0..C-1 (omit 'y' for label-free data)")
        labels = y if y is not None else torch.full((len(x),), UNLABELLED, dtype=torch.long)
        return _bundle(path.stem, str(path), TensorDataset(x, labels), y, digest, cfg)
    if path.is_dir():
        from squeeze import cifar

        if cifar.detect_layout(path):
            return load_cifar_bundle(path, cfg)
        folder = ImageFolderDataset(path)
        labels = torch.tensor([label for _, label in folder.samples])
        bundle = _bundle(path.name, str(path), folder, labels, folder.fingerprint(), cfg)
        bundle.num_classes = len(folder.classes)
        bundle.extra["classes"] = folder.classes
        return bundle
    if ":" in spec and not path.exists():
        factory = import_object(spec, "dataset factory")
        try:
            inner = factory()
        except Exception as exc:
            raise UserInputError(f"dataset factory {spec} failed: {type(exc).__name__}: {exc}") from None
        if not hasattr(inner, "__getitem__") or not hasattr(inner, "__len__"):
            raise UserInputError(f"dataset factory {spec} must return a map-style Dataset (with __len__ and __getitem__)")
        full = _PairDataset(inner)
        labels = torch.tensor([full[i][1] for i in range(len(full))]) if len(full) <= 200_000 else None
        digest = hashlib.sha256(f"{spec}|{len(full)}".encode()).hexdigest()
        return _bundle(spec, f"factory:{spec}", full, labels, digest, cfg)
    raise UserInputError(f"dataset not found: {spec!r} (expected 'mnist', 'digits', a .npz/.pt file, an image folder, or pkg.mod:fn)")
