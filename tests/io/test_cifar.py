"""CIFAR-10 and datasets with given splits, on the committed real subset (2,000 train / 1,000 test
images): the readers of all three releases, the official test set as the eval split, per-channel
normalisation carried into the ONNX parity check and the manifest, and the augmentations."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze import api, zoo

from squeeze.io import cifar
from squeeze.io.artifacts import InputSpec
from squeeze.io.augment import apply_augment, default_augment, random_crop_flip
from squeeze.io.data import CIFAR_MINI_DIR, load_data, split_tensors
from squeeze.errors import UserInputError
from squeeze.io.modelio import save_checkpoint
from squeeze.targets.base import ProfileSpec


@pytest.fixture(scope="module")
def mini():
    return load_data("cifar10-mini")


@pytest.fixture(scope="module")
def raw():
    return cifar.read_npz_pair(CIFAR_MINI_DIR / cifar.NPZ_FILES[0], CIFAR_MINI_DIR / cifar.NPZ_FILES[1])


def test_the_official_test_set_is_the_eval_split(mini, raw):
    assert mini.sample_shape == (3, 32, 32) and mini.num_classes == 10 and mini.has_labels
    assert (len(mini.train), len(mini.calibration), len(mini.eval)) == (1900, 100, 1000)
    x_eval, y_eval = split_tensors(mini, "eval")
    expected = (torch.from_numpy(raw.test_x).float() / 255 - torch.tensor(cifar.CIFAR10_MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(cifar.CIFAR10_STD).view(1, 3, 1, 1)
    assert torch.allclose(x_eval, expected) and torch.equal(y_eval, torch.from_numpy(raw.test_y))
    # calibration is carved from train, disjoint from the training split, and never from the test set
    assert not set(mini.train.indices) & set(mini.calibration.indices)
    assert mini.train.dataset is mini.calibration.dataset and mini.train.dataset is not mini.eval
    assert mini.extra["given_split"] and mini.extra["classes"][0] == "airplane"


def test_per_channel_normalisation_is_recorded_and_applied(mini):
    x, _ = split_tensors(mini, "train")
    assert mini.normalization == {"mean": list(cifar.CIFAR10_MEAN), "std": list(cifar.CIFAR10_STD)}
    means, stds = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    assert torch.all(means.abs() < 0.1) and torch.all((stds - 1).abs() < 0.1)  # ~N(0, 1) per channel on real images


def _write_binary(raw, root: Path) -> None:
    base = root / cifar.BIN_DIR
    base.mkdir(parents=True)
    records = lambda x, y: np.concatenate([y.astype(np.uint8)[:, None], x.reshape(len(x), -1)], axis=1).tobytes()  # noqa: E731
    for i, (xs, ys) in enumerate(zip(np.array_split(raw.train_x, 5), np.array_split(raw.train_y, 5))):
        (base / cifar.BIN_TRAIN[i]).write_bytes(records(xs, ys))
    (base / cifar.BIN_TEST).write_bytes(records(raw.test_x, raw.test_y))


def _write_python(raw, root: Path) -> None:
    base = root / cifar.PY_DIR
    base.mkdir(parents=True)
    for i, (xs, ys) in enumerate(zip(np.array_split(raw.train_x, 5), np.array_split(raw.train_y, 5))):
        (base / cifar.PY_TRAIN[i]).write_bytes(pickle.dumps({b"data": xs.reshape(len(xs), -1).tobytes(), b"labels": ys.tolist()}))
    (base / cifar.PY_TEST).write_bytes(pickle.dumps({b"data": raw.test_x.reshape(len(raw.test_x), -1).tobytes(),
                                                     b"labels": raw.test_y.tolist()}))


@pytest.mark.parametrize("layout,writer", [("binary", _write_binary), ("python", _write_python)])
def test_binary_and_python_releases_read_the_same_images(raw, tmp_path, layout, writer):
    writer(raw, tmp_path)
    assert cifar.detect_layout(tmp_path) == layout
    got = cifar.read_release(tmp_path, layout)
    assert np.array_equal(got.train_x, raw.train_x) and np.array_equal(got.test_y, raw.test_y)
    bundle = load_data(str(tmp_path))  # a folder holding a release is detected by its files
    assert len(bundle.eval) == 1000 and bundle.normalization["mean"] == list(cifar.CIFAR10_MEAN)
    with pytest.raises(UserInputError, match="expected 50000 images"):
        cifar.read_release(tmp_path, layout, expect_full=True)


def test_cifar10_is_found_through_squeeze_data(tmp_path, monkeypatch):
    monkeypatch.delenv("SQUEEZE_DATA", raising=False)
    with pytest.raises(UserInputError, match="set SQUEEZE_DATA"):
        load_data("cifar10")
    (tmp_path / "cifar10").mkdir()
    for name in cifar.NPZ_FILES:
        shutil.copy(CIFAR_MINI_DIR / name, tmp_path / "cifar10" / name)
    monkeypatch.setenv("SQUEEZE_DATA", str(tmp_path))
    assert len(load_data("cifar10").eval) == 1000
    monkeypatch.setenv("SQUEEZE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(UserInputError, match="no CIFAR-10 release found"):
        load_data("cifar10")


def _image_folder(root: Path, classes: list[str], per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_an_image_folder_with_train_and_val_keeps_its_split(tmp_path):
    _image_folder(tmp_path / "train", ["cat", "dog"], 10, 0)
    _image_folder(tmp_path / "val", ["cat", "dog"], 3, 1)
    bundle = load_data(str(tmp_path))
    assert len(bundle.eval) == 6 and len(bundle.train) + len(bundle.calibration) == 20
    assert bundle.sample_shape == (3, 12, 16) and bundle.extra["classes"] == ["cat", "dog"] and bundle.extra["given_split"]
    shutil.rmtree(tmp_path / "val" / "dog")
    _image_folder(tmp_path / "val", ["bird"], 2, 2)
    with pytest.raises(UserInputError, match="different classes"):
        load_data(str(tmp_path))


def test_an_npz_pair_keeps_its_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x=rng.random((50, 1, 8, 8), dtype=np.float32), y=np.arange(50) % 10)
    np.savez(tmp_path / "test.npz", x=rng.random((20, 1, 8, 8), dtype=np.float32), y=np.arange(20) % 10)
    bundle = load_data(str(tmp_path))
    assert len(bundle.eval) == 20 and len(bundle.train) + len(bundle.calibration) == 50


def test_crop_flip_is_a_real_crop_and_flip():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = random_crop_flip(x, 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for i in range(2):  # every output is a shifted window of the padded image, possibly mirrored
        padded = torch.nn.functional.pad(x[i], (4, 4, 4, 4))
        windows = [padded[:, dy:dy + 8, dx:dx + 8] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
    again = random_crop_flip(x, 4, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    unchanged = apply_augment("none", x, torch.Generator())
    assert unchanged is x


def test_augmentation_defaults_per_dataset():
    assert default_augment("cifar10") == "crop-flip" and default_augment("cifar10-mini") == "crop-flip"
    assert default_augment("mnist") == "shift" and default_augment("digits") == "none"  # never a flip for digits
    assert default_augment("my-data") == "none"


def test_rgb_model_exports_with_parity_on_normalised_images_and_records_the_preprocessing(mini, tmp_path):
    torch.manual_seed(0)
    teacher = tmp_path / "rgb.pt"
    spec = InputSpec((1, 3, 32, 32), normalization=mini.normalization)
    save_checkpoint(zoo.cifar_resnet(3, 10, depth=8, width=8).eval(), teacher, arch="squeeze.zoo:cifar_resnet",
                    arch_kwargs={"depth": 8, "width": 8}, input_spec=spec, metadata={"dataset": "cifar10-mini", "split": {"seed": 0}})
    result = api.compress(teacher, out=tmp_path / "out", recipe="export", data="cifar10-mini",
                          profile_spec=ProfileSpec(warmup=2, iterations=10))
    assert result["parity"]["passed"] and result["parity"]["samples"] == 256
    pre = result["preprocessing"]
    assert pre["normalization"]["std"] == list(cifar.CIFAR10_STD) and pre["channel_order"] == "RGB" and pre["layout"] == "NCHW"
    assert "Deploying: input pre-processing" in (tmp_path / "out" / "report.md").read_text()
    other = InputSpec((1, 3, 32, 32), normalization={"mean": [0.5] * 3, "std": [0.5] * 3})
    save_checkpoint(zoo.cifar_resnet(3, 10, depth=8, width=8).eval(), tmp_path / "other.pt", arch="squeeze.zoo:cifar_resnet",
                    arch_kwargs={"depth": 8, "width": 8}, input_spec=other)
    with pytest.raises(UserInputError, match="normalised with"):
        api.compress(tmp_path / "other.pt", out=tmp_path / "out2", recipe="export", data="cifar10-mini")


def test_distillation_on_cifar_records_the_resolved_augmentation_and_length(tmp_path):
    torch.manual_seed(0)
    teacher = tmp_path / "t.pt"
    spec = InputSpec((1, 3, 32, 32), normalization={"mean": list(cifar.CIFAR10_MEAN), "std": list(cifar.CIFAR10_STD)})
    save_checkpoint(zoo.cifar_resnet(3, 10, depth=8, width=8).eval(), teacher, arch="squeeze.zoo:cifar_resnet",
                    arch_kwargs={"depth": 8, "width": 8}, input_spec=spec)
    student = tmp_path / "s.json"
    student.write_text(json.dumps({"arch": "squeeze.zoo:tiny_cnn", "kwargs": {"width": 8}}))
    result = api.distill(teacher, str(student), data="cifar10-mini", out=tmp_path / "run", epochs=1, min_steps=40, batch_size=64)
    resolved = result["resolved"]
    assert resolved["augment"] == "crop-flip" and resolved["steps_per_epoch"] == 1900 // 64
    assert resolved["epochs"] == 2 and resolved["steps"] == 58 and resolved["images_per_s"] > 0  # min_steps added an epoch
    assert not resolved["compiled"]  # a run this short does not pay for torch.compile
