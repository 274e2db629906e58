"""`tensorrt`: TensorRT engines built and profiled on a local NVIDIA GPU (extra: squeeze[tensorrt]).

Two ways to each job, picked by what the machine has:
- build: trtexec when present (same command the Jetson runner uses on a device), else the
  TensorRT Python API (strongly typed network, QDQ INT8 from the graph, FP16 flags only on 10.x,
  timing cache, an optimization profile for a dynamic batch);
- profile: trtexec with version-correct flags (10.x vs 11.x, deploy.md §0.3) and its
  `--exportTimes` / `--exportProfile` JSON, else the Python runtime timed with CUDA events.

The trtexec parts (command lines, output parsers, engine manifests, the build/profile session)
are shared with the Jetson target, which runs the same session over SSH.

Nothing here imports tensorrt at module load: it is optional and needs a GPU.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from squeeze.io.artifacts import InputSpec, OnnxArtifact
from squeeze.errors import TargetUnavailableError
from squeeze.io.fsutil import sha256_file, write_bytes_atomic, write_json_atomic
from squeeze.targets.remote.transport import LocalHost, quote
from squeeze.targets.base import REMOTE_OPTIONS, Availability, EngineArtifact, LatencyStats, ProfileSpec, TargetBase, TargetOptions

from squeeze.targets.engine import (engine_input_spec, manifest_path, new_manifest, read_manifest,  # noqa: F401
                                    refuse_mismatch)
from squeeze.targets.trtexec import (DEFAULT_TRTEXEC, TENSORRT_QUANT_RULES, EngineBuildOptions, TensorRTError, TrtexecSession,
                                     TrtexecTiming, TrtVersion, _short, check_precision, onnx_has_qdq, profile_shapes, stats_from_trtexec,
                                     trtexec_build_args)

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")  # what `squeeze build` writes and `profile` takes as is


# ----------------------------------------------------------------------------------------------
# TensorRT Python API (used when trtexec is absent)


def _trt():
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError for a missing libnvinfer
        raise TargetUnavailableError(f"the tensorrt Python package cannot be imported ({exc}); pip install 'squeeze[tensorrt]'") from None
    return trt


def build_with_python_api(onnx: OnnxArtifact, options: EngineBuildOptions, batch: int, timing_cache: Path | None) -> tuple[bytes, list[str]]:
    """Serialized engine + the builder's log lines. Raises TensorRTError with the parser's errors."""
    trt = _trt()
    version = TrtVersion.parse(trt.__version__)
    check_precision(version, options.precision, onnx_has_qdq(onnx.path))

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity <= trt.ILogger.Severity.WARNING:
                self.lines.append(f"[{severity.name}] {msg}")

    logger = CapturingLogger()
    builder = trt.Builder(logger)
    flags = 0
    if options.precision == "strongly-typed":  # 10.x opt-in; 11.x accepts it and is always strongly typed
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx.path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise TensorRTError("TensorRT's ONNX parser rejected the model: " + " | ".join(_short(errors or logger.lines)))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    config.builder_optimization_level = options.optimization_level
    if options.precision in ("fp16", "best", "int8"):  # weak typing, 10.x only (check_precision refused 11.x)
        config.set_flag(trt.BuilderFlag.FP16)
    if options.precision in ("int8", "best"):
        config.set_flag(trt.BuilderFlag.INT8)
    shapes = profile_shapes(onnx.input_spec, batch, options.max_batch)
    if shapes:
        profile = builder.create_optimization_profile()
        profile.set_shape(onnx.input_spec.name, min=shapes["min"], opt=shapes["opt"], max=shapes["max"])
        config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError("TensorRT could not build an engine: " + " | ".join(_short(logger.lines)))
    if timing_cache:
        write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan), logger.lines


def profile_with_python_api(engine_bytes: bytes, spec_in: InputSpec, spec: ProfileSpec) -> tuple[list[float], dict[str, Any]]:
    """Per-inference GPU times from CUDA events around execute_async_v3 (torch allocates and times on the GPU)."""
    trt = _trt()
    import torch

    if not torch.cuda.is_available():
        raise TargetUnavailableError("timing without trtexec uses torch.cuda events, and this torch has no CUDA")
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise TensorRTError("TensorRT could not deserialize the engine (built by another TensorRT version or GPU?)")
    context = engine.create_execution_context()
    buffers = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT and spec_in.dynamic_batch:
            context.set_input_shape(name, (spec.batch_size, *spec_in.shape[1:]))
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = torch.from_numpy(__import__("numpy").empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
        tensor = torch.randn(tuple(context.get_tensor_shape(name)), device="cuda").to(dtype)
        context.set_tensor_address(name, tensor.data_ptr())
        buffers.append(tensor)
    stream = torch.cuda.Stream()
    for _ in range(spec.warmup):
        context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    times = []
    for _ in range(spec.iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        context.execute_async_v3(stream.cuda_stream)
        end.record(stream)
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times, {"timer": "torch.cuda.Event pairs around IExecutionContext.execute_async_v3 on one stream",
                   "gpu": torch.cuda.get_device_name(), "sm": ".".join(map(str, torch.cuda.get_device_capability()))}


# ----------------------------------------------------------------------------------------------
# The local target


def find_trtexec() -> str | None:
    found = shutil.which("trtexec")
    if found:
        return found
    return DEFAULT_TRTEXEC if Path(DEFAULT_TRTEXEC).is_file() else None


def local_gpu() -> dict[str, str] | None:
    """Name and compute capability of GPU 0 from nvidia-smi, or None."""
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out or "," not in out[0]:
        return None
    name, sm = (p.strip() for p in out[0].rsplit(",", 1))
    return {"gpu": name, "sm": sm}


def tensorrt_environment() -> list[str]:
    """What is missing on this machine for TensorRT, as short phrases."""
    missing = []
    if importlib.util.find_spec("tensorrt") is None and find_trtexec() is None:
        missing.append("neither the tensorrt Python package (pip install 'squeeze[tensorrt]', from NVIDIA's index) nor trtexec "
                       f"(PATH or {DEFAULT_TRTEXEC}) is installed")
    if shutil.which("nvidia-smi") is None:
        missing.append("no NVIDIA driver (nvidia-smi not found)")
    return missing


@dataclass(frozen=True)
class TensorRTConfig:
    build: EngineBuildOptions = field(default_factory=EngineBuildOptions)
    timing: TrtexecTiming = field(default_factory=TrtexecTiming)
    trtexec: str | None = None  # None: PATH, then /usr/src/tensorrt/bin/trtexec
    timing_cache_dir: str = "~/.cache/squeeze"
    calibration_file: str | None = None  # None: predictor's default


class TensorRTTarget(TargetBase):
    name = "tensorrt"
    description = "TensorRT engine on a local NVIDIA GPU (trtexec or the TensorRT Python API)"
    quant_rules = TENSORRT_QUANT_RULES
    channel_multiple = 16  # INT8 tensor-core kernels want multiples of 16 (32 on some tactics)

    engine_suffixes = ENGINE_SUFFIXES

    def __init__(self, config: TensorRTConfig | None = None):
        self.config = config or TensorRTConfig()

    @classmethod
    def from_options(cls, name: str, options: TargetOptions) -> TensorRTTarget:
        options.refuse(name, REMOTE_OPTIONS, "target tensorrt is this machine's GPU; for a device use --target jetson-... with --device")
        return cls(TensorRTConfig(build=EngineBuildOptions(precision=options.precision or "strongly-typed"), trtexec=options.trtexec))

    def _trtexec(self) -> str | None:
        return self.config.trtexec or find_trtexec()

    def available(self) -> Availability:
        missing = tensorrt_environment()
        if missing:
            return Availability(False, "; ".join(missing), {"would_use": self.plan_text()})
        tool = self._trtexec()
        return Availability(True, f"building with {'trtexec ' + tool if tool else 'the TensorRT Python API'} on {local_gpu() or 'GPU 0'}")

    def plan_text(self, onnx: OnnxArtifact | None = None, engine: str = "model.engine", batch: int = 1) -> str:
        """The trtexec build command this target would run (10.x form), for messages where it cannot run."""
        spec = onnx.input_spec if onnx is not None else InputSpec((1, 3, 224, 224))
        args = trtexec_build_args(TrtVersion(10, 3), str(onnx.path) if onnx else "model.onnx", engine, spec, self.config.build, batch,
                                  "timing.cache", None)
        return f"{self._trtexec() or 'trtexec'} {quote(args)} (TensorRT 10.x form; or the TensorRT Python API builder)"

    def facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = {**(local_gpu() or {})}
        tool = self._trtexec()
        if tool:
            facts["tensorrt_version"] = str(TrtexecSession(LocalHost(), tool, tempfile.gettempdir()).probe())
        elif importlib.util.find_spec("tensorrt") is not None:
            facts["tensorrt_version"] = str(TrtVersion.parse(_trt().__version__))
        return facts

    def _refuse_here(self, what: str, onnx: OnnxArtifact | None = None, engine: str = "model.engine", batch: int = 1) -> None:
        availability = self.available()
        if not availability.available:
            raise TargetUnavailableError(
                f"cannot {what} with TensorRT here: {availability.reason}. On a machine with an NVIDIA GPU and TensorRT squeeze "
                f"would run: {self.plan_text(onnx, engine, batch)}")

    def build(self, onnx: OnnxArtifact, out: Path, batch: int = 1) -> EngineArtifact:
        """Build `out` (engine) + its manifest, atomically."""
        self._refuse_here("build an engine", onnx, str(out), batch)
        options = self.config.build
        cache = Path(self.config.timing_cache_dir).expanduser()
        cache.mkdir(parents=True, exist_ok=True)
        facts = self.facts()
        tool = self._trtexec()
        with tempfile.TemporaryDirectory(prefix="squeeze-trt-", dir=out.resolve().parent) as tmp:
            staged = Path(tmp) / out.name
            cache_file = cache / f"timing-{facts.get('gpu', 'gpu').replace(' ', '_')}-trt{facts.get('tensorrt_version')}.cache"
            if tool:
                session = TrtexecSession(LocalHost(), tool, tmp)
                version = session.probe()
                check_precision(version, options.precision, onnx_has_qdq(onnx.path))
                run = session.build(str(onnx.path), str(staged), onnx.input_spec, options, batch, str(cache_file))
                command = quote(run.argv)
            else:
                plan, _ = build_with_python_api(onnx, options, batch, cache_file)
                staged.write_bytes(plan)
                command = f"TensorRT Python API: strongly typed={options.precision == 'strongly-typed'}, {asdict(options)}"
            manifest = new_manifest(staged, onnx, facts, self.name, options, batch, command)
            manifest["engine"] = out.name
            staged.replace(out)
            write_json_atomic(manifest_path(out), manifest)
        return EngineArtifact(out, sha256_file(out), manifest, self.name)

    def profile(self, art: OnnxArtifact | Path, spec: ProfileSpec) -> LatencyStats:
        """Profile an ONNX (built to a temporary engine first) or an engine with a manifest."""
        self._refuse_here("measure latency", art if isinstance(art, OnnxArtifact) else None, batch=spec.batch_size)
        facts = self.facts()
        with tempfile.TemporaryDirectory(prefix="squeeze-trt-") as tmp:
            if isinstance(art, OnnxArtifact):
                engine = self.build(art, Path(tmp) / "model.engine", batch=spec.batch_size).path
                input_spec = art.input_spec
            else:
                engine = Path(art)
                manifest = read_manifest(engine)
                refuse_mismatch(engine, manifest, facts,
                                f"squeeze build {manifest['onnx']} --target tensorrt --out {engine}")
                input_spec = engine_input_spec(manifest, engine, spec.batch_size)
            shape = [spec.batch_size, *input_spec.shape[1:]]
            tool = self._trtexec()
            if tool:
                session = TrtexecSession(LocalHost(), tool, tmp)
                version = session.probe()
                run, times, prof = session.profile(str(engine), input_spec, spec.batch_size, spec.iterations, self.config.timing)
                stats = stats_from_trtexec(self.name, version, Path(times).read_text(), Path(prof).read_text(), run.log, spec,
                                           shape, self.config.timing, {"profile_command": quote(run.argv)}, {**facts})
                if isinstance(art, OnnxArtifact):
                    self._record(art, spec, facts, stats)
                return stats
            times_ms, extra = profile_with_python_api(engine.read_bytes(), input_spec, spec)
        import numpy as np

        from squeeze.targets.ort_runtime import summarize

        stats = summarize(np.asarray(times_ms))
        return LatencyStats(target=self.name, runtime="tensorrt", runtime_version=facts.get("tensorrt_version", "?"),
                            providers=[f"TensorRT {facts.get('tensorrt_version')} (Python runtime)", extra["gpu"]],
                            batch_size=spec.batch_size, input_shape=shape, warmup=spec.warmup, iterations=spec.iterations, threads=1,
                            throughput_per_s=spec.batch_size * 1000.0 / stats["mean_ms"],
                            options={**extra, "percentiles": "numpy linear interpolation"}, host=facts, **stats)

    def _record(self, art: OnnxArtifact, spec: ProfileSpec, facts: dict[str, Any], stats: LatencyStats) -> None:
        """Store measured vs raw-predicted for a known GPU, so later predictions on it are calibrated."""
        from squeeze.targets.predictor import dgpu_profile, raw_prediction_ms, record_measurement

        hardware = dgpu_profile(facts.get("gpu") or "")
        if hardware is not None:
            raw = raw_prediction_ms(art, spec.batch_size, hardware, self.config.build.precision)
            record_measurement({"hardware": hardware.name, "precision": self.config.build.precision}, art.sha256, spec.batch_size, raw,
                               stats.p50_ms, {"tensorrt": stats.runtime_version}, self.config.calibration_file)

    def can_predict(self) -> bool:
        """Only for a GPU the predictor knows: an estimate for an unknown one would be a guess."""
        from squeeze.targets.predictor import dgpu_profile

        gpu = local_gpu()
        return bool(gpu and dgpu_profile(gpu["gpu"]))

    def predict(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats:
        from squeeze.targets.predictor import dgpu_profile, predict_stats

        gpu = local_gpu()
        hardware = dgpu_profile(gpu["gpu"]) if gpu else None
        if hardware is None:
            raise TargetUnavailableError(
                "cannot predict TensorRT latency for an unknown GPU" + (f" ({gpu['gpu']})" if gpu else " (no NVIDIA GPU here)") +
                ": predict for a Jetson module instead (--target jetson-orin-nano) or measure on the GPU")
        return predict_stats(self.name, art, spec, hardware, self.config.build.precision, self.config.calibration_file,
                             extra={"measure_with": self.plan_text(art, batch=spec.batch_size)})
