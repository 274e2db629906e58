"""ONNX Runtime session creation and timing, shared by the ORT-based targets (cpu, cuda)."""

from __future__ import annotations

import os
from pathlib import Path
import platform
import time
from typing import Any

import numpy as np

from squeeze.io.artifacts import OnnxArtifact
from squeeze.errors import TargetUnavailableError
from squeeze.targets.base import LatencyStats, ProfileSpec


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def host_channel_block() -> int:
    """The channel block this CPU's conv kernels work in: 16 with AVX-512 (MLAS's NCHWc and u8s8 kernels, oneDNN's
    nChw16c), else 8. Measured here (bench/channel_alignment.py, 1 thread, batch 32 at 14x14): 8 channels ran no faster
    than 16 in INT8 and 24 took 3x the float time of 16."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: the AVX2/NEON block
        return 8
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return 16 if "avx512f" in flags else 8


OPTIMIZATION = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC"}


def session_options(threads: int | None = None, spinning: bool | None = None, optimization: str = "all") -> Any:
    """The SessionOptions squeeze measures with, and that a deployment reproduces (model.session.json)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION[optimization])
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return options


def deploy_settings(spec: Any, providers: list[str]) -> dict[str, Any]:
    """The session settings a model was measured (and gated) at, as data (model.session.json) and as the
    Python a user's runtime runs to reproduce them."""
    threads = spec.threads or usable_cores()
    entries = {} if spec.spinning is None else {"session.intra_op.allow_spinning": "1" if spec.spinning else "0"}
    settings = {"runtime": "onnxruntime", "providers": providers, "intra_op_num_threads": threads, "inter_op_num_threads": 1,
                "execution_mode": "ORT_SEQUENTIAL", "graph_optimization_level": OPTIMIZATION[spec.optimization],
                "session_config_entries": entries}
    lines = ["import onnxruntime as ort", "", "options = ort.SessionOptions()",
             f"options.intra_op_num_threads = {threads}", "options.inter_op_num_threads = 1",
             "options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL",
             f"options.graph_optimization_level = ort.GraphOptimizationLevel.{OPTIMIZATION[spec.optimization]}",
             *(f"options.add_session_config_entry({k!r}, {v!r})" for k, v in entries.items()),
             f"session = ort.InferenceSession('model.onnx', options, providers={providers!r})"]
    return {"settings": settings, "snippet": "\n".join(lines) + "\n"}


def create_session(path: str, providers: list[Any], threads: int | None = None, spinning: bool | None = None, optimization: str = "all"):
    """An ORT session that fails loudly if the first requested provider is not the one in use.

    ORT silently falls back to CPU when e.g. CUDA libraries are missing (deploy.md §0.7), so the
    providers actually in use are checked after creation, not the available ones before.
    """
    import onnxruntime as ort

    options = session_options(threads, spinning, optimization)
    session = ort.InferenceSession(path, options, providers=providers)
    wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
    used = session.get_providers()
    if not used or used[0] != wanted:
        raise TargetUnavailableError(f"ONNX Runtime did not use {wanted} (session runs on {used}); check the runtime's libraries")
    return session, options


def host_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"machine": platform.machine(), "cpu": cpu, "usable_cores": usable_cores(), "system": platform.system(),
            "python": platform.python_version()}


def summarize(times_ms: np.ndarray) -> dict[str, float]:
    mean = float(times_ms.mean())
    std = float(times_ms.std(ddof=1)) if len(times_ms) > 1 else 0.0
    return {
        "p50_ms": float(np.percentile(times_ms, 50)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "p99_ms": float(np.percentile(times_ms, 99)),
        "mean_ms": mean,
        "std_ms": std,
        "min_ms": float(times_ms.min()),
        "max_ms": float(times_ms.max()),
        "cov": std / mean if mean > 0 else 0.0,
    }


def profile_session(target: str, art: OnnxArtifact, spec: ProfileSpec, providers: list[Any]) -> LatencyStats:
    """Warm up, then time `iterations` single runs with a monotonic clock around session.run."""
    import onnxruntime as ort

    if not art.input_spec.dynamic_batch and spec.batch_size != art.input_spec.shape[0]:
        raise TargetUnavailableError(
            f"{art.path} has a static batch of {art.input_spec.shape[0]}; cannot profile batch {spec.batch_size}"
        )
    session, options = create_session(str(art.path), providers, spec.threads, spec.spinning, spec.optimization)
    shape = [spec.batch_size, *art.input_spec.shape[1:]]
    rng = np.random.default_rng(spec.seed)
    feed = {session.get_inputs()[0].name: rng.standard_normal(shape).astype(art.input_spec.dtype)}
    for _ in range(spec.warmup):
        session.run(None, feed)
    times = np.empty(spec.iterations, dtype=np.float64)
    for i in range(spec.iterations):
        start = time.perf_counter_ns()
        session.run(None, feed)
        times[i] = (time.perf_counter_ns() - start) / 1e6
    stats = summarize(times)
    return LatencyStats(
        target=target,
        runtime="onnxruntime",
        runtime_version=ort.__version__,
        providers=session.get_providers(),
        batch_size=spec.batch_size,
        input_shape=shape,
        warmup=spec.warmup,
        iterations=spec.iterations,
        threads=options.intra_op_num_threads,
        throughput_per_s=spec.batch_size * 1000.0 / stats["mean_ms"],
        options={
            "intra_op_num_threads": options.intra_op_num_threads,
            "inter_op_num_threads": options.inter_op_num_threads,
            "execution_mode": "sequential",
            "graph_optimization_level": OPTIMIZATION[spec.optimization],
            "allow_spinning": "runtime default (on)" if spec.spinning is None else spec.spinning,
            "settings": {**spec.settings(), "threads": options.intra_op_num_threads},
            "timer": "time.perf_counter_ns around InferenceSession.run, input pre-allocated",
            "percentiles": "numpy linear interpolation",
        },
        host=host_info(),
        **stats,
    )


def layer_profile(target: str, art: OnnxArtifact, spec: ProfileSpec, providers: list[Any], runs: int = 50) -> list[dict[str, Any]]:
    """Mean time per graph node from ONNX Runtime's own profiler, slowest first.

    The profiler's per-run overhead inflates the total a little, so these are shares of the model's
    time, not a replacement for profile_session's end-to-end figures.
    """
    import json
    import tempfile

    import onnxruntime as ort

    options = session_options(spec.threads, spec.spinning, spec.optimization)
    with tempfile.TemporaryDirectory(prefix="squeeze-ortprof-") as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(art.path), options, providers=providers)
        shape = [spec.batch_size, *art.input_spec.shape[1:]]
        feed = {session.get_inputs()[0].name: np.random.default_rng(spec.seed).standard_normal(shape).astype(art.input_spec.dtype)}
        warmup = max(1, min(spec.warmup, 10))
        for _ in range(warmup + runs):
            session.run(None, feed)
        trace = json.loads(Path(session.end_profiling()).read_text())
    durations: dict[str, list[float]] = {}
    op_types: dict[str, str] = {}
    for event in trace:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        name = event["name"][: -len("_kernel_time")]
        durations.setdefault(name, []).append(float(event["dur"]))
        op_types[name] = event.get("args", {}).get("op_name", "?")
    means = {name: float(np.mean(times[warmup:] or times)) for name, times in durations.items()}
    total = sum(means.values()) or 1.0
    rows = [{"name": name, "op_type": op_types[name], "mean_us": us, "share": us / total} for name, us in means.items()]
    return sorted(rows, key=lambda r: -r["mean_us"])
