"""`cuda`: ONNX Runtime's CUDA execution provider on a local NVIDIA GPU (extra: squeeze[gpu])."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from squeeze.io.artifacts import OnnxArtifact
from squeeze.errors import TargetUnavailableError
from squeeze.targets.base import Availability, LatencyStats, ProfileSpec, QuantRules, TargetBase
from squeeze.targets.ort_runtime import create_session, deploy_settings, profile_session

PROVIDER = "CUDAExecutionProvider"


class CudaTarget(TargetBase):
    name = "cuda"
    description = "ONNX Runtime CUDA execution provider on a local NVIDIA GPU"
    quant_rules = QuantRules(notes="CUDA EP runs QDQ models; INT8 speed-ups need the TensorRT target")
    channel_multiple = 8  # tensor-core friendly widths

    def available(self) -> Availability:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return Availability(False, f"onnxruntime is not importable ({exc})")
        if PROVIDER not in ort.get_available_providers():
            return Availability(False, "this onnxruntime build has no CUDA provider: pip install 'squeeze[gpu]' (onnxruntime-gpu) on a machine with an NVIDIA GPU")
        # onnxruntime-gpu lists CUDA even without a GPU or CUDA libraries and then silently runs on CPU:
        # only a real session on the provider proves it works.
        try:
            _probe_session()
        except TargetUnavailableError as exc:
            return Availability(False, str(exc))
        return Availability(True, f"onnxruntime {ort.__version__} with a working CUDA provider")

    def build(self, onnx: OnnxArtifact, out: Path) -> OnnxArtifact:
        create_session(str(onnx.path), [PROVIDER, "CPUExecutionProvider"])
        return onnx

    def profile(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats:
        availability = self.available()
        if not availability.available:
            raise TargetUnavailableError(f"target cuda is unavailable here: {availability.reason}")
        return profile_session(self.name, art, spec, [PROVIDER, "CPUExecutionProvider"])

    def deploy_settings(self, spec: ProfileSpec) -> dict[str, Any]:
        return deploy_settings(spec, [PROVIDER, "CPUExecutionProvider"])


def _probe_session() -> None:
    import tempfile

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.NamedTemporaryFile(suffix=".onnx") as fh:
        onnx.save(model, fh.name)
        try:
            create_session(fh.name, [PROVIDER, "CPUExecutionProvider"])
        except TargetUnavailableError:
            raise TargetUnavailableError("onnxruntime lists the CUDA provider but cannot use it (no GPU, or CUDA/cuDNN libraries missing)") from None
