"""Quantize pass: calibration, QAT, QDQ graph rules per target, parity, speed guard, bad input, CLI.

Real model and data: the bundled digits ResNet teacher (6.6 MMACs) on scikit-learn digits."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from squeeze import zoo
from squeeze.io.data import SplitConfig, load_data
from squeeze.errors import UserInputError
from squeeze.train.objective import DistillObjective, ObjectiveConfig, resolve_weights
from squeeze.passes.quantize.pass_ import (QuantizeConfig, SpeedGuardError, calibration_batches, check_parity, export_qdq, quantize,
                                     resolve_backend, speed_guard)
from squeeze.passes.quantize.qdq import QuantRulesError, check_qdq_graph, enforce_rules, weight_dequantizers, _Graph
from squeeze.passes.quantize.backends import fold_batchnorm, get_backend
from squeeze.targets import get_target
from squeeze.targets.cpu import CPU_QUANT_RULES
from squeeze.targets.trtexec import TENSORRT_QUANT_RULES

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ROOT / "samples" / "teachers" / "resnet_digits.pt"


@pytest.fixture(scope="module")
def folded(teacher):
    return fold_batchnorm(teacher.module)


@pytest.fixture(scope="module")
def ptq(folded, teacher, digits):
    """PTQ models for both backends, calibrated on 256 digits calibration... samples (the split has 90)."""
    calib = calibration_batches(digits, 256)
    example = teacher.input_spec.example(batch=2)
    out = {}
    for name, rules in (("cpu", CPU_QUANT_RULES), ("tensorrt", TENSORRT_QUANT_RULES)):
        backend = get_backend(rules.backend)
        qmodel = backend.quantize(folded, rules, example, calib)
        backend.refresh_weight_scales(qmodel)
        out[name] = (backend, qmodel, rules)
    return out


@pytest.fixture(scope="module")
def exported(ptq, teacher, tmp_path_factory):
    d = tmp_path_factory.mktemp("qdq")
    paths = {}
    for name, (_, qmodel, rules) in ptq.items():
        paths[name] = d / f"{name}.onnx"
        export_qdq(qmodel, teacher.input_spec, paths[name], QuantizeConfig(), rules, name)
    paths["float"] = d / "float.onnx"
    export_qdq(fold_batchnorm(teacher.module), teacher.input_spec, paths["float"], QuantizeConfig(), None, "cpu")
    return paths


def test_fold_batchnorm_keeps_outputs(teacher, folded, digits):
    x, _ = digits.batch("eval", 64)
    with torch.no_grad():
        assert torch.allclose(folded(x), teacher.module.eval()(x), atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def test_calibration_sets_sane_scales(ptq, digits):
    backend, qmodel, _ = ptq["cpu"]
    x = torch.cat(calibration_batches(digits, 256))
    scales = backend.scales(qmodel)
    assert scales and all(s > 0 and np.isfinite(s) for v in scales.values() for s in v)
    # The input quantizer's uint8 range spans exactly what calibration saw (min-max observer).
    first = qmodel.activation_post_process_0
    assert float(first.scale) == pytest.approx((float(x.max()) - float(x.min())) / 255, rel=1e-4)
    assert 0 < int(first.zero_point) < 255  # normalised digits are signed: affine, non-zero zero point
    # TensorRT: symmetric; the model input's amax is max |x|.
    t_backend, t_model, _ = ptq["tensorrt"]
    t_scales = t_backend.scales(t_model)
    first_t = next(v for k, v in t_scales.items() if k.startswith("stem"))
    assert first_t[0] == pytest.approx(float(x.abs().max()) / 127, rel=1e-4)


def test_ptq_keeps_accuracy(ptq, teacher, digits):
    x, y = digits.batch("eval", 400)
    with torch.no_grad():
        float_acc = (teacher.module(x).argmax(1) == y).float().mean().item()
        for _, qmodel, _ in ptq.values():
            assert (qmodel.eval()(x).argmax(1) == y).float().mean().item() >= float_acc - 0.02


def test_one_qat_step_lowers_the_distillation_loss(teacher, digits):
    torch.manual_seed(0)
    student = fold_batchnorm(zoo.tiny_cnn(width=8))  # untrained: far from the teacher
    backend = get_backend("torch-fx")
    example = teacher.input_spec.example(batch=2)
    qmodel = backend.quantize(student, CPU_QUANT_RULES, example, calibration_batches(digits, 128))
    dcfg = ObjectiveConfig(loss="kd")
    objective = DistillObjective(resolve_weights(dcfg, True), dcfg, teacher.module.eval(), qmodel, example)
    x, y = digits.batch("train", 128)
    with torch.no_grad():
        t_logits = teacher.module(x)
    optimizer = torch.optim.SGD(qmodel.parameters(), lr=0.05, momentum=0.0)
    qmodel.train()
    before, _ = objective(qmodel(x), t_logits, y)
    optimizer.zero_grad()
    before.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in qmodel.parameters())  # gradients pass the fake-quant (STE)
    optimizer.step()
    with torch.no_grad():
        after, _ = objective(qmodel(x), t_logits, y)
    assert float(after.detach()) < float(before.detach())


@pytest.mark.parametrize("target", ["tensorrt", "jetson-orin-nano"])
def test_tensorrt_graph_is_signed_symmetric_per_channel(exported, target):
    model = onnx.load(str(exported["tensorrt"]))
    assert check_qdq_graph(model, get_target(target).quant_rules) == []
    g = _Graph(model)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zero = g.value(node.input[2])
        assert zero.dtype == np.int8 and not zero.any()
    weights = weight_dequantizers(g)
    assert len(weights) == 16  # every Conv (15) and the Gemm
    for node in model.graph.node:
        if (node.name or node.output[0]) in weights:
            q, scale = g.value(node.input[0]), g.value(node.input[1])
            assert q.dtype == np.int8 and np.abs(q.astype(int)).max() <= 127
            assert scale.shape == (q.shape[0],) and next(a.i for a in node.attribute if a.name == "axis") == 0
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13


def test_cpu_graph_has_uint8_activations_and_7bit_weights(exported):
    model = onnx.load(str(exported["cpu"]))
    assert check_qdq_graph(model, CPU_QUANT_RULES) == []
    g = _Graph(model)
    weights = weight_dequantizers(g)
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        zero = g.value(node.input[2])
        if (node.name or node.output[0]) in weights:
            assert zero.dtype == np.int8 and np.abs(g.value(node.input[0]).astype(int)).max() <= 63
        else:
            assert zero.dtype == np.uint8
    # The same graph breaks TensorRT's rules, and the checker says which.
    rules = {v.rule for v in check_qdq_graph(model, TENSORRT_QUANT_RULES)}
    assert {"signed_activations", "zero_point_must_be_zero"} <= rules


def _broken(exported, edit) -> onnx.ModelProto:
    model = onnx.load(str(exported["tensorrt"]))
    edit(model, _Graph(model))
    return model


@pytest.mark.parametrize("optimization", ["extended", "all"])
def test_cpu_int8_graph_fuses_completely_in_onnx_runtime(exported, optimization):
    """ORT's optimised graph of the deployed INT8 model keeps no Q/DQ but the input quantizer and the output
    dequantizer: residual Adds, pooling and the head run as QLinear kernels (with (1,)-shaped scales the
    Adds ran in float between a DQ and a Q)."""
    from squeeze.passes.quantize.onnx_qdq import ort_fusion_report

    exported_ops = Counter(n.op_type for n in onnx.load(str(exported["cpu"])).graph.node)
    report = ort_fusion_report(exported["cpu"], optimization)
    assert report["fully_fused"] and report["unfused_qdq"] == [], report
    ops = report["ops"]
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1
    assert ops.get("QLinearAdd") == exported_ops["Add"] > 0 and "Add" not in ops
    assert ops.get("QLinearConv") == exported_ops["Conv"] and ops.get("QGemm") == 1 and ops.get("QLinearGlobalAveragePool") == 1


def test_mobilenet_int8_graph_fuses_completely(tmp_path):
    from squeeze.passes.quantize.onnx_qdq import ort_fusion_report

    torch.manual_seed(0)
    model = zoo.mobilenetv2_teacher()  # the layout of the MNIST sample teacher: inverted residuals, depthwise convs
    folded = fold_batchnorm(model.eval())
    backend = get_backend(CPU_QUANT_RULES.backend)
    example = torch.randn(2, 1, 28, 28)
    qmodel = backend.quantize(folded, CPU_QUANT_RULES, example, [torch.randn(16, 1, 28, 28) for _ in range(2)])
    backend.refresh_weight_scales(qmodel)
    from squeeze.io.artifacts import InputSpec

    graph = export_qdq(qmodel, InputSpec((1, 1, 28, 28)), tmp_path / "m.onnx", QuantizeConfig(), CPU_QUANT_RULES, "cpu")
    assert graph["ort_fusion"]["fully_fused"], graph["ort_fusion"]
    assert graph["ort_fusion"]["ops"].get("QLinearAdd", 0) >= 1 and ort_fusion_report(tmp_path / "m.onnx", "all")["fully_fused"]


def test_a_conv_on_a_one_channel_input_runs_in_float_and_the_rest_stays_fused(ptq, teacher, digits, tmp_path):
    """ORT's QLinearConv on a 1-channel input is ~30x less efficient than on a wide one: the stem runs in float,
    its output stays quantized, so the next layer is still a QLinearConv and ORT keeps one QuantizeLinear."""
    from squeeze.passes.quantize.onnx_qdq import ort_fusion_report

    backend, qmodel, rules = ptq["cpu"]
    qmodel = copy.deepcopy(qmodel)
    assert backend.float_input_layers(qmodel, 0) == {}
    stems = backend.float_input_layers(qmodel, 4)
    assert list(stems) == [next(iter(backend.layers(qmodel)))]  # the first weighted layer, and only it
    for quantizers in stems.values():
        backend.set_enabled(quantizers, False)
    path = tmp_path / "float_stem.onnx"
    export_qdq(qmodel, teacher.input_spec, path, QuantizeConfig(), rules, "cpu")
    graph = onnx.load(str(path)).graph
    first = next(n for n in graph.node if graph.input[0].name in n.input)
    assert first.op_type == "Conv" and first.input[1] in {i.name for i in graph.initializer}  # float weights, no DequantizeLinear
    report = ort_fusion_report(path, "all")
    exported_convs = Counter(n.op_type for n in graph.node)["Conv"]
    assert report["fully_fused"] and report["ops"]["QuantizeLinear"] == 1, report
    assert report["ops"]["QLinearConv"] == exported_convs - 1
    x, _ = digits.batch("eval", 256)
    parity = check_parity(qmodel, path, x, QuantizeConfig(), True)
    assert parity["passed"] and parity["top1_agreement"] >= 0.99, parity
    assert get_backend("modelopt").float_input_layers(ptq["tensorrt"][1], 4) == {}  # TensorRT's placement: not offered


def test_rule_violations_name_rule_and_node(exported):
    def nonzero_zero_point(model, g):
        dq = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
        model.graph.initializer.append(numpy_helper.from_array(np.array(3, np.int8), "zp3"))
        dq.input[2] = "zp3"

    def per_tensor_weight(model, g):
        name = next(iter(weight_dequantizers(g)))
        node = next(n for n in model.graph.node if (n.name or n.output[0]) == name)
        model.graph.initializer.append(numpy_helper.from_array(np.array(0.01, np.float32), "one_scale"))
        node.input[1] = "one_scale"
        del node.attribute[:]

    def custom_op(model, g):
        model.graph.node.append(helper.make_node("FakeQuantize", ["logits"], ["fq_out"], domain="org.openvinotoolkit"))

    def int32_bias(model, g):
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(4, np.int32), "bias_q"))
        model.graph.initializer.append(numpy_helper.from_array(np.array(0.1, np.float32), "bias_s"))
        model.graph.node.append(helper.make_node("DequantizeLinear", ["bias_q", "bias_s"], ["bias_f"], name="bias_dq"))

    cases = {"zero_point_must_be_zero": nonzero_zero_point, "per_channel_weights": per_tensor_weight,
             "onnx_domains": custom_op, "quantized_bias": int32_bias}
    for rule, edit in cases.items():
        model = _broken(exported, edit)
        assert rule in {v.rule for v in check_qdq_graph(model, TENSORRT_QUANT_RULES)}
        with pytest.raises(QuantRulesError, match=f"not legal for target tensorrt: rule {rule} broken at node"):
            enforce_rules(model, TENSORRT_QUANT_RULES, "tensorrt")


def test_parity_within_tolerance_and_failure_detected(ptq, exported, digits, tmp_path):
    x, _ = digits.batch("eval", 256)
    cfg = QuantizeConfig()
    for name in ("cpu", "tensorrt"):
        parity = check_parity(ptq[name][1], exported[name], x, cfg)
        assert parity["passed"], parity
        assert parity["top1_agreement"] >= 0.99 and parity["max_abs_diff"] <= parity["tolerance_max_abs"]
    # A wrong weight in the ONNX is caught.
    model = onnx.load(str(exported["cpu"]))
    g = _Graph(model)
    name = next(n.input[0] for n in model.graph.node if (n.name or n.output[0]) in weight_dequantizers(g) and "head" in n.input[0])
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), name))
    onnx.save(model, tmp_path / "bad.onnx")
    assert not check_parity(ptq["cpu"][1], tmp_path / "bad.onnx", x, cfg)["passed"]


def _fake_measure(slow_layers: set[str], float_ms: float = 1.0):
    """Deterministic latency: 0.8 ms for an INT8 graph, +0.5 ms per listed layer that still has int8 weights."""
    def measure(paths):
        out = []
        for p in paths:
            inits = {i.name for i in onnx.load(str(p)).graph.initializer}
            if not any(n.endswith("_quantized") for n in inits):
                out.append(float_ms)
            else:
                out.append(0.8 + 0.5 * sum(f"{layer}.weight_quantized" in inits for layer in slow_layers))
        return out
    return measure


def test_speed_guard_excludes_the_layers_that_lose(ptq, exported, teacher, tmp_path):
    backend, qmodel, rules = ptq["cpu"]
    qmodel = copy.deepcopy(qmodel)
    int8 = tmp_path / "model.onnx"
    int8.write_bytes(exported["cpu"].read_bytes())
    cfg = QuantizeConfig()
    fast = speed_guard(qmodel, backend, exported["float"], int8, teacher.input_spec, cfg, rules, "cpu", _fake_measure(set()))
    assert fast["verdict"] == "int8 faster" and fast["decisions"] == []
    layers = list(backend.layers(qmodel))
    guard = speed_guard(qmodel, backend, exported["float"], int8, teacher.input_spec, cfg, rules, "cpu", _fake_measure({layers[3]}))
    assert guard["excluded_layers"] == [layers[3]]
    assert [d["decision"] for d in guard["decisions"]] == ["keep INT8"] * 3 + ["run in float (faster without Q/DQ)"]
    assert guard["verdict"] == "int8 faster after exclusions" and guard["int8_p50_ms"] == pytest.approx(0.8)
    assert f"{layers[3]}.weight_quantized" not in {i.name for i in onnx.load(str(int8)).graph.initializer}


def test_slower_int8_is_refused_unless_allowed(digits, tmp_path):
    def always_slower(paths):
        return [1.0 if not any(i.name.endswith("_quantized") for i in onnx.load(str(p)).graph.initializer) else 2.0 for p in paths]

    from squeeze.io.artifacts import InputSpec, ModelArtifact

    torch.manual_seed(0)
    tiny = ModelArtifact(zoo.tiny_cnn(width=8).eval(), InputSpec((1, 1, 8, 8)), "tiny", "checkpoint", "")
    cfg = QuantizeConfig(epochs=0, calib_samples=64, parity_samples=128)
    stage = tmp_path / "stage"
    stage.mkdir()
    with pytest.raises(SpeedGuardError, match="slower than the float one on cpu .* --allow-slower"):
        quantize(tiny, tiny, digits, get_target("cpu"), cfg, stage, tmp_path / "work", measure=always_slower)
    result = quantize(tiny, tiny, digits, get_target("cpu"), QuantizeConfig(epochs=0, calib_samples=64, parity_samples=128,
                      allow_slower=True), stage, tmp_path / "work", measure=always_slower)
    guard = result["latency"]
    assert guard["verdict"] == "int8 slower" and guard["shipped_although_slower"]
    assert result["float_input_layers"] == ["0.0"]  # the 1-channel input's conv runs in float: the guard tries the other 2
    assert len(guard["decisions"]) == 2 and all(d["decision"] == "keep INT8" for d in guard["decisions"])
    assert result["parity"]["passed"] and (stage / "model.onnx").exists()
    # compress's default: never ship a slower INT8 model, and do not fail the pipeline either: ship the float one
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    result = quantize(tiny, tiny, digits, get_target("cpu"), QuantizeConfig(epochs=0, calib_samples=64, parity_samples=128,
                      fallback_to_float=True), fallback, tmp_path / "work", measure=always_slower)
    assert result["shipped"].startswith("float") and result["latency"]["shipped"] == "float"
    assert (fallback / "model.onnx").read_bytes() == (fallback / "float.onnx").read_bytes()
    assert result["parity"]["passed"] and result["parity"]["max_abs_diff"] < 1e-3  # float vs float: exact up to fp32 rounding
    assert result["accuracy"]["int8_onnx"]["accuracy"] == result["accuracy"]["float"]["accuracy"]


def test_bad_inputs(teacher, digits):
    with pytest.raises(UserInputError, match="rule signed_activations"):
        resolve_backend(QuantizeConfig(backend="modelopt"), CPU_QUANT_RULES, "cpu")
    with pytest.raises(UserInputError, match="cannot meet target tensorrt's quantization rule signed_activations"):
        resolve_backend(QuantizeConfig(backend="torch-fx"), TENSORRT_QUANT_RULES, "tensorrt")
    with pytest.raises(UserInputError, match="--bits 4 is not supported"):
        resolve_backend(QuantizeConfig(bits=4), CPU_QUANT_RULES, "cpu")
    with pytest.raises(UserInputError, match="--bits must be 8 or 4"):
        QuantizeConfig(bits=6)
    from squeeze.passes.quantize.pass_ import check_inputs

    with pytest.raises(UserInputError, match="quantization needs calibration data"):
        check_inputs(teacher, teacher, None)
    no_calib = load_data("digits", SplitConfig(calibration_fraction=0.0))
    with pytest.raises(UserInputError, match="no calibration samples"):
        check_inputs(teacher, teacher, no_calib)

    class Untraceable(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # data-dependent control flow

    with pytest.raises(UserInputError, match="torch.fx can trace"):
        fold_batchnorm(Untraceable())


def test_cli_refuses_a_backend_that_breaks_the_target_rules(cli, tmp_path):
    bad = cli("quantize", TEACHER, "--data", "digits", "--target", "cpu", "--backend", "modelopt", "--out", tmp_path / "bad")
    assert bad.code == 2 and "rule signed_activations" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow  # ~1-3 min on 2 shared cores: a real QAT epoch plus the real latency guard
def test_cli_end_to_end(cli, tmp_path):
    out = tmp_path / "quant"
    r = cli("quantize", TEACHER, "--data", "digits", "--target", "cpu", "--epochs", "1", "--train-samples", "256",
            "--calib-samples", "128", "--allow-slower", "--threads", "1", "--out", out, "--json")
    assert r.code == 0, r.stderr
    result = r.json()
    assert (out / "model.onnx").exists() and (out / "result.json").exists() and (out / "float.onnx").exists()
    acc = result["accuracy"]
    assert acc["float"]["accuracy"] > 0.95 and acc["qad"]["accuracy"] >= acc["float"]["accuracy"] - 0.02
    assert acc["int8_onnx"]["accuracy"] >= acc["float"]["accuracy"] - 0.02
    assert result["parity"]["passed"] and result["latency"]["measured"] and result["backend"]["name"] == "torch-fx"
    saved = __import__("json").loads((out / "result.json").read_text())
    assert [h["epoch"] for h in saved["history"]] == [0, 1] and result["best_epoch"] in (0, 1)
    assert not list(tmp_path.glob(".quant*"))  # no staging or work directory left behind


class TokenMixer(torch.nn.Module):
    """A Linear on tokens (exported as MatMul(x, Transpose(DequantizeLinear(W)))) and attention-style products of
    two activations (a DequantizeLinear on MatMul's second input that is no weight)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.fc(x.flatten(1, 2))
        mixed = (t @ t.transpose(-2, -1)).softmax(-1) @ t
        return self.head(mixed.mean(1))


def test_weights_behind_a_transpose_and_activation_matmuls_meet_the_cpu_rules(tmp_path):
    from squeeze.io.artifacts import InputSpec

    torch.manual_seed(0)
    backend = get_backend(CPU_QUANT_RULES.backend)
    x = torch.randn(32, 1, 8, 8)
    qmodel = backend.quantize(fold_batchnorm(TokenMixer().eval()), CPU_QUANT_RULES, x[:2], [x])
    backend.refresh_weight_scales(qmodel)
    graph = export_qdq(qmodel, InputSpec((1, 1, 8, 8)), tmp_path / "t.onnx", QuantizeConfig(), CPU_QUANT_RULES, "cpu")  # rules enforced
    model = onnx.load(str(tmp_path / "t.onnx"))
    assert graph["layers_with_int8_weights"] == 2 and check_qdq_graph(model, CPU_QUANT_RULES) == []  # fc and head; not t @ t.T
    assert sum(n.op_type == "MatMul" for n in model.graph.node) == 3
