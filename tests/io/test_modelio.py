"""Model input: every accepted format loads to the same function; bad files give one clear error."""

from __future__ import annotations

import io
import zipfile
from fractions import Fraction

import pytest
import torch

from squeeze.errors import UntrustedPickleError, UserInputError
from squeeze.io.modelio import detect_format, load_any, load_model, load_onnx

X = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _same_function(art, module):
    with torch.no_grad():
        torch.testing.assert_close(art.module(X), module(X), rtol=1e-5, atol=1e-5)


def test_checkpoint_rebuilds_module_and_records_spec(tiny):
    art = load_model(tiny.checkpoint)
    assert art.format == "checkpoint"
    assert art.input_spec.shape == (1, 1, 28, 28) and art.input_spec.dynamic_batch
    assert art.input_spec.normalization == {"mean": [0.1307], "std": [0.3081]}
    assert art.metadata["dataset"] == "mnist" and art.metadata["arch"] == "squeeze.zoo:tiny_cnn"
    assert isinstance(art.module, torch.nn.Sequential)
    _same_function(art, tiny.module)


def test_pt2_infers_shape_and_dynamic_batch(tiny):
    art = load_model(tiny.pt2)
    assert art.format == "pt2" and art.exported_program is not None
    assert art.input_spec.shape == (1, 1, 28, 28) and art.input_spec.dynamic_batch
    assert art.input_spec.normalization == {"mean": [0.1307], "std": [0.3081]}
    _same_function(art, tiny.module)


def test_torchscript_spec_from_extra_file(tiny):
    art = load_model(tiny.torchscript)
    assert art.format == "torchscript" and art.input_spec.shape == (1, 1, 28, 28)
    _same_function(art, tiny.module)


def test_torchscript_without_recorded_spec_needs_input_shape(tiny, tmp_path):
    path = tmp_path / "plain.ts"
    torch.jit.save(torch.jit.trace(tiny.module, X[:1]), str(path))
    with pytest.raises(UserInputError, match="--input-shape"):
        load_model(path)
    art = load_model(path, input_shape="2x1x28x28")
    assert art.input_spec.shape == (2, 1, 28, 28)


def test_state_dict_needs_arch_then_loads(tiny):
    with pytest.raises(UserInputError, match="--arch"):
        load_model(tiny.state_dict)
    art = load_model(tiny.state_dict, arch="squeeze.zoo:tiny_cnn", input_shape="1x1x28x28")
    assert art.format == "state_dict"
    _same_function(art, tiny.module)


def test_state_dict_under_common_key(tiny, tmp_path):
    path = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "state_dict": tiny.module.state_dict()}, path)
    _same_function(load_model(path, arch="squeeze.zoo:tiny_cnn", input_shape="1x1x28x28"), tiny.module)


def test_state_dict_for_wrong_arch_is_one_clear_error(tiny):
    with pytest.raises(UserInputError, match="do not fit the architecture"):
        load_model(tiny.state_dict, arch="squeeze.zoo:resnet_teacher", input_shape="1x1x28x28")


def test_full_pickle_refused_without_trust(tiny):
    with pytest.raises(UntrustedPickleError, match="--trust-pickle") as info:
        load_model(tiny.pickle, input_shape="1x1x28x28")
    assert "arbitrary code" in str(info.value)


def test_full_pickle_loads_with_trust(tiny):
    art = load_model(tiny.pickle, input_shape="1x1x28x28", trust_pickle=True)
    assert art.format == "pickle"
    _same_function(art, tiny.module)


def test_pt2_with_pickled_member_refused_without_trust(tiny, tmp_path):
    """torch.export.load silently falls back to full unpickling; squeeze scans the archive first."""
    evil = tmp_path / "evil.pt2"
    payload = io.BytesIO()
    torch.save((Fraction(1, 3),), payload)  # a global the weights-only unpickler does not allow
    with zipfile.ZipFile(tiny.pt2) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = payload.getvalue() if item.filename.endswith("data/sample_inputs/model.pt") else src.read(item.filename)
            dst.writestr(item, data)
    with pytest.raises(UntrustedPickleError):
        load_model(evil)


def test_pt2_weight_marked_use_pickle_is_checked(tiny, tmp_path):
    """A weight the archive says to unpickle gets the weights-only check; raw tensor bytes do not."""
    import json

    payload = io.BytesIO()
    torch.save(Fraction(1, 3), payload)
    evil = tmp_path / "evil_weight.pt2"
    with zipfile.ZipFile(tiny.pt2) as src, zipfile.ZipFile(evil, "w") as dst:
        config_name = next(n for n in src.namelist() if n.endswith("data/weights/model_weights_config.json"))
        config = json.loads(src.read(config_name))
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        target = config_name.rsplit("/", 1)[0] + "/" + first["path_name"]
        for item in src.infolist():
            data = {config_name: json.dumps(config).encode(), target: payload.getvalue()}.get(item.filename)
            dst.writestr(item, data if data is not None else src.read(item.filename))
    with pytest.raises(UntrustedPickleError, match="weight"):
        load_model(evil)


def test_checkpoint_naming_foreign_arch_needs_explicit_arch(tiny, tmp_path):
    obj = torch.load(tiny.checkpoint, weights_only=True)
    obj["arch"] = "os:system"
    obj["arch_kwargs"] = {"command": "echo pwned"}
    path = tmp_path / "foreign.pt"
    torch.save(obj, path)
    with pytest.raises(UserInputError, match="pass --arch os:system"):
        load_model(path)


@pytest.mark.parametrize(
    "shape, message",
    [("1x3x28x28", "does not match the shape recorded"), ("1xAx28", "must look like"), ("28", "batch dimension"), ("1x0x28x28", "positive")],
)
def test_bad_input_shape_for_checkpoint(tiny, shape, message):
    with pytest.raises(UserInputError, match=message):
        load_model(tiny.checkpoint, input_shape=shape)


def test_input_shape_that_does_not_fit_module(tiny):
    with pytest.raises(UserInputError, match="does not fit the model"):
        load_model(tiny.state_dict, arch="squeeze.zoo:tiny_cnn", input_shape="1x3x28x28")


def test_missing_empty_garbage_and_truncated_files(tiny, tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_model(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(UserInputError, match="empty"):
        load_model(tmp_path / "empty.pt")
    (tmp_path / "garbage.pt").write_bytes(b"this is not a model at all" * 10)
    with pytest.raises(UserInputError, match="unrecognised"):
        load_model(tmp_path / "garbage.pt")
    for src in (tiny.checkpoint, tiny.pt2, tiny.torchscript):
        data = src.read_bytes()
        cut = tmp_path / f"cut{src.suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(UserInputError, match="corrupt or truncated"):
            load_model(cut)


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(UserInputError, match="directory"):
        load_model(tmp_path)


def test_detect_format(tiny):
    assert detect_format(tiny.checkpoint) == "torch-save"
    assert detect_format(tiny.pt2) == "pt2"
    assert detect_format(tiny.torchscript) == "torchscript"


def test_onnx_input_and_load_any(tiny, tmp_path):
    from squeeze.io.onnx_export import ExportConfig, export_onnx

    onnx_path = tmp_path / "m.onnx"
    export_onnx(load_model(tiny.checkpoint), onnx_path, ExportConfig(parity_samples=8))
    art = load_any(onnx_path)
    assert art.input_spec.shape == (1, 1, 28, 28) and art.input_spec.dynamic_batch and art.opset == 18
    with pytest.raises(UserInputError, match="ONNX model"):
        load_model(onnx_path)
    with pytest.raises(UserInputError, match="does not match"):
        load_onnx(onnx_path, input_shape="1x3x28x28")
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(onnx_path.read_bytes()[:300])
    with pytest.raises(UserInputError):
        load_any(truncated)


def test_the_reused_torchlib_registry_hands_each_export_its_own_copy():
    """export_onnx builds the dynamo exporter's op registry once per process (0.4 s of each export) and gives
    every export a fresh copy: one export's changes never reach the next, and the exporter is restored after."""
    from torch.onnx._internal.exporter import _registration

    from squeeze.io.onnx_export import reused_torchlib_registry

    original = _registration.ONNXRegistry.__dict__["from_torchlib"]
    with reused_torchlib_registry():
        first = _registration.ONNXRegistry.from_torchlib()
        size = len(first.functions)
        first.functions.clear()
        second = _registration.ONNXRegistry().from_torchlib()  # as the exporter calls it
        assert second is not first and len(second.functions) == size > 100
        assert second.opset_version == first.opset_version
    assert _registration.ONNXRegistry.__dict__["from_torchlib"] is original


class _Scaled(torch.nn.Module):
    """A plain attribute the forward reads: part of what the graph depends on, so part of the reuse key."""

    def __init__(self, scale: float):
        super().__init__()
        self.conv, self.scale = torch.nn.Conv2d(1, 4, 3), scale

    def forward(self, x):
        return torch.flatten(self.conv(x) * self.scale, 1)[:, :10]


def test_a_repeated_export_reuses_the_graph_only_for_the_same_content(monkeypatch, tmp_path):
    """compress exports the teacher every run and its last torch stage twice: the same module content gives the
    same bytes without exporting again; new weights, a changed attribute or a forward hook export afresh, and every
    file, reused or not, passes parity against its own module."""
    from squeeze.io import onnx_export
    from squeeze.io.artifacts import InputSpec, ModelArtifact
    from squeeze.io.onnx_export import ExportConfig, export_onnx

    calls = []
    real = onnx_export._export_to
    monkeypatch.setattr(onnx_export, "_export_to", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(onnx_export, "_EXPORTS", onnx_export.OrderedDict())
    torch.manual_seed(0)
    module, cfg = _Scaled(2.0), ExportConfig(parity_samples=8, exporter="legacy")

    def export(name: str):
        art = ModelArtifact(module, InputSpec((1, 1, 12, 12), "x"), "test", "module", "")
        return export_onnx(art, tmp_path / f"{name}.onnx", cfg)

    first, again = export("first"), export("again")
    assert len(calls) == 1 and (tmp_path / "again.onnx").read_bytes() == (tmp_path / "first.onnx").read_bytes()
    assert again.parity["passed"] and again.sha256 == first.sha256
    with torch.no_grad():
        module.conv.weight.mul_(-1)
    assert export("weights").sha256 != first.sha256 and len(calls) == 2
    module.scale = 3.0
    scaled = export("scaled")
    assert len(calls) == 3 and scaled.parity["passed"] and scaled.sha256 != first.sha256
    handle = module.register_forward_hook(lambda m, i, o: o)
    export("hooked")
    export("hooked-again")
    assert len(calls) == 5  # hooks can change what runs: never reused
    handle.remove()


def test_a_bfloat16_module_has_a_reuse_key():
    """Tensors are hashed as raw bytes, so a dtype numpy lacks (bfloat16) still gets a key, and the key follows the settings."""
    from squeeze.io.onnx_export import ExportConfig, _export_key
    from squeeze.io.artifacts import InputSpec, ModelArtifact

    module = torch.nn.Linear(4, 2).to(torch.bfloat16)
    art = ModelArtifact(module, InputSpec((1, 4), "x"), "test", "module", "")
    key = _export_key(art, ExportConfig(), True)
    assert key is not None and key == _export_key(art, ExportConfig(), True) != _export_key(art, ExportConfig(opset=19), True)
