"""CPU target: measured latency with the fields a CI gate needs, on ONNX Runtime's CPU provider."""

from __future__ import annotations

import pytest

from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.io.modelio import load_model, load_onnx
from squeeze.io.onnx_export import ExportConfig, export_onnx
from squeeze.targets import get_target
from squeeze.targets.base import ProfileSpec


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("cpu") / "tiny.onnx"
    export_onnx(load_model(tiny.checkpoint), path, ExportConfig(parity_samples=8))
    return load_onnx(path)


def test_cpu_is_available_here():
    availability = get_target("cpu").available()
    assert availability.available and "onnxruntime" in availability.reason


def test_profile_fields_and_ordering(tiny_onnx):
    stats = get_target("cpu").profile(tiny_onnx, ProfileSpec(batch_size=4, warmup=3, iterations=30, threads=1))
    d = stats.to_dict()
    assert d["providers"] == ["CPUExecutionProvider"]
    assert d["runtime"] == "onnxruntime" and d["runtime_version"]
    assert d["batch_size"] == 4 and d["input_shape"] == [4, 1, 28, 28]
    assert d["iterations"] == 30 and d["warmup"] == 3
    assert d["threads"] == 1 and d["options"]["intra_op_num_threads"] == 1
    assert 0 < d["min_ms"] <= d["p50_ms"] <= d["p90_ms"] <= d["p99_ms"] <= d["max_ms"]
    assert d["std_ms"] >= 0 and d["cov"] == pytest.approx(d["std_ms"] / d["mean_ms"])
    assert d["throughput_per_s"] == pytest.approx(4 * 1000 / d["mean_ms"])
    assert d["measured"] is True and d["host"]["usable_cores"] >= 1


def test_static_batch_model_refuses_other_batch(tiny, tmp_path):
    path = tmp_path / "static.onnx"
    export_onnx(load_model(tiny.checkpoint), path, ExportConfig(dynamic_batch=False, parity_samples=4))
    with pytest.raises(TargetUnavailableError, match="static batch"):
        get_target("cpu").profile(load_onnx(path), ProfileSpec(batch_size=2, iterations=2, warmup=0))


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"iterations": 1}, {"threads": 0}, {"warmup": -1}])
def test_bad_profile_spec(kwargs):
    with pytest.raises(UserInputError):
        ProfileSpec(**kwargs)
