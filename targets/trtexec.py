"""trtexec, as the tensorrt and Jetson targets both drive it: versions, build/profile options and their
version-correct command lines (10.x vs 11.x, deploy.md §0.3), parsers of its outputs, and one build/profile
session on a host (this machine or a device over SSH). Nothing here imports tensorrt."""

from __future__ import annotations

import json
import re
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from squeeze.io.artifacts import InputSpec
from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.targets.remote.transport import DiskFullError, RemoteCommandError
from squeeze.targets.base import LatencyStats, ProfileSpec, QuantRules

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
