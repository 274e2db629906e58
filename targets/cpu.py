"""`cpu`: ONNX Runtime's CPU execution provider, the embedded default that works on every machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from squeeze.io.artifacts import OnnxArtifact
from squeeze.targets.base import Availability, LatencyStats, ProfileSpec, QuantRules, TargetBase
from squeeze.targets.ort_runtime import (create_session, deploy_settings, host_channel_block, layer_profile, profile_session,
                                         usable_cores)

PROVIDER = "CPUExecutionProvider"

# What ORT's CPU EP runs fastest, measured (README "quantize"): uint8 affine activations let ORT drop
# the ReLU before a QuantizeLinear and fuse DQ->Conv->Q into QLinearConv; signed symmetric int8
# activations (TensorRT's convention) keep the ReLU and ran slower than float. Weights are 7-bit
# (|q| <= 63) because ORT's u8s8 kernels on x86 without VNNI sum pairs of products in int16 and
# saturate with full 8-bit weights (deploy.md §3.3; ORT's quantization docs).
CPU_QUANT_RULES = QuantRules(
    signed_activations=False,
    symmetric_activations=False,
    zero_point_must_be_zero=False,
    weight_max_int=63,
    quantized_bias=True,
    backend="torch-fx",
    ort_cpu_kernels=True,
    notes="ORT CPU EP: uint8 affine activations, int8 symmetric per-channel weights (axis 0) with |q| <= 63",
)


class CpuTarget(TargetBase):
    name = "cpu"
    description = "ONNX Runtime CPU execution provider on this machine"
    quant_rules = CPU_QUANT_RULES
    channel_multiple = host_channel_block()  # search and prune keep widths to whole kernel blocks
    runs_on_ort_cpu = True

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

    def settings_candidates(self, spec: ProfileSpec, scope: str) -> list[ProfileSpec]:
        """Threads 1..cores (unless pinned), and with scope "full" also spinning on/off and the graph optimisation
        with or without ORT's NCHWc layout: small models often run fastest on one thread without spinning."""
        import dataclasses
        import itertools

        threads = [spec.threads] if spec.threads else list(range(1, usable_cores() + 1))
        if scope != "full":
            return [dataclasses.replace(spec, threads=t) for t in threads]
        # spinning only matters with a thread pool (more than one intra-op thread)
        return [dataclasses.replace(spec, threads=t, spinning=sp, optimization=opt)
                for t, opt in itertools.product(threads, ("all", "extended")) for sp in ((None,) if t == 1 else (True, False))]

    def deploy_settings(self, spec: ProfileSpec) -> dict[str, Any]:
        return deploy_settings(spec, [PROVIDER])

    def layer_profile(self, art: OnnxArtifact, spec: ProfileSpec) -> list[dict]:
        """Per-node mean time from ONNX Runtime's profiler (for the report's per-layer table)."""
        return layer_profile(self.name, art, spec, [PROVIDER])
