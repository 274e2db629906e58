"""`cpu`: ONNX Runtime's CPU execution provider, the embedded default that works on every machine."""

from __future__ import annotations

from pathlib import Path

from squeeze.artifacts import OnnxArtifact
from squeeze.targets.base import Availability, LatencyStats, ProfileSpec, QuantRules
from squeeze.targets.ort_runtime import create_session, layer_profile, profile_session, usable_cores

PROVIDER = "CPUExecutionProvider"


class CpuTarget:
    name = "cpu"
    description = "ONNX Runtime CPU execution provider on this machine"
    # ORT's CPU kernels take signed symmetric INT8 QDQ; the same rules as TensorRT keep one export path.
    quant_rules = QuantRules(notes="ORT CPU EP: QDQ with int8 weights per channel (axis 0), int8 activations")
    channel_multiple = 8  # AVX2/AVX-512 kernels work in blocks of 8 floats

    def available(self) -> Availability:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return Availability(False, f"onnxruntime is not importable ({exc}); reinstall squeeze")
        if PROVIDER not in ort.get_available_providers():
            return Availability(False, f"this onnxruntime build has no {PROVIDER}")
        return Availability(True, f"onnxruntime {ort.__version__}, {usable_cores()} usable cores",
                            {"runtime_version": ort.__version__, "cores": usable_cores()})

    def build(self, onnx: OnnxArtifact, out: Path) -> OnnxArtifact:
        """ORT compiles at session creation; building here checks the runtime accepts the model."""
        create_session(str(onnx.path), [PROVIDER], threads=1)
        return onnx

    def profile(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats:
        return profile_session(self.name, art, spec, [PROVIDER])

    def layer_profile(self, art: OnnxArtifact, spec: ProfileSpec) -> list[dict]:
        """Per-node mean time from ONNX Runtime's profiler (for the report's per-layer table)."""
        return layer_profile(self.name, art, spec, [PROVIDER])
