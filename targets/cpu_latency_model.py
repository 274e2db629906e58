"""A latency model of ONNX Runtime's CPU EP on this machine: a per-kernel overhead plus roofline terms,
fitted once per machine to real timings, so a search can rank many small candidates without timing each.

    latency = c0 + c_kernel · kernels + dense MACs / dense throughput + depthwise MACs / depthwise throughput
              + bytes moved / bandwidth

The coefficients are non-negative (a cost never makes a model faster) and fitted to *relative* error: the
students a search compares span 0.05-2 ms, and an absolute fit would serve only the largest. Small models
on a CPU are overhead-bound (the bench measured every model under ~5 MMACs running slower on 2 threads than
on 1), which the kernel term carries; the roofline terms carry the big ones. A model is stored per machine
key (CPU model, usable cores, ORT version, threads) and only reused while that key matches.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from squeeze.io.fsutil import write_json_atomic

FEATURES = ("constant", "kernels", "dense_macs", "depthwise_macs", "bytes")
MODEL_VERSION = 1
# ORT fuses these into the kernel before them (Conv+Relu, BatchNorm folded at export) or they are shape-only
CPU_FUSED = {"Relu", "Clip", "BatchNormalization", "Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast",
             "Constant", "Shape", "QuantizeLinear", "DequantizeLinear"}


def features(path: Path, batch: int = 1) -> np.ndarray:
    """The model's feature row (FEATURES) from its ONNX graph at this batch."""
    import onnx

    from squeeze.targets.predictor import layer_costs

    groups = {n.name or n.output[0]: next((a.i for a in n.attribute if a.name == "group"), 1)
              for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"}
    rows = [r for r in layer_costs(Path(path), batch) if r["op"] not in CPU_FUSED]
    dense = sum(r["macs"] for r in rows if groups.get(r["name"], 1) == 1)
    depthwise = sum(r["macs"] for r in rows if groups.get(r["name"], 1) > 1)
    return np.array([1.0, len(rows), dense, depthwise, sum(r["bytes"] for r in rows)], dtype=np.float64)


def nonnegative_least_squares(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min |a x - b| subject to x >= 0, by dropping the most negative coefficient and refitting (few features)."""
    active = list(range(a.shape[1]))
    while True:
        x = np.zeros(a.shape[1])
        solution, *_ = np.linalg.lstsq(a[:, active], b, rcond=None)
        if (solution >= 0).all() or len(active) == 1:
            x[active] = np.maximum(solution, 0.0)
            return x
        active.pop(int(np.argmin(solution)))


def fit(rows: np.ndarray, latencies_ms: np.ndarray) -> np.ndarray:
    """Coefficients minimising relative error: each row divided by its own latency, columns scaled to unit size."""
    rows, latencies_ms = np.asarray(rows, dtype=np.float64), np.asarray(latencies_ms, dtype=np.float64)
    weighted = rows / latencies_ms[:, None]
    scale = np.where(weighted.max(axis=0) > 0, weighted.max(axis=0), 1.0)
    return nonnegative_least_squares(weighted / scale, np.ones(len(rows))) / scale


def machine_key(threads: int) -> dict[str, Any]:
    import onnxruntime

    from squeeze.targets.ort_runtime import usable_cores

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": usable_cores(), "onnxruntime": onnxruntime.__version__, "threads": threads}


@dataclass
class CpuLatencyModel:
    """Fitted coefficients (ms per unit of each FEATURES entry) for one machine key, with its held-out error."""

    coefficients: list[float]
    key: dict[str, Any]
    fitted_on: int  # models
    held_out_median_error: float | None = None  # |predicted - measured| / measured, median over the held-out pool
    held_out: int = 0
    version: int = MODEL_VERSION
    details: dict[str, Any] = field(default_factory=dict)

    def predict_ms(self, path: Path, batch: int = 1) -> float:
        return float(features(path, batch) @ np.asarray(self.coefficients))

    def describe(self) -> dict[str, str]:
        """The coefficients in the units a reader checks: µs per kernel, GMAC/s, GB/s."""
        c0, kernel, dense, depthwise, moved = self.coefficients
        rate = lambda ms_per_unit, unit: f"{1e3 / ms_per_unit / unit:.1f}" if ms_per_unit > 0 else "not limiting"  # noqa: E731
        return {"fixed_us": f"{c0 * 1e3:.1f}", "per_kernel_us": f"{kernel * 1e3:.2f}", "dense_gmacs": rate(dense, 1e9),
                "depthwise_gmacs": rate(depthwise, 1e9), "bandwidth_gbs": rate(moved, 1e9)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CpuLatencyModel:
        model = cls(**data)
        if model.version != MODEL_VERSION or len(model.coefficients) != len(FEATURES) or any(
                not np.isfinite(c) or c < 0 for c in model.coefficients):
            raise ValueError("not a latency model of this version")
        return model


def calibrate(paths: list[Path], latencies_ms: list[float], threads: int, held_out: int = 0) -> CpuLatencyModel:
    """Fit on the first len(paths) - held_out models; the rest measure the model's error on models it never saw."""
    n_fit = len(paths) - held_out
    if n_fit < len(FEATURES):
        raise ValueError(f"a latency model needs at least {len(FEATURES)} models to fit, got {n_fit}")
    rows = np.stack([features(p) for p in paths])
    y = np.asarray(latencies_ms, dtype=np.float64)
    coefficients = fit(rows[:n_fit], y[:n_fit])
    model = CpuLatencyModel(list(map(float, coefficients)), machine_key(threads), n_fit, held_out=held_out)
    if held_out:
        errors = np.abs(rows[n_fit:] @ coefficients - y[n_fit:]) / y[n_fit:]
        model.held_out_median_error = float(np.median(errors))
        model.details = {"held_out_errors": [float(e) for e in errors]}
    return model


def save(model: CpuLatencyModel, path: Path) -> None:
    write_json_atomic(path, model.to_dict())


def load(path: Path, threads: int) -> CpuLatencyModel | None:
    """The stored model if it was fitted on this machine key; None when absent, damaged or another machine's."""
    try:
        model = CpuLatencyModel.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return model if model.key == machine_key(threads) else None
