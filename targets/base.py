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
    ort_cpu_kernels: bool = False  # runs on ORT's CPU EP: every Q/DQ pair must fuse into its QLinear kernels (checked at export)

    @property
    def activation_dtype(self) -> str:
        return "int8" if self.signed_activations else "uint8"


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str  # why not, or what will be used
    details: dict[str, Any] = field(default_factory=dict)


OPTIMIZATION_LEVELS = ("all", "extended", "basic")


@dataclass(frozen=True)
class ProfileSpec:
    """How to measure. Defaults suit small edge models on a shared CPU; raise iterations for tight p99."""

    batch_size: int = 1
    warmup: int = 20
    iterations: int = 200
    threads: int | None = None  # intra-op threads; None = every core this process may use
    seed: int = 0
    spinning: bool | None = None  # ORT's intra-op thread spinning; None = the runtime's default (on)
    optimization: str = "all"  # ORT graph optimisation: all (incl. the NCHWc layout), extended (no layout change), basic
    # A runtime's own knobs, for a target whose runtime is not ONNX Runtime (OpenVINO: NUM_STREAMS, ENABLE_CPU_PINNING):
    # sorted (name, value) pairs, so the spec stays hashable. When set, they replace ORT's spinning/optimization in settings().
    runtime_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        from squeeze.errors import UserInputError

        if self.batch_size < 1 or self.warmup < 0 or self.iterations < 2 or (self.threads is not None and self.threads < 1):
            raise UserInputError("profile needs batch >= 1, warmup >= 0, iterations >= 2 and threads >= 1")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise UserInputError(f"graph optimisation must be one of {', '.join(OPTIMIZATION_LEVELS)}, got {self.optimization!r}")
        if isinstance(self.runtime_options, dict):
            object.__setattr__(self, "runtime_options", tuple(sorted(self.runtime_options.items())))

    def settings(self) -> dict[str, Any]:
        """The runtime settings a deployment must reproduce (what session tuning chooses): threads, and ORT's
        spinning and graph optimisation or, for another runtime, its own options."""
        if self.runtime_options:
            return {"threads": self.threads, **dict(self.runtime_options)}
        return {"threads": self.threads, "spinning": self.spinning, "optimization": self.optimization}

    def with_settings(self, settings: dict[str, Any]) -> ProfileSpec:
        """This spec at a settings record from settings() (the inverse: unknown keys are runtime options)."""
        from dataclasses import replace

        fields = {k: v for k, v in settings.items() if k in ("threads", "spinning", "optimization")}
        options = {k: v for k, v in settings.items() if k not in fields}
        return replace(self, **fields, runtime_options=tuple(sorted(options.items())) if options else self.runtime_options)


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


@dataclass(frozen=True)
class EngineArtifact:
    """A runtime engine built for one device (TensorRT): the file, its hash, and the manifest beside it."""

    path: Path
    sha256: str
    manifest: dict[str, Any]
    target: str
    companions: tuple[Path, ...] = ()  # files the engine needs beside it (OpenVINO's model.bin), hashed into the run manifest

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "target": self.target, "companions": [p.name for p in self.companions]}


@dataclass(frozen=True)
class TargetOptions:
    """Every option a target may take from the command line. Each target's `from_options` takes the
    ones that apply to it and refuses the others by name, so a misplaced flag is one clear error."""

    device: str | None = None  # user@host[:port] of a remote device
    identity_file: str | None = None
    known_hosts: str | None = None
    port: int | None = None
    connect_timeout_s: float | None = None
    power_mode: str | None = None
    remote_python: str | None = None
    precision: str | None = None  # TensorRT build precision
    trtexec: str | None = None
    ssh: Any = None  # a ready SshOptions (the API and tests build it directly)

    def given(self, *names: str) -> list[str]:
        return [n for n in names if getattr(self, n) is not None]

    def refuse(self, target: str, names: tuple[str, ...], why: str) -> None:
        from squeeze.errors import UserInputError

        given = self.given(*names)
        if given:
            flags = ", ".join(sorted("--" + n.replace("_", "-") for n in given if n != "ssh") or ["SSH options"])
            raise UserInputError(f"target {target}: {flags} {'does' if len(given) == 1 else 'do'} not apply: {why}")

    def ssh_options(self) -> Any:
        """SshOptions from the SSH flags (or the ready one), or None when none was given."""
        if self.ssh is not None:
            return self.ssh
        if not self.given("identity_file", "known_hosts", "port", "connect_timeout_s"):
            return None
        from squeeze.targets.remote.transport import SshOptions

        return SshOptions(identity_file=self.identity_file, known_hosts=self.known_hosts, port=self.port,
                          **({"connect_timeout_s": self.connect_timeout_s} if self.connect_timeout_s else {}))


REMOTE_OPTIONS = ("device", "identity_file", "known_hosts", "port", "connect_timeout_s", "power_mode", "remote_python", "ssh")
ENGINE_OPTIONS = ("precision", "trtexec")


@runtime_checkable
class Target(Protocol):
    name: str
    description: str
    quant_rules: QuantRules
    channel_multiple: int  # width alignment that pays on this hardware

    @classmethod
    def from_options(cls, name: str, options: TargetOptions) -> Target: ...

    def available(self) -> Availability: ...

    def preflight(self) -> None: ...  # one cheap reachability check before any work (remote targets connect once)

    def build(self, onnx: OnnxArtifact, out: Path) -> OnnxArtifact | EngineArtifact: ...

    def profile(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats: ...  # measure; raises when it cannot here

    def can_predict(self) -> bool: ...

    def predict(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats: ...  # offline estimate, measured=False

    def latency(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats: ...  # measured if it can, else predicted (labelled)

    def layer_profile(self, art: OnnxArtifact, spec: ProfileSpec) -> list[dict[str, Any]] | None: ...

    def settings_candidates(self, spec: ProfileSpec, scope: str) -> list[ProfileSpec]: ...  # what session tuning times

    def deploy_settings(self, spec: ProfileSpec) -> dict[str, Any] | None: ...  # {"settings", "snippet"} for model.session.json

    def infer(self, art: OnnxArtifact, x: Any) -> Any: ...  # outputs on the target's own runtime, or None (ORT's stand for it)


def channel_block(target: Any, override: int | None = None) -> int:
    """The width block search and prune keep to: the user's --channel-multiple, else the target's."""
    return override or int(getattr(target, "channel_multiple", 1) or 1)


class TargetBase:
    """Defaults for what a target need not implement. A target that measures on this machine needs
    available/profile; one that can estimate offline overrides can_predict/predict."""

    name = "target"
    description = ""
    quant_rules = QuantRules()
    channel_multiple = 1
    engine_suffixes: tuple[str, ...] = ()  # engine files this target builds and can time as they are
    runs_on_ort_cpu = False  # its latency is ONNX Runtime's CPU EP on this machine: the cpu latency model predicts it

    @classmethod
    def from_options(cls, name: str, options: TargetOptions) -> Target:
        options.refuse(name, REMOTE_OPTIONS + ENGINE_OPTIONS, "this target runs on this machine with ONNX Runtime")
        return cls()  # type: ignore[return-value]

    def preflight(self) -> None:
        return None

    def build(self, onnx: OnnxArtifact, out: Path) -> OnnxArtifact | EngineArtifact:
        return onnx

    def can_predict(self) -> bool:
        return False

    def predict(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats:
        from squeeze.errors import TargetUnavailableError

        raise TargetUnavailableError(f"target {self.name} has no offline latency predictor")

    def latency(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats:
        """The one measure-or-predict decision: measure where the target runs here, else a labelled prediction."""
        from squeeze.errors import TargetUnavailableError

        availability = self.available()  # type: ignore[attr-defined]
        if availability.available:
            return self.profile(art, spec)  # type: ignore[attr-defined]
        if not self.can_predict():
            raise TargetUnavailableError(f"target {self.name} can neither measure nor predict here: {availability.reason}")
        stats = self.predict(art, spec)
        stats.measured = False
        stats.options = {**stats.options, "label": "predicted", "why_predicted": availability.reason}
        return stats

    def layer_profile(self, art: OnnxArtifact, spec: ProfileSpec) -> list[dict[str, Any]] | None:
        return None  # no per-layer profiler on this target

    def settings_candidates(self, spec: ProfileSpec, scope: str) -> list[ProfileSpec]:
        """The runtime settings worth timing for a model (`scope`: threads or full); a pinned setting stays pinned.
        A target without runtime knobs has one candidate: the spec itself."""
        return [spec]

    def infer(self, art: OnnxArtifact, x: Any) -> Any:
        """The model's outputs for inputs x on the target's own runtime, for parity on real data; None for a target
        whose runtime is ONNX Runtime (the quantize pass's ORT parity check is then its check) or that cannot run here."""
        return None

    def deploy_settings(self, spec: ProfileSpec) -> dict[str, Any] | None:
        """The runtime settings a deployment must reproduce to get the measured latency ({"settings": ..., "snippet":
        Python that applies them}), written next to the model; None when the artifact carries them (an engine)."""
        return None
