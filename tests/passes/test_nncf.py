"""The nncf quantization backend for the openvino target: NNCF PTQ on real data, QAT hooks (recalibration, weight
scales, per-layer switches), a QDQ export legal for OpenVINO that OpenVINO runs as INT8, parity torch vs OpenVINO
on real eval samples, the speed guard, and refusals. Real model and data: the digits ResNet teacher on digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from squeeze.errors import ParityError, UserInputError
from squeeze.io.modelio import load_onnx
from squeeze.passes.quantize.backends import fold_batchnorm, get_backend
from squeeze.passes.quantize.pass_ import (QuantizeConfig, SpeedGuardError, calibration_batches, export_qdq, quantize, resolve_backend,
                                           runtime_parity)
from squeeze.passes.quantize.qdq import _Graph, check_qdq_graph, weight_dequantizers
from squeeze.targets import get_target
from squeeze.targets.cpu import CPU_QUANT_RULES
from squeeze.targets.trtexec import TENSORRT_QUANT_RULES

pytest.importorskip("openvino")
pytest.importorskip("nncf")

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ROOT / "samples" / "teachers" / "resnet_digits.pt"


@pytest.fixture(scope="module")
def target():
    return get_target("openvino")


@pytest.fixture(scope="module")
def ptq(teacher, digits, target):
    backend = get_backend("nncf")
    qmodel = backend.quantize(fold_batchnorm(teacher.module), target.quant_rules, teacher.input_spec.example(batch=2),
                              calibration_batches(digits, 256))
    backend.refresh_weight_scales(qmodel)
    return backend, qmodel.eval()


@pytest.fixture(scope="module")
def exported(ptq, teacher, target, tmp_path_factory):
    path = tmp_path_factory.mktemp("nncf") / "int8.onnx"
    export_qdq(ptq[1], teacher.input_spec, path, QuantizeConfig(), target.quant_rules, target.name)
    return path


def test_rules_pick_nncf_and_refuse_what_it_cannot_meet(target):
    assert target.quant_rules.backend == "nncf"
    backend = resolve_backend(QuantizeConfig(), target.quant_rules, "openvino")
    assert backend.name == "nncf" and backend.unmet_rule(target.quant_rules) is None
    assert backend.unmet_rule(CPU_QUANT_RULES).startswith("weight_max_int")
    assert backend.unmet_rule(TENSORRT_QUANT_RULES).startswith("signed_activations")
    with pytest.raises(UserInputError, match="rule weight_max_int"):
        resolve_backend(QuantizeConfig(backend="nncf"), CPU_QUANT_RULES, "cpu")


def test_ptq_keeps_accuracy(ptq, teacher, digits):
    x, y = digits.batch("eval", 359)
    with torch.no_grad():
        float_acc = (teacher.module.eval()(x).argmax(1) == y).float().mean().item()
        int8_acc = (ptq[1](x).argmax(1) == y).float().mean().item()
    assert float_acc > 0.95 and int8_acc >= float_acc - 0.02


def test_recalibrate_and_weight_scales_follow_the_data(ptq, teacher, digits):
    import copy

    backend, qmodel = ptq
    qmodel = copy.deepcopy(qmodel)
    calib = calibration_batches(digits, 256)
    backend.recalibrate(qmodel, calib)
    first = next(v for k, v in backend.scales(qmodel).items() if k.endswith("post_hooks.x__0.0"))  # the model input's quantizer
    assert first[0] == pytest.approx(float(torch.cat(calib).abs().max()) / 127, rel=1e-5)  # signed: max |x| / 127
    weight = qmodel.get_parameter("net.stem.0.weight")
    with torch.no_grad():
        weight.mul_(2.0)
    backend.refresh_weight_scales(qmodel)
    quantizer = backend.layers(qmodel)["net/conv2d/0"][0]
    assert torch.allclose(quantizer.scale.flatten(), weight.detach().abs().amax(dim=(1, 2, 3)), rtol=1e-6)
    assert not any(p.requires_grad for n, p in qmodel.named_parameters() if "nncf" in n)  # scales are not trained by QAT


def test_export_is_legal_and_openvino_runs_it_in_int8(exported, target, tmp_path):
    import onnx

    model = onnx.load(str(exported))
    assert check_qdq_graph(model, target.quant_rules) == []
    assert len(weight_dequantizers(_Graph(model))) == 16  # every Conv and the Linear have int8 weights
    engine = target.build(load_onnx(exported), tmp_path / "model.xml")
    ran = engine.manifest["precision"]["layers_by_runtime_precision"]
    assert set(ran) <= {"u8", "i8"} and sum(ran.values()) == 16  # all 16 weighted layers in INT8 kernels


def test_parity_torch_vs_openvino_on_real_eval_samples(ptq, exported, target, teacher, digits):
    x, _ = digits.batch("eval", 256)
    parity = runtime_parity(target, ptq[1], exported, x, QuantizeConfig(), teacher.input_spec)
    assert parity["runtime"] == "openvino" and parity["passed"] and parity["samples"] == 256
    assert parity["top1_agreement"] >= 0.99
    with pytest.raises(ParityError, match="parity on openvino's runtime failed"):
        runtime_parity(target, fold_batchnorm(teacher.module), exported, x, QuantizeConfig(parity_rel_tol=1e-6), teacher.input_spec)


def test_disabling_a_layer_removes_its_int8_weights(ptq, teacher, target, tmp_path):
    import copy

    import onnx

    backend, qmodel = ptq
    qmodel = copy.deepcopy(qmodel)
    layers = backend.layers(qmodel)
    assert len(layers) == 16
    backend.set_enabled(layers["net/conv2d/1"], False)
    path = tmp_path / "partial.onnx"
    export_qdq(qmodel, teacher.input_spec, path, QuantizeConfig(), target.quant_rules, target.name)
    assert len(weight_dequantizers(_Graph(onnx.load(str(path))))) == 15
    assert not any(p.requires_grad for n, p in qmodel.named_parameters() if "nncf" in n)


def _tiny():
    from squeeze import zoo
    from squeeze.io.artifacts import InputSpec, ModelArtifact

    torch.manual_seed(0)
    return ModelArtifact(zoo.tiny_cnn(width=8).eval(), InputSpec((1, 1, 8, 8)), "tiny", "checkpoint", "")


def _run(model, teacher, digits, target, tmp_path, cfg, measure=None):
    stage = tmp_path / "stage"
    stage.mkdir(exist_ok=True)
    return quantize(model, teacher, digits, target, cfg, stage, tmp_path / "work", measure=measure), stage


def test_quantize_pass_on_openvino_with_the_real_guard(digits, target, tmp_path):
    """PTQ, one QAT epoch through the shared trainer, export, the real interleaved speed guard on OpenVINO, parity on
    OpenVINO; a tiny CNN so that it stays fast (the trained teacher's run is the slow test below)."""
    tiny = _tiny()
    cfg = QuantizeConfig(epochs=1, train_samples=256, calib_samples=90, parity_samples=256, latency_rounds=2, latency_iterations=10,
                         allow_slower=True, threads=1)
    result, stage = _run(tiny, tiny, digits, target, tmp_path, cfg)
    assert result["backend"]["name"] == "nncf" and result["backend"]["chosen"] == "auto (target rules)"
    assert [h.get("phase") for h in result["history"]][-1] == "qat"
    assert result["parity"]["target_runtime"]["runtime"] == "openvino" and result["parity"]["target_runtime"]["passed"]
    assert result["accuracy"]["int8_onnx"]["teacher_agreement"] >= 0.9  # the INT8 model still answers as its float source
    assert result["latency"]["measured"] and result["latency"]["int8_p50_ms"] > 0 and result["latency"]["float_p50_ms"] > 0
    assert (stage / "model.onnx").is_file() and (stage / "result.json").is_file()


@pytest.mark.slow  # ~30-60 s on 2 shared cores: NNCF PTQ of the ResNet, a QAT epoch and the real guard
def test_quantize_pass_keeps_the_teachers_accuracy_on_openvino(teacher, digits, target, tmp_path):
    cfg = QuantizeConfig(epochs=1, train_samples=256, calib_samples=256, parity_samples=256, latency_rounds=3, latency_iterations=20,
                         allow_slower=True, threads=1)
    result, _ = _run(teacher, teacher, digits, target, tmp_path, cfg)
    acc = result["accuracy"]
    assert acc["float"]["accuracy"] > 0.95 and acc["int8_onnx"]["accuracy"] >= acc["float"]["accuracy"] - 0.03
    assert result["parity"]["passed"] and result["parity"]["target_runtime"]["passed"]


def test_int8_slower_is_refused_on_openvino(digits, target, tmp_path):
    tiny = _tiny()
    with pytest.raises(SpeedGuardError, match="slower than the float one on openvino"):
        _run(tiny, tiny, digits, target, tmp_path, QuantizeConfig(epochs=0, calib_samples=64, parity_samples=64),
             measure=lambda paths: [1.0, 2.0][: len(paths)])


def test_cli_refuses_torch_fx_for_openvino(cli, tmp_path):
    bad = cli("quantize", TEACHER, "--data", "digits", "--target", "openvino", "--backend", "torch-fx", "--out", tmp_path / "bad")
    assert bad.code == 2 and "backend torch-fx cannot meet target openvino's quantization rule signed_activations" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_history_scales_are_finite(ptq):
    backend, qmodel = ptq
    scales = [s for v in backend.scales(qmodel).values() for s in v]
    assert scales and all(np.isfinite(s) and s > 0 for s in scales)
