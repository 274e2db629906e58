"""The cpu latency model: features read off the ONNX graph, a non-negative relative-error fit, and a stored
model reused only on the machine key it was fitted on (the bench measures its error on real students)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from squeeze.io.artifacts import InputSpec, ModelArtifact
from squeeze.io.onnx_export import ExportConfig, export_onnx
from squeeze.measure.analysis import count_macs
from squeeze.targets import cpu_latency_model as clm


def _onnx(module: torch.nn.Module, path, shape=(1, 3, 16, 16)):
    torch.manual_seed(0)
    return export_onnx(ModelArtifact(module.eval(), InputSpec(shape), "test", "checkpoint", ""), path, ExportConfig())


def test_features_count_kernels_and_split_dense_from_depthwise_macs(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 10))
    row = clm.features(_onnx(net, tmp_path / "m.onnx").path)
    assert row[0] == 1.0 and row[1] == 4  # conv, depthwise conv, pooling, gemm: BN folded, ReLU fused, Flatten free
    assert row[3] == 16 * 16 * 8 * 9  # depthwise: one 3x3 filter per channel
    assert row[2] + row[3] == count_macs(net, torch.zeros(1, 3, 16, 16)) and row[4] > 0


def test_fit_recovers_nonnegative_coefficients_and_predicts_unseen_rows():
    rng = np.random.default_rng(0)
    truth = np.array([0.01, 0.002, 2e-8, 0.0, 1e-9])  # ms per unit; depthwise plays no part
    rows = np.column_stack([np.ones(30), rng.integers(5, 60, 30), rng.uniform(1e5, 5e7, 30), rng.uniform(0, 1e6, 30),
                            rng.uniform(1e4, 5e6, 30)])
    latencies = rows @ truth * rng.uniform(0.98, 1.02, 30)  # 2 % measurement noise
    coefficients = clm.fit(rows[:20], latencies[:20])
    assert (coefficients >= 0).all()
    errors = np.abs(rows[20:] @ coefficients - latencies[20:]) / latencies[20:]
    assert np.median(errors) < 0.03
    # a feature that only hurts is dropped, never given a negative cost
    assert clm.nonnegative_least_squares(np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]]), np.array([3.0, 2.0, 1.0]))[1] == 0.0


def test_stored_model_is_reused_only_on_its_machine_key(tmp_path, monkeypatch):
    model = clm.CpuLatencyModel([0.01, 0.002, 2e-8, 0.0, 1e-9], clm.machine_key(1), fitted_on=12)
    path = tmp_path / "model.json"
    clm.save(model, path)
    assert clm.load(path, 1).coefficients == model.coefficients
    assert clm.load(path, 2) is None  # fitted at one thread: not a model of two
    saved = json.loads(path.read_text())
    for damage in ({**saved, "coefficients": [0.01, -1.0, 0, 0, 0]}, {**saved, "version": 99}, {"coefficients": "x"}):
        path.write_text(json.dumps(damage))
        assert clm.load(path, 1) is None
    path.write_text("{not json")
    assert clm.load(path, 1) is None
    with pytest.raises(ValueError, match="at least 5 models"):
        clm.calibrate([tmp_path / "a.onnx"] * 6, [1.0] * 6, threads=1, held_out=3)
