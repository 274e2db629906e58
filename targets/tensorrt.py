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

import datetime as dt
import importlib.util
import json
import re
import shlex
import shutil
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from squeeze import __version__
from squeeze.io.artifacts import InputSpec, OnnxArtifact
from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.io.fsutil import sha256_file, write_bytes_atomic, write_json_atomic
from squeeze.targets.remote.transport import DiskFullError, LocalHost, RemoteCommandError, quote
from squeeze.targets.base import REMOTE_OPTIONS, Availability, EngineArtifact, LatencyStats, ProfileSpec, QuantRules, TargetBase, TargetOptions

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")  # what `squeeze build` writes and `profile` takes as is

# TensorRT explicit quantization: signed INT8, zero-point 0, per-channel weights on axis 0 (deploy.md §1.2).
TENSORRT_QUANT_RULES = QuantRules(notes="TensorRT explicit Q/DQ: signed symmetric int8, zero point 0, no int32 bias DQ")
DEFAULT_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # JetPack and NVIDIA's containers put it here, not on PATH
PRECISIONS = ("strongly-typed", "fp16", "int8", "best")
MANIFEST_FORMAT = "squeeze-engine-manifest"
MISSING_MARK = "__squeeze_no_trtexec__"


class TensorRTError(UserInputError):
    """TensorRT refused the model or the request (parser errors, a precision flag the version removed). Exit 2."""


class TrtexecMissingError(TargetUnavailableError):
    pass


class EngineMismatchError(UserInputError):
    pass


# ----------------------------------------------------------------------------------------------
# Versions


@dataclass(frozen=True, order=True)
class TrtVersion:
    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @classmethod
    def parse(cls, text: str) -> TrtVersion:
        parts = [int(p) for p in re.findall(r"\d+", text)[:3]]
        if len(parts) < 2:
            raise ValueError(f"not a TensorRT version: {text!r}")
        return cls(*parts[:3])


def version_from_banner(text: str) -> TrtVersion | None:
    """`&&&& RUNNING TensorRT.trtexec [TensorRT v100300]` -> 10.3.0 (8.x encoded v8601 -> 8.6.1)."""
    match = re.search(r"\[TensorRT v(\d+)\]", text)
    if match:
        code = int(match.group(1))
        if code >= 100000:  # 10.x and later: major*10000 + minor*100 + patch
            return TrtVersion(code // 10000, code // 100 % 100, code % 100)
        return TrtVersion(code // 1000, code // 100 % 10, code % 100)  # 8.x: major*1000 + minor*100 + patch
    match = re.search(r"TensorRT version: (\d+\.\d+(?:\.\d+)?)", text)
    return TrtVersion.parse(match.group(1)) if match else None


# ----------------------------------------------------------------------------------------------
# Build / measurement options


@dataclass(frozen=True)
class EngineBuildOptions:
    """How to build. 'strongly-typed' (default) takes every precision from the ONNX: FP32 stays FP32/TF32,
    Q/DQ gives INT8, FP16 tensors give FP16 - the only mode TensorRT 11 has."""

    precision: str = "strongly-typed"
    workspace_mb: int = 1024  # builder scratch; Jetson shares memory with the CPU
    optimization_level: int = 3  # 0..5
    max_batch: int = 32  # top of the optimization profile for a dynamic batch

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserInputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 0 <= self.optimization_level <= 5:
            raise UserInputError("--optimization-level must be 0..5")
        if self.workspace_mb < 16 or self.max_batch < 1:
            raise UserInputError("--workspace-mb must be >= 16 and the max batch >= 1")


@dataclass(frozen=True)
class TrtexecTiming:
    """trtexec measures by time: warm-up in ms, then at least `duration_s` seconds AND the spec's iterations."""

    warmup_ms: int = 2000  # engine load and clock ramp (deploy.md §6.2)
    duration_s: int = 10

    def __post_init__(self) -> None:
        if self.warmup_ms < 0 or self.duration_s < 0:
            raise UserInputError("trtexec warm-up and duration must be >= 0")


def check_precision(version: TrtVersion, precision: str, has_qdq: bool) -> None:
    if precision != "strongly-typed" and version.major >= 11:
        raise TensorRTError(
            f"TensorRT {version} removed the --{precision} builder flag: every network is strongly typed. "
            "Use --precision strongly-typed with an ONNX that carries its precision (Q/DQ for INT8: squeeze quantize; "
            "FP16: python -m modelopt.onnx.autocast --onnx_path m.onnx)")
    if precision == "int8" and not has_qdq:
        raise TensorRTError("--precision int8 needs Q/DQ nodes in the ONNX (squeeze does no TensorRT calibration); "
                            "quantize the model first, or build it strongly typed")


def _shape_arg(name: str, shape: list[int] | tuple[int, ...]) -> str:
    quoted = f"'{name}'" if re.search(r"[:,\s']", name) else name  # trtexec's quoting for odd tensor names
    return f"{quoted}:{'x'.join(str(d) for d in shape)}"


def profile_shapes(spec: InputSpec, batch: int, max_batch: int) -> dict[str, list[int]] | None:
    """min/opt/max for a dynamic batch (None for a static model)."""
    if not spec.dynamic_batch:
        return None
    rest = list(spec.shape[1:])
    return {"min": [1, *rest], "opt": [batch, *rest], "max": [max(batch, max_batch), *rest]}


def trtexec_build_args(version: TrtVersion, onnx: str, engine: str, spec: InputSpec, options: EngineBuildOptions,
                       batch: int, timing_cache: str | None, layer_info: str | None) -> list[str]:
    """Build-only trtexec arguments (deploy.md §1.4); precision flags exist only before 11.0."""
    args = [f"--onnx={onnx}", f"--saveEngine={engine}", "--skipInference",
            f"--memPoolSize=workspace:{options.workspace_mb}M", f"--builderOptimizationLevel={options.optimization_level}"]
    if version.major < 11:
        args += {"strongly-typed": ["--stronglyTyped"], "fp16": ["--fp16"], "int8": ["--int8", "--fp16"], "best": ["--best"]}[options.precision]
    # 11.x: strongly typed always; --stronglyTyped is a no-op and --fp16/--int8/--best are "Unknown option".
    shapes = profile_shapes(spec, batch, options.max_batch)
    if shapes:
        args += [f"--{k}Shapes={_shape_arg(spec.name, v)}" for k, v in shapes.items()]
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    if layer_info:
        args += ["--profilingVerbosity=detailed", f"--exportLayerInfo={layer_info}"]
    return args


def trtexec_profile_args(version: TrtVersion, engine: str, spec: InputSpec, batch: int, iterations: int, timing: TrtexecTiming,
                         times_json: str, profile_json: str) -> list[str]:
    """Latency measurement with the SAME semantics on 10.x and 11.x: CUDA graph on, no H2D/D2H, spin-wait,
    per-layer profile in a separate run so it does not perturb the timing run (deploy.md §0.3)."""
    args = [f"--loadEngine={engine}", f"--warmUp={timing.warmup_ms}", f"--duration={timing.duration_s}", f"--iterations={iterations}",
            "--avgRuns=10", "--percentile=50,90,99", f"--exportTimes={times_json}", "--dumpProfile", f"--exportProfile={profile_json}"]
    if spec.dynamic_batch:
        args.append(f"--shapes={_shape_arg(spec.name, [batch, *spec.shape[1:]])}")
    if version.major < 11:
        args += ["--useCudaGraph", "--noDataTransfers", "--useSpinWait", "--separateProfileRun"]  # 11.x defaults, explicit on 10.x
    return args


MEASUREMENT_MODE = {"cuda_graph": True, "data_transfers": False, "spin_wait": True, "separate_profile_run": True,
                    "statistic": "GPU compute time per inference (computeMs of trtexec --exportTimes)"}


# ----------------------------------------------------------------------------------------------
# Parsing trtexec outputs (formats: deploy.md §1.4, samples/common/sampleReporting.cpp)


def nearest_rank(sorted_values: list[float], pct: float) -> float:
    """trtexec's percentile rule, so our p90 equals the one it prints."""
    import numpy as np

    n = len(sorted_values)
    exclude = int((np.float32(1) - np.float32(pct) / np.float32(100)) * np.float32(n))  # float32, as trtexec computes it
    return sorted_values[max(n - 1 - exclude, 0)]


def summarize_trtexec(values: list[float]) -> dict[str, float]:
    xs = sorted(values)
    mean = statistics.fmean(xs)
    std = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return {"p50_ms": statistics.median(xs), "p90_ms": nearest_rank(xs, 90), "p99_ms": nearest_rank(xs, 99), "mean_ms": mean,
            "std_ms": std, "min_ms": xs[0], "max_ms": xs[-1], "cov": std / mean if mean > 0 else 0.0}


def parse_export_times(text: str, warmup_ms: float = 0.0) -> dict[str, Any]:
    """`--exportTimes` JSON -> per-inference GPU compute and host latency lists (warm-ups dropped).

    Newer trtexec writes only post-warm-up iterations; older versions wrote the whole trace, so
    entries that started computing during the warm-up window are dropped (a no-op on new files).
    """
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TensorRTError(f"trtexec --exportTimes output is not JSON: {exc}") from None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "computeMs" in r for r in rows):
        raise TensorRTError("trtexec --exportTimes output has no inference records (expected a list of {computeMs, latencyMs, ...})")
    kept = [r for r in rows if r.get("startComputeMs", warmup_ms) >= warmup_ms] or rows
    return {"compute_ms": [float(r["computeMs"]) for r in kept],
            "latency_ms": [float(r.get("latencyMs", r.get("endToEndMs", r["computeMs"]))) for r in kept],
            "h2d_ms": [float(r.get("h2dMs", 0.0)) for r in kept], "d2h_ms": [float(r.get("d2hMs", 0.0)) for r in kept],
            "records": len(rows), "dropped_warmup": len(rows) - len(kept)}


def parse_export_profile(text: str) -> list[dict[str, Any]]:
    """`--exportProfile` JSON -> per-layer rows, slowest first: [{"count": N}, {"name", "timeMs", "averageMs", "medianMs"?, "percentage"}...]."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TensorRTError(f"trtexec --exportProfile output is not JSON: {exc}") from None
    if not isinstance(rows, list):
        raise TensorRTError("trtexec --exportProfile output is not a list")
    count = next((int(r["count"]) for r in rows if isinstance(r, dict) and "count" in r), None)
    layers = [{"name": r["name"], "average_ms": float(r["averageMs"]), "median_ms": float(r["medianMs"]) if "medianMs" in r else None,
               "total_ms": float(r.get("timeMs", 0.0)), "percent": float(r.get("percentage", 0.0)), "runs": count}
              for r in rows if isinstance(r, dict) and "name" in r and "averageMs" in r]
    return sorted(layers, key=lambda r: -r["average_ms"])


_LOG_LINE = re.compile(r"^(?:\[[^\]]*\]\s*)?\[(?P<sev>[VIWEF])\]\s?(?P<msg>.*)$")


def parse_trtexec_log(text: str) -> dict[str, Any]:
    """Version, device, errors/warnings and the performance summary from trtexec's console output."""
    info: dict[str, Any] = {"errors": [], "warnings": [], "summary": {}, "passed": "&&&& PASSED" in text,
                            "failed": "&&&& FAILED" in text}
    version = version_from_banner(text)
    info["tensorrt_version"] = str(version) if version else None
    for raw in text.splitlines():
        match = _LOG_LINE.match(raw.strip())
        msg = match.group("msg").strip() if match else raw.strip()
        sev = match.group("sev") if match else None
        if sev in ("E", "F"):
            info["errors"].append(msg)
        elif sev == "W":
            info["warnings"].append(msg)
        for key, label in (("gpu", "Selected Device: "), ("sm", "Compute Capability: "), ("gpu_memory", "Device Global Memory: ")):
            if msg.startswith(label):
                info[key] = msg[len(label):].strip()
        summary = re.match(r"(Latency|GPU Compute Time|Enqueue Time|H2D Latency|D2H Latency): (min = .*)", msg)
        if summary:
            info["summary"][summary.group(1)] = {k.replace("(", "_").replace("%)", ""): float(v)
                                                  for k, v in re.findall(r"([a-z]+(?:\(\d+(?:\.\d+)?%\))?) = ([0-9.eE+-]+) ms", summary.group(2))}
        if msg.startswith("Throughput: "):
            info["summary"]["throughput_qps"] = float(msg.split()[1])
        if "coefficient of variance" in msg:
            info["unstable"] = msg
    return info


# ----------------------------------------------------------------------------------------------
# Engine manifests


def manifest_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".manifest.json")


def read_manifest(engine: Path) -> dict[str, Any]:
    path = manifest_path(engine)
    if not path.is_file():
        raise EngineMismatchError(f"{engine} has no manifest ({path.name}): squeeze cannot tell which TensorRT version and GPU "
                                  "built it, and engines only run where they were built. Rebuild it with squeeze build")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EngineMismatchError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise EngineMismatchError(f"{path} is not a squeeze engine manifest")
    if manifest.get("engine_sha256") != sha256_file(engine):
        raise EngineMismatchError(f"{engine} does not match its manifest (sha256 differs): it was changed after the build; rebuild it")
    return manifest


ENGINE_FACTS = ("tensorrt_version", "gpu", "sm", "module", "jetpack", "power_mode")


def engine_mismatches(manifest: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """What differs between where the engine was built and where it would run (facts known on both sides only)."""
    out = []
    for key in ENGINE_FACTS:
        built, now = manifest.get(key), here.get(key)
        if isinstance(built, dict):
            built = built.get("name")
        if isinstance(now, dict):
            now = now.get("name")
        if built not in (None, "") and now not in (None, "") and str(built) != str(now):
            out.append(f"{key.replace('_', ' ')} {built} -> {now}")
    return out


def refuse_mismatch(engine: Path, manifest: dict[str, Any], here: dict[str, Any], rebuild: str) -> None:
    diffs = engine_mismatches(manifest, here)
    if diffs:
        raise EngineMismatchError(
            f"refusing to load {engine.name}: it was built for a different target ({'; '.join(diffs)}). A TensorRT engine only runs "
            f"on the TensorRT version and GPU that built it. Rebuild: {rebuild}")


def engine_input_spec(manifest: dict[str, Any], engine: Path, batch: int) -> InputSpec:
    """The engine's input as recorded at build time; refuses a batch outside its optimization profile."""
    shapes = manifest["input"]["shapes"]
    spec = InputSpec(tuple(shapes.get("static") or shapes["opt"]), manifest["input"]["name"], manifest["input"]["dtype"], "static" not in shapes)
    top = shapes["static"][0] if "static" in shapes else shapes["max"][0]
    if (not spec.dynamic_batch and batch != top) or batch > top:
        raise UserInputError(f"{engine.name} was built for batch {'' if 'static' in shapes else 'up to '}{top}; rebuild it "
                             f"(squeeze build --batch-size {batch}) to time batch {batch}")
    return spec


def new_manifest(engine: Path, onnx: OnnxArtifact, facts: dict[str, Any], target: str, options: EngineBuildOptions,
                 batch: int, build_command: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "engine": engine.name,
        "engine_sha256": sha256_file(engine),
        "engine_bytes": engine.stat().st_size,
        "onnx": str(onnx.path),
        "onnx_sha256": onnx.sha256,
        "target": target,
        "tensorrt_version": facts.get("tensorrt_version"),
        "gpu": facts.get("gpu"),
        "sm": facts.get("sm"),
        "module": facts.get("module"),
        "jetpack": facts.get("jetpack"),
        "l4t": facts.get("l4t"),
        "power_mode": facts.get("power_mode"),
        "precision": options.precision,
        "build_options": asdict(options),
        "input": {"name": onnx.input_spec.name, "dtype": onnx.input_spec.dtype,
                  "shapes": profile_shapes(onnx.input_spec, batch, options.max_batch) or {"static": list(onnx.input_spec.shape)}},
        "build_command": build_command,
        "built_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "squeeze_version": __version__,
        **(extra or {}),
    }


# ----------------------------------------------------------------------------------------------
# One trtexec session on a host (this machine or a device over SSH)


def onnx_has_qdq(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def onnx_companion_files(path: Path) -> list[Path]:
    """External-data files an ONNX refers to (they must travel with it)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    names = {entry.value for t in model.graph.initializer for entry in t.external_data if entry.key == "location"}
    return [path.parent / n for n in sorted(names)]


@dataclass
class TrtexecRun:
    argv: list[str]
    log: str
    seconds: float


@dataclass
class TrtexecSession:
    """Drives trtexec on `host` inside `workdir`; every command line is kept for the record."""

    host: Any
    trtexec: str
    workdir: str
    version: TrtVersion | None = None
    runs: list[TrtexecRun] = field(default_factory=list)

    def probe_command(self) -> str:
        """One shell line that prints trtexec's banner, or a marker when it is missing (saves a round trip)."""
        t = shlex.quote(self.trtexec)
        return f"if [ -x {t} ]; then {t} --help 2>&1 | head -3; else echo {MISSING_MARK}; fi"

    def probe(self, output: str | None = None) -> TrtVersion:
        """TensorRT version from trtexec's banner; `output` of probe_command() when the caller already ran it."""
        if output is None:
            output = self.host.run(self.probe_command(), check=False, timeout_s=120, what="trtexec --help").output
        if MISSING_MARK in output:
            raise TrtexecMissingError(
                f"trtexec not found at {self.trtexec} on {self.host}: install TensorRT there (JetPack: sudo apt install "
                f"nvidia-jetpack, or the tensorrt package) or pass --trtexec PATH")
        self.version = version_from_banner(output)
        if self.version is None:
            raise RemoteCommandError(f"{self.trtexec} on {self.host} did not print a TensorRT version banner: "
                                     f"{' | '.join(output.strip().splitlines()[:3])}")
        return self.version

    def _run(self, args: list[str], what: str, timeout_s: float | None = None) -> TrtexecRun:
        argv = [self.trtexec, *args]
        result = self.host.run(argv, check=False, timeout_s=timeout_s, what=what)
        run = TrtexecRun(argv, result.output, result.seconds)
        self.runs.append(run)
        if result.returncode != 0 or "&&&& FAILED" in result.output:
            parsed = parse_trtexec_log(result.output)
            free = self.host.free_bytes(self.workdir)
            # trtexec only says "Cannot save engine file"; an (almost) empty disk after the failure says why
            if "No space left on device" in result.output or (free is not None and free < 1 << 20):
                raise DiskFullError(f"disk full on {self.host} during {what} ({free / 1e6 if free is not None else '?'} MB free in "
                                    f"{self.workdir}): {' | '.join(parsed['errors'][-3:]) or 'No space left on device'}")
            errors = parsed["errors"] or result.output.strip().splitlines()[-8:]
            if any("pars" in e.lower() for e in errors) or any("ModelImporter" in e or "onnx" in e.lower() for e in errors):
                raise TensorRTError(f"TensorRT's ONNX parser rejected the model on {self.host}: " + " | ".join(_short(errors)))
            raise TensorRTError(f"trtexec {what} failed on {self.host} (exit {result.returncode}): " + " | ".join(_short(errors)))
        return run

    def build(self, onnx_remote: str, engine_remote: str, spec: InputSpec, options: EngineBuildOptions, batch: int,
              timing_cache: str | None, timeout_s: float | None = None) -> TrtexecRun:
        assert self.version is not None, "probe() first"
        args = trtexec_build_args(self.version, onnx_remote, engine_remote, spec, options, batch, timing_cache,
                                  f"{self.workdir}/layers.json")
        return self._run(args, "engine build", timeout_s)

    def profile(self, engine_remote: str, spec: InputSpec, batch: int, iterations: int, timing: TrtexecTiming,
                timeout_s: float | None = None) -> tuple[TrtexecRun, str, str]:
        assert self.version is not None, "probe() first"
        times, prof = f"{self.workdir}/times.json", f"{self.workdir}/profile.json"
        args = trtexec_profile_args(self.version, engine_remote, spec, batch, iterations, timing, times, prof)
        return self._run(args, "latency measurement", timeout_s), times, prof


def _short(lines: list[str], limit: int = 8) -> list[str]:
    return [line[:300] for line in lines[-limit:]]


def stats_from_trtexec(target: str, version: TrtVersion, times_text: str, profile_text: str | None, log: str, spec: ProfileSpec,
                       input_shape: list[int], timing: TrtexecTiming, options: dict[str, Any], host: dict[str, Any]) -> LatencyStats:
    times = parse_export_times(times_text, timing.warmup_ms)
    gpu = summarize_trtexec(times["compute_ms"])
    parsed = parse_trtexec_log(log)
    layers = parse_export_profile(profile_text) if profile_text else []
    return LatencyStats(
        target=target,
        runtime="tensorrt",
        runtime_version=str(version),
        providers=[f"TensorRT {version} (trtexec)"] + ([parsed["gpu"]] if parsed.get("gpu") else []),
        batch_size=spec.batch_size,
        input_shape=input_shape,
        warmup=0,  # trtexec warms up by time, not by count: see options.warmup_ms
        iterations=len(times["compute_ms"]),
        threads=1,
        throughput_per_s=spec.batch_size * 1000.0 / gpu["mean_ms"],
        options={
            **options,
            "warmup_ms": timing.warmup_ms,
            "min_duration_s": timing.duration_s,
            "min_iterations": spec.iterations,
            "measurement": MEASUREMENT_MODE,
            "percentiles": "nearest rank on the sorted computeMs values (trtexec's own rule)",
            "host_latency_ms": summarize_trtexec(times["latency_ms"]),
            "export_times_records": times["records"],
            "dropped_warmup_records": times["dropped_warmup"],
            "trtexec_summary": parsed["summary"],
            "trtexec_warnings": parsed["warnings"][-10:],
            **({"unstable": parsed["unstable"]} if parsed.get("unstable") else {}),
        },
        host=host,
        layers=layers,
        **gpu,
    )


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

