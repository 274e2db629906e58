"""`jetson-*`: NVIDIA Jetson Orin modules, profiled remotely over SSH with trtexec.

The device profiles are facts used for offline prediction and for the quantization rules; the
remote runner (copy ONNX, trtexec on the device, copy back engine + timings) lands with the
TensorRT/Jetson issue. Until then the targets say why they cannot run and never return numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from squeeze.artifacts import OnnxArtifact
from squeeze.errors import TargetUnavailableError
from squeeze.targets.base import Availability, LatencyStats, ProfileSpec
from squeeze.targets.tensorrt import NOT_YET, TENSORRT_QUANT_RULES


@dataclass(frozen=True)
class JetsonProfile:
    """Published figures (deploy.md §2.2; peak INT8 is sparse TOPS, dense is about half)."""

    module: str
    sm: str
    peak_int8_sparse_tops: float
    memory_bandwidth_gbs: float
    dla_cores: int
    jetpack_tensorrt: str


JETSON_PROFILES = {
    "jetson-orin-nano": JetsonProfile("Orin Nano 8GB", "8.7", 40.0, 68.0, 0, "JetPack 6.x: TensorRT 10.3"),
    "jetson-orin-nx": JetsonProfile("Orin NX 16GB", "8.7", 100.0, 102.4, 2, "JetPack 6.x: TensorRT 10.3"),
    "jetson-agx-orin": JetsonProfile("AGX Orin 64GB", "8.7", 275.0, 204.8, 2, "JetPack 6.x: TensorRT 10.3; JetPack 7.2.2+: TensorRT 11.4"),
}


class JetsonTarget:
    quant_rules = TENSORRT_QUANT_RULES
    channel_multiple = 16

    def __init__(self, name: str):
        self.name = name
        self.device = JETSON_PROFILES[name]
        self.description = f"NVIDIA Jetson {self.device.module} (SM {self.device.sm}) over SSH"

    def available(self) -> Availability:
        return Availability(
            False,
            f"no Jetson device configured and {NOT_YET}",
            {"module": self.device.module, "sm": self.device.sm, "peak_int8_sparse_tops": self.device.peak_int8_sparse_tops},
        )

    def build(self, onnx: OnnxArtifact, out: Path) -> OnnxArtifact:
        raise TargetUnavailableError(f"target {self.name} is unavailable here: {self.available().reason}")

    def profile(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats:
        raise TargetUnavailableError(f"target {self.name} is unavailable here: {self.available().reason}")
