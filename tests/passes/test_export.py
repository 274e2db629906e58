"""Export pass: ONNX opset/dynamic batch, parity on real MNIST eval samples, atomic failure."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from squeeze.io.artifacts import InputSpec, ModelArtifact
from squeeze.io.data import load_data
from squeeze.errors import ParityError, UserInputError
from squeeze.measure.accuracy import onnx_predictions
from squeeze.io.modelio import load_model
from squeeze.io.onnx_export import ExportConfig, export_onnx

TEACHERS = Path(__file__).resolve().parents[2] / "samples" / "teachers"
INDEX = json.loads((TEACHERS / "teachers.json").read_text())


@pytest.fixture(scope="module")
def mnist():
    return load_data("mnist")


@pytest.mark.parametrize("name", ["resnet_mnist.pt", "mobilenetv2_mnist.pt2"])
def test_sample_teacher_exports_with_parity_on_real_data(name, mnist, tmp_path):
    art = load_model(TEACHERS / name)
    out = tmp_path / "teacher.onnx"
    onnx_art = export_onnx(art, out, ExportConfig(parity_samples=256), mnist)
    parity = onnx_art.parity
    assert parity["passed"] and parity["samples"] == 256
    assert parity["max_abs_diff"] < 1e-3 and parity["batch1_max_abs_diff"] < 1e-3
    assert parity["top1_agreement"] == 1.0
    assert "eval split of mnist" in parity["inputs"]
    model = onnx.load(str(out))
    assert model.opset_import[0].version >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    # The exported model keeps the teacher's accuracy on the whole held-out split: within one image of the torch
    # accuracy the sample index records (tests/test_samples.py checks that figure against the checkpoint in torch)
    onnx_pred, labels = onnx_predictions(out, mnist.loader("eval", batch_size=500))
    recorded = INDEX[name.split(".")[0]]["eval_accuracy"]
    assert len(labels) == 2000 and abs((onnx_pred == labels).mean() - recorded) <= 1 / 2000


def test_static_batch_export(tiny, tmp_path):
    art = load_model(tiny.checkpoint)
    onnx_art = export_onnx(art, tmp_path / "static.onnx", ExportConfig(dynamic_batch=False, parity_samples=16))
    assert not onnx_art.input_spec.dynamic_batch
    dim0 = onnx.load(str(tmp_path / "static.onnx")).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_value == 1
    assert onnx_art.parity["passed"] and onnx_art.parity["samples"] == 16


def test_static_batch_from_pt2(tiny, tmp_path):
    onnx_art = export_onnx(load_model(tiny.pt2), tmp_path / "s.onnx", ExportConfig(dynamic_batch=False, parity_samples=8))
    assert not onnx_art.input_spec.dynamic_batch and onnx_art.parity["passed"]


def test_legacy_exporter(tiny, tmp_path):
    onnx_art = export_onnx(load_model(tiny.checkpoint), tmp_path / "legacy.onnx", ExportConfig(exporter="legacy", opset=17, parity_samples=32))
    assert onnx_art.provenance[-1]["exporter"] == "legacy" and onnx_art.opset == 17 and onnx_art.parity["passed"]


class BranchOnData(torch.nn.Module):
    """Python control flow on values: tracing freezes the branch of the example input, eager does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], dim=1)
        if bool(x.sum() > 0):
            return logits * 10
        return -logits


def test_parity_failure_is_an_error_and_leaves_no_file(tmp_path):
    spec = InputSpec((1, 1, 8, 8))
    art = ModelArtifact(BranchOnData(), spec, "branch", "test", "0" * 64)
    out = tmp_path / "branch.onnx"
    data_x = torch.rand(64, 1, 8, 8) + 0.1  # all positive: eager takes the branch the zero example did not
    path = tmp_path / "pos.pt"
    torch.save({"x": data_x}, path)
    with pytest.raises(ParityError, match="parity failed"):
        export_onnx(art, out, ExportConfig(exporter="legacy", parity_samples=64), load_data(str(path)))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".onnx" or ".tmp" in p.name]


def test_data_of_wrong_shape_is_refused(tiny, tmp_path):
    with pytest.raises(UserInputError, match="samples have shape"):
        export_onnx(load_model(tiny.checkpoint), tmp_path / "x.onnx", ExportConfig(), load_data("digits"))
    assert not (tmp_path / "x.onnx").exists()


def test_random_inputs_are_labelled_when_no_data(tiny, tmp_path):
    art = load_model(tiny.checkpoint)
    onnx_art = export_onnx(art, tmp_path / "r.onnx", ExportConfig(parity_samples=8), None)
    assert "random" in onnx_art.parity["inputs"]


@pytest.mark.parametrize("kwargs, message", [({"opset": 13}, "opset"), ({"exporter": "magic"}, "exporter"), ({"parity_samples": 0}, "parity")])
def test_bad_export_config(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        ExportConfig(**kwargs)


class TinyAttention(torch.nn.Module):
    """nn.MultiheadAttention over the rows of the image: in eval without grad it takes the fused fast path."""

    def __init__(self):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(1, 2)  # (n, 8 rows, 8)
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return self.head(out.mean(1))


def test_legacy_exporter_takes_multihead_attention(tmp_path):
    """The fast path's aten::_native_multi_head_attention has no ONNX symbolic: export runs the slow path."""
    torch.manual_seed(0)
    art = ModelArtifact(TinyAttention().eval(), InputSpec((1, 1, 8, 8)), "attention", "test", "0" * 64)
    onnx_art = export_onnx(art, tmp_path / "attn.onnx", ExportConfig(exporter="legacy", opset=17, parity_samples=16))
    assert onnx_art.parity["passed"] and torch.backends.mha.get_fastpath_enabled()  # switched back on afterwards
