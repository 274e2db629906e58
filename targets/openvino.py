"""`openvino`: Intel OpenVINO's CPU plugin on this machine. The deployable artifact is OpenVINO IR (model.xml +
model.bin) with a manifest (OpenVINO version, device, precision, input shapes, ONNX sha256); latency is timed
on the same IR, compiled with the LATENCY performance hint; per-layer times come from OpenVINO's own counters.

The IR is reshaped to a static batch: OpenVINO's CPU plugin runs static shapes faster (measured here: a
digits ResNet INT8 0.095 ms static vs 0.13-0.25 ms with a dynamic batch), so what is built, timed and
deployed is the static-batch model. INT8 models come as ONNX Q/DQ (the `nncf` backend); OpenVINO reads
each pair as a FakeQuantize that its low-precision transformations fold into INT8 kernels (the manifest
counts the layers that ran in INT8).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from squeeze.errors import ParityError, TargetUnavailableError, UserInputError
from squeeze.io.artifacts import OnnxArtifact
from squeeze.io.fsutil import sha256_file, write_json_atomic
from squeeze.targets.base import (ENGINE_OPTIONS, REMOTE_OPTIONS, Availability, EngineArtifact, LatencyStats, ProfileSpec, QuantRules,
                                  TargetBase, TargetOptions)
from squeeze.targets.ort_runtime import host_channel_block, host_info, summarize, usable_cores

DEVICE = "CPU"
MANIFEST_FORMAT = "squeeze-openvino-ir"
PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
INSTALL = "pip install 'squeeze[openvino]'"

# What NNCF's performance preset places and OpenVINO's low-precision transformations run as INT8: symmetric
# per-tensor activations (uint8 with zero point 0 after a ReLU, int8 elsewhere), symmetric int8 per-channel
# weights. 8-bit weights: OpenVINO's CPU kernels use VNNI/AMX where present and compensate on AVX2 (NNCF's
# overflow fix), unlike ORT's u8s8 path that needs 7-bit weights on x86 without VNNI.
OPENVINO_QUANT_RULES = QuantRules(
    signed_activations=False,
    symmetric_activations=True,
    zero_point_must_be_zero=True,
    weight_max_int=127,
    quantized_bias=False,
    backend="nncf",
    notes="OpenVINO CPU: symmetric per-tensor activations (uint8 after ReLU, zero point 0), int8 symmetric per-channel weights (axis 0)",
)


def _ov():
    import openvino as ov

    return ov


_CORE: list[Any] = []
_COMPILED: OrderedDict[tuple, Any] = OrderedDict()  # a few compiled models: compare() times each model block after block


def _core() -> Any:
    if not _CORE:
        _CORE.append(_ov().Core())
    return _CORE[0]


def convert(onnx_path: Path, batch: int | None) -> Any:
    """ONNX -> OpenVINO model (ov.convert_model), reshaped to a static batch when `batch` is given."""
    model = _ov().convert_model(str(onnx_path))
    if batch is not None:
        shape = model.inputs[0].get_partial_shape()
        shape[0] = batch
        model.reshape({model.inputs[0]: shape})
    return model


# The untuned defaults. One stream: a single synchronous request (batch-1 latency) runs on one stream, so more
# streams only split the threads; the LATENCY hint picks one too, the explicit value keeps it fixed whatever the
# hint's heuristics. No CPU pinning: OpenVINO pins its threads by default, and on a shared host a pinned thread waits
# for its busy core (measured here, MNIST ResNet, 1 thread, load ~8: 3.99 ms pinned vs 1.79 ms unpinned, ORT 1.60 ms).
# Session tuning (settings_candidates) times the alternatives and may choose them.
RUNTIME_DEFAULTS = {"NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}


def runtime_options(spec: ProfileSpec) -> dict[str, Any]:
    """OpenVINO's tunable options for a profile spec: the defaults, overridden by what the spec carries."""
    return {**RUNTIME_DEFAULTS, **{k: v for k, v in spec.runtime_options if k in RUNTIME_DEFAULTS}}


def compile_config(threads: int, precision: str, perf_count: bool = False, options: dict[str, Any] | None = None) -> dict[str, Any]:
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, **RUNTIME_DEFAULTS, **(options or {}),
              "INFERENCE_PRECISION_HINT": precision}
    return {**config, "PERF_COUNT": "YES"} if perf_count else config


def _compiled(art: OnnxArtifact, batch: int, config: dict[str, Any]) -> Any:
    key = (art.sha256, batch, tuple(sorted(config.items())))
    if key not in _COMPILED:
        _COMPILED[key] = _core().compile_model(convert(art.path, batch), DEVICE, config)
        while len(_COMPILED) > 6:
            _COMPILED.popitem(last=False)
    _COMPILED.move_to_end(key)
    return _COMPILED[key]


def runtime_precisions(compiled: Any) -> dict[str, int]:
    """How many Convolution/FullyConnected layers ran at each precision (u8/i8 = INT8 kernels), from the runtime graph."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) in ("Convolution", "FullyConnected", "MatMul", "Deconvolution"):
            counts[str(info["runtimePrecision"].astype(str))] += 1
    return dict(counts)


def _feed(art: OnnxArtifact, batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal([batch, *art.input_spec.shape[1:]]).astype(art.input_spec.dtype)


class OpenvinoTarget(TargetBase):
    name = "openvino"
    description = "Intel OpenVINO CPU plugin on this machine (IR: model.xml + model.bin)"
    quant_rules = OPENVINO_QUANT_RULES
    channel_multiple = host_channel_block()  # oneDNN's blocked layouts work in 8 (AVX2) or 16 (AVX-512) channels
    engine_suffixes = (".xml",)

    def __init__(self, precision: str = "f32"):
        self.precision = precision

    @classmethod
    def from_options(cls, name: str, options: TargetOptions) -> OpenvinoTarget:
        options.refuse(name, REMOTE_OPTIONS + tuple(o for o in ENGINE_OPTIONS if o != "precision"),
                       "target openvino runs on this machine's CPU with OpenVINO")
        precision = PRECISIONS.get((options.precision or "f32").lower())
        if precision is None:
            raise UserInputError(f"target openvino: --precision must be one of f32, bf16, f16 (OpenVINO's inference precision "
                                 f"for the float parts), got {options.precision!r}")
        return cls(precision)

    def available(self) -> Availability:
        try:
            ov = _ov()
            devices = _core().available_devices
        except Exception as exc:  # ImportError, or a broken runtime
            return Availability(False, f"openvino is not importable ({type(exc).__name__}: {exc}); {INSTALL}")
        if DEVICE not in devices:
            return Availability(False, f"OpenVINO {ov.__version__} has no {DEVICE} device here (devices: {devices})")
        return Availability(True, f"openvino {ov.__version__.split('-')[0]}, {_core().get_property(DEVICE, 'FULL_DEVICE_NAME')}, "
                                  f"{usable_cores()} usable cores", {"runtime_version": ov.__version__, "cores": usable_cores()})

    def _require(self) -> None:
        availability = self.available()
        if not availability.available:
            raise TargetUnavailableError(f"target openvino cannot run here: {availability.reason}")

    def _check_batch(self, art: OnnxArtifact, batch: int) -> None:
        if not art.input_spec.dynamic_batch and batch != art.input_spec.shape[0]:
            raise TargetUnavailableError(f"{art.path} has a static batch of {art.input_spec.shape[0]}; cannot run batch {batch}")

    def build(self, onnx: OnnxArtifact, out: Path, batch: int = 1) -> EngineArtifact:
        """OpenVINO IR beside `out` (model.xml + model.bin; compress names its engine model.engine) and
        model.xml.manifest.json, each written atomically; the IR is checked against ONNX Runtime on seeded inputs."""
        self._require()
        self._check_batch(onnx, batch)
        ov = _ov()
        xml = out if out.suffix == ".xml" else out.with_suffix(".xml")
        xml.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="squeeze-ov-", dir=xml.parent) as tmp:
            staged = Path(tmp) / xml.name
            ov.save_model(convert(onnx.path, batch), str(staged), compress_to_fp16=False)  # weights stay f32: exact parity
            compiled = _core().compile_model(str(staged), DEVICE, compile_config(1, self.precision))
            check = self._parity_vs_onnx(compiled, onnx, batch)
            manifest = self._manifest(onnx, staged, compiled, batch, check)
            staged.with_suffix(".bin").replace(xml.with_suffix(".bin"))  # the weights first: model.xml names them
            staged.replace(xml)
        write_json_atomic(xml.with_name(xml.name + ".manifest.json"), manifest)
        return EngineArtifact(xml, sha256_file(xml), manifest, self.name, (xml.with_suffix(".bin"),))

    def _parity_vs_onnx(self, compiled: Any, onnx: OnnxArtifact, batch: int) -> dict[str, Any]:
        """The IR's logits vs ONNX Runtime's on the ONNX, 8 seeded inputs. A float model at f32 must match within the
        export tolerance (else an error); an INT8 or reduced-precision one is recorded (rounding differs by design)."""
        from squeeze.targets.ort_runtime import create_session

        session, _ = create_session(str(onnx.path), ["CPUExecutionProvider"], threads=1)
        request = compiled.create_infer_request()
        diffs, agree, scale = [], [], 0.0
        for seed in range(8):
            x = _feed(onnx, batch, seed)
            ref = session.run(None, {session.get_inputs()[0].name: x})[0]
            got = request.infer({0: x})[0]
            diffs.append(float(np.abs(got - ref).max()))
            agree.append(float((got.argmax(-1) == ref.argmax(-1)).mean()))
            scale = max(scale, float(np.abs(ref).max()))
        int8 = any(k in ("u8", "i8") for k in runtime_precisions(compiled))
        tolerance = 1e-3 + 1e-4 * scale
        enforced = self.precision == "f32" and not int8
        out = {"inputs": "8 seeded standard-normal batches", "max_abs_diff": max(diffs), "top1_agreement": float(np.mean(agree)),
               "tolerance_max_abs": tolerance if enforced else None, "enforced": enforced}
        if enforced and max(diffs) > tolerance:
            raise ParityError(f"OpenVINO IR vs ONNX Runtime: max |logit diff| {max(diffs):.3g} > {tolerance:.3g} for {onnx.path.name}")
        return out

    def _manifest(self, onnx: OnnxArtifact, xml: Path, compiled: Any, batch: int, parity: dict[str, Any]) -> dict[str, Any]:
        from squeeze import __version__

        ov = _ov()
        spec = onnx.input_spec
        return {
            "format": MANIFEST_FORMAT, "version": 1, "engine": xml.name, "engine_sha256": sha256_file(xml),
            "weights": xml.with_suffix(".bin").name, "weights_sha256": sha256_file(xml.with_suffix(".bin")),
            "engine_bytes": xml.stat().st_size + xml.with_suffix(".bin").stat().st_size,
            "onnx": str(onnx.path), "onnx_sha256": onnx.sha256, "target": self.name,
            "openvino_version": ov.__version__, "device": {"name": DEVICE, "full_name": _core().get_property(DEVICE, "FULL_DEVICE_NAME")},
            "precision": {"inference_precision_hint": self.precision, "weights": "f32 (compress_to_fp16=False)",
                          "layers_by_runtime_precision": runtime_precisions(compiled)},
            "input": {"name": spec.name, "dtype": spec.dtype, "shapes": {"static": [batch, *spec.shape[1:]]},
                      "onnx_dynamic_batch": spec.dynamic_batch},
            "parity_vs_onnxruntime": parity,
            "build_command": f"ov.save_model(ov.convert_model({onnx.path.name!r}) reshaped to {[batch, *spec.shape[1:]]}, {xml.name!r})",
            "built_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "squeeze_version": __version__,
        }

    def profile(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats:
        """Warm up, then time `iterations` synchronous infers of the static-batch IR with a monotonic clock."""
        self._require()
        self._check_batch(art, spec.batch_size)
        threads = spec.threads or usable_cores()
        config = compile_config(threads, self.precision, options=runtime_options(spec))
        compiled = _compiled(art, spec.batch_size, config)
        request = compiled.create_infer_request()
        x = _feed(art, spec.batch_size, spec.seed)
        request.set_input_tensor(_ov().Tensor(x))  # pre-allocated, as the ORT targets feed theirs
        for _ in range(spec.warmup):
            request.infer()
        times = np.empty(spec.iterations, dtype=np.float64)
        for i in range(spec.iterations):
            start = time.perf_counter_ns()
            request.infer()
            times[i] = (time.perf_counter_ns() - start) / 1e6
        stats = summarize(times)
        return LatencyStats(
            target=self.name, runtime="openvino", runtime_version=_ov().__version__,
            providers=[f"OpenVINO {DEVICE} plugin ({_core().get_property(DEVICE, 'FULL_DEVICE_NAME')})"],
            batch_size=spec.batch_size, input_shape=list(x.shape), warmup=spec.warmup, iterations=spec.iterations, threads=threads,
            throughput_per_s=spec.batch_size * 1000.0 / stats["mean_ms"],
            options={**config, "compiled": {k: str(compiled.get_property(k)) for k in ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "ENABLE_CPU_PINNING")},
                     "settings": {"threads": threads, **runtime_options(spec)}, "static_batch": spec.batch_size,
                     "timer": "time.perf_counter_ns around InferRequest.infer, input tensor pre-set",
                     "percentiles": "numpy linear interpolation"},
            host=host_info(), **stats)

    def settings_candidates(self, spec: ProfileSpec, scope: str) -> list[ProfileSpec]:
        """Threads 1..cores unless pinned, as the cpu target tunes them; with scope "full" also CPU pinning on/off
        and, with more than one thread, 2 streams (each with half the threads: the one request uses one of them).
        ORT's spinning and graph-optimisation knobs do not exist in OpenVINO."""
        threads = [spec.threads] if spec.threads else list(range(1, usable_cores() + 1))
        options = [dict(RUNTIME_DEFAULTS)]
        if scope == "full":
            options.append({**RUNTIME_DEFAULTS, "ENABLE_CPU_PINNING": True})
        out = [(t, o) for t in threads for o in options]
        if scope == "full":
            out += [(t, {**RUNTIME_DEFAULTS, "NUM_STREAMS": 2}) for t in threads if t >= 2]
        return [dataclasses.replace(spec, threads=t, runtime_options=tuple(sorted(o.items()))) for t, o in out]

    def deploy_settings(self, spec: ProfileSpec) -> dict[str, Any]:
        threads = spec.threads or usable_cores()
        config = compile_config(threads, self.precision, options=runtime_options(spec))
        lines = ["import openvino as ov", "", "core = ov.Core()",
                 f"compiled = core.compile_model('model.xml', {DEVICE!r}, {config!r})",
                 "request = compiled.create_infer_request()", "logits = request.infer({0: x})[0]  # x: float32, the manifest's input shape"]
        return {"settings": {"runtime": "openvino", "device": DEVICE, **config}, "snippet": "\n".join(lines) + "\n"}

    def layer_profile(self, art: OnnxArtifact, spec: ProfileSpec, runs: int = 50) -> list[dict[str, Any]]:
        """Mean time per executed node from OpenVINO's performance counters (PERF_COUNT), slowest first. Counters
        cover one infer, so they are summed over `runs` infers; shares of the model's time, like the cpu target's."""
        self._require()
        self._check_batch(art, spec.batch_size)
        compiled = _compiled(art, spec.batch_size, compile_config(spec.threads or usable_cores(), self.precision, True, runtime_options(spec)))
        request = compiled.create_infer_request()
        request.set_input_tensor(_ov().Tensor(_feed(art, spec.batch_size, spec.seed)))
        for _ in range(max(1, min(spec.warmup, 10))):
            request.infer()
        total_us: dict[str, float] = {}
        kinds: dict[str, tuple[str, str]] = {}
        for _ in range(runs):
            request.infer()
            for info in request.get_profiling_info():
                if str(info.status).endswith("EXECUTED") and not str(info.status).endswith("NOT_EXECUTED"):
                    total_us[info.node_name] = total_us.get(info.node_name, 0.0) + info.real_time.total_seconds() * 1e6
                    kinds[info.node_name] = (info.node_type, info.exec_type)
        means = {name: us / runs for name, us in total_us.items()}
        total = sum(means.values()) or 1.0
        rows = [{"name": name, "op_type": kinds[name][0], "mean_us": us, "share": us / total, "kernel": kinds[name][1]}
                for name, us in means.items()]
        return sorted(rows, key=lambda r: -r["mean_us"])

    def infer(self, art: OnnxArtifact, x: np.ndarray) -> np.ndarray:
        """The model's outputs on this target's runtime (the IR at x's batch), for parity and accuracy on real data."""
        self._require()
        self._check_batch(art, len(x))
        request = _compiled(art, len(x), compile_config(1, self.precision)).create_infer_request()
        return np.asarray(request.infer({0: np.ascontiguousarray(x, dtype=art.input_spec.dtype)})[0]).copy()
