"""Offline latency prediction for GPU targets that cannot measure here: a per-layer roofline.

For each ONNX node at the requested batch: time = max(2·MACs / (peak · e_c), bytes / (bandwidth · e_m))
plus a fixed per-kernel overhead. Pointwise ops, BatchNorm, Q/DQ and shape ops cost nothing of
their own (TensorRT fuses them into the neighbouring kernel). Precision per layer: INT8 where the
layer's inputs come from DequantizeLinear (explicit Q/DQ), FP16 where the tensors are FP16 or the
build asks for --fp16, else TF32 (TensorRT's default for FP32 layers on Ampere and later).

This is an ESTIMATE, never a measurement: every result is labelled "predicted" (measured=False).
The efficiencies and the overhead are assumptions until calibrated: when measured runs of the
same hardware key exist in the calibration file (the Jetson/TensorRT targets append one after
each real measurement), the raw roofline is scaled by the geometric mean of measured/predicted.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from squeeze import __version__
from squeeze.io.artifacts import OnnxArtifact
from squeeze.io.fsutil import write_json_atomic
from squeeze.targets.base import LatencyStats, ProfileSpec

DEFAULT_CALIBRATION = "~/.cache/squeeze/latency-calibration.json"


@dataclass(frozen=True)
class Hardware:
    """Dense (non-sparse) peaks of the GPU alone - no DLA - and DRAM bandwidth."""

    name: str
    sm: str
    int8_tops: float
    fp16_tflops: float
    tf32_tflops: float  # FP32 layers: TF32 tensor cores on SM >= 8.0, plain FP32 before
    bandwidth_gbs: float
    source: str


@dataclass(frozen=True)
class Assumptions:
    """Uncalibrated guesses; stored measurements scale the total (see module doc)."""

    compute_efficiency: float = 0.5  # fraction of tensor-core peak real conv/GEMM kernels reach on small layers
    memory_efficiency: float = 0.7  # fraction of DRAM bandwidth a streaming kernel reaches
    kernel_overhead_us: float = 5.0  # per launched kernel (CUDA graphs help; small edge models are overhead-bound)


# Data-centre GPUs for `--target tensorrt` on a machine with a GPU but no TensorRT. Dense peaks from
# NVIDIA's product datasheets (the sparse figures NVIDIA headlines are 2x these).
DGPUS = {
    "H200": Hardware("NVIDIA H200", "9.0", 1979, 989, 495, 4800, "NVIDIA H200 Tensor Core GPU datasheet (SXM: INT8 3958 sparse TOPS, 4.8 TB/s)"),
    "H100 PCIe": Hardware("NVIDIA H100 PCIe", "9.0", 1513, 756, 378, 2000, "NVIDIA H100 datasheet (PCIe: INT8 3026 sparse TOPS, 2 TB/s)"),
    "H100": Hardware("NVIDIA H100 SXM", "9.0", 1979, 989, 495, 3350, "NVIDIA H100 datasheet (SXM: INT8 3958 sparse TOPS, 3.35 TB/s)"),
    "A100": Hardware("NVIDIA A100 80GB SXM", "8.0", 624, 312, 156, 2039, "NVIDIA A100 datasheet (INT8 624 TOPS dense, 2039 GB/s)"),
    "L4": Hardware("NVIDIA L4", "8.9", 242, 121, 60, 300, "NVIDIA L4 datasheet (INT8 485 sparse TOPS, 300 GB/s)"),
    "T4": Hardware("NVIDIA T4", "7.5", 130, 65, 8.1, 320, "NVIDIA T4 datasheet (INT8 130 TOPS, FP16 65 TFLOPS, FP32 8.1, 320 GB/s)"),
}


def dgpu_profile(gpu_name: str) -> Hardware | None:
    """nvidia-smi's name ('NVIDIA H100 80GB HBM3', 'NVIDIA H100 PCIe', 'Tesla T4') -> a known profile."""
    for key in ("H200", "H100 PCIe", "H100", "A100", "L4", "T4"):
        if all(part in gpu_name for part in key.split()):
            return DGPUS[key]
    return None


COMPUTE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
FUSED_OPS = {  # no kernel of their own in a TensorRT engine: fused into the producer, or shape-only
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Gelu", "Erf", "Softplus",
    "Softsign", "Add", "Sub", "Mul", "Div", "BatchNormalization", "QuantizeLinear", "DequantizeLinear", "Identity", "Dropout",
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "CastLike", "Constant", "ConstantOfShape", "Shape", "Gather", "Range",
    "Expand", "Neg", "Abs", "Sqrt", "Pow", "Exp", "Not", "Equal", "Where",
}
_ELEM_BYTES = {1: 4, 10: 2, 16: 2, 3: 1, 2: 1, 6: 4, 7: 8, 11: 8, 9: 1}  # onnx TensorProto elem types


def _fixed_batch(model: Any, batch: int) -> Any:
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {t.name for t in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in initializers or not value.type.tensor_type.shape.dim:
            continue
        first = value.type.tensor_type.shape.dim[0]
        if not first.HasField("dim_value"):
            first.Clear()
            first.dim_value = batch
    del model.graph.value_info[:]  # symbolic intermediate shapes would pin the old batch
    return onnx.shape_inference.infer_shapes(model)


def layer_costs(path: Path, batch: int, precision: str = "strongly-typed") -> list[dict[str, Any]]:
    """MACs, bytes moved and layer precision for every node that becomes a kernel."""
    import numpy as np
    import onnx

    model = _fixed_batch(onnx.load(str(path)), batch)
    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    info: dict[str, tuple[list[int], int]] = {}
    for vi in [*graph.value_info, *graph.input, *graph.output]:
        t = vi.type.tensor_type
        info[vi.name] = ([d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim], t.elem_type)
    for t in graph.initializer:
        info[t.name] = (list(t.dims), t.data_type)
    producer = {out: node for node in graph.node for out in node.output}

    def elems(name: str) -> int:
        return int(np.prod(info[name][0])) if name in info else 0

    def source_initializer(name: str) -> str | None:  # weight, possibly behind DequantizeLinear
        node = producer.get(name)
        if name in init:
            return name
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in init:
            return node.input[0]
        return None

    rows = []
    for node in graph.node:
        if node.op_type in FUSED_OPS or not node.output or node.output[0] not in info:
            continue
        activations = [i for i in node.input if i and source_initializer(i) is None and i in info]
        weights = [source_initializer(i) for i in node.input if i and source_initializer(i) is not None]
        from_dq = any((p := producer.get(i)) is not None and p.op_type == "DequantizeLinear" for i in node.input if i)
        if node.op_type in COMPUTE_OPS and from_dq:
            layer_precision, act_bytes = "int8", 1
        elif info[node.output[0]][1] == 10 or precision in ("fp16", "best", "int8"):
            layer_precision, act_bytes = ("int8", 1) if precision == "best" and node.op_type in COMPUTE_OPS else ("fp16", 2)
        else:
            layer_precision, act_bytes = "tf32", 4
        macs = 0
        out = elems(node.output[0])
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in info:
            w = info[node.input[1]][0]  # Conv: [out, in/groups, k...]; ConvTranspose: [in, out/groups, k...]
            macs = out * int(np.prod(w[1:])) if node.op_type == "Conv" else elems(node.input[0]) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in info:
            b = info[node.input[1]][0]
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            k = b[-1] if node.op_type == "Gemm" and trans_b else (b[-2] if len(b) >= 2 else b[0])
            macs = out * k
        weight_elems = sum(int(np.prod(info[w][0])) for w in weights if w in info)
        moved = act_bytes * (sum(elems(i) for i in activations) + sum(elems(o) for o in node.output if o in info))
        moved += (1 if layer_precision == "int8" else act_bytes) * weight_elems
        rows.append({"name": node.name or node.output[0], "op": node.op_type, "precision": layer_precision, "macs": macs, "bytes": moved})
    return rows


def roofline(rows: list[dict[str, Any]], hw: Hardware, assumptions: Assumptions) -> list[dict[str, Any]]:
    peak = {"int8": hw.int8_tops, "fp16": hw.fp16_tflops, "tf32": hw.tf32_tflops}
    out = []
    for row in rows:
        compute_ms = 2 * row["macs"] / (peak[row["precision"]] * 1e12 * assumptions.compute_efficiency) * 1e3
        memory_ms = row["bytes"] / (hw.bandwidth_gbs * 1e9 * assumptions.memory_efficiency) * 1e3
        total = max(compute_ms, memory_ms) + assumptions.kernel_overhead_us / 1e3
        out.append({**row, "compute_ms": compute_ms, "memory_ms": memory_ms, "bound": "compute" if compute_ms >= memory_ms else "memory",
                    "predicted_ms": total})
    return out


# ----------------------------------------------------------------------------------------------
# Calibration from stored measurements


def calibration_path(path: str | None = None) -> Path:
    return Path(path or os.environ.get("SQUEEZE_CALIBRATION_FILE") or DEFAULT_CALIBRATION).expanduser()


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []  # a damaged file must not break prediction: treat as uncalibrated
    return [e for e in data.get("measurements", []) if isinstance(e, dict)]


def record_measurement(match: dict[str, Any], onnx_sha256: str, batch: int, raw_predicted_ms: float, measured_ms: float,
                       meta: dict[str, Any], path: str | None = None) -> Path:
    """Store one measured-vs-predicted pair; `match` (hardware, power_mode, precision) says what it calibrates.

    A newer measurement of the same model, batch and `match` replaces the older one.
    """
    file = calibration_path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    same = lambda e: (e.get("match") == match and e.get("onnx_sha256") == onnx_sha256 and e.get("batch") == batch)  # noqa: E731
    entries = [e for e in _load(file) if not same(e)]
    entries.append({"match": match, "onnx_sha256": onnx_sha256, "batch": batch, "raw_predicted_ms": raw_predicted_ms,
                    "measured_ms": measured_ms, "recorded_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **meta})
    write_json_atomic(file, {"format": "squeeze-latency-calibration", "version": 1, "measurements": entries})
    return file


def calibration(match: dict[str, Any], path: str | None = None) -> dict[str, Any]:
    """Scale factor from the stored measurements whose `match` agrees on every non-None item of `match`."""
    file = calibration_path(path)
    wanted = {k: v for k, v in match.items() if v is not None}
    used = [e for e in _load(file) if all((e.get("match") or {}).get(k) == v for k, v in wanted.items())
            and e.get("raw_predicted_ms", 0) > 0 and e.get("measured_ms", 0) > 0]
    base = {"file": str(file), "match": wanted}
    if not used:
        return {"calibrated": False, "factor": 1.0, "measurements": 0, **base}
    ratios = [e["measured_ms"] / e["raw_predicted_ms"] for e in used]
    factor = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    return {"calibrated": True, "factor": factor, "measurements": len(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "power_modes": sorted({str((e.get("match") or {}).get("power_mode")) for e in used}), **base}


# ----------------------------------------------------------------------------------------------


def raw_prediction_ms(art: OnnxArtifact, batch: int, hw: Hardware, precision: str, assumptions: Assumptions = Assumptions()) -> float:
    return sum(r["predicted_ms"] for r in roofline(layer_costs(Path(art.path), batch, precision), hw, assumptions))


def predict_stats(target: str, art: OnnxArtifact, spec: ProfileSpec, hw: Hardware, precision: str, calibration_file: str | None,
                  match: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                  assumptions: Assumptions = Assumptions()) -> LatencyStats:
    from squeeze.errors import TargetUnavailableError

    if not art.input_spec.dynamic_batch and spec.batch_size != art.input_spec.shape[0]:
        raise TargetUnavailableError(f"{art.path} has a static batch of {art.input_spec.shape[0]}; cannot predict batch {spec.batch_size}")
    layers = roofline(layer_costs(Path(art.path), spec.batch_size, precision), hw, assumptions)
    raw = sum(r["predicted_ms"] for r in layers)
    cal = calibration(match or {"hardware": hw.name, "precision": precision}, calibration_file)
    predicted = raw * cal["factor"]
    for row in layers:
        row["predicted_ms"] *= cal["factor"]
    return LatencyStats(
        target=target,
        runtime="predictor",
        runtime_version=f"squeeze {__version__} roofline",
        providers=[],
        batch_size=spec.batch_size,
        input_shape=[spec.batch_size, *art.input_spec.shape[1:]],
        warmup=0,
        iterations=0,
        threads=0,
        p50_ms=predicted, p90_ms=predicted, p99_ms=predicted, mean_ms=predicted, min_ms=predicted, max_ms=predicted,
        std_ms=0.0, cov=0.0,
        throughput_per_s=spec.batch_size * 1000.0 / predicted,
        measured=False,
        options={
            "label": "predicted",
            "note": "offline estimate, not a measurement: all percentiles equal the point estimate",
            "method": "per-layer roofline: max(2*MACs/(peak*e_c), bytes/(bandwidth*e_m)) + overhead per kernel; pointwise/BN/QDQ fused",
            "hardware": asdict(hw),
            "assumptions": asdict(assumptions),
            "precision": precision,
            "raw_predicted_ms": raw,
            "calibration": cal,
            "kernels": len(layers),
            **(extra or {}),
        },
        host={"hardware": hw.name, "sm": hw.sm},
        layers=sorted(layers, key=lambda r: -r["predicted_ms"]),
    )
