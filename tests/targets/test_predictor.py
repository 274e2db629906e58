"""Offline roofline predictor: monotone in model size, batch and hardware; always labelled as a prediction; calibrated by stored measurements."""

from __future__ import annotations

import json

import pytest

from squeeze.io.modelio import load_onnx
from squeeze.targets import get_target
from squeeze.targets.base import ProfileSpec
from squeeze.targets.jetson import MODULES
from squeeze.targets.predictor import (
    Assumptions,
    calibration,
    dgpu_profile,
    layer_costs,
    predict_stats,
    record_measurement,
)
from ssh_fixtures import make_conv_onnx


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("pred")
    return {w: load_onnx(make_conv_onnx(d / f"w{w}.onnx", width=w)) for w in (4, 16, 64, 128)}


def predict(art, target="jetson-orin-nano", batch=1, tmp=None):
    return get_target(target).predict(art, ProfileSpec(batch_size=batch))


def test_bigger_models_are_never_faster(models):
    times = [predict(models[w]).p50_ms for w in (4, 16, 64, 128)]
    assert times == sorted(times) and times[-1] > times[0]


def test_bigger_batch_is_never_faster(models):
    times = [predict(models[64], batch=b).p50_ms for b in (1, 2, 8, 32)]
    assert times == sorted(times) and times[-1] > times[0]


def test_faster_hardware_is_never_slower(models):
    order = ["jetson-orin-nano-4gb", "jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin"]
    times = [predict(models[128], target=t, batch=8).p50_ms for t in order]
    assert times == sorted(times, reverse=True) and times[0] > times[-1]


def test_prediction_is_labelled_everywhere(models):
    stats = predict(models[16]).to_dict()
    assert stats["measured"] is False and stats["runtime"] == "predictor" and stats["options"]["label"] == "predicted"
    assert stats["p50_ms"] == stats["p90_ms"] == stats["p99_ms"] == stats["mean_ms"] and stats["std_ms"] == 0
    assert stats["iterations"] == 0 and stats["providers"] == []
    assert "not a measurement" in stats["options"]["note"] and stats["options"]["calibration"]["calibrated"] is False
    assert {r["name"] for r in stats["layers"]} == {"/conv1/Conv", "/conv2/Conv", "/pool/GlobalAveragePool", "/fc/Gemm"}
    assert sum(r["predicted_ms"] for r in stats["layers"]) == pytest.approx(stats["p50_ms"])


def test_layer_costs_count_macs_exactly(models):
    rows = {r["name"]: r for r in layer_costs(models[4].path, batch=2)}
    assert rows["/conv1/Conv"]["macs"] == 2 * 4 * 28 * 28 * (1 * 3 * 3)
    assert rows["/conv2/Conv"]["macs"] == 2 * 8 * 14 * 14 * (4 * 3 * 3)
    assert rows["/fc/Gemm"]["macs"] == 2 * 10 * 8
    assert rows["/conv1/Conv"]["precision"] == "tf32" and "/relu1/Relu" not in rows  # pointwise ops fuse into the conv


def test_qdq_layers_are_int8_and_cheaper(tmp_path, models):
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(models[128].path))
    graph = model.graph
    scale = numpy_helper.from_array(np.array(0.02, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    graph.initializer.extend([scale, zero])
    conv2 = next(n for n in graph.node if n.name == "/conv2/Conv")
    at = list(graph.node).index(conv2)
    graph.node.insert(at, helper.make_node("DequantizeLinear", ["r1_q", "s", "z"], ["r1_dq"], name="dq"))
    graph.node.insert(at, helper.make_node("QuantizeLinear", ["r1", "s", "z"], ["r1_q"], name="q"))
    conv2.input[0] = "r1_dq"
    path = tmp_path / "qdq.onnx"
    onnx.save(model, str(path))
    rows = {r["name"]: r for r in layer_costs(path, batch=8)}
    assert rows["/conv2/Conv"]["precision"] == "int8" and rows["/conv1/Conv"]["precision"] == "tf32"
    assert predict(load_onnx(path), batch=8).p50_ms < predict(models[128], batch=8).p50_ms


def test_calibration_scales_by_geometric_mean(models, tmp_path):
    file = str(tmp_path / "cal.json")
    hw = MODULES["jetson-orin-nano"].hardware()
    match = {"hardware": "jetson-orin-nano", "precision": "strongly-typed", "power_mode": "15W"}
    raw = predict_stats("x", models[16], ProfileSpec(), hw, "strongly-typed", file, match=match).p50_ms
    record_measurement(match, "a" * 64, 1, 1.0, 2.0, {}, file)
    record_measurement(match, "b" * 64, 1, 1.0, 8.0, {}, file)
    record_measurement({**match, "power_mode": "25W"}, "c" * 64, 1, 1.0, 100.0, {}, file)
    cal = calibration(match, file)
    assert cal["calibrated"] and cal["measurements"] == 2 and cal["factor"] == pytest.approx(4.0)
    stats = predict_stats("x", models[16], ProfileSpec(), hw, "strongly-typed", file, match=match)
    assert stats.p50_ms == pytest.approx(4.0 * raw) and stats.options["raw_predicted_ms"] == pytest.approx(raw)
    record_measurement(match, "a" * 64, 1, 1.0, 32.0, {}, file)  # re-measuring the same model replaces its entry
    assert calibration(match, file)["factor"] == pytest.approx(16.0)
    assert calibration({**match, "power_mode": None}, file)["measurements"] == 3  # any power mode
    assert len(json.loads((tmp_path / "cal.json").read_text())["measurements"]) == 3


def test_damaged_calibration_file_means_uncalibrated(models, tmp_path):
    bad = tmp_path / "cal.json"
    bad.write_text("{not json")
    assert calibration({"hardware": "x"}, str(bad))["calibrated"] is False


def test_static_batch_model_refuses_other_batch(tmp_path):
    from squeeze.errors import TargetUnavailableError

    art = load_onnx(make_conv_onnx(tmp_path / "static.onnx", dynamic_batch=False))
    with pytest.raises(TargetUnavailableError, match="static batch of 1"):
        predict(art, batch=4)


@pytest.mark.parametrize("name, expected", [("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"), ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
                                            ("NVIDIA H200", "NVIDIA H200"), ("Tesla T4", "NVIDIA T4"), ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB SXM"),
                                            ("NVIDIA GeForce GTX 1080", None)])
def test_dgpu_profiles(name, expected):
    profile = dgpu_profile(name)
    assert (profile.name if profile else None) == expected


def test_assumptions_are_recorded(models):
    stats = predict(models[4])
    assert stats.options["assumptions"] == {"compute_efficiency": Assumptions().compute_efficiency,
                                            "memory_efficiency": Assumptions().memory_efficiency,
                                            "kernel_overhead_us": Assumptions().kernel_overhead_us}
