"""Bad data, broken models and impossible settings: each is exit 2 with one line naming the cause,
found before any work starts, and nothing is left at the output path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_refused
from hostile import hostile_cifar_python, hostile_datasets
from squeeze import zoo
from squeeze.io.artifacts import InputSpec
from squeeze.io.modelio import save_checkpoint

SPEC = InputSpec((1, 1, 8, 8))


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    path = d / "tiny.pt"
    save_checkpoint(zoo.tiny_cnn(1, 10, width=8).eval(), path, arch="squeeze.zoo:tiny_cnn", arch_kwargs={"width": 8},
                    input_spec=SPEC, metadata={"dataset": "digits", "split": {"seed": 0}})
    return path


def _npz(tmp_path, x, y=None):
    path = tmp_path / "data.npz"
    np.savez(path, x=x, **({"y": y} if y is not None else {}))
    return path


def test_one_negative_label_is_an_error_not_label_free_data(cli, tiny_digits, tmp_path):
    y = np.arange(64) % 10
    y[[5, 9]] = -1
    y[20] = -7
    data = _npz(tmp_path, np.random.rand(64, 1, 8, 8).astype(np.float32), y)
    out = tmp_path / "out"
    message = assert_refused(cli("compress", tiny_digits, "--recipe", "export", "--data", data, "--out", out), "3 labels are negative", out=out)
    assert "-7" in message and "-1" in message


def test_labels_beyond_the_models_classes(cli, tiny_digits, tmp_path):
    y = np.arange(64) % 12  # classes 10 and 11 do not exist for a 10-way model
    data = _npz(tmp_path, np.random.rand(64, 1, 8, 8).astype(np.float32), y)
    assert_refused(cli("compress", tiny_digits, "--recipe", "export", "--data", data, "--out", tmp_path / "o"), "labels are >= 10")


def test_label_free_only_without_labels(tiny_digits, tmp_path):
    from squeeze.io.data import load_data

    bundle = load_data(str(_npz(tmp_path, np.random.rand(40, 1, 8, 8).astype(np.float32))))
    assert not bundle.has_labels


def test_nan_in_the_data_names_the_first_sample(cli, tiny_digits, tmp_path):
    x = np.random.rand(64, 1, 8, 8).astype(np.float32)
    x[17, 0, 3, 3] = np.nan
    x[40, 0, 0, 0] = np.inf
    data = _npz(tmp_path, x, np.arange(64) % 10)
    assert_refused(cli("export", tiny_digits, "--data", data, "--out", tmp_path / "m.onnx"), "the first is sample 17")


def test_nan_in_the_weights_names_the_layer(cli, tmp_path):
    model = zoo.tiny_cnn(1, 10, width=8)
    with torch.no_grad():
        model[1][0].weight[0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    save_checkpoint(model, path, arch="squeeze.zoo:tiny_cnn", arch_kwargs={"width": 8}, input_spec=SPEC)
    assert_refused(cli("inspect", path), "weights 1.0.weight hold 1 NaN/Inf values")


def test_data_of_the_wrong_shape_is_refused_up_front(cli, tiny_digits, tmp_path):
    data = _npz(tmp_path, np.random.rand(32, 3, 8, 8).astype(np.float32), np.arange(32) % 10)
    assert_refused(cli("compress", tiny_digits, "--recipe", "export", "--data", data, "--out", tmp_path / "o"),
                   "samples of shape 3x8x8, but the model takes 1x8x8")


class DenseHead(torch.nn.Module):
    """Outputs a map, not class logits."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def test_a_model_without_logits_is_refused_by_recipes_that_need_them(cli, tmp_path):
    path = tmp_path / "dense.pt2"
    from squeeze.io.modelio import save_exported_program

    save_exported_program(DenseHead().eval(), path, SPEC)
    out = tmp_path / "out"
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("version: 1\npasses: [search, export, profile]\n")
    assert_refused(cli("compress", path, "--recipe", recipe, "--data", "digits", "--out", out), "needs a model that outputs class logits", out=out)
    # the built-in recipe drops search and distill for it; prune then needs its layers, which a .pt2 graph does not have
    assert_refused(cli("compress", path, "--data", "digits", "--out", out), "is a pt2 graph; pruning edits layers", out=out)
    ok = cli("compress", path, "--recipe", "export", "--data", "digits", "--out", out, "--iterations", "5", "--json")
    assert ok.code == 0, ok.stderr[-1500:]
    assert ok.json()["parity"]["passed"] and ok.json()["accuracy"] is None


def test_quantizing_a_graph_form_directly_is_refused_before_any_work(cli, tmp_path):
    """QAT wraps a model's layers; a .pt2 has none to wrap: exit 2 naming the forms that work (it crashed in QAT before)."""
    teacher = Path(__file__).resolve().parents[2] / "samples" / "teachers" / "resnet_digits.pt2"
    out = tmp_path / "q"
    assert_refused(cli("quantize", teacher, "--data", "digits", "--out", out), "is a pt2 graph; INT8 QAT wraps and trains the model's layers",
                   out=out)


@pytest.mark.parametrize("case", ["object_npz", "pickled_pt"])
def test_data_files_carrying_pickles(cli, tiny_digits, tmp_path, sentinel, case):
    data = hostile_datasets(tmp_path, sentinel)[case]
    assert_refused(cli("export", tiny_digits, "--data", data, "--out", tmp_path / "m.onnx"), "cannot read dataset", sentinel=sentinel)


def test_cifar_python_release_with_a_gadget(tmp_path, sentinel):
    from squeeze.errors import UserInputError
    from squeeze.io.data import load_data

    root = hostile_cifar_python(tmp_path, sentinel)
    with pytest.raises(UserInputError, match="refusing to unpickle posix.system"):
        load_data(str(root))
    assert not sentinel.exists()


@pytest.mark.parametrize("args,fragment", [
    (("--latency-budget", "0ms"), "positive duration"),
    (("--recipe", "turbo"), "the built-in recipes are full, quick, distill, export"),
])
def test_impossible_settings_before_any_work(cli, tiny_digits, tmp_path, args, fragment):
    out = tmp_path / "out"
    result = cli("compress", tiny_digits, "--data", "digits", "--out", out, *args)
    assert_refused(result, fragment, out=out)
    assert "loading model" not in result.stderr


def test_nan_in_a_recipe_field(cli, tiny_digits, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\npasses:\n  - distill: {epochs: 1, lr: .nan}\n  - export\n")
    assert_refused(cli("compress", tiny_digits, "--student", "samples/students/tiny_cnn16.json", "--recipe", recipe,
                       "--out", tmp_path / "o"), "passes[0].distill.lr: expected a finite number")


def test_unknown_search_space_before_the_teacher_loads(cli, tiny_digits, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\npasses:\n  - search: {space: nosuchspace}\n  - distill: {epochs: 1}\n  - export\n")
    result = cli("compress", tiny_digits, "--recipe", recipe, "--data", "digits", "--out", tmp_path / "o")
    assert_refused(result, "nosuchspace")
    assert "loading model" not in result.stderr


def test_an_input_shape_that_cannot_fit_in_memory(cli, tmp_path):
    state = tmp_path / "state.pt"
    torch.save(zoo.tiny_cnn().state_dict(), state)
    assert_refused(cli("inspect", state, "--arch", "squeeze.zoo:tiny_cnn", "--input-shape", "64x1x20000x20000"), "GiB for one forward pass")
    assert_refused(cli("inspect", state, "--arch", "squeeze.zoo:tiny_cnn", "--input-shape", "4x1x20000x20000"), "GiB for one forward pass")
