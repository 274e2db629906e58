"""TensorRT target: trtexec command lines for 10.x vs 11.x, parsing its documented outputs, engine manifests,
the Python-API builder against a stand-in `tensorrt` module, and the honest refusal on a machine without a GPU."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from squeeze.io.artifacts import InputSpec
from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.io.modelio import load_onnx
from squeeze.targets import get_target
from squeeze.targets.engine import engine_mismatches, read_manifest
from squeeze.targets.tensorrt import build_with_python_api
from squeeze.targets.trtexec import (EngineBuildOptions, EngineMismatchError, TensorRTError, TrtexecTiming, TrtVersion, check_precision,
                                     nearest_rank, parse_export_profile, parse_export_times, parse_trtexec_log, trtexec_build_args,
                                     trtexec_profile_args, version_from_banner)

FIXTURES = Path(__file__).parent / "fixtures" / "trtexec"
DYNAMIC = InputSpec((1, 3, 32, 32), name="images")
STATIC = InputSpec((4, 3, 32, 32), name="images", dynamic_batch=False)


@pytest.mark.parametrize("banner, version", [
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --help", TrtVersion(10, 3, 0)),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v101601] [b26] # trtexec", TrtVersion(10, 16, 1)),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v110400] # trtexec", TrtVersion(11, 4, 0)),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec", TrtVersion(8, 6, 1)),
    ("[I] TensorRT version: 10.7.0", TrtVersion(10, 7, 0)),
])
def test_version_from_banner(banner, version):
    assert version_from_banner(banner) == version


def test_build_args_trt10_strongly_typed_dynamic_batch():
    args = trtexec_build_args(TrtVersion(10, 3), "m.onnx", "m.engine", DYNAMIC, EngineBuildOptions(), 8, "tc.bin", "layers.json")
    assert args == ["--onnx=m.onnx", "--saveEngine=m.engine", "--skipInference", "--memPoolSize=workspace:1024M",
                    "--builderOptimizationLevel=3", "--stronglyTyped", "--minShapes=images:1x3x32x32", "--optShapes=images:8x3x32x32",
                    "--maxShapes=images:32x3x32x32", "--timingCacheFile=tc.bin", "--profilingVerbosity=detailed",
                    "--exportLayerInfo=layers.json"]


@pytest.mark.parametrize("precision, flags", [("fp16", ["--fp16"]), ("int8", ["--int8", "--fp16"]), ("best", ["--best"])])
def test_build_args_trt10_weak_typing(precision, flags):
    args = trtexec_build_args(TrtVersion(10, 3), "m.onnx", "m.engine", STATIC, EngineBuildOptions(precision=precision), 4, None, None)
    assert [a for a in args if a in ("--fp16", "--int8", "--best", "--stronglyTyped")] == flags
    assert not any("Shapes=" in a for a in args)  # static model: no optimization profile


def test_build_args_trt11_have_no_precision_flags():
    args = trtexec_build_args(TrtVersion(11, 4), "m.onnx", "m.engine", DYNAMIC, EngineBuildOptions(), 1, None, None)
    assert not {"--stronglyTyped", "--fp16", "--int8", "--best"} & set(args)
    assert "--minShapes=images:1x3x32x32" in args


def test_profile_args_differ_by_version_to_measure_the_same_thing():
    timing = TrtexecTiming(warmup_ms=1500, duration_s=5)
    v10 = trtexec_profile_args(TrtVersion(10, 3), "m.engine", DYNAMIC, 2, 300, timing, "t.json", "p.json")
    v11 = trtexec_profile_args(TrtVersion(11, 4), "m.engine", DYNAMIC, 2, 300, timing, "t.json", "p.json")
    common = ["--loadEngine=m.engine", "--warmUp=1500", "--duration=5", "--iterations=300", "--avgRuns=10", "--percentile=50,90,99",
              "--exportTimes=t.json", "--dumpProfile", "--exportProfile=p.json", "--shapes=images:2x3x32x32"]
    assert v11 == common
    assert v10 == common + ["--useCudaGraph", "--noDataTransfers", "--useSpinWait", "--separateProfileRun"]


def test_odd_tensor_names_are_quoted():
    args = trtexec_build_args(TrtVersion(10, 3), "m.onnx", "m.engine", InputSpec((1, 3), name="x:0"), EngineBuildOptions(), 1, None, None)
    assert "--minShapes='x:0':1x3" in args


def test_precision_rules():
    check_precision(TrtVersion(10, 3), "fp16", has_qdq=False)
    check_precision(TrtVersion(11, 4), "strongly-typed", has_qdq=True)
    with pytest.raises(TensorRTError, match="TensorRT 11.4.0 removed the --best builder flag"):
        check_precision(TrtVersion(11, 4), "best", has_qdq=False)
    with pytest.raises(TensorRTError, match="int8 needs Q/DQ nodes"):
        check_precision(TrtVersion(10, 3), "int8", has_qdq=False)
    with pytest.raises(UserInputError, match="--precision must be one of"):
        EngineBuildOptions(precision="fp8")


def test_parse_recorded_export_times_and_profile():
    times = parse_export_times((FIXTURES / "times_10.3.json").read_text(), warmup_ms=2000)
    rows = json.loads((FIXTURES / "times_10.3.json").read_text())
    assert times["compute_ms"] == [r["computeMs"] for r in rows] and times["dropped_warmup"] == 0
    layers = parse_export_profile((FIXTURES / "profile_10.3.json").read_text())
    assert [r["average_ms"] for r in layers] == sorted((r["average_ms"] for r in layers), reverse=True)
    assert layers[0] == {"name": "/features/features.3/Conv + /features/features.5/Relu", "average_ms": 0.112, "median_ms": 0.111,
                         "total_ms": 11.2, "percent": 38.6, "runs": 100}


def test_old_trtexec_traces_drop_warmup_records():
    rows = [{"startComputeMs": t, "computeMs": c, "latencyMs": c} for t, c in ((10, 5.0), (150, 4.0), (250, 1.0), (260, 1.2))]
    times = parse_export_times(json.dumps(rows), warmup_ms=200)
    assert times["compute_ms"] == [1.0, 1.2] and times["dropped_warmup"] == 2


@pytest.mark.parametrize("text", ["not json", "[]", '[{"foo": 1}]'])
def test_bad_export_times(text):
    with pytest.raises(TensorRTError, match="exportTimes"):
        parse_export_times(text)


def test_nearest_rank_matches_trtexec_float32_rule():
    xs = [float(i) for i in range(60)]
    assert nearest_rank(xs, 90) == 53.0  # (1 - 0.9f) * 60 = 6.0000014 in float32 -> exclude 6
    assert nearest_rank(xs, 99) == 59.0 and nearest_rank([3.0], 99) == 3.0


def test_parse_logs():
    log = (FIXTURES / "profile_10.3.log").read_text().replace("{GPU}", "Orin").replace("{SM}", "8.7").replace("{ARGS}", "x")
    info = parse_trtexec_log(log)
    assert info["tensorrt_version"] == "10.3.0" and info["gpu"] == "Orin" and info["sm"] == "8.7" and info["passed"]
    assert info["summary"]["GPU Compute Time"] == {"min": 0.3001, "max": 0.8405, "mean": 0.3212, "median": 0.3188, "percentile_50": 0.3188,
                                                   "percentile_90": 0.335, "percentile_99": 0.339}
    assert info["summary"]["throughput_qps"] == 3180.1 and "coefficient of variance = 4.1%" in info["unstable"]
    failed = parse_trtexec_log((FIXTURES / "parse_error_10.3.log").read_text())
    assert failed["failed"] and "Failed to parse onnx file" in failed["errors"]
    assert any("No importer registered for op: NonMaxSuppression" in e for e in failed["errors"])


def test_engine_mismatch_rules():
    built = {"tensorrt_version": "10.3.0", "gpu": "Orin", "sm": "8.7", "module": "Orin Nano 8GB", "jetpack": "6.2",
             "power_mode": {"name": "MAXN_SUPER", "id": 2}}
    assert engine_mismatches(built, dict(built)) == []
    assert engine_mismatches(built, {**built, "gpu": None}) == []  # unknown on one side: not a mismatch
    assert engine_mismatches(built, {**built, "tensorrt_version": "10.3.1", "power_mode": {"name": "15W", "id": 0}}) == [
        "tensorrt version 10.3.0 -> 10.3.1", "power mode MAXN_SUPER -> 15W"]


def test_engine_without_manifest_is_refused(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(EngineMismatchError, match="has no manifest .*Rebuild it with squeeze build"):
        read_manifest(engine)


def test_tensorrt_refuses_here_and_says_what_it_would_run(tiny_onnx_path, tmp_path):
    target = get_target("tensorrt")
    availability = target.available()
    if availability.available:
        pytest.skip("this machine has TensorRT and a GPU")
    assert "nvidia-smi not found" in availability.reason or "trtexec" in availability.reason
    out = tmp_path / "m.engine"
    with pytest.raises(TargetUnavailableError, match=r"cannot build an engine with TensorRT here: .*would run: trtexec --onnx=.*tiny.onnx "
                                                     r"--saveEngine=.*m.engine .*--stronglyTyped"):
        target.build(load_onnx(tiny_onnx_path), out)
    assert not out.exists() and not Path(str(out) + ".manifest.json").exists()
    with pytest.raises(TargetUnavailableError, match="cannot predict TensorRT latency for an unknown GPU"):
        target.predict(load_onnx(tiny_onnx_path), __import__("squeeze.targets.base", fromlist=["ProfileSpec"]).ProfileSpec())


# -- the Python API builder, against a stand-in of the `tensorrt` module (the real one needs a GPU) ------


def fake_tensorrt(version: str, parse_ok: bool = True) -> types.ModuleType:
    """The subset of the TensorRT Python API the builder uses, recording every call."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []

    class Sev(int):
        @property
        def name(self):
            return {0: "INTERNAL_ERROR", 1: "ERROR", 2: "WARNING", 3: "INFO", 4: "VERBOSE"}[int(self)]

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=Sev(0), ERROR=Sev(1), WARNING=Sev(2), INFO=Sev(3))

        def __init__(self):
            pass

    class Network:
        pass

    class Parser:
        def __init__(self, network, logger):
            self.logger = logger
            self.num_errors = 0 if parse_ok else 2

        def parse_from_file(self, path):
            trt.calls.append(("parse_from_file", Path(path).name))
            if not parse_ok:
                self.logger.log(ILogger.Severity.ERROR, "ModelImporter.cpp:948: While parsing node number 2 [FancyConv]")
            return parse_ok

        def get_error(self, i):
            return ["In node 2 (parseGraph): INVALID_NODE: No importer registered for op: FancyConv",
                    "ModelImporter.cpp:215 In function parseGraph: [6] Invalid Node - /conv2/Conv"][i]

    class Cache:
        def serialize(self):
            return b"cache-bytes"

    class Config:
        def __init__(self):
            self.flags, self.profiles = [], []

        def set_memory_pool_limit(self, pool, size):
            trt.calls.append(("workspace", size))

        def set_flag(self, flag):
            self.flags.append(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile.shapes)

        def create_timing_cache(self, data):
            trt.calls.append(("timing_cache_in", data))
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            trt.calls.append(("ignore_mismatch", ignore_mismatch))

        def get_timing_cache(self):
            return Cache()

    class Profile:
        def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's keyword names
            self.shapes = {"name": name, "min": list(min), "opt": list(opt), "max": list(max)}

    class Builder:
        def __init__(self, logger):
            self.config = Config()

        def create_network(self, flags):
            trt.calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return self.config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.calls.append(("build", list(config.flags), list(config.profiles), config.builder_optimization_level))
            return b"PLAN"

    trt.ILogger, trt.Builder, trt.OnnxParser = ILogger, Builder, Parser
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
    return trt


def test_python_api_build_strongly_typed_with_profile_and_cache(tiny_onnx_path, tmp_path, monkeypatch):
    trt = fake_tensorrt("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cache = tmp_path / "tc.bin"
    cache.write_bytes(b"old-cache")
    plan, _ = build_with_python_api(load_onnx(tiny_onnx_path), EngineBuildOptions(max_batch=16), 4, cache)
    assert plan == b"PLAN" and cache.read_bytes() == b"cache-bytes"
    assert ("create_network", 1 << 5) in trt.calls and ("timing_cache_in", b"old-cache") in trt.calls and ("ignore_mismatch", False) in trt.calls
    build = next(c for c in trt.calls if c[0] == "build")
    assert build[1] == [] and build[3] == 3  # strongly typed: no precision flags
    assert build[2] == [{"name": "input", "min": [1, 1, 28, 28], "opt": [4, 1, 28, 28], "max": [16, 1, 28, 28]}]


def test_python_api_fp16_on_10x_and_refused_on_11x(tiny_onnx_path, monkeypatch):
    trt = fake_tensorrt("10.16.1")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    build_with_python_api(load_onnx(tiny_onnx_path), EngineBuildOptions(precision="fp16"), 1, None)
    assert next(c for c in trt.calls if c[0] == "build")[1] == ["FP16"] and ("create_network", 0) in trt.calls
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.4.0"))
    with pytest.raises(TensorRTError, match="TensorRT 11.4.0 removed the --fp16 builder flag"):
        build_with_python_api(load_onnx(tiny_onnx_path), EngineBuildOptions(precision="fp16"), 1, None)


def test_python_api_surfaces_parser_errors(tmp_path, monkeypatch):
    from ssh_fixtures import make_conv_onnx

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.3.0", parse_ok=False))
    art = load_onnx(make_conv_onnx(tmp_path / "fancy.onnx", op="Conv"))
    with pytest.raises(TensorRTError, match="ONNX parser rejected the model: In node 2 .*No importer registered for op: FancyConv"):
        build_with_python_api(art, EngineBuildOptions(), 1, None)
