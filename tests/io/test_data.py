"""Datasets: bundled MNIST / digits, tensor files, image folders and factories load to (float x, int y)
items with deterministic splits; every kind of bad input gives one UserInputError."""

from __future__ import annotations

import gzip
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import squeeze.io.readers as readers
from squeeze.io.data import UNLABELLED, DataBundle, SplitConfig, load_data, load_mnist
from squeeze.errors import UserInputError


@pytest.fixture(scope="module")
def mnist() -> DataBundle:
    return load_data("mnist", SplitConfig())


def _indices(subset) -> list[int]:
    return list(subset.indices)


# ----------------------------------------------------------------------------------------------
# 1. Bundled MNIST


def test_mnist_shape_classes_and_default_split_sizes(mnist):
    assert len(mnist.full) == 10000
    assert mnist.sample_shape == (1, 28, 28)
    assert mnist.num_classes == 10 and mnist.has_labels
    assert (len(mnist.eval), len(mnist.calibration), len(mnist.train)) == (2000, 500, 7500)
    d = mnist.describe()
    assert (d["samples"], d["eval"], d["calibration"], d["train"]) == (10000, 2000, 500, 7500)
    assert d["normalization"] == {"mean": [0.1307], "std": [0.3081]}
    x, y = mnist.full[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == (1, 28, 28)
    assert 0 <= int(y) <= 9


def test_mnist_splits_are_disjoint_and_cover_everything(mnist):
    train, cal, ev = _indices(mnist.train), _indices(mnist.calibration), _indices(mnist.eval)
    assert len(set(train)) == len(train) and len(set(cal)) == len(cal) and len(set(ev)) == len(ev)
    assert not set(train) & set(cal) and not set(train) & set(ev) and not set(cal) & set(ev)
    assert sorted(train + cal + ev) == list(range(10000))


def test_mnist_same_seed_is_reproducible_other_seed_differs(mnist):
    again = load_data("mnist", SplitConfig(seed=0))
    assert _indices(again.eval) == _indices(mnist.eval)
    assert _indices(again.calibration) == _indices(mnist.calibration)
    xa, ya = mnist.batch("eval", 32)
    xb, yb = again.batch("eval", 32)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert again.fingerprint == mnist.fingerprint

    other = load_data("mnist", SplitConfig(seed=1))
    assert _indices(other.eval) != _indices(mnist.eval)
    xc, _ = other.batch("eval", 32)
    assert not torch.equal(xa, xc)
    assert other.fingerprint != mnist.fingerprint
    assert other.describe()["split"]["seed"] == 1


def test_mnist_eval_split_has_every_class(mnist):
    labels = mnist.full.tensors[1][_indices(mnist.eval)]
    counts = torch.bincount(labels, minlength=10)
    assert counts.shape == (10,) and bool((counts > 0).all())
    assert int(counts.sum()) == 2000


def test_mnist_is_normalised(mnist):
    x = mnist.full.tensors[0]
    assert abs(float(x.mean())) < 0.1
    assert 0.8 < float(x.std()) < 1.2  # raw [0, 1] pixels would have std ~0.3
    assert float(x.min()) == pytest.approx(-0.1307 / 0.3081, abs=1e-4)  # black pixel after normalisation


# ----------------------------------------------------------------------------------------------
# 2. Bundled digits


def test_digits_bundled():
    b = load_data("digits")
    assert len(b.full) == 1797
    assert b.sample_shape == (1, 8, 8)
    assert b.num_classes == 10 and b.has_labels
    assert len(b.eval) == round(1797 * 0.2) and len(b.train) + len(b.calibration) + len(b.eval) == 1797
    assert b.source == "bundled:digits"


# ----------------------------------------------------------------------------------------------
# 3. .npz files


def test_npz_uint8_images_with_labels(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 6, 5), dtype=np.uint8)
    x[0, 0, 0] = 255
    y = np.arange(40) % 4
    path = tmp_path / "imgs.npz"
    np.savez(path, x=x, y=y)
    b = load_data(str(path))
    assert b.name == "imgs" and len(b.full) == 40
    assert b.sample_shape == (1, 6, 5)  # channel dim added
    assert b.has_labels and b.num_classes == 4
    xs = b.full.tensors[0]
    assert xs.dtype == torch.float32
    assert float(xs.max()) <= 1.0 and float(xs.min()) >= 0.0
    assert float(xs.max()) == pytest.approx(1.0)
    torch.testing.assert_close(xs[3, 0], torch.from_numpy(x[3].astype(np.float32) / 255.0))
    assert torch.equal(b.full.tensors[1], torch.from_numpy(y).long())


def test_npz_without_labels_is_unlabelled(tmp_path):
    path = tmp_path / "nolabels.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32))
    b = load_data(str(path))
    assert not b.has_labels and b.num_classes is None
    assert b.sample_shape == (3,)
    assert bool((b.full.tensors[1] == UNLABELLED).all())
    _, y = b.batch("eval", 4)
    assert y.tolist() == [-1, -1, -1, -1]


def test_npz_object_array_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    x = np.empty(3, dtype=object)
    x[:] = [np.zeros(2), np.ones(3), "text"]
    np.savez(path, x=x)  # saving object arrays pickles them
    with pytest.raises(UserInputError, match="obj.npz"):
        load_data(str(path))


def test_npz_wrong_keys(tmp_path):
    path = tmp_path / "keys.npz"
    np.savez(path, a=np.zeros((4, 2)), b=np.zeros(4))
    with pytest.raises(UserInputError, match="'x'"):
        load_data(str(path))


# ----------------------------------------------------------------------------------------------
# 4. .pt files

_UNPICKLED: list[str] = []


def _record_unpickle() -> "Opaque":
    _UNPICKLED.append("ran")
    return Opaque()


class Opaque:
    """A non-tensor object: loading it needs full pickle (and would run _record_unpickle)."""

    def __reduce__(self):
        return (_record_unpickle, ())


def _pt_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(30, 2, 4, 4, generator=g), torch.arange(30) % 3


def test_pt_dict(tmp_path):
    x, y = _pt_data()
    path = tmp_path / "d.pt"
    torch.save({"x": x, "y": y}, path)
    b = load_data(str(path))
    assert b.has_labels and b.num_classes == 3 and b.sample_shape == (2, 4, 4)
    assert torch.equal(b.full.tensors[0], x) and torch.equal(b.full.tensors[1], y)


def test_pt_tuple(tmp_path):
    x, y = _pt_data()
    path = tmp_path / "t.pt"
    torch.save((x, y), path)
    b = load_data(str(path))
    assert b.has_labels and b.num_classes == 3
    assert torch.equal(b.full.tensors[0], x) and torch.equal(b.full.tensors[1], y)


def test_pt_bare_tensor(tmp_path):
    x, _ = _pt_data()
    path = tmp_path / "bare.pth"
    torch.save(x, path)
    b = load_data(str(path))
    assert not b.has_labels and b.num_classes is None
    assert b.sample_shape == (2, 4, 4)
    assert bool((b.full.tensors[1] == UNLABELLED).all())


def test_pt_pickled_object_is_refused_without_running_code(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"x": Opaque()}, path)
    _UNPICKLED.clear()
    with pytest.raises(UserInputError, match="obj.pt"):
        load_data(str(path))
    assert _UNPICKLED == []  # the weights-only loader never called the pickled reducer


def test_pt_labels_of_wrong_length(tmp_path):
    x, y = _pt_data()
    path = tmp_path / "short.pt"
    torch.save({"x": x, "y": y[:-5]}, path)
    with pytest.raises(UserInputError, match="labels must be a 1-D array of 30"):
        load_data(str(path))


# ----------------------------------------------------------------------------------------------
# 5. Image folders


def _gray(value: int, w: int = 10, h: int = 12) -> Image.Image:
    arr = np.full((h, w), value, dtype=np.uint8)
    arr[0, :] = 255 - value  # a distinct first row
    return Image.fromarray(arr, mode="L")


def _make_folder(root: Path, classes=("cat", "ant"), per_class: int = 6) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            _gray(10 * c + i * 3 + 1).save(root / name / f"img{i}.png")
    return root


def test_image_folder_grayscale(tmp_path):
    root = _make_folder(tmp_path / "pics")
    b = load_data(str(root))
    assert b.extra["classes"] == ["ant", "cat"]  # sorted, not creation order
    assert b.num_classes == 2 and b.has_labels and len(b.full) == 12
    assert b.sample_shape == (1, 12, 10)  # (C, H, W) for a 10-wide, 12-high image
    folder = b.full
    for i, (path, label) in enumerate(folder.samples):
        x, y = folder[i]
        assert y == label == b.extra["classes"].index(path.parent.name)
        # "cat" was class 0 at creation: its value is 1 + 3i; "ant" was 10 + 1 + 3i.
        base = 10 if path.parent.name == "ant" else 0
        expected = (base + int(path.stem[-1]) * 3 + 1) / 255.0
        assert float(x[0, 5, 5]) == pytest.approx(expected)
        assert float(x[0, 0, 0]) == pytest.approx((255 - base - int(path.stem[-1]) * 3 - 1) / 255.0)
    assert sorted(_indices(b.train) + _indices(b.calibration) + _indices(b.eval)) == list(range(12))


def test_image_folder_rgb_has_three_channels(tmp_path):
    root = tmp_path / "rgb"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            arr = np.zeros((12, 10, 3), dtype=np.uint8)
            arr[..., 0], arr[..., 2] = 200, i * 10
            Image.fromarray(arr, mode="RGB").save(root / name / f"{i}.png")
    b = load_data(str(root))
    assert b.sample_shape == (3, 12, 10)
    x, _ = b.full[0]
    assert float(x[0].mean()) == pytest.approx(200 / 255.0)
    assert float(x[1].abs().max()) == 0.0


def test_image_folder_without_class_subfolders(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(3):
        _gray(i).save(root / f"{i}.png")
    with pytest.raises(UserInputError, match="no class subfolders"):
        load_data(str(root))


def test_image_folder_corrupt_image_named_on_access(tmp_path):
    root = _make_folder(tmp_path / "pics")
    bad = root / "cat" / "zz_broken.png"
    bad.write_bytes(b"this is not a png at all" * 4)
    b = load_data(str(root))  # the first image is fine, so loading succeeds
    index = [p for p, _ in b.full.samples].index(bad)
    with pytest.raises(UserInputError, match="zz_broken.png"):
        b.full[index]


def test_image_folder_corrupt_first_image_fails_at_load(tmp_path):
    root = _make_folder(tmp_path / "pics")
    bad = root / "ant" / "000_broken.png"  # sorts first in the first class
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    with pytest.raises(UserInputError, match="000_broken.png"):
        load_data(str(root))


# ----------------------------------------------------------------------------------------------
# 6. Factories


def _write_module(tmp_path: Path, monkeypatch, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))


def test_factory_with_labels(tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "sq_data_factory_pairs", """
        import torch
        from torch.utils.data import Dataset

        class Pairs(Dataset):
            def __len__(self):
                return 25
            def __getitem__(self, i):
                return torch.full((3, 2), i, dtype=torch.int32), i % 5

        def make():
            return Pairs()
    """)
    b = load_data("sq_data_factory_pairs:make")
    assert b.has_labels and b.num_classes == 5 and len(b.full) == 25
    assert b.sample_shape == (3, 2) and b.source == "factory:sq_data_factory_pairs:make"
    x, y = b.full[7]
    assert x.dtype == torch.float32 and float(x[0, 0]) == 7.0 and y == 2


def test_factory_bare_tensors_is_unlabelled(tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "sq_data_factory_bare", """
        import torch

        def make():
            return [torch.ones(4) * i for i in range(10)]
    """)
    b = load_data("sq_data_factory_bare:make")
    assert not b.has_labels and b.num_classes is None and b.sample_shape == (4,)
    _, y = b.batch("eval", 2)
    assert y.tolist() == [UNLABELLED, UNLABELLED]


def test_factory_unknown_module():
    with pytest.raises(UserInputError, match="sq_no_such_module_here"):
        load_data("sq_no_such_module_here:make")


def test_factory_missing_attribute(tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "sq_data_factory_noattr", "X = 1\n")
    with pytest.raises(UserInputError, match="no attribute"):
        load_data("sq_data_factory_noattr:make")


def test_factory_that_raises(tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "sq_data_factory_raises", """
        def make():
            raise RuntimeError("no data today")
    """)
    with pytest.raises(UserInputError, match="no data today"):
        load_data("sq_data_factory_raises:make")


# ----------------------------------------------------------------------------------------------
# 7. Unreadable specs


def test_missing_npz_file(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_data(str(tmp_path / "nope.npz"))


def test_unknown_dataset_name():
    with pytest.raises(UserInputError, match="not-a-dataset"):
        load_data("not-a-dataset")


def test_unsupported_file_suffix(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(UserInputError, match="unsupported"):
        load_data(str(path))


@pytest.mark.parametrize("content", [b"", b"garbage, not a torch file" * 8, b"PK\x03\x04truncated zip"])
def test_garbage_pt_file(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UserInputError, match="bad.pt"):
        load_data(str(path))


def test_truncated_pt_file(tmp_path):
    x, y = _pt_data()
    good = tmp_path / "good.pt"
    torch.save({"x": x, "y": y}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserInputError, match="cut.pt"):
        load_data(str(cut))


@pytest.fixture(scope="module")
def mnist_images_raw() -> bytes:
    with gzip.open(readers.MNIST_DIR / readers.MNIST_FILES[0], "rb") as f:
        return f.read()


def _broken_mnist_dir(tmp_path: Path, images_gz: bytes) -> Path:
    root = tmp_path / "mnist"
    root.mkdir()
    (root / readers.MNIST_FILES[0]).write_bytes(images_gz)
    shutil.copy(readers.MNIST_DIR / readers.MNIST_FILES[1], root / readers.MNIST_FILES[1])
    return root


def _corruptions(raw: bytes, gz: bytes) -> dict[str, bytes]:
    flipped = bytearray(gz)
    for i in range(2000, 2100):
        flipped[i] ^= 0xFF
    return {
        "cut gzip": gz[:5000],
        "recompressed prefix": gzip.compress(raw[:5000]),
        "header cut in dims": gzip.compress(raw[:12]),
        "header cut in magic": gzip.compress(raw[:5]),
        "corrupt deflate stream": bytes(flipped),
        "not gzip": b"plain bytes" * 10,
    }


@pytest.mark.parametrize("kind", ["cut gzip", "recompressed prefix", "header cut in dims", "header cut in magic", "corrupt deflate stream", "not gzip"])
def test_broken_mnist_images_file(tmp_path, mnist_images_raw, kind):
    gz = (readers.MNIST_DIR / readers.MNIST_FILES[0]).read_bytes()
    root = _broken_mnist_dir(tmp_path, _corruptions(mnist_images_raw, gz)[kind])
    with pytest.raises(UserInputError, match="MNIST file"):
        load_mnist(root)


def test_truncated_mnist_through_load_data(tmp_path, monkeypatch, mnist_images_raw):
    root = _broken_mnist_dir(tmp_path, gzip.compress(mnist_images_raw[:5000]))
    monkeypatch.setattr(readers, "MNIST_DIR", root)
    with pytest.raises(UserInputError, match="truncated"):
        load_data("mnist")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eval_fraction": 0.0},
        {"eval_fraction": 1.0},
        {"eval_fraction": -0.1},
        {"calibration_fraction": -0.1},
        {"eval_fraction": 0.5, "calibration_fraction": 0.5},
        {"eval_fraction": 0.7, "calibration_fraction": 0.4},
    ],
)
def test_bad_split_config(kwargs):
    with pytest.raises(UserInputError, match="fractions"):
        SplitConfig(**kwargs)


def test_dataset_too_small_to_split(tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, x=np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(UserInputError, match="too small"):
        load_data(str(path))


# ----------------------------------------------------------------------------------------------
# 8. Loaders and fixed batches


def test_loader_batches_types_and_order(mnist):
    batches = list(mnist.loader("eval", batch_size=64))
    assert len(batches) == (2000 + 63) // 64
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert tuple(x.shape) == (64, 1, 28, 28) and tuple(y.shape) == (64,)
    assert tuple(batches[-1][0].shape) == (2000 - 64 * 31, 1, 28, 28)
    assert sum(len(b[1]) for b in batches) == 2000
    first = _indices(mnist.eval)[:64]
    assert torch.equal(x, mnist.full.tensors[0][first]) and torch.equal(y, mnist.full.tensors[1][first])


def test_batch_is_first_eval_samples(mnist):
    x, y = mnist.batch("eval", 16)
    assert tuple(x.shape) == (16, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    idx = _indices(mnist.eval)[:16]
    assert torch.equal(x, mnist.full.tensors[0][idx]) and torch.equal(y, mnist.full.tensors[1][idx])
    x2, y2 = mnist.batch("eval", 16)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    lx, ly = next(iter(mnist.loader("eval", batch_size=16)))
    assert torch.equal(x, lx) and torch.equal(y, ly)


def test_loader_types_for_image_folder(tmp_path):
    b = load_data(str(_make_folder(tmp_path / "pics")))
    x, y = next(iter(b.loader("full", batch_size=5)))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and tuple(x.shape) == (5, 1, 12, 10)
