"""Target protocol (ARCHITECTURE.md): where a model is built and measured."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from squeeze.io.artifacts import OnnxArtifact


@dataclass(frozen=True)
class QuantRules:
    """What INT8 the target's runtime accepts (used by the quantization pass)."""

    signed_activations: bool = True
    symmetric_activations: bool = True
    symmetric_weights: bool = True
    per_channel_weights: bool = True
    weight_channel_axis: int = 0
    zero_point_must_be_zero: bool = True
    notes: str = ""
    # Largest |integer| a quantized weight may take. 127 = narrow-range int8 (TensorRT). Less for
    # runtimes whose int8 kernels saturate (ORT's u8s8 on x86 without VNNI: 63, i.e. 7-bit weights).
    weight_max_int: int = 127
    min_opset: int = 13  # per-channel QuantizeLinear/DequantizeLinear (axis) needs opset 13
    quantized_bias: bool = False  # int32 DequantizeLinear for biases (TensorRT cannot parse it)
    onnx_domains: tuple[str, ...] = ("", "ai.onnx")  # op domains the runtime runs (no custom ops)
    backend: str = "modelopt"  # the quantization backend `auto` picks for this target (passes/quantize.py)

    @property
    def activation_dtype(self) -> str:
        return "int8" if self.signed_activations else "uint8"


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str  # why not, or what will be used
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfileSpec:
    """How to measure. Defaults suit small edge models on a shared CPU; raise iterations for tight p99."""

    batch_size: int = 1
    warmup: int = 20
    iterations: int = 200
    threads: int | None = None  # intra-op threads; None = every core this process may use
    seed: int = 0

    def __post_init__(self) -> None:
        from squeeze.errors import UserInputError

        if self.batch_size < 1 or self.warmup < 0 or self.iterations < 2 or (self.threads is not None and self.threads < 1):
            raise UserInputError("profile needs batch >= 1, warmup >= 0, iterations >= 2 and threads >= 1")


@dataclass
class LatencyStats:
    """Measured latency of one model on one runtime; all times in milliseconds."""

    target: str
    runtime: str
    runtime_version: str
    providers: list[str]
    batch_size: int
    input_shape: list[int]
    warmup: int
    iterations: int
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    cov: float  # coefficient of variation, std / mean
    throughput_per_s: float  # samples per second at this batch size, from the mean
    measured: bool = True  # False only for offline predictions (then options["label"] == "predicted")
    options: dict[str, Any] = field(default_factory=dict)  # exact session options / command used
    host: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)  # per-layer times (trtexec profile, or predicted), slowest first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Target(Protocol):
    name: str
    description: str
    quant_rules: QuantRules
    channel_multiple: int  # width alignment that pays on this hardware

    def available(self) -> Availability: ...

    def build(self, onnx: OnnxArtifact, out: Path) -> OnnxArtifact | Path: ...  # engine targets: the engine (manifest beside it)

    def profile(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats: ...

    # Optional (tensorrt, jetson-*): an offline estimate for when the target cannot measure here,
    # returned with measured=False and options["label"] == "predicted". Callers (search, prune):
    #     stats = target.predict(onnx_art, spec) if not target.available().available else target.profile(onnx_art, spec)
    # def predict(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats: ...


def can_predict(target: Target) -> bool:
    return callable(getattr(target, "predict", None))
