"""`tensorrt`: TensorRT engines built and profiled on a local NVIDIA GPU (extra: squeeze[tensorrt]).

Engine build and trtexec profiling land with the TensorRT/Jetson issue; until then this target
reports honestly why it cannot be used, and never returns numbers.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from squeeze.artifacts import OnnxArtifact
from squeeze.errors import TargetUnavailableError
from squeeze.targets.base import Availability, LatencyStats, ProfileSpec, QuantRules

# TensorRT explicit quantization: signed INT8, zero-point 0, per-channel weights on axis 0 (deploy.md §1.2).
TENSORRT_QUANT_RULES = QuantRules(notes="TensorRT explicit Q/DQ: signed symmetric int8, zero point 0, no int32 bias DQ")
NOT_YET = "engine build and profiling are not implemented in this version of squeeze (TensorRT/Jetson issue)"


def tensorrt_environment() -> list[str]:
    """What is missing on this machine for TensorRT, as short phrases."""
    missing = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("the tensorrt Python package is not installed (pip install 'squeeze[tensorrt]', needs NVIDIA's package index)")
    if shutil.which("trtexec") is None:
        missing.append("trtexec is not on PATH")
    if shutil.which("nvidia-smi") is None:
        missing.append("no NVIDIA driver (nvidia-smi not found)")
    return missing


class TensorRTTarget:
    name = "tensorrt"
    description = "TensorRT engine on a local NVIDIA GPU"
    quant_rules = TENSORRT_QUANT_RULES
    channel_multiple = 16  # INT8 tensor-core kernels want multiples of 16 (32 on some tactics)

    def available(self) -> Availability:
        return Availability(False, "; ".join([*tensorrt_environment(), NOT_YET]))

    def build(self, onnx: OnnxArtifact, out: Path) -> OnnxArtifact:
        raise TargetUnavailableError(f"target tensorrt is unavailable here: {self.available().reason}")

    def profile(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats:
        raise TargetUnavailableError(f"target tensorrt is unavailable here: {self.available().reason}")
