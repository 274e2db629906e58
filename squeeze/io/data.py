"""Datasets: bundled samples (MNIST test set, scikit-learn digits), tensor files, image folders,
and user factories, with deterministic train / calibration / eval splits.

Every dataset yields `(x, y)` pairs of a float tensor and an int64 label; label-free data uses
y = -1 (UNLABELLED) and `DataBundle.has_labels` is False.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from squeeze.errors import UserInputError
from squeeze.io.readers import (  # noqa: F401 - UNLABELLED and the readers are part of this module's interface
    DIGITS_MEAN,
    DIGITS_STD,
    MNIST_MEAN,
    MNIST_STD,
    BUNDLED_DIR,
    UNLABELLED,
    ImageFolderDataset,
    _PairDataset,
    import_object,
    load_digits,
    load_mnist,
    load_tensor_file,
    target_kind,
)

BUNDLED = ("mnist", "digits", "cifar10-mini")
CIFAR_MINI_DIR = BUNDLED_DIR / "cifar10-mini"  # 2000 train / 1000 test real images, for tests


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
    targets: str | None = None  # 'pixel' (N, H, W) class maps or 'regression' (N, k) floats: targets that are not class labels

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
            **({"targets": self.targets} if self.targets else {}),
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
        return torch.stack(xs), torch.stack(ys) if self.targets else torch.as_tensor(ys, dtype=torch.long)


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
    targets = target_kind(labels) if labels is not None and labels.ndim > 1 else None
    labels = checked_labels(labels, source) if targets is None else labels
    has_labels = labels is not None and targets is None  # class labels (CE, accuracy); other targets are named by `targets`
    num_classes = int(labels.max()) + 1 if labels is not None and targets != "regression" else None
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
        targets=targets,
        **kw,
    )


def _bundle_given(name: str, source: str, train: Dataset, held_out: Dataset, labels: tuple[torch.Tensor, torch.Tensor], digest: str,
                  cfg: SplitConfig, **kw: Any) -> DataBundle:
    """A dataset that comes with its own split: the given test (or val) part is the eval split, never
    trained on or selected on; calibration is carved from the given train part by the seed."""
    n = len(train)
    if n == 0 or len(held_out) == 0:
        raise UserInputError(f"dataset {source}: both the train and the test part must be non-empty")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    n_cal = max(1, int(round(n * cfg.calibration_fraction)))
    if n - n_cal < 1:
        raise UserInputError(f"dataset {source}: {n} training samples are too few to carve a calibration split")
    train_labels, held_labels = (checked_labels(y, f"{source} ({part})") for y, part in zip(labels, ("train", "test")))
    if (train_labels is None) != (held_labels is None):
        raise UserInputError(f"dataset {source}: one part has labels and the other has none")
    fingerprint = hashlib.sha256(f"{digest}|given|{cfg.seed}|{cfg.calibration_fraction}".encode()).hexdigest()[:16]
    bundle = DataBundle(
        name=name,
        source=source,
        full=torch.utils.data.ConcatDataset([train, held_out]),
        train=Subset(train, order[n_cal:]),
        calibration=Subset(train, order[:n_cal]),
        eval=held_out,
        has_labels=train_labels is not None,
        num_classes=int(torch.cat([train_labels, held_labels]).max()) + 1 if train_labels is not None else None,
        sample_shape=tuple(train[0][0].shape),
        split=cfg,
        fingerprint=fingerprint,
        **kw,
    )
    bundle.extra["given_split"] = True
    return bundle


def _given_parts(path: Path) -> tuple[Path, Path] | None:
    """train/ + val/ (or test/) image folders, or train.npz + val.npz (or test.npz), in `path`."""
    for kind, train_name, held_names in (("dir", "train", ("val", "test")), ("npz", "train.npz", ("val.npz", "test.npz"))):
        train = path / train_name
        held = next((path / h for h in held_names if (path / h).exists()), None)
        if held is not None and (train.is_dir() if kind == "dir" else train.is_file()):
            return train, held
    return None


def _load_given(path: Path, parts: tuple[Path, Path], cfg: SplitConfig) -> DataBundle:
    train_path, held_path = parts
    if train_path.is_dir():
        train_folder = ImageFolderDataset(train_path)
        held_folder = ImageFolderDataset(held_path, like=train_folder)
        labels = tuple(torch.tensor([label for _, label in f.samples]) for f in (train_folder, held_folder))
        digest = hashlib.sha256((train_folder.fingerprint() + held_folder.fingerprint()).encode()).hexdigest()
        bundle = _bundle_given(path.name, str(path), train_folder, held_folder, labels, digest, cfg)
        bundle.num_classes = len(train_folder.classes)
        bundle.extra["classes"] = train_folder.classes
        return bundle
    parts_read = [load_tensor_file(p) for p in (train_path, held_path)]
    for (x, y, _), p in zip(parts_read, (train_path, held_path)):
        check_finite(x, str(p))
        if y is not None and y.ndim > 1:
            raise UserInputError(f"{p}: train/test .npz pairs take class labels; give per-pixel labels or regression targets in one .npz")
    if tuple(parts_read[0][0].shape[1:]) != tuple(parts_read[1][0].shape[1:]):
        raise UserInputError(f"{train_path.name} and {held_path.name} hold samples of different shapes")
    datasets, labels = [], []
    for x, y, _ in parts_read:
        y = y if y is not None else torch.full((len(x),), UNLABELLED, dtype=torch.long)
        datasets.append(TensorDataset(x, y))
        labels.append(y)
    digest = hashlib.sha256("".join(d for _, _, d in parts_read).encode()).hexdigest()
    return _bundle_given(path.name, str(path), datasets[0], datasets[1], tuple(labels), digest, cfg)


def _normalised(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    t = torch.from_numpy(x).float().div_(255.0)
    return t.sub_(torch.tensor(mean).view(1, -1, 1, 1)).div_(torch.tensor(std).view(1, -1, 1, 1))


def load_cifar_bundle(root: Path | None, cfg: SplitConfig, name: str = "cifar10", mini: bool = False) -> DataBundle:
    from squeeze.io import cifar

    if mini:
        splits = cifar.read_npz_pair(CIFAR_MINI_DIR / cifar.NPZ_FILES[0], CIFAR_MINI_DIR / cifar.NPZ_FILES[1])
    else:
        splits = cifar.load_cifar10(root)
    train = TensorDataset(_normalised(splits.train_x, cifar.CIFAR10_MEAN, cifar.CIFAR10_STD), torch.from_numpy(splits.train_y))
    test = TensorDataset(_normalised(splits.test_x, cifar.CIFAR10_MEAN, cifar.CIFAR10_STD), torch.from_numpy(splits.test_y))
    norm = {"mean": list(cifar.CIFAR10_MEAN), "std": list(cifar.CIFAR10_STD)}
    bundle = _bundle_given(name, f"{splits.layout}:{splits.source}", train, test, (train.tensors[1], test.tensors[1]), splits.digest(), cfg,
                           normalization=norm)
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
        if y is not None and y.ndim == 1 and bool((y < 0).any()):
            raise UserInputError(f"{path}: {int((y < 0).sum())} labels are negative (values {sorted(set(y[y < 0].tolist()))[:5]}); "
                                 "labels are class indices 0..C-1 (omit 'y' for label-free data)")
        labels = y if y is not None else torch.full((len(x),), UNLABELLED, dtype=torch.long)
        return _bundle(path.stem, str(path), TensorDataset(x, labels), y, digest, cfg)
    if path.is_dir():
        from squeeze.io import cifar

        if cifar.detect_layout(path):
            return load_cifar_bundle(path, cfg)
        parts = _given_parts(path)
        if parts is not None:
            return _load_given(path, parts, cfg)
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


def open_data(spec: str | None, model: Any = None, split_seed: int | None = None) -> DataBundle | None:
    """The dataset the user named, else the bundled one a sample teacher records it was trained on.

    The split seed is the one the teacher recorded for that dataset (so its held-out eval split
    stays held out), else 0; it never follows a training seed, or the eval split would change
    with every seed and could hold images the teacher trained on.
    """
    recorded = model.metadata if model is not None else {}
    if spec is None and recorded.get("dataset") in BUNDLED:
        spec = recorded["dataset"]
    if split_seed is None:
        split_seed = int(recorded.get("split", {}).get("seed", 0)) if recorded.get("dataset") == spec else 0
    bundle = load_data(spec, SplitConfig(seed=split_seed)) if spec else None
    if bundle is not None and model is not None:
        check_data_fits(bundle, model)
    return bundle


def _same_normalization(a: dict[str, list[float]], b: dict[str, list[float]]) -> bool:
    return all(len(a.get(k, [])) == len(b.get(k, [])) and all(abs(x - y) <= 1e-3 for x, y in zip(a[k], b[k])) for k in ("mean", "std"))


def check_data_fits(bundle: DataBundle, model: Any) -> None:
    """Before any work: the samples have the model's input shape, and no label names a class the model lacks."""
    expected = tuple(model.input_spec.shape[1:])
    if tuple(bundle.sample_shape) != expected:
        got, want = "x".join(map(str, bundle.sample_shape)), "x".join(map(str, expected))
        raise UserInputError(f"data {bundle.source} has samples of shape {got}, but the model takes {want}")
    recorded, given = model.input_spec.normalization, bundle.normalization
    if recorded and given and not _same_normalization(recorded, given):
        raise UserInputError(f"the model was trained on inputs normalised with {recorded}, but data {bundle.source} is normalised "
                             f"with {given}: its predictions would be meaningless")
    if bundle.targets is not None:
        from squeeze.io.outputs import check_targets_fit

        check_targets_fit(bundle, model)
    classes = model.output_classes
    if bundle.has_labels and classes is not None and bundle.num_classes is not None and bundle.num_classes > classes:
        from squeeze.io.data import all_labels

        labels = all_labels(bundle)
        bad = labels >= classes
        raise UserInputError(f"data {bundle.source}: {int(bad.sum())} labels are >= {classes}, the model's number of classes "
                             f"(values {sorted(set(labels[bad].tolist()))[:5]})")
